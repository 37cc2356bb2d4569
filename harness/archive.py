"""The shared WAL archive: what is in it, and reversible faults on it (``cluster.archive``).

The archive is the compose volume ``archive``, mounted at /archive: read-write
in the primary (archive_command writes it), read-only in the standby. The
harness looks at it from inside a node that mounts it, so the host never
needs access to Docker's volume directory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pgharness.constants import ARCHIVE_PATH
from pgharness.errors import ClusterError

if TYPE_CHECKING:
    from pgharness.cluster import Cluster
    from pgharness.node import Node

log = logging.getLogger("pgharness")

SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
#: Any file archive_command writes: a segment, a .partial or .backup file, a timeline's .history.
TIMELINE_FILE_RE = re.compile(r"^([0-9A-F]{8})(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?|\.history)$")
#: Where a corruption starts in a segment: past the long page header (40 bytes)
#: and the first record's header, inside its data, so its CRC no longer matches.
CORRUPTION_OFFSET = 64


def files_of_timelines_above(names: list[str], timeline: int) -> list[str]:
    """The names among `names` of archived files (segments, .partial, .backup, .history) of a timeline
    above `timeline`; anything else (a file a fault hid, say) is not one."""
    found = []
    for name in names:
        match = TIMELINE_FILE_RE.match(name)
        if match and int(match.group(1), 16) > timeline:
            found.append(name)
    return found


class Archive:
    """The cluster's shared WAL archive: ``cluster.archive``.

    Waiting for a file to be archived is the archiving node's business:
    ``primary.wait_for_archived(walfile_or_lsn)`` asks its archiver.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def __repr__(self) -> str:
        return f"Archive(cluster={self.cluster.name!r})"

    def _mounting(self, *, writable: bool, node: Node | str | None = None) -> Node:
        """A running node that mounts the archive (read-write when `writable`): `node`, or any."""
        candidates = [self.cluster.node(node)] if node is not None else self.cluster.nodes
        for candidate in candidates:
            if self._mounts(candidate, writable=writable):
                return candidate
        what = "read-write" if writable else "at all"
        if node is not None:
            raise ClusterError(f"node {candidates[0].name!r} is not running or does not mount the archive {what}")
        raise ClusterError(f"no running node of cluster {self.cluster.name!r} mounts the archive {what}")

    @staticmethod
    def _mounts(node: Node, *, writable: bool) -> bool:
        """Whether `node` runs with the archive mounted (read-write when `writable`)."""
        container = node.container
        if container.status != "running":
            return False
        mounts = container.attrs.get("Mounts", [])
        return any(m.get("Destination") == ARCHIVE_PATH and (m.get("RW") or not writable) for m in mounts)

    def _exec(self, *argv: str, writable: bool = False) -> str:
        node = self._mounting(writable=writable)
        return node.exec(*argv, user="root" if writable else "postgres")

    def files(self, *, node: Node | str | None = None) -> list[str]:
        """Every file in the archive (segments, .history, .backup, .partial), sorted.

        As `node`'s own mount shows it when given (a standby's read-only view;
        `ClusterError` when it is not running or does not mount it), else
        through any running node that mounts it, else (every node stopped or
        dead) through a one-off container.
        """
        try:
            listing = self._mounting(writable=False, node=node).exec("ls", "-1", ARCHIVE_PATH)
        except ClusterError:
            if node is not None:
                raise
            tools = self.cluster.tools
            listing = tools.run(["ls", "-1", ARCHIVE_PATH], mounts=tools.archive(), what="listing the archive")
        return sorted(listing.split())

    def segments(self) -> list[str]:
        """The WAL segments in the archive, sorted."""
        return [f for f in self.files() if SEGMENT_RE.match(f)]

    def history_files(self) -> list[str]:
        """The timeline history files in the archive (``00000002.history``, ...)."""
        return [f for f in self.files() if HISTORY_RE.match(f)]

    def remove_timelines_above(self, timeline: int) -> list[str]:
        """Remove every file of a timeline above `timeline` (segments, .partial, .backup, .history): what
        nodes promoted from a backup archived; return their names. See `files_of_timelines_above`."""
        doomed = files_of_timelines_above(self.files(), timeline)
        if doomed:
            log.info("### Removing %d archived files of timelines above %d", len(doomed), timeline)
            self._exec("rm", "-f", "--", *(f"{ARCHIVE_PATH}/{name}" for name in doomed), writable=True)
        return doomed

    # --- faults: each restores the archive in `finally` --------------------------

    @contextmanager
    def read_only(self) -> Iterator[None]:
        """Make the archive unwritable (archive_command then fails) for the block."""
        log.info("### Making the archive read-only")
        mode = self._exec("stat", "-c", "%a", ARCHIVE_PATH, writable=True).strip()
        self._exec("chmod", "a-w", ARCHIVE_PATH, writable=True)
        try:
            yield
        finally:
            log.info("### Making the archive writable again")
            self._exec("chmod", mode, ARCHIVE_PATH, writable=True)

    @contextmanager
    def missing(self, name: str) -> Iterator[None]:
        """Take `name` out of the archive for the block (it is kept aside, hidden, and put back)."""
        path, hidden = f"{ARCHIVE_PATH}/{name}", f"{ARCHIVE_PATH}/.missing.{name}"
        log.info("### Taking %s out of the archive", name)
        self._exec("mv", path, hidden, writable=True)
        try:
            yield
        finally:
            log.info("### Putting %s back into the archive", name)
            self._exec("mv", hidden, path, writable=True)

    @contextmanager
    def corrupted(self, name: str, *, offset: int = CORRUPTION_OFFSET, length: int = 64) -> Iterator[None]:
        """Overwrite `length` bytes of `name` at `offset` with 0xFF for the block; the original comes back after."""
        path, original = f"{ARCHIVE_PATH}/{name}", f"{ARCHIVE_PATH}/.original.{name}"
        log.info("### Corrupting %s in the archive (%d bytes at %d)", name, length, offset)
        # A fixed script; the paths and numbers reach it as arguments.
        script = (
            """cp -p "$1" "$2" && head -c "$3" /dev/zero | tr '\\0' '\\377' | """
            """dd of="$1" bs=1 seek="$4" conv=notrunc status=none"""
        )
        self._exec("sh", "-c", script, "corrupt", path, original, str(length), str(offset), writable=True)
        try:
            yield
        finally:
            log.info("### Restoring %s in the archive", name)
            self._exec("mv", original, path, writable=True)
