"""Behaviour that came with a given PostgreSQL version; each test says which with @pytest.mark.pg."""

import pytest

from pgharness.faults import partitioned
from pgharness.versions import SUITES
from pgharness.wait import poll_until
from tests.scenarios.helpers import generate_segments, lose_partitioned_standby, notice_lost_standbys_fast, pg_wal_files


@pytest.mark.pg(">=17")
@pytest.mark.backup
def test_incremental_backup_combined_into_a_working_standby(shared_cluster):
    primary = shared_cluster.primary

    # Incremental backups are made from WAL summaries.
    primary.set_config({"summarize_wal": "on"})
    primary.sql("CREATE TABLE hoge AS SELECT generate_series(1, 1000) AS col")

    # A full backup, more writes, then an incremental backup on top of the full one.
    shared_cluster.backups.take("full")
    primary.sql("INSERT INTO hoge SELECT generate_series(1001, 2000)")
    shared_cluster.backups.take("incr", incremental_from="full")

    # pg_combinebackup makes a full backup out of the chain.
    shared_cluster.backups.run_tool(
        ["pg_combinebackup", "/backups/full", "/backups/incr", "--output", "/backups/combined"]
    )

    # A standby started from the combined backup streams from the primary ...
    standby = shared_cluster.add_node("combined", from_backup="combined")
    primary.sql("INSERT INTO hoge SELECT generate_series(2001, 3000)")
    primary.wait_for_catchup(standby)

    # ... and holds exactly the primary's rows.
    assert standby.table_checksum("hoge") == primary.table_checksum("hoge")
    assert standby.scalar("SELECT count(*) FROM hoge") == 3000


def outage(cluster, standby):
    """Cut `standby` off while the primary writes 4 segments and checkpoints twice.

    Return the WAL file the standby needed next, and the primary's position after the writes.
    """
    primary = cluster.primary
    needed = cluster.primary.walfile(standby.lsn("replay"))
    # Not waiting for it to stream again after the heal: with no WAL kept for it, it cannot.
    with partitioned(standby, wait=False):
        query = f"SELECT count(*) FROM pg_stat_replication WHERE application_name = '{standby.name}'"
        lose_partitioned_standby(primary, query, 0)
        generate_segments(primary, "hoge", 4)
        primary.sql("CHECKPOINT")
        primary.sql("CHECKPOINT")
        return needed, primary.lsn("write")


# wal_keep_size (wal_keep_segments before 13) exists on every version the harness serves.
@pytest.mark.streaming
def test_wal_keep_size_is_what_lets_a_cut_off_standby_stream_again(shared_cluster):
    primary = shared_cluster.primary
    notice_lost_standbys_fast(primary)
    primary.sql("CREATE TABLE hoge (col integer)")

    # A standby with neither a slot nor the archive: only wal_keep_size keeps its WAL.
    standby = shared_cluster.add_node("bare", restore=False)
    assert standby.scalar("SHOW restore_command") == ""

    # With wal_keep_size = 256MB, four segments written while it is away stay in pg_wal ...
    primary.set_config({"wal_keep_size": "256MB"})
    needed, target = outage(shared_cluster, standby)
    assert needed in pg_wal_files(primary)

    # ... so it catches up by streaming.
    primary.wait_for_catchup(standby, "replay", target)

    # With wal_keep_size = 0, the same outage leaves it stranded: its WAL is recycled.
    primary.set_config({"wal_keep_size": "0"})
    needed, _ = outage(shared_cluster, standby)
    assert needed not in pg_wal_files(primary)
    standby.poll_log_until("has already been removed")


@pytest.mark.pg(">=18")
@pytest.mark.slots
def test_idle_replication_slot_timeout_invalidates_idle_slots_only(cluster_factory):
    cluster = cluster_factory(topology="slot")
    primary = cluster.primary

    # A slot nobody uses, reserving WAL, next to the slot standby's active one.
    primary.sql("SELECT pg_create_physical_replication_slot('idle', true)")
    primary.set_config({"idle_replication_slot_timeout": "1s"})

    # Checkpoints invalidate a slot idle for longer than the timeout (PostgreSQL 18).
    def checkpoint_then_reason():
        primary.sql("CHECKPOINT")
        return primary.scalar("SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = 'idle'")

    reason = poll_until(checkpoint_then_reason, lambda r: r is not None, what="the idle slot to be invalidated")
    assert reason == "idle_timeout"

    # The standby's slot is in use, so it stays valid.
    row = primary.sql("SELECT active, invalidation_reason FROM pg_replication_slots WHERE slot_name = 'slot_standby'")
    assert row == [(True, None)]


@pytest.mark.logical
def test_a_primary_of_another_version_in_the_same_cluster_by_its_version_alone(shared_cluster, pg_major):
    # The version a user guesses to write: pg_version=, as text too, with no image in sight.
    others = sorted((v for v in SUITES if v != pg_major), key=lambda v: (v > pg_major, abs(v - pg_major)))
    other = others[0]
    node = shared_cluster.add_primary("other-major", pg_version=str(other))
    assert int(node.scalar("SHOW server_version_num")) // 10000 == other
