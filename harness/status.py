"""What each node of a cluster is doing: role, timeline, WAL positions, lag, sync state, archiver."""

from __future__ import annotations

from typing import Any

import psycopg

from pgharness.cluster import Cluster
from pgharness.errors import ClusterError
from pgharness.node import Node

NODE_QUERY = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT last_archived_wal FROM pg_stat_archiver),
       (SELECT failed_count FROM pg_stat_archiver)
"""

#: Each standby that streams from the node asked (a primary, or a standby its cascading standbys stream from):
#: bytes of WAL it has not replayed yet, and PostgreSQL's own replay_lag (the time between a flush on the
#: upstream and its replay there, last measured; NULL once an idle standby has caught up: it never counts
#: the time since the last commit).
REPLICATION_QUERY = """
SELECT application_name, sync_state,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
                       replay_lsn)::bigint,
       extract(epoch FROM replay_lag)::float8
  FROM pg_stat_replication
"""

COLUMNS = (
    "node", "role", "state", "timeline", "upstream", "current_lsn", "receive_lsn", "replay_lsn",
    "lag_bytes", "lag_seconds", "sync_state", "wal_receiver", "last_archived", "archive_failed", "faults",
    "split_brain", "slots", "publications", "subscriptions",
)  # fmt: skip

#: Every slot: its type, whether it is in use, its positions, whether its WAL is kept (and, 17+, whether
#: it is synchronised to standbys / synchronised from a primary).
SLOTS_QUERY = """
SELECT slot_name, slot_type, plugin, database, active, restart_lsn::text, confirmed_flush_lsn::text, wal_status
  FROM pg_replication_slots ORDER BY slot_name
"""
SLOT_COLUMNS_17 = ", failover, synced"
PUBLICATIONS_QUERY = "SELECT pubname FROM pg_publication ORDER BY pubname"
SUBSCRIPTIONS_QUERY = """
SELECT s.subname, s.subenabled, st.received_lsn::text, st.latest_end_lsn::text
  FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
 ORDER BY s.subname
"""


def cluster_status(cluster: Cluster) -> list[dict[str, Any]]:
    """One row per node (see `COLUMNS`); a node that is down or does not answer has only its state.

    ``split_brain`` is true on every writable node when more than one node accepts writes.
    """
    rows: dict[str, dict[str, Any]] = {}
    for node in cluster.nodes:
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(node=node.name, state=node.status(), role="down")
        rows[node.name] = row
        if node.container.status != "running":
            continue
        try:
            in_recovery, current, received, replayed, receiver, archived, failed = node.sql(NODE_QUERY)[0]
            row.update(
                role="standby" if in_recovery else "primary",
                timeline=node.timeline(),
                current_lsn=current,
                receive_lsn=received,
                replay_lsn=replayed,
                wal_receiver=receiver,
                last_archived=archived,
                archive_failed=failed,
            )
            row.update(logical_objects(node))
            row["faults"] = faults_on(node)
        except (psycopg.Error, ClusterError) as e:
            row["role"] = f"unreachable ({type(e).__name__})"
    for name, row in rows.items():
        if row["role"] not in ("primary", "standby"):
            continue
        # A standby's own walsenders are its cascading standbys': their lag is against it, their upstream.
        for application_name, sync_state, lag_bytes, lag_seconds in cluster.node(name).sql(REPLICATION_QUERY):
            if application_name in rows:
                rows[application_name].update(
                    upstream=name, sync_state=sync_state, lag_bytes=lag_bytes, lag_seconds=lag_seconds
                )
    primaries = [row for row in rows.values() if row["role"] == "primary"]
    for row in rows.values():
        row["split_brain"] = len(primaries) > 1 and row["role"] == "primary"
    return list(rows.values())


def faults_on(node: Node) -> str | None:
    """The faults on `node` now, as the node and the engine hold them: partitioned, degraded (loss, rate,
    delay), starved (CPUs, memory); None when there are none. Seen from any process."""
    from pgharness import faults

    found = ["partitioned"] if faults.is_partitioned(node) else []
    for word, what in (("degraded", faults.degradation_of(node)), ("starved", faults.starvation_of(node))):
        if what:
            found.append(f"{word}: {what}")
    return "; ".join(found) or None


def split_brain(rows: list[dict[str, Any]]) -> list[str]:
    """The nodes of `cluster_status` rows that accept writes while another does too (empty: no split brain)."""
    return [str(row["node"]) for row in rows if row.get("split_brain")]


def logical_objects(node: Node) -> dict[str, list[dict[str, Any]]]:
    """A node's replication slots (physical and logical), publications and subscriptions (with the last
    apply error count, 15+), as lists of dicts."""
    query = SLOTS_QUERY.replace(", wal_status", ", wal_status" + SLOT_COLUMNS_17) if node.major >= 17 else SLOTS_QUERY
    found: dict[str, list[dict[str, Any]]] = {}
    with node.connect() as conn:
        for key, statement in (
            ("slots", query),
            ("publications", PUBLICATIONS_QUERY),
            ("subscriptions", SUBSCRIPTIONS_QUERY),
        ):
            cur = conn.execute(statement)
            names = [d.name for d in cur.description or []]
            found[key] = [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
        if node.major >= 15 and found["subscriptions"]:
            errors = dict(conn.execute("SELECT subname, apply_error_count FROM pg_stat_subscription_stats").fetchall())
            for subscription in found["subscriptions"]:
                subscription["apply_error_count"] = errors.get(subscription["subname"])
    return found
