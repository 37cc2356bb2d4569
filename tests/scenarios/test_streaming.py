"""Exercise 26-1, streaming: a row inserted on the primary appears on the standby."""

import psycopg
import pytest

from pgharness import Lsn
from pgharness.wait import poll_until

pytestmark = pytest.mark.streaming


def test_row_inserted_on_primary_is_visible_on_standby(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby

    # Exercise 26-1's table, with a first row, on the primary.
    primary.sql("CREATE TABLE hoge_streaming (col integer)")
    primary.sql("INSERT INTO hoge_streaming VALUES (1)")

    # Wait until the standby has replayed everything the primary has written.
    primary.wait_for_catchup(standby, "replay")

    # The standby sees the row.
    assert standby.sql("SELECT col FROM hoge_streaming") == [(1,)]

    # A second row, as in the exercise: insert on the primary, read on the standby.
    primary.sql("INSERT INTO hoge_streaming VALUES (2)")
    primary.wait_for_catchup(standby)
    assert standby.sql("SELECT col FROM hoge_streaming ORDER BY col") == [(1,), (2,)]


def test_standby_streams_and_primary_lists_it_by_name(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby

    # The standby's WAL receiver is streaming from the primary.
    assert standby.scalar("SELECT status FROM pg_stat_wal_receiver") == "streaming"

    # The primary's WAL sender lists it under its application_name, the service name.
    rows = primary.sql("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = 'standby'")
    assert rows == [("streaming", "async")]


STANDBY_POSITION = {
    "write": "SELECT written_lsn FROM pg_stat_wal_receiver",
    "flush": "SELECT flushed_lsn FROM pg_stat_wal_receiver",
    "replay": "SELECT pg_last_wal_replay_lsn()",
}


@pytest.mark.parametrize("mode", ["write", "flush", "replay"])
def test_catchup_waits_until_the_standby_has_the_target(shared_cluster, mode):
    primary, standby = shared_cluster.primary, shared_cluster.standby

    # Generate WAL and note the primary's write position.
    primary.sql(f"CREATE TABLE catchup_{mode} AS SELECT g FROM generate_series(1, 10000) g")
    target = primary.lsn("write")

    # Wait for the standby to reach it in this mode, as the primary sees it ...
    reached = primary.wait_for_catchup(standby, mode, target)
    assert reached >= target

    # ... and check the standby's own view: it has written/flushed/replayed that far.
    assert Lsn.parse(str(standby.scalar(STANDBY_POSITION[mode]))) >= reached

    # The wait reports where the standby is, not the target it was given: asked for an old
    # position after more WAL was written, it answers the newer one the standby reached.
    primary.sql(f"INSERT INTO catchup_{mode} SELECT g FROM generate_series(1, 1000) g")
    newer = primary.wait_for_catchup(standby, mode)
    assert primary.wait_for_catchup(standby, mode, target) >= newer > target


def cut_record(primary):
    """Leave a record on `primary` that the WAL writer writes in part and nothing flushes, with the rest
    waiting in memory; return the write position, which cuts it.

    A login that fails after reading a role whose row has no hint bits yet: with wal_log_hints, setting
    them after a checkpoint logs the page whole, and the failed login's abort, unlike a commit, does not
    ask the WAL writer to flush it. A message of WAL first puts the page image across a page boundary: the
    WAL writer writes whole pages, and stops at that boundary."""
    primary.sql("CREATE ROLE hoge_cutter LOGIN PASSWORD 'right'")
    primary.sql("CHECKPOINT")
    position = Lsn.parse(str(primary.scalar("SELECT pg_current_wal_insert_lsn()"))).value
    boundary = (position // 8192 + 2) * 8192  # a page on, room for the message's own header
    primary.sql("SELECT pg_logical_emit_message(false, 'pgharness', repeat('x', %s))", (boundary - 1000 - position,))
    with pytest.raises(psycopg.OperationalError):
        primary.connect(user="hoge_cutter", password="wrong")

    def positions():
        written, inserted = primary.sql("SELECT pg_current_wal_lsn(), pg_current_wal_insert_lsn()")[0]
        [(held,)] = primary.sql("SELECT flush_lsn FROM pg_stat_replication WHERE application_name = 'standby'")
        return tuple(Lsn.parse(str(lsn)) for lsn in (written, inserted, held))

    written, _, _ = poll_until(
        positions,
        lambda seen: seen[0].value % 8192 == 0 and 0 < seen[1] - seen[0] <= 8192 and seen[2] >= seen[0],
        what="the WAL writer to stop at a page boundary inside the page image, and the standby to hold that",
    )
    return written


def test_a_catch_up_wait_has_the_primary_write_the_rest_of_a_record_its_write_position_cuts(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    try:
        written = cut_record(primary)
        # The standby holds the WAL up to the write position, and cannot replay the record it ends in.
        assert Lsn.parse(str(standby.scalar("SELECT pg_last_wal_replay_lsn()"))) < written
        # PostgreSQL writes the rest at the next flush: a commit, or the background writer's snapshot record
        # every 15 s. The wait does not wait for it: it has the primary write it.
        assert primary.wait_for_catchup(standby, timeout=10) >= written
    finally:
        primary.sql("DROP ROLE IF EXISTS hoge_cutter")


def has_backup_manifest(node):
    """Whether `node`'s data directory holds pg_basebackup's backup_manifest (a template's copy has none)."""
    return node.scalar("SELECT count(*) FROM pg_ls_dir('.') AS f WHERE f = 'backup_manifest'") == 1


@pytest.mark.parametrize("source", ["template", "basebackup"])
def test_a_new_clusters_standby_from_either_source_is_the_primarys_copy(cluster_factory, source):
    # The init SQL writes enough WAL (about 20 MB) that replaying it outlasts the standby's first streaming.
    init_sql = "CREATE TABLE made_at_init AS SELECT 1 AS id; CREATE TABLE bulk AS SELECT generate_series(1, 400000) n;"
    cluster = cluster_factory(standby_source=source, init_sql=init_sql)
    primary, standby = cluster.primary, cluster.standby

    # One system: the standby started from the data directory the primary was made from, or from a copy of it.
    system = "SELECT system_identifier FROM pg_control_system()"
    assert standby.scalar(system) == primary.scalar(system)
    # When the start returns, the standby has what the primary wrote before it answered (the roles it
    # logged in with, the init SQL's table), with no wait of the test's own.
    assert standby.scalar("SELECT id FROM made_at_init") == 1
    assert standby.scalar("SELECT count(*) FROM bulk") == 400000
    assert has_backup_manifest(standby) == (source == "basebackup")

    if source == "template":
        # A rebuild of the same volume takes a base backup: the WAL back to the template may be gone by then.
        primary.sql("INSERT INTO made_at_init VALUES (2)")
        cluster.backups.rebuild(standby)
        assert has_backup_manifest(standby)
        primary.sql("INSERT INTO made_at_init VALUES (3)")
        primary.wait_for_catchup(standby)
        assert standby.sql("SELECT id FROM made_at_init ORDER BY id") == [(1,), (2,), (3,)]
