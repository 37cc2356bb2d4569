"""The hot standby in depth (section 26.5 of the manual): queries on a standby against replay.

A standby query that holds what replay must remove is cancelled after
max_standby_streaming_delay, with the SQLSTATE PostgreSQL uses for it and its
pg_stat_database_conflicts counter; with -1 replay waits instead;
hot_standby_feedback avoids the snapshot conflict at the primary's expense. As
PostgreSQL's own src/test/recovery/t/031_recovery_conflict.pl does it, with a
background session held open on the standby.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import psycopg.errors
import pytest

from pgharness.constants import DATA_MOUNT
from pgharness.convergence import assert_converged
from pgharness.errors import NotConverged
from pgharness.failover import rejoin, repoint
from pgharness.load import pgbench, pgbench_init
from pgharness.recovery import RecoveryTarget
from tests.scenarios.helpers import in_one_transaction

pytestmark = pytest.mark.hot_standby

DB = "conflicts"
#: Settings of the standby in these scenarios: conflicts resolved after 50 ms, and logged.
STANDBY = {
    "max_standby_streaming_delay": "50ms",
    "log_recovery_conflict_waits": True,
    "deadlock_timeout": "10ms",
}


def standby_settings(major):
    """`STANDBY`, but log_recovery_conflict_waits where the version has it (14+)."""
    return {k: v for k, v in STANDBY.items() if k != "log_recovery_conflict_waits" or major >= 14}


@contextmanager
def standby_settings_applied(standby, settings):
    """`settings` on the shared standby for the block (ALTER SYSTEM, reloaded), reset after it."""
    delay = "SHOW max_standby_streaming_delay"
    was = standby.scalar(delay)
    standby.set_config(settings)
    standby.poll_query_until(delay, str(settings["max_standby_streaming_delay"]))  # reloaded everywhere
    try:
        yield standby
    finally:
        standby.reset_config(*settings)
        standby.poll_query_until(delay, was)


@dataclass
class Conflicts:
    """The primary and the standby of a conflict scenario, and where the standby's log stood at its start."""

    primary: object
    standby: object
    since: str


@pytest.fixture
def conflict_cluster(shared_cluster, pg_major):
    """The shared primary and standby, the standby cancelling conflicting queries after 50 ms, with a
    database and a table (all undone after the test)."""
    primary, standby = shared_cluster.primary, shared_cluster.standby
    with standby_settings_applied(standby, standby_settings(pg_major)):
        primary.sql(f"CREATE DATABASE {DB}")
        try:
            primary.sql("CREATE TABLE t (a int, b int)", dbname=DB)
            primary.sql("INSERT INTO t SELECT i % 3, 0 FROM generate_series(1, 20) i", dbname=DB)
            primary.wait_for_catchup(standby)
            yield Conflicts(primary, standby, standby.log_position())
        finally:
            primary.sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def cancelled_by_recovery(pending, sqlstate="40001"):
    """The statement was cancelled by a recovery conflict: its error's SQLSTATE (40001,
    serialization_failure; 57P04, database_dropped, for a dropped database)."""
    error = pending.error(timeout=60)
    assert error is not None, f"{pending!r} succeeded: {pending.result()!r}"
    assert error.sqlstate == sqlstate, f"{type(error).__name__}: {error}"
    return error


def test_snapshot_conflict_cancels_the_standby_query(conflict_cluster):
    primary, standby = conflict_cluster.primary, conflict_cluster.standby
    with standby.background_session(DB) as session:
        # A snapshot on the standby that still sees rows the primary is about to remove ...
        session.run("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert session.run("SELECT count(*) FROM t") == [(20,)]
        running = session.send("SELECT pg_sleep(60)")
        running.wait_until_blocked("PgSleep")

        # ... the primary updates them and VACUUM prunes the old versions: replaying that conflicts.
        primary.sql("UPDATE t SET a = a + 1", dbname=DB)
        primary.sql("VACUUM FREEZE t", dbname=DB)

        # The standby query is cancelled (serialization_failure), and the counter says why.
        error = cancelled_by_recovery(running)
        assert isinstance(error, psycopg.errors.SerializationFailure)
    standby.wait_for_conflicts("snapshot", dbname=DB)  # counted (once, or twice: a cancel, then a termination)
    standby.poll_log_until("might have needed to see row versions that must be removed", since=conflict_cluster.since)


def test_lock_conflict_cancels_the_standby_query(conflict_cluster):
    primary, standby = conflict_cluster.primary, conflict_cluster.standby
    with standby.background_session(DB) as session:
        # A reader holds a lock on the table on the standby ...
        session.run("BEGIN")
        session.run("LOCK TABLE t IN ACCESS SHARE MODE")
        running = session.send("SELECT pg_sleep(60)")
        running.wait_until_blocked("PgSleep")

        # ... and the primary takes ACCESS EXCLUSIVE, which the standby replays.
        in_one_transaction(primary, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", dbname=DB)
        cancelled_by_recovery(running)
    standby.wait_for_conflicts("lock", dbname=DB)  # counted (once, or twice: a cancel, then a termination)
    standby.poll_log_until("User was holding a relation lock for too long", since=conflict_cluster.since)


def test_tablespace_conflict_cancels_the_standby_query(conflict_cluster):
    primary, standby = conflict_cluster.primary, conflict_cluster.standby
    # A tablespace in a folder each node has (replay makes it on the standby too).
    for node in (primary, standby):
        node.exec("mkdir", "-p", f"{DATA_MOUNT}/tblspc")
    primary.sql("CREATE TABLESPACE spill LOCATION '/var/lib/pgharness/tblspc'")
    primary.wait_for_catchup(standby)

    with standby.background_session(DB) as session:
        # A cursor on the standby spills its rows to temporary files in that tablespace ...
        session.run("BEGIN")
        session.run("SET LOCAL work_mem = '64kB'")
        session.run("SET LOCAL temp_tablespaces = 'spill'")
        session.run("DECLARE c CURSOR FOR SELECT count(*) FROM generate_series(1, 6000)")
        assert session.run("FETCH FORWARD FROM c") == [(6000,)]
        running = session.send("SELECT pg_sleep(60)")
        running.wait_until_blocked("PgSleep")

        # ... and the primary drops the tablespace.
        primary.sql("DROP TABLESPACE spill")
        cancelled_by_recovery(running)
    standby.wait_for_conflicts("tablespace", dbname=DB)  # counted (once, or twice: a cancel, then a termination)


def test_buffer_pin_conflict_cancels_the_standby_query(conflict_cluster):
    primary, standby = conflict_cluster.primary, conflict_cluster.standby
    # An aborted INSERT that VACUUM will clean up, old enough not to be a snapshot conflict first.
    with primary.background_session(DB) as writer:
        writer.run("BEGIN")
        writer.run("INSERT INTO t VALUES (1, 0)")
        writer.run("ROLLBACK")
    in_one_transaction(primary, "LOCK t", dbname=DB)  # a commit, to flush the rollback's WAL
    primary.wait_for_catchup(standby)

    with standby.background_session(DB) as session:
        # A cursor on the standby pins the table's only block ...
        session.run("BEGIN")
        session.run("DECLARE c CURSOR FOR SELECT b FROM t")
        assert session.run("FETCH FORWARD FROM c") == [(0,)]
        running = session.send("SELECT pg_sleep(60)")
        running.wait_until_blocked("PgSleep")

        # ... which VACUUM FREEZE's cleanup needs for itself on replay.
        primary.sql("VACUUM FREEZE t", dbname=DB)
        cancelled_by_recovery(running)
    standby.wait_for_conflicts("bufferpin", dbname=DB)  # counted (once, or twice: a cancel, then a termination)
    standby.poll_log_until("User was holding shared buffer pin for too long", since=conflict_cluster.since)


def test_dropping_a_database_terminates_its_standby_sessions(conflict_cluster):
    primary, standby = conflict_cluster.primary, conflict_cluster.standby
    with standby.background_session(DB) as session:
        running = session.send("SELECT pg_sleep(60)")
        running.wait_until_blocked("PgSleep")

        # The primary drops the database the standby session is connected to.
        primary.sql(f"DROP DATABASE {DB}")

        # Its session is terminated: database_dropped (57P04).
        cancelled_by_recovery(running, sqlstate="57P04")
        assert not session.is_alive()
    standby.poll_log_until("User was connected to a database that must be dropped", since=conflict_cluster.since)


def test_startup_deadlock_conflict_cancels_the_standby_query(cluster_factory, pg_major):
    # As src/test/recovery/t/031_recovery_conflict.pl does it: a standby query holds a buffer pin that replay
    # needs, and waits for a lock that replay holds. Neither can go on: a deadlock with the startup process,
    # found after deadlock_timeout. (A long max_standby_streaming_delay, so it is not a buffer pin conflict.)
    standby_settings_ = {**standby_settings(pg_major), "max_standby_streaming_delay": "60s"}
    cluster = cluster_factory(settings={"max_prepared_transactions": 5}, node_settings={"standby": standby_settings_})
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE t (a int, b int)")
    primary.sql("CREATE TABLE locked (a int)")
    primary.sql("INSERT INTO t VALUES (1)")
    with primary.background_session() as writer:  # dead rows for VACUUM to prune
        writer.run("BEGIN")
        writer.run("INSERT INTO t(a) SELECT generate_series(1, 100)")
        writer.run("ROLLBACK")
    # A prepared transaction holds a lock on `locked`: replay holds it too, for as long as it stays prepared.
    in_one_transaction(primary, "LOCK TABLE locked", end="PREPARE TRANSACTION 'lock'")
    primary.sql("INSERT INTO t(a) VALUES (170)")
    primary.wait_for_catchup(standby)
    since = standby.log_position()

    with standby.background_session() as session:
        # The standby query pins t's block with a cursor, then waits for the lock on `locked` ...
        session.run("BEGIN")
        session.run("DECLARE c CURSOR FOR SELECT a FROM t")
        assert session.run("FETCH FORWARD FROM c") == [(1,)]
        waiting = session.send("SELECT * FROM locked")
        waiting.wait_until_blocked("relation")

        # ... while replay of VACUUM's pruning needs that block.
        primary.sql("VACUUM FREEZE t")
        cancelled_by_recovery(waiting)
    # Counted as a deadlock, not as a buffer pin conflict.
    assert standby.wait_for_conflicts("deadlock")["bufferpin"] == 0
    standby.poll_log_until("User transaction caused buffer deadlock with recovery.", since=since)
    primary.sql("ROLLBACK PREPARED 'lock'")


@pytest.fixture
def waiting_standby(shared_cluster, pg_major):
    """The shared standby with max_standby_streaming_delay = -1 (reset after the test)."""
    waits = {**standby_settings(pg_major), "max_standby_streaming_delay": -1}
    with standby_settings_applied(shared_cluster.standby, waits) as standby:
        yield standby


def test_without_a_delay_limit_replay_waits_for_the_standby_query(shared_cluster, waiting_standby, pg_major):
    # max_standby_streaming_delay = -1: replay waits as long as the standby query runs.
    primary, standby = shared_cluster.primary, waiting_standby
    since, lock_conflicts = standby.log_position(), standby.conflicts()["lock"]
    primary.sql("CREATE TABLE t (a int)")
    primary.wait_for_catchup(standby)

    with standby.background_session() as session:
        # A reader holds a lock on the standby; the primary takes ACCESS EXCLUSIVE and writes on.
        session.run("BEGIN")
        session.run("LOCK TABLE t IN ACCESS SHARE MODE")
        in_one_transaction(
            primary,
            "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
            "INSERT INTO t SELECT generate_series(1, 1000)",
            dbname="postgres",
        )
        target = primary.lsn("write")

        # Replay waits behind the reader: the standby receives the WAL, and lags behind in replay.
        primary.wait_for_catchup(standby, "flush", target)
        startup = standby.poll_query_until(
            "SELECT wait_event_type || ':' || wait_event FROM pg_stat_activity WHERE backend_type = 'startup'",
            "Lock:relation",
            timeout=30,
        )
        assert startup == "Lock:relation"
        if pg_major >= 14:  # log_recovery_conflict_waits: the startup process says what it waits for
            standby.poll_log_until("recovery still waiting after", since=since)
        lag = primary.lag(standby)
        assert lag.bytes is not None
        assert lag.bytes > 0
        assert session.is_alive()

        # The reader ends; replay catches up: no lag left.
        session.run("COMMIT")
    primary.wait_for_lag_below(standby, max_bytes=0)
    assert standby.conflicts()["lock"] == lock_conflicts  # none more


@pytest.fixture
def feedback_standby(shared_cluster, pg_major):
    """The shared standby with hot_standby_feedback on (reset after the test)."""
    feedback = {**standby_settings(pg_major), "hot_standby_feedback": True}
    with standby_settings_applied(shared_cluster.standby, feedback) as standby:
        yield standby


def test_hot_standby_feedback_prevents_the_snapshot_conflict(shared_cluster, feedback_standby):
    primary, standby = shared_cluster.primary, feedback_standby
    primary.sql("CREATE TABLE t (a int)")
    primary.sql("INSERT INTO t SELECT generate_series(1, 20)")
    primary.wait_for_catchup(standby)
    xmin = "SELECT backend_xmin IS NOT NULL FROM pg_stat_replication WHERE application_name = 'standby'"

    with standby.background_session() as session:
        # A snapshot held on the standby shows up on the primary as the walsender's backend_xmin ...
        session.run("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert session.run("SELECT count(*) FROM t") == [(20,)]
        primary.poll_query_until(xmin, True)

        # ... so VACUUM leaves the old row versions alone: nothing to conflict with.
        primary.sql("UPDATE t SET a = a + 1")
        primary.sql("VACUUM FREEZE t")
        primary.wait_for_catchup(standby)
        assert session.run("SELECT count(*) FROM t") == [(20,)]
        assert standby.conflicts()["snapshot"] == 0
        session.run("COMMIT")

    # Turning feedback off clears the primary's view of the standby's xmin.
    standby.set_config(hot_standby_feedback=False)
    primary.poll_query_until(xmin, False)


def test_a_delayed_standby_keeps_the_rows_a_mistaken_delete_removed(shared_cluster):
    # Replication is not backup: a mistaken DELETE reaches every standby at once. A delayed standby
    # (recovery_min_apply_delay) receives it at once too, but applies it only later.
    delayed = shared_cluster.add_node("delayed", settings={"recovery_min_apply_delay": "1h"})
    primary, prompt = shared_cluster.primary, shared_cluster.standby
    primary.sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
    primary.sql("INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 10) g")
    # (The delayed standby applies these an hour from now; for this scenario it gets them at once.)
    delayed.set_config(recovery_min_apply_delay=0)
    primary.wait_for_catchup(delayed)
    delayed.reset_config("recovery_min_apply_delay")
    delayed.poll_query_until("SHOW recovery_min_apply_delay", "1h")

    # The mistake: it replicates to the prompt standby, and reaches the delayed one's WAL ...
    primary.sql("DELETE FROM accounts WHERE id > 5")
    primary.wait_for_catchup(prompt)
    primary.wait_for_catchup(delayed, "flush")
    assert prompt.scalar("SELECT count(*) FROM accounts") == 5
    # ... where it is not applied: the rows are still there.
    assert delayed.scalar("SELECT count(*) FROM accounts") == 10

    # The operator pauses replay there, reads the rows back, and restores them on the primary.
    delayed.pause_replay()
    lost = delayed.sql("SELECT id, balance FROM accounts WHERE id > 5 ORDER BY id")
    assert [row[0] for row in lost] == [6, 7, 8, 9, 10]
    with primary.background_session() as session:
        session.run("BEGIN")
        for row in lost:
            session.run("INSERT INTO accounts VALUES (%s, %s)", row)
        session.run("COMMIT")
    primary.wait_for_catchup(prompt)
    assert primary.table_checksum("accounts") == delayed.table_checksum("accounts")


@pytest.mark.failover
def test_prepared_transactions_survive_a_failover(cluster_factory):
    # Two-phase commit (009_twophase.pl): prepared transactions replicate, and survive promotion.
    cluster = cluster_factory(settings={"max_prepared_transactions": 10})
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE t (id int)")
    for gid, value in (("to-commit", 1), ("to-roll-back", 2)):
        in_one_transaction(primary, f"INSERT INTO t VALUES ({value})", end=f"PREPARE TRANSACTION '{gid}'")
    primary.wait_for_catchup(standby)
    # On the standby their rows are not visible: they are neither committed nor rolled back yet.
    assert standby.scalar("SELECT count(*) FROM t") == 0

    # The primary crashes; the promoted standby still holds both, and finishes them.
    primary.kill()
    standby.promote()
    assert standby.sql("SELECT gid FROM pg_prepared_xacts ORDER BY gid") == [("to-commit",), ("to-roll-back",)]
    standby.sql("COMMIT PREPARED 'to-commit'")
    standby.sql("ROLLBACK PREPARED 'to-roll-back'")
    assert standby.sql("SELECT id FROM t") == [(1,)]
    assert standby.sql("SELECT gid FROM pg_prepared_xacts") == []


@pytest.mark.failover
def test_nodes_converge_after_a_workload_a_failover_and_a_rejoin(cluster_factory):
    cluster = cluster_factory(standbys=2)
    primary, standby, standby2 = cluster.primary, cluster.standby, cluster.node("standby2")

    # pgbench at a small scale with several clients, run inside the primary.
    pgbench_init(primary, scale=1)
    first = pgbench(primary, clients=4, transactions=200)
    assert first.transactions == 800

    # A failover in the middle: the primary crashes, standby2 is promoted (a node added at run time:
    # it archives once promoted, as a real primary does), the standby follows it, and the workload goes
    # on against the new primary (pgbench from inside it).
    primary.kill()
    standby2.promote()
    repoint(standby, standby2)
    second = pgbench(standby2, clients=4, transactions=200)
    assert second.transactions == 800

    # The old primary rejoins with pg_rewind, a cascading standby joins it; then every node holds
    # exactly what the new primary holds.
    rejoin(cluster, primary, standby2)
    cluster.add_node("cascade", upstream=primary)
    pgbench(standby2, clients=2, transactions=50)
    assert assert_converged(cluster).name == "standby2"


def test_the_convergence_check_reports_a_row_changed_behind_replications_back(shared_cluster):
    cluster = shared_cluster
    primary = cluster.primary
    pgbench_init(primary, scale=1)
    pgbench(primary, clients=2, transactions=50)
    primary.sql("CREATE SEQUENCE ticket")
    primary.sql("SELECT nextval('ticket')")

    # A node restored from a backup holds the same data (its sequence ahead within the logged margin) ...
    cluster.backups.take("now")
    copy = cluster.backups.restore("copy", "now", RecoveryTarget.immediate())
    assert_converged(cluster, nodes=[copy])

    # ... until a row is changed there behind replication's back: the check names the table.
    copy.sql("UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1")
    with pytest.raises(NotConverged, match="pgbench_branches") as excinfo:
        assert_converged(cluster, nodes=[copy])
    assert "node 'copy' differs from 'primary'" in str(excinfo.value)
