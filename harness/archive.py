"""The shared WAL archive: what is in it, waits on it, and reversible faults.

The archive is the compose volume ``archive``, mounted at /archive: read-write
in the primary (archive_command writes it), read-only in the standby. The
harness looks at it from inside a node that mounts it, so the host never
needs access to Docker's volume directory.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from harness.errors import ClusterError
from harness.lsn import Lsn
from harness.wait import poll_until

if TYPE_CHECKING:
    from harness.cluster import Cluster, Node

log = logging.getLogger("harness")

ARCHIVE_PATH = "/archive"
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
#: Where a corruption starts in a segment: past the long page header (40 bytes)
#: and the first record's header, inside its data, so its CRC no longer matches.
CORRUPTION_OFFSET = 64


class Archive:
    """The cluster's shared WAL archive."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _mounting(self, writable: bool) -> Node:
        """A running node that mounts the archive (read-write when `writable`)."""
        for node in self.cluster.nodes:
            container = node.container
            if container.status != "running":
                continue
            for mount in container.attrs.get("Mounts", []):
                if mount.get("Destination") == ARCHIVE_PATH and (mount.get("RW") or not writable):
                    return node
        what = "read-write" if writable else "at all"
        raise ClusterError(f"no running node of cluster {self.cluster.name!r} mounts the archive {what}")

    def _sh(self, script: str, *, writable: bool = False) -> str:
        node = self._mounting(writable)
        return node.exec("sh", "-c", script, user="root" if writable else "postgres")

    def files(self) -> list[str]:
        """Every file in the archive (segments, .history, .backup, .partial), sorted."""
        return sorted(self._sh(f"ls -1 {ARCHIVE_PATH}").split())

    def segments(self) -> list[str]:
        """The WAL segments in the archive, sorted."""
        return [f for f in self.files() if SEGMENT_RE.match(f)]

    def history_files(self) -> list[str]:
        """The timeline history files in the archive (``00000002.history``, ...)."""
        return [f for f in self.files() if HISTORY_RE.match(f)]

    def walfile_for(self, lsn: Lsn, node: Node | None = None) -> str:
        """The WAL file that holds `lsn` on `node`'s current timeline (``pg_walfile_name``)."""
        node = node or self.cluster.primary
        return str(node.scalar("SELECT pg_walfile_name(%s::pg_lsn)", (str(lsn),)))

    def wait_for(self, name: str, *, timeout: float | None = None) -> None:
        """Wait until a file named `name` is in the archive."""
        poll_until(
            self.files,
            lambda files: name in files,
            what=f"{name} to appear in the archive",
            timeout=timeout,
            nodes=[n for n in self.cluster.nodes if n.container.status == "running"],
        )

    def wait_for_lsn(self, lsn: Lsn, node: Node | None = None, *, timeout: float | None = None) -> str:
        """Wait until the WAL file holding `lsn` is archived by `node` (the primary); return its name."""
        node = node or self.cluster.primary
        walfile = self.walfile_for(lsn, node)
        node.wait_for_archived(walfile, timeout=timeout)
        return walfile

    # --- faults: each restores the archive in `finally` --------------------------

    @contextmanager
    def read_only(self) -> Iterator[None]:
        """Make the archive unwritable (archive_command then fails) for the block."""
        log.info("### Making the archive read-only")
        mode = self._sh(f"stat -c %a {ARCHIVE_PATH}", writable=True).strip()
        self._sh(f"chmod a-w {ARCHIVE_PATH}", writable=True)
        try:
            yield
        finally:
            log.info("### Making the archive writable again")
            self._sh(f"chmod {shlex.quote(mode)} {ARCHIVE_PATH}", writable=True)

    @contextmanager
    def missing(self, name: str) -> Iterator[None]:
        """Take `name` out of the archive for the block (it is kept aside, hidden, and put back)."""
        path, hidden = f"{ARCHIVE_PATH}/{name}", f"{ARCHIVE_PATH}/.missing.{name}"
        log.info("### Taking %s out of the archive", name)
        self._sh(f"mv {shlex.quote(path)} {shlex.quote(hidden)}", writable=True)
        try:
            yield
        finally:
            log.info("### Putting %s back into the archive", name)
            self._sh(f"mv {shlex.quote(hidden)} {shlex.quote(path)}", writable=True)

    @contextmanager
    def corrupted(self, name: str, *, offset: int = CORRUPTION_OFFSET, length: int = 64) -> Iterator[None]:
        """Overwrite `length` bytes of `name` at `offset` with 0xFF for the block; the original comes back after."""
        path, original = f"{ARCHIVE_PATH}/{name}", f"{ARCHIVE_PATH}/.original.{name}"
        log.info("### Corrupting %s in the archive (%d bytes at %d)", name, length, offset)
        self._sh(
            f"cp -p {shlex.quote(path)} {shlex.quote(original)} && "
            f"head -c {length} /dev/zero | tr '\\0' '\\377' | "
            f"dd of={shlex.quote(path)} bs=1 seek={offset} conv=notrunc status=none",
            writable=True,
        )
        try:
            yield
        finally:
            log.info("### Restoring %s in the archive", name)
            self._sh(f"mv {shlex.quote(original)} {shlex.quote(path)}", writable=True)
