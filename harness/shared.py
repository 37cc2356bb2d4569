"""One cluster shared by many tests: what a test left is removed after it, and a cluster a test changed
is not shared again.

Before a test's body runs, `take_baseline` notes what the shared cluster holds:
its nodes, each primary's databases and relations, and each node's state
(roles, slots, publications, subscriptions, settings...). After the body,
`reset` removes what it made: nodes added at run time (and the archived files
of timelines above the primary's, which such nodes made, even ones the test
removed itself), backups, and on each primary new subscriptions,
publications, replication slots, databases, tables, sequences and views; it
puts ALTER SYSTEM settings back, and checks that the rest is as the baseline
found it: the primary still the primary, every standby streaming and
replaying, nothing else changed. When it is not, `reset` says what differs,
and the caller starts the cluster afresh instead of sharing it::

    before = take_baseline(cluster)
    ...  # the test
    problem = reset(cluster, before)   # None: clean, share it again
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from psycopg import sql as pgsql

from pgharness import faults, nodeconfig
from pgharness.errors import WaitTimeout
from pgharness.wait import poll_until

if TYPE_CHECKING:
    from pgharness.cluster import Cluster
    from pgharness.session import Session

log = logging.getLogger("pgharness")

#: Seconds a reset waits for the standbys to replay what it dropped.
CATCHUP_TIMEOUT = 30.0
#: Seconds a reset waits for a node to reload the settings it had before the test.
SETTINGS_TIMEOUT = 10.0

#: What a node is: its role and, on a standby, whether it streams and replays (read by `reset`).
_ROLE_SQL = """
SELECT pg_is_in_recovery(),
       (SELECT timeline_id FROM pg_control_checkpoint()),
       (SELECT status FROM pg_stat_wal_receiver),
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END,
       ARRAY(SELECT ARRAY[name, setting] FROM pg_file_settings
              WHERE sourcefile ~ '/postgresql[.]auto[.]conf$' AND error IS NULL ORDER BY seqno)
"""

#: What a test may make and the reset drops: databases, and relations (tables, sequences, views, materialized
#: views, foreign tables) in any schema but the system's, with their kind: `_DROP`.
_MADE_SQL = """
SELECT ARRAY(SELECT datname::text FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'
             ORDER BY 1),
       ARRAY(SELECT ARRAY[c.relkind::text, n.nspname::text, c.relname::text]
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f') AND NOT c.relispartition
                AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
              ORDER BY 1)
"""

#: The DROP for each kind of relation a test may make.
_DROP = {"r": "TABLE", "p": "TABLE", "S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE"}

#: What a test must leave as it found it, by name (the cluster is not shared again otherwise). The
#: settings are the node's own (files and what it runs with); the rest is the cluster's catalog.
_STATE_SQL = {
    "settings files": "SELECT format('%s = %s', name, setting) FROM pg_file_settings",
    "settings in use": "SELECT format('%s = %s', name, setting) FROM pg_settings WHERE source = 'configuration file'",
    "per-database and per-role settings": """
        SELECT format('%s/%s = %s', setdatabase, setrole, array_to_string(setconfig, ',')) FROM pg_db_role_setting
    """,
    "client authentication (pg_hba.conf) rules": """
        SELECT concat_ws(' ', type, database::text, user_name::text, address, netmask, auth_method, options::text)
          FROM pg_hba_file_rules
    """,
    "roles": "SELECT rolname::text FROM pg_roles",
    "replication slots": "SELECT slot_name::text FROM pg_replication_slots",
    "publications": "SELECT pubname::text FROM pg_publication",
    "subscriptions": "SELECT subname::text FROM pg_subscription",
    "prepared transactions": "SELECT gid FROM pg_prepared_xacts",
    "tablespaces": "SELECT spcname::text FROM pg_tablespace",
    "schemas": "SELECT nspname::text FROM pg_namespace WHERE nspname !~ '^pg_(temp|toast_temp)_'",
    "extensions": "SELECT extname::text FROM pg_extension",
    "other relations": """
        SELECT format('%I.%I (%s)', n.nspname, c.relname, c.relkind)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind NOT IN ('r', 'p', 'S', 'v', 'm', 'f', 'i', 'I', 't')
           AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
    """,
}
_STATE_QUERY = "SELECT " + ",\n".join(f"ARRAY(SELECT x FROM ({q}) AS s(x) ORDER BY 1)" for q in _STATE_SQL.values())


@dataclass(frozen=True)
class NodeState:
    """What one node is and holds, as `take_baseline` and `reset` read it."""

    in_recovery: bool
    timeline: int
    receiver: str | None
    replay_paused: bool | None
    state: Mapping[str, tuple[str, ...]]
    #: What ALTER SYSTEM has set (postgresql.auto.conf): name and value, in order.
    altered: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Made:
    """The databases and relations of one primary (what a test may add, and the reset drops)."""

    databases: frozenset[str]
    relations: frozenset[tuple[str, str, str]]


@dataclass(frozen=True)
class Baseline:
    """What a shared cluster held before a test: each node's state (by node name), the databases and
    relations of each primary (the cluster's, and independent ones: a logical subscriber), the backup
    tools run."""

    states: Mapping[str, NodeState]
    made: Mapping[str, Made]
    backup_runs: int
    #: `Cluster.nodes_run` then: a node added since may have archived a timeline of its own.
    nodes_run: int = 0


def read_state(session: Session) -> NodeState:
    """The role, streaming and state of the node `session` is connected to (two statements)."""
    role, lists = session.row(_ROLE_SQL), session.row(_STATE_QUERY)
    assert role is not None  # each query returns one row
    assert lists is not None
    in_recovery, timeline, receiver, paused, altered = role
    return NodeState(
        in_recovery=bool(in_recovery),
        timeline=int(timeline),
        receiver=receiver,
        replay_paused=paused,
        state={what: tuple(values) for what, values in zip(_STATE_SQL, lists, strict=True)},
        altered=tuple((name, value) for name, value in altered),
    )


def undo_alter_system(session: Session, now: NodeState, was: NodeState, *, timeout: float = SETTINGS_TIMEOUT) -> None:
    """Put the ALTER SYSTEM settings of `session`'s node back as `was` had them (what was set since is
    reset, what was reset is set again), reload, and wait until the settings it runs with are `was`'s."""
    wanted, found = dict(was.altered), dict(now.altered)
    log.info("### Undoing ALTER SYSTEM on node %r", session.node.name)
    changed = {name: value for name, value in wanted.items() if found.get(name) != value}
    nodeconfig.alter_system(session, changed, reset=sorted(found.keys() - wanted.keys()))
    nodeconfig.signal_reload(session.node)
    poll_until(
        lambda: read_state(session).state["settings in use"],
        lambda in_use: in_use == was.state["settings in use"],
        what=f"node {session.node.name!r} to run with its settings of before the test again",
        timeout=timeout,
    )


def _made(session: Session) -> Made:
    databases, relations = session.rows(_MADE_SQL)[0]
    return Made(frozenset(databases), frozenset((kind, schema, name) for kind, schema, name in relations))


def take_baseline(cluster: Cluster) -> Baseline:
    """What `cluster` holds now (before a test): one connection to each node."""
    states, made = {}, {}
    for node in cluster.nodes:
        with node.session() as session:
            states[node.name] = read_state(session)
            if not states[node.name].in_recovery:
                made[node.name] = _made(session)
    return Baseline(states=states, made=made, backup_runs=cluster.backups.runs, nodes_run=cluster.nodes_run)


def _drop_made(session: Session, now: NodeState, was: NodeState, made: Made) -> None:
    """Drop on the primary of `session` what was made since `was` and `made` (its subscriptions gone
    already): publications, replication slots, databases, then relations."""
    for publication in _new(now, was, "publications"):
        session.rows(pgsql.SQL("DROP PUBLICATION {}").format(pgsql.Identifier(publication)))
    for slot in _new(now, was, "replication slots"):
        session.rows(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        )
    found = _made(session)
    for database in sorted(found.databases - made.databases):
        session.rows(pgsql.SQL("DROP DATABASE {} WITH (FORCE)").format(pgsql.Identifier(database)))
    # Tables first: CASCADE takes their views and owned sequences with them.
    for kind, schema, name in sorted(found.relations - made.relations, key=lambda r: (_DROP[r[0]] != "TABLE", r)):
        statement = pgsql.SQL("DROP {} IF EXISTS {} CASCADE").format(
            pgsql.SQL(_DROP[kind]), pgsql.Identifier(schema, name)
        )
        session.rows(statement)


def _wait_streaming(session: Session, was: NodeState) -> None:
    """Wait (`CATCHUP_TIMEOUT`) until the WAL receiver of `session`'s node is as `was` found it; on time-out,
    return: the caller reports what differs."""
    with suppress(WaitTimeout):
        poll_until(
            lambda: session.scalar("SELECT status FROM pg_stat_wal_receiver"),
            lambda status: status == was.receiver,
            what=f"node {session.node.name!r}'s WAL receiver to be {was.receiver}",
            timeout=CATCHUP_TIMEOUT,
        )


def _new(now: NodeState, was: NodeState, what: str) -> list[str]:
    return sorted(set(now.state[what]) - set(was.state[what]))


def differences(before: NodeState, after: NodeState, *, name: str) -> list[str]:
    """What differs between two states of node `name`, one phrase each (nothing: the same)."""
    found = []
    if after.in_recovery != before.in_recovery:
        found.append(f"{name} is {'a standby' if after.in_recovery else 'a primary'} now")
    if after.timeline != before.timeline:
        found.append(f"{name} is on timeline {after.timeline}, not {before.timeline}")
    if before.in_recovery and after.in_recovery:
        if after.receiver != before.receiver:
            found.append(f"{name}'s WAL receiver is {after.receiver or 'not running'}, not {before.receiver}")
        if after.replay_paused and not before.replay_paused:
            found.append(f"{name}'s replay is paused")
    for what, values in after.state.items():
        was = before.state.get(what, ())
        if values != was:
            # A setting's name, never its value (primary_conninfo holds a password).
            names = "settings" in what
            added = {v.split(" = ")[0] if names else v for v in set(values) - set(was)}
            gone = {v.split(" = ")[0] if names else v for v in set(was) - set(values)}
            parts = [
                f"{label}: {', '.join(sorted(items))}"
                for label, items in (("new", added - gone), ("other values", added & gone), ("gone", gone - added))
                if items
            ]
            change = "; ".join(parts)
            found.append(f"{name}'s {what} changed ({change or 'order'})")
    return found


def reset(cluster: Cluster, before: Baseline) -> str | None:
    """Remove what was made on `cluster` since `before`, then check the rest is as `before` found it.

    Removed: nodes added since (and the archived files of the timelines they
    made), every backup when a backup tool ran; on each primary (the cluster's, and
    independent ones such as a logical subscriber), new subscriptions, publications
    and replication slots, then databases and relations (``DROP ... WITH (FORCE)``,
    ``DROP TABLE ... CASCADE``). ALTER SYSTEM settings are put back on every node,
    and reloaded (`undo_alter_system`). Returns None when the cluster is as `before`
    found it and its standbys have replayed the drops; else what differs, in one
    line (the cluster should not be shared again).
    """
    try:
        return _reset(cluster, before)
    except Exception as e:  # noqa: BLE001 -- anything that fails here means: do not share it again
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def _reset(cluster: Cluster, before: Baseline) -> str | None:
    # A fault the test switched on and left (a partition, a degraded link): the cluster is made afresh.
    left = faults.active(cluster, forget=True)
    if left:
        return "; ".join(f"{node} is {what}, not healed" for node, what in sorted(left.items()))
    nodes = {node.name: node for node in cluster.nodes}
    missing = sorted(before.states.keys() - nodes.keys())
    if missing:
        return f"node(s) {', '.join(missing)} gone"
    added = sorted(nodes.keys() - before.states.keys())
    for name in added:
        cluster.remove_node(name)
    primary = cluster.primary
    if added or cluster.nodes_run != before.nodes_run:
        # A node the test added (and perhaps removed itself) may have archived its own timeline: the cluster
        # does not own it, and its standbys would follow it at their next restart.
        cluster.archive.remove_timelines_above(before.states["primary"].timeline)
    if cluster.backups.runs != before.backup_runs:
        cluster.backups.clear()
    with ExitStack() as stack:
        # One connection to each node for the whole reset.
        sessions = {name: stack.enter_context(nodes[name].session()) for name in sorted(before.states)}
        now = {name: read_state(session) for name, session in sessions.items()}
        # Subscriptions first, everywhere: each holds a slot on its publisher.
        for name in sorted(before.made):
            for subscription in _new(now[name], before.states[name], "subscriptions"):
                sessions[name].rows(pgsql.SQL("DROP SUBSCRIPTION {}").format(pgsql.Identifier(subscription)))
        for name, made in sorted(before.made.items()):
            _drop_made(sessions[name], now[name], before.states[name], made)
        problems = []
        for name, session in sessions.items():
            was = before.states[name]
            if now[name].altered != was.altered:
                undo_alter_system(session, now[name], was)
            if was.in_recovery and was.receiver == "streaming":
                # Its role first (a promoted or paused standby would not catch up), then, once it has
                # replayed the drops (its WAL receiver may still be connecting again after a fault), the rest.
                role = differences(was, replace(now[name], receiver=was.receiver, state=was.state), name=name)
                if role:
                    problems += role
                    continue
                primary.wait_for_catchup(nodes[name], timeout=CATCHUP_TIMEOUT)
                # A WAL receiver that a fault's end made connect again is not a change: wait for it.
                _wait_streaming(session, was)
            problems += differences(was, read_state(session), name=name)
    return "; ".join(problems) or None


__all__ = ["Baseline", "Made", "NodeState", "differences", "read_state", "reset", "take_baseline", "undo_alter_system"]
