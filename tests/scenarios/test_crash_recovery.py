"""Crash recovery: a backend killed, a server stopped with `immediate`, WAL that ends in a torn record.

What a crash leaves is replayed from WAL at the next start; what was
committed stays committed, on the primary and on its standbys.
"""

import psycopg
import pytest

from pgharness.constants import DATA_MOUNT
from pgharness.load import WriteLoad
from pgharness.lsn import Lsn, segment_start
from pgharness.recovery import RecoveryTarget
from pgharness.wait import poll_until
from tests.scenarios.helpers import in_one_transaction

pytestmark = pytest.mark.crash


def kill_a_backend(node):
    """SIGKILL one backend of `node` (a session opened for it): the postmaster must assume shared memory is
    corrupt."""
    with node.connect() as victim:
        # The shell's own kill: not every image has /bin/kill. The pid goes as an argument, not as script text.
        node.exec("sh", "-c", 'kill -KILL "$1"', "sh", str(victim.info.backend_pid))


def closed(connection):
    """Whether the server has closed `connection` (a query on it fails)."""
    try:
        connection.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_a_killed_backend_restarts_every_backend_and_nothing_committed_is_lost(cluster):
    primary, standby = cluster.primary, cluster.standby
    WriteLoad.create_table(primary)
    started = primary.scalar("SELECT pg_postmaster_start_time()")
    walsender = primary.scalar("SELECT pid FROM pg_stat_replication")

    with WriteLoad(primary.dsn(), workers=2) as load, primary.connect() as bystander:
        load.wait_for_commits(200)
        kill_a_backend(primary)

        # The postmaster ends every other backend (restart_after_crash is on by default): an idle session
        # is closed. (The server also tries to tell it why, SQLSTATE 57P02, on a best-effort basis: a
        # client may never read that notice, so it is not asserted.) ...
        poll_until(lambda: closed(bystander), what="the bystander's session to be closed", nodes=(primary,))
        # ... replays WAL from the last checkpoint, and takes connections again: the writers reconnect.
        load.wait_for_commits(load.log.count() + 200)

    # The same postmaster (the container did not restart), and every backend new: the walsender too; the
    # standby reconnected by itself.
    assert primary.scalar("SELECT pg_postmaster_start_time()") == started
    primary.poll_query_until(f"SELECT count(*) FROM pg_stat_replication WHERE pid <> {walsender}", 1)
    primary.wait_for_catchup(standby)
    # Nothing a writer saw acknowledged is missing, on either node.
    assert load.log.lost_commits(primary) == set()
    assert load.log.lost_commits(standby) == set()


def test_without_restart_after_crash_the_server_stops_and_says_so(cluster):
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge AS SELECT 1 AS col")
    primary.set_config(restart_after_crash=False)

    # The same crash now ends the server: the node's container exits with the postmaster's failure.
    kill_a_backend(primary)
    assert primary.wait_exited() != 0
    assert not primary.is_responsive()
    # The standby lost its primary and waits; a start recovers the primary and it streams again.
    standby.poll_query_until("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'", 0)
    primary.start()
    primary.sql("INSERT INTO hoge VALUES (2)")
    primary.wait_for_catchup(standby)
    assert standby.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]


def test_a_prepared_transaction_survives_a_crash_and_a_pitr_that_ends_while_it_is_prepared(cluster_factory):
    cluster = cluster_factory(settings={"max_prepared_transactions": 5})
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")
    cluster.backups.take("base")

    # A transaction is prepared, then the server crashes (an immediate stop: no shutdown checkpoint).
    in_one_transaction(primary, "INSERT INTO hoge VALUES (1)", end="PREPARE TRANSACTION 'survivor'")
    primary.stop("immediate")
    primary.start()
    # Recovery brings it back prepared, holding its row (invisible until it is decided).
    prepared = "SELECT gid FROM pg_prepared_xacts"
    assert primary.sql(prepared) == [("survivor",)]
    assert primary.sql("SELECT count(*) FROM hoge") == [(0,)]

    # A restore point while it is prepared; then it commits, and the standby, which replayed the PREPARE
    # (a hot standby does not list it in pg_prepared_xacts), sees the row.
    primary.sql("SELECT pg_create_restore_point('while-prepared')")
    primary.sql("COMMIT PREPARED 'survivor'")
    primary.wait_for_catchup(standby)
    assert standby.sql("SELECT col FROM hoge") == [(1,)]
    primary.wait_for_archived(primary.switch_wal())

    # A point-in-time recovery that ends at the restore point has it prepared, still to be decided.
    restored = cluster.backups.restore("restored", "base", RecoveryTarget.name("while-prepared"))
    assert restored.sql(prepared) == [("survivor",)]
    assert restored.sql("SELECT count(*) FROM hoge") == [(0,)]
    restored.sql("COMMIT PREPARED 'survivor'")
    assert restored.sql("SELECT col FROM hoge") == [(1,)]


def test_wal_that_ends_in_a_torn_record_recovers_to_the_last_whole_record(cluster):
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.sql("INSERT INTO hoge VALUES (1)")
    primary.switch_wal()  # what follows starts a segment of its own

    # One transaction: a row, then one WAL record of 100 kB (it spans 13 pages), then the commit.
    with primary.connect(autocommit=False) as writer:
        writer.execute("INSERT INTO hoge VALUES (2)")
        record = Lsn.parse(writer.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
        writer.execute("SELECT pg_logical_emit_message(true, 'torn', repeat('x', 100000))")
        writer.commit()
    segment, offset = primary.sql("SELECT * FROM pg_walfile_name_offset(%s)", (str(record),))[0]
    primary.wait_for_catchup(standby)
    primary.stop("immediate")

    # The last write was torn: the segment holds the record's first 3 pages, then zeros (the power failed
    # while the disk wrote it).
    torn_at = offset + 3 * 8192 + 100
    wal = f"{DATA_MOUNT}/data/pg_wal/{segment}"
    tools = cluster.tools
    data = tools.data(primary)
    size = tools.run(["stat", "-c", "%s", wal], mounts=data)
    for length in (torn_at, int(size)):  # cut, then grow back with zeros
        tools.run(["truncate", "-s", str(length), wal], mounts=data)

    # Recovery stops at the last whole record: the row of the torn transaction is gone, the one before
    # it is there, and the server writes on from the torn record's start, over its first pages.
    primary.start()
    assert primary.sql("SELECT col FROM hoge") == [(1,)]
    primary.sql("INSERT INTO hoge VALUES (3)")
    # A record in the WAL says that the torn one was given up (its pages past the tear are overwritten),
    # so a standby or a restore that reads this WAL does not take the old pages for its continuation.
    # (grep's exit status says it: the tool's run raises when it is not there.)
    tools.run(
        ["sh", "-c", 'pg_waldump --path "$1" --start "$2" --end "$3" | grep -q OVERWRITE_CONTRECORD', "waldump",
         f"{DATA_MOUNT}/data/pg_wal", str(segment_start(segment)), str(primary.lsn("flush"))],
        mounts=data,
        what="OVERWRITE_CONTRECORD in the WAL",
    )  # fmt: skip

    # The standby received the whole transaction: it has the row the primary lost, in WAL the primary no
    # longer has, on the same timeline (no promotion happened). pg_rewind cannot help (it rewinds across
    # timelines only): it is rebuilt from its primary.
    assert standby.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]
    cluster.backups.rebuild(standby)
    primary.wait_for_catchup(standby)
    assert standby.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (3,)]
