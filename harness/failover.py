"""Failover is the operator's move (section 26.3 of the manual): the harness plays the operator.

PostgreSQL detects no failure and tells no standby. These helpers do what an
operator (or Patroni) does, one explicit step at a time: tell whether a node
answers, fence a failed primary, choose the most advanced standby, promote
it, re-point the other standbys, and rewind the old primary into a standby of
the new one. `single_primary` catches split brain.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import psycopg

from pgharness.cluster import Cluster
from pgharness.constants import ARCHIVE_PATH, CONTAINER_PORT, DATA_MOUNT
from pgharness.errors import ClusterError, FailoverError, HarnessError, SplitBrain, ToolError
from pgharness.lsn import Lsn, parse_timeline_history
from pgharness.node import Node
from pgharness.quoting import conninfo, settings_lines
from pgharness.wait import poll_until

log = logging.getLogger("pgharness")


def writable_nodes(cluster: Cluster, *, timeout: float = 2.0) -> list[tuple[Node, int]]:
    """The running nodes that answer within `timeout` seconds and are not in recovery, with the timeline
    each writes on."""
    found = []
    for node in cluster.nodes:
        if node.container.status != "running" or not node.is_responsive(timeout=timeout):
            continue
        try:
            if not node.is_in_recovery():
                found.append((node, node.timeline()))
        except psycopg.OperationalError:
            continue
    return found


def single_primary(cluster: Cluster, *, ignore: Iterable[Node | str] = ()) -> Node:
    """The one node that accepts writes. Raises `SplitBrain` when two or more do, `ClusterError`
    for none. Nodes in `ignore` (a node restored from a backup, say: a primary of its own) do not count."""
    ignored = {cluster.node(node).name for node in ignore}
    writable = [(node, tli) for node, tli in writable_nodes(cluster) if node.name not in ignored]
    if len(writable) == 1:
        return writable[0][0]
    if not writable:
        raise ClusterError(f"cluster {cluster.name!r} has no primary: no running node is out of recovery")
    described = ", ".join(f"{node.name} (timeline {tli})" for node, tli in writable)
    diverged = " on diverged timelines" if len({tli for _, tli in writable}) > 1 else ""
    raise SplitBrain(f"split brain in cluster {cluster.name!r}: {len(writable)} writable nodes{diverged}: {described}")


def fence(node: Node, *, timeout: float | None = None) -> None:
    """Make sure a failed primary can accept no more writes: kill its container (paused or not), and
    return once it has exited (within `timeout` seconds; default ``PGHARNESS_TIMEOUT``, else 60)."""
    log.info("### Fencing node %r", node.name)
    if node.container.status in ("running", "paused"):
        node.kill(timeout=timeout)


def position(node: Node) -> Lsn:
    """How far a standby has got: the larger of its received and replayed LSNs."""
    received, replayed = node.lsn("receive"), node.lsn("replay")
    candidates = [lsn for lsn in (received, replayed) if lsn is not None]
    return max(candidates) if candidates else Lsn(0)


def choose_new_primary(standbys: Iterable[Node]) -> Node:
    """The most advanced of `standbys` (by received, then replayed WAL): the one that lost least."""
    ranked = sorted(standbys, key=position, reverse=True)
    if not ranked:
        raise ClusterError("no standby to promote")
    log.info("### Candidates: %s", ", ".join(f"{n.name} at {position(n)}" for n in ranked))
    return ranked[0]


def repoint(standby: Node, upstream: Node | str, *, timeout: float | None = None) -> Node:
    """Make `standby` stream from `upstream`; return it.

    When `standby` has WAL past the point where `upstream`'s timeline left its
    own (an asynchronous standby that received more from the failed primary
    than the standby promoted in its place), it cannot follow: it is rewound
    with `rejoin` instead. Otherwise primary_conninfo is set and reloaded
    (PostgreSQL 13+ needs no restart).
    """
    upstream = standby.cluster.node(upstream)
    switchpoint = diverged_at(standby, upstream)
    if switchpoint is not None:
        log.info(
            "### Node %r has WAL past %s, where %r's timeline left its own: rewinding it",
            standby.name,
            switchpoint,
            upstream.name,
        )
        return rejoin(standby.cluster, standby, upstream, timeout=timeout)
    log.info("### Re-pointing node %r to %r", standby.name, upstream.name)
    standby.set_config(primary_conninfo=primary_conninfo(standby.cluster, upstream.name, standby.name))
    return standby


def diverged_at(standby: Node, upstream: Node) -> Lsn | None:
    """Where `upstream`'s history left `standby`'s timeline, if `standby` has WAL past that point; else None.

    Read from `upstream`'s newest timeline history file and `standby`'s
    position (received or replayed, whichever is further: a received tail that
    is only part of a record counts too, so a doubtful case is rewound).
    """
    history = upstream.scalar(
        "SELECT pg_read_file('pg_wal/' || name) FROM pg_ls_waldir()"
        " WHERE name LIKE '%.history' ORDER BY name DESC LIMIT 1"
    )
    if history is None:
        return None
    timeline = standby.scalar(
        "SELECT coalesce((SELECT received_tli FROM pg_stat_wal_receiver), timeline_id) FROM pg_control_checkpoint()"
    )
    switchpoint = parse_timeline_history(str(history)).get(int(str(timeline)))
    if switchpoint is None or position(standby) <= switchpoint:
        return None
    return switchpoint


def primary_conninfo(cluster: Cluster, upstream: str, application_name: str, *, dbname: str | None = None) -> str:
    """primary_conninfo for a standby of `upstream` (a node name on the cluster's network), quoted; with
    `dbname` (which the slot-sync worker of PostgreSQL 17 needs) when given."""
    return conninfo(
        host=upstream,
        port=CONTAINER_PORT,
        user=cluster.replication_user,
        password=cluster.replication_password,
        application_name=application_name,
        dbname=dbname,
    )


def multi_host_dsn(nodes: Sequence[Node], *, target_session_attrs: str = "read-write", connect_timeout: int = 2) -> str:
    """A libpq multi-host connection string over `nodes`: clients find the primary without reconfiguration."""
    return conninfo(
        host=",".join(node.host for node in nodes),
        port=",".join(str(node.port) for node in nodes),
        dbname="postgres",
        user="postgres",
        password=nodes[0].cluster.password,
        target_session_attrs=target_session_attrs,
        connect_timeout=connect_timeout,
    )


def rejoin(cluster: Cluster, node: Node | str, upstream: Node | str, *, timeout: float | None = None) -> Node:
    """Bring `node` back as a standby of `upstream` with pg_rewind: a failed primary, or a
    standby with WAL that `upstream` never had (see `repoint`).

    Stops the node, rewinds its data directory to where it diverged from
    `upstream` (the transactions only it had are gone), points it at
    `upstream` (primary_conninfo in postgresql.auto.conf, standby.signal) and
    starts it; returns once it streams and has caught up, each wait within
    `timeout` seconds (default ``PGHARNESS_TIMEOUT``, else 60). Raises
    `FailoverError` when pg_rewind fails (with its own error line; the node
    is left stopped) or when the node does not stream afterwards.
    """
    node, source = cluster.node(node), cluster.node(upstream)
    name, upstream = node.name, source.name
    if node.container.status == "running":
        node.stop()
    # Before PostgreSQL 16, pg_rewind reads the source's timeline from its control
    # file, which a promoted node updates only at its next checkpoint: without one,
    # pg_rewind sees one timeline and decides that no rewind is needed.
    source.sql("CHECKPOINT")
    log.info("### Rewinding node %r against %r", name, upstream)
    data = f"{DATA_MOUNT}/data"
    # pg_rewind copies the source's configuration, postgresql.auto.conf included: the rewound node must not
    # take the source's own primary_slot_name (a slot on the old primary) for one it has upstream.
    settings = settings_lines(
        {
            "primary_conninfo": primary_conninfo(cluster, upstream, name),
            "primary_slot_name": "",
            "restore_command": f"cp {ARCHIVE_PATH}/%f %p",
        }
    )
    # The node is down; a crashed one leaves postmaster.pid naming PID 1, which in the
    # tool's container is alive: remove it, or pg_rewind's crash recovery refuses to start.
    # A node that did not shut down cleanly is recovered by pg_rewind in single-user mode, which
    # refuses to run with standby.signal ("standby mode is not supported by single-user servers"): the
    # signal goes, and comes back after.
    # A fixed script: the data directory, the source (its password in PGPASSWORD) and the
    # settings reach it as arguments, never as its text.
    # The settings go in before the rewind too: --restore-target-wal reads the target's restore_command (a
    # failed primary has none of its own), and pg_rewind replaces postgresql.auto.conf with the source's.
    script = (
        'rm -f "$1/postmaster.pid" "$1/standby.signal" "$1/recovery.signal" '
        '&& printf "%s\n" "$3" >> "$1/postgresql.auto.conf" '
        '&& pg_rewind --target-pgdata="$1" --source-server="$2" --restore-target-wal '
        '&& printf "%s\n" "$3" >> "$1/postgresql.auto.conf" && touch "$1/standby.signal"'
    )
    source_server = conninfo(host=upstream, user="postgres", dbname="postgres")
    argv = ["sh", "-c", script, "pg_rewind", data, source_server, settings]
    # The target's WAL from the last common checkpoint on may be gone from its pg_wal (a restart point
    # recycled it): --restore-target-wal fetches it with the node's restore_command, from the archive.
    tools = cluster.tools
    try:
        tools.run(argv, mounts={**tools.data(node), **tools.archive()}, what=f"pg_rewind of {name}")
    except ToolError as e:
        raise FailoverError(f"{e} (node {name!r} is left stopped)") from None
    node.start(wait=False)
    try:
        node.poll_query_until("SELECT status FROM pg_stat_wal_receiver", "streaming", timeout=timeout)
    except HarnessError as e:
        raise FailoverError(f"{name!r} did not stream from {upstream!r} after pg_rewind: {e}") from None
    source.wait_for_catchup(node, timeout=timeout)
    return node


def wait_until_unresponsive(node: Node, *, timeout: float | None = None) -> None:
    """Detect a failed node the way a monitor does: queries time out (or are refused)."""
    poll_until(
        node.is_responsive,
        lambda answered: not answered,
        what=f"node {node.name!r} to stop answering queries",
        timeout=timeout,
        nodes=(node,),
    )
