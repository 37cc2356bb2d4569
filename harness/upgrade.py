"""Major-version upgrades of a replicated cluster with pg_upgrade, by the manual's procedure
("Upgrading PostgreSQL with pg_upgrade", its steps for streaming replication and log-shipping standbys)::

    from pgharness.upgrade import upgrade

    report = upgrade(cluster, to=18)                    # link mode; standbys by rsync
    report = upgrade(cluster, to=18, mode="copy", standbys="basebackup")
    print(report)                                       # what it did, step by step, with timings

The steps: the primary stops, each standby replays its shutdown checkpoint and
stops (their "Latest checkpoint location" must match, as the manual asks);
``pg_upgrade --check``, then pg_upgrade on the primary's data (``link``,
``copy`` or ``clone``) in an *upgrade image*, which holds the old server beside
the new one (`pgharness.image.upgrade_image`); each standby is brought over by
the manual's ``rsync --archive --delete --hard-links --size-only
--no-inc-recursive`` of the primary's old and new data folders, or by a fresh
base backup of the upgraded primary; every node starts again on the new major's
image and the standbys stream again.

What changes: the new cluster is another system (a new system identifier) whose
WAL continues after the old one's on timeline 1; ``archive_command`` keeps
archiving into the same archive; physical slots are not carried by pg_upgrade and
are made again on the new primary; logical slots and subscriptions are carried
from PostgreSQL 17 on. ALTER SYSTEM settings (``postgresql.auto.conf``) stay
behind: a setting of one major may not exist in the next. After link mode the
old data shares files with the new and must never start again: it is removed
unless kept on purpose (pg_upgrade has renamed its ``global/pg_control``, so a
start fails).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Literal

from pgharness.constants import DATA_MOUNT, UPGRADE_MODES, UPGRADE_STANDBY_METHODS
from pgharness.errors import HarnessError, ToolError, UpgradeError
from pgharness.image import ImageSpec, ensure_image, server_version, upgrade_image
from pgharness.lsn import Lsn
from pgharness.versions import parse_postgres_v, unbuildable
from pgharness.wait import poll_until

if TYPE_CHECKING:
    from pgharness.cluster import Cluster
    from pgharness.node import Node

log = logging.getLogger("pgharness")

Mode = Literal["link", "copy", "clone"]
StandbyMethod = Literal["rsync", "basebackup"]
MODES = UPGRADE_MODES
STANDBY_METHODS = UPGRADE_STANDBY_METHODS
#: The manual's rsync of a standby: the primary's old and new data folders into the standby's volume,
#: its old files reused where the size matches, the new ones hard-linked to them as on the primary.
RSYNC = ["rsync", "--archive", "--delete", "--hard-links", "--size-only", "--no-inc-recursive"]
#: Lines of a failed step's output an `UpgradeError` shows.
TAIL_LINES = 20
#: Seconds pg_upgrade may take (a copy of a large cluster takes long).
UPGRADE_TIMEOUT = 1800.0


@dataclass
class UpgradeReport:
    """What `upgrade` did: versions, images, pg_upgrade's mode, how each standby came over, step timings."""

    cluster: str
    from_major: int
    to_major: int
    image: str
    mode: str
    standbys: dict[str, str] = field(default_factory=dict)
    slots: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"upgraded cluster {self.cluster!r} from PostgreSQL {self.from_major} to {self.to_major}"]
        lines.append(f"  image: {self.image}")
        lines.append(f"  primary: pg_upgrade --{self.mode} ({self.seconds.get('pg_upgrade', 0):.1f} s)")
        for name, method in self.standbys.items():
            how = "rsync of the primary's old and new data" if method == "rsync" else "a fresh base backup"
            lines.append(f"  {name}: {how}")
        if self.slots:
            lines.append(f"  physical slots made again: {', '.join(self.slots)}")
        lines.append(f"  total: {sum(self.seconds.values()):.1f} s")
        return "\n".join(lines)


def _check_goes_up(from_major: int, to_major: int) -> None:
    if to_major <= from_major:
        raise UpgradeError(f"PostgreSQL {from_major} to {to_major}: pg_upgrade goes to a later major version only")


def upgrade(
    cluster: Cluster,
    to: int | str,
    *,
    mode: Mode = "link",
    standbys: StandbyMethod = "rsync",
    keep_old: bool = False,
    timeout: float | None = None,
    out: IO[str] = sys.stderr,
) -> UpgradeReport:
    """Upgrade `cluster` (its compose services: the primary and its standbys) to major `to`, or to node
    image `to`; return an `UpgradeReport`.

    `mode` is pg_upgrade's (``link``, ``copy``, ``clone``); `standbys` how each
    standby comes over (``rsync``, the manual's way, or ``basebackup``).
    `keep_old` keeps each old data folder as ``data.old`` in its volume
    (after link mode it shares files with the new cluster: never start it). Waits for
    each step within `timeout` seconds (default ``PGHARNESS_TIMEOUT``, else 60).

    Raises `UpgradeError`: before anything changed (a version that does not
    go up, nodes added at run time, a standby that is not caught up,
    ``pg_upgrade --check`` refusing: the nodes are started again as they were),
    or when pg_upgrade fails (the nodes are left stopped, pg_upgrade's output
    in the message; in copy and clone modes the old data is untouched).
    """
    if mode not in MODES:
        raise UpgradeError(f"upgrade mode {mode!r}: one of {', '.join(MODES)}")
    if standbys not in STANDBY_METHODS:
        raise UpgradeError(f"standbys={standbys!r}: one of {', '.join(STANDBY_METHODS)}")
    steps = _Steps.prepare(cluster, to, mode, out=out)
    log.info("### Upgrading cluster %r from %d to %d (%s; standbys by %s)", cluster.name, steps.report.from_major,
             steps.report.to_major, mode, standbys)  # fmt: skip
    # The manual's steps; until pg_upgrade runs, a refusal starts every stopped node again (the one place).
    try:
        steps.stop_caught_up(timeout)
        steps.lap("stop")
        steps.run_pg_upgrade("check")
        steps.lap("check")
    except _NothingChanged as e:
        _start_stopped([steps.primary, *steps.followers])
        again = f"the cluster runs on PostgreSQL {steps.report.from_major} again"
        raise UpgradeError(f"{e}\nnothing was changed: {again}") from None
    steps.run_pg_upgrade(mode)
    steps.lap("pg_upgrade")
    steps.bring_over(standbys, keep_old=keep_old)
    steps.lap("standbys")
    steps.switch(timeout)
    steps.lap("start")
    log.info("### %s", steps.report)
    return steps.report


class _NothingChanged(UpgradeError):
    """A step refused before pg_upgrade changed anything: `upgrade` starts the stopped nodes again."""


@dataclass
class _Steps:
    """One upgrade's state between the manual's steps: the nodes, the images, the report."""

    cluster: Cluster
    primary: Node
    followers: list[Node]
    new_image: str
    tool: str  #: the upgrade image: the old server beside the new one
    report: UpgradeReport
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def prepare(cls, cluster: Cluster, to: int | str, mode: str, *, out: IO[str]) -> _Steps:
        """Check what can be checked before anything stops (nodes added at run time, a version that does
        not go up or cannot be built: from the numbers, before any build), build the images, compare the
        postgres users' uids."""
        primary, nodes = cluster.primary, cluster.nodes
        added = [node.name for node in nodes if node.name not in (cluster.compose.services or [])]
        if added:
            raise UpgradeError(
                f"cluster {cluster.name!r} has nodes added at run time ({', '.join(added)}): the upgrade brings "
                "over the compose services' nodes; remove those first (cluster.remove_node)"
            )
        from_major = primary.major
        if isinstance(to, int):
            _check_goes_up(from_major, to)
            why = unbuildable(to, "upgrade to a node image of it instead (to=IMAGE)")
            if why:
                raise UpgradeError(why)
        new_image = ensure_image(ImageSpec(to), out=out) if isinstance(to, int) else to
        to_major = parse_postgres_v(server_version(new_image))
        _check_goes_up(from_major, to_major)
        tool = upgrade_image(cluster.image, new_image, out=out)
        owners = {image: cluster.tools.run(["id", "-u"], image=image, what="id -u").strip()
                  for image in (cluster.image, tool)}  # fmt: skip
        if len(set(owners.values())) != 1:
            raise UpgradeError(
                f"the postgres user is uid {owners[cluster.image]} in {cluster.image} and {owners[tool]} in "
                f"{new_image}: pg_upgrade runs both servers on one data folder, which needs one owner; use "
                "images whose postgres users have the same uid (the harness's and the official Debian-based "
                "images: 999)"
            )
        followers = [node for node in nodes if node.name != primary.name]
        report = UpgradeReport(cluster.name, from_major, to_major, new_image, mode)
        return cls(cluster, primary, followers, new_image, tool, report)

    def lap(self, step: str) -> None:
        """Note how long `step` took (since the previous one)."""
        now = time.monotonic()
        self.report.seconds[step] = round(now - self.started, 3)
        self.started = now

    def run(self, argv: list[str], mounts: dict[str, str], what: str) -> str:
        """A step's tool in the upgrade image; `UpgradeError` with the tail of its output when it fails."""
        try:
            return self.cluster.tools.run(argv, image=self.tool, what=what, mounts=mounts, timeout=UPGRADE_TIMEOUT)
        except ToolError as e:
            # pg_upgrade says why before its last line ("Failure, exiting"): the output's tail.
            tail = "\n".join(line for line in e.output.strip().splitlines()[-TAIL_LINES:])
            raise UpgradeError(f"{what} failed:\n{tail}" if tail else str(e)) from None

    def stop_caught_up(self, timeout: float | None) -> None:
        """Note the physical slots (pg_upgrade does not carry them); stop the primary, then each standby
        once it has replayed the primary's shutdown checkpoint; check, as the manual does, that every
        "Latest checkpoint location" matches the primary's. `_NothingChanged` when one does not."""
        primary = self.primary
        self.report.slots = [str(name) for (name,) in primary.sql(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT temporary ORDER BY 1"
        )]  # fmt: skip
        primary.stop()
        checkpoint = self.latest_checkpoint(primary)
        for node in self.followers:
            try:
                _wait_replayed(node, checkpoint, timeout=timeout)
            except HarnessError as e:
                raise _NothingChanged(f"standby {node.name!r} is not caught up: {e}") from None
            # A restart point at that checkpoint now, not at the shutdown: a fast stop can end abnormally (a
            # WAL receiver just forked to reconnect to the stopped primary dies of the SIGTERM), and then the
            # standby's control file keeps its previous restart point.
            node.sql("CHECKPOINT")
            node.stop()
            at = self.latest_checkpoint(node)
            if at != checkpoint:
                raise _NothingChanged(
                    f"standby {node.name!r} stopped at checkpoint {at}, the primary at {checkpoint}: rsync would "
                    "leave it inconsistent"
                )

    def run_pg_upgrade(self, mode: str) -> None:
        """pg_upgrade on the primary's data: ``check`` (its refusal is `_NothingChanged`), or the upgrade in
        `mode` (its failure leaves the nodes stopped, and says what became of the old data)."""
        data = self.cluster.tools.data(self.primary)
        if mode == "check":
            try:
                self.run(["pgharness", "upgrade", "check"], data, "pg_upgrade --check")
            except UpgradeError as e:
                raise _NothingChanged(str(e)) from None
            return
        try:
            self.run(["pgharness", "upgrade", mode], data, f"pg_upgrade --{mode}")
        except UpgradeError as e:
            kept = "the old data is untouched" if mode != "link" else "the old data may be linked into the new"
            raise UpgradeError(f"{e}\nthe nodes are stopped; {kept} (in volume {', '.join(data)})") from None

    def bring_over(self, method: StandbyMethod, *, keep_old: bool) -> None:
        """Each standby by the manual's rsync of the primary's old and new data (one container: the rsync,
        standby.signal, the swap), or emptied for a fresh base backup at its start; then the primary's swap
        of data.new for data."""
        tools = self.cluster.tools
        primary_data = tools.data(self.primary, at="/primary")
        swap = ["pgharness", "upgrade-swap", *([] if keep_old else ["drop-old"])]
        bring_over = f'"$@" && touch "$PGDATA.new/standby.signal" && {" ".join(swap)}'
        for node in self.followers:
            if method == "rsync":
                argv = ["sh", "-c", bring_over, "rsync", *RSYNC, "/primary/data", "/primary/data.new", f"{DATA_MOUNT}/"]
                self.run(argv, {**primary_data, **tools.data(node)}, f"rsync of standby {node.name!r}")
            else:
                # An empty data folder: the node takes a base backup of the upgraded primary at its start.
                self.run(["rm", "-rf", f"{DATA_MOUNT}/data"], tools.data(node), f"the removal of {node.name!r}'s data")
            self.report.standbys[node.name] = method
        self.run(swap, tools.data(self.primary), "the swap of the primary's data")

    def switch(self, timeout: float | None) -> None:
        """Every node on the new major's image: the primary first, its physical slots made again, then the
        standbys that stream through them."""
        self.cluster.switch_image(self.new_image, [self.primary.name], timeout=timeout)
        for slot in self.report.slots:
            self.primary.sql("SELECT pg_create_physical_replication_slot(%s)", (slot,))
        self.cluster.switch_image(self.new_image, [node.name for node in self.followers], timeout=timeout)

    def latest_checkpoint(self, node: Node) -> Lsn:
        """The "Latest checkpoint location" of stopped `node`, by the old major's pg_controldata."""
        output = self.cluster.tools.run(
            ["/opt/pgharness/old/bin/pg_controldata", f"{DATA_MOUNT}/data"],
            image=self.tool,
            what=f"pg_controldata of {node.name!r}",
            mounts=self.cluster.tools.data(node),
        )
        for line in output.splitlines():
            if line.startswith("Latest checkpoint location:"):
                return Lsn.parse(line.split(":", 1)[1].strip())
        raise UpgradeError(f"pg_controldata of {node.name!r} shows no latest checkpoint:\n{output}")


def _start_stopped(nodes: list[Node]) -> None:
    """Start again those of `nodes` the upgrade stopped (a refusal leaves the cluster as it found it)."""
    for node in nodes:
        if node.container.status != "running":
            node.start()


def _wait_replayed(node: Node, checkpoint: Lsn, *, timeout: float | None) -> None:
    poll_until(
        lambda: node.lsn("replay"),
        lambda replayed: replayed is not None and replayed > checkpoint,
        what=f"standby {node.name!r} to replay the primary's shutdown checkpoint at {checkpoint}",
        timeout=timeout,
        nodes=(node,),
    )


__all__ = ["MODES", "STANDBY_METHODS", "UpgradeReport", "upgrade"]
