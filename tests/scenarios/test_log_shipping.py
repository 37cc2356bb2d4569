"""Log shipping and the WAL archive (sections 26.2 and 26.4 of the seed).

A standby can get WAL two ways: streaming from the primary, and restore_command
from the shared archive. These scenarios take the archive path alone, fall
back to it, do without it through a slot, and break it on purpose.
"""

import psycopg.errors
import pytest

from harness.faults import cut_off
from harness.lsn import Lsn

pytestmark = pytest.mark.archive


def test_archive_only_standby_sees_rows_only_once_the_segment_is_archived(cluster_factory):
    cluster = cluster_factory(topology="archive-only")
    primary, standby = cluster.primary, cluster.node("archive-standby")

    # Log shipping alone: the standby never opens a streaming connection.
    assert standby.scalar("SHOW primary_conninfo") == ""
    assert standby.sql("SELECT * FROM pg_stat_wal_receiver") == []

    # Rows written on the primary, in a segment that is not complete yet ...
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.sql("INSERT INTO hoge VALUES (1), (2)")
    written = primary.lsn("write")

    # ... are not on the standby: the segment is still open, so nothing was archived.
    assert standby.lsn("replay") < written
    with pytest.raises(psycopg.errors.UndefinedTable):
        standby.sql("SELECT * FROM hoge")

    # Close the segment; the primary archives it; the standby restores and replays it.
    segment = primary.switch_wal()
    primary.wait_for_archived(segment)
    standby.wait_for_replay(written)

    # Now the rows are there, and still no streaming connection was ever made.
    assert standby.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]
    assert standby.sql("SELECT * FROM pg_stat_wal_receiver") == []
    assert primary.sql("SELECT * FROM pg_stat_replication") == []
    assert f'restored log file "{segment}" from archive' in standby.logs()


def generate_segments(primary, table, count):
    """Write rows into `table` and close `count` WAL segments; return the last segment closed."""
    for i in range(count):
        primary.sql(f"INSERT INTO {table} SELECT g FROM generate_series(1, 1000) g")
        segment = primary.switch_wal()
    primary.wait_for_archived(segment)
    return segment


def notice_lost_standbys_fast(primary):
    """Let the primary drop a silent standby's connection after 2 s instead of wal_sender_timeout's 60 s."""
    primary.sql("ALTER SYSTEM SET wal_sender_timeout = '2s'")
    primary.sql("SELECT pg_reload_conf()")


def pg_wal_files(node):
    return {name for (name,) in node.sql("SELECT name FROM pg_ls_waldir()")}


def test_cut_off_standby_catches_up_from_the_archive_then_streams_again(cluster):
    primary, standby = cluster.primary, cluster.standby

    # Keep no extra WAL on the primary, so what the standby misses is recycled.
    primary.sql("ALTER SYSTEM SET wal_keep_size = 0")
    notice_lost_standbys_fast(primary)
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_catchup(standby)
    needed = cluster.archive.walfile_for(standby.lsn("replay"))

    with cut_off(standby):
        # The primary loses its standby ...
        primary.poll_query_until("SELECT count(*) FROM pg_stat_replication", 0)

        # ... writes several segments, and checkpoints so the old ones leave pg_wal.
        generate_segments(primary, "hoge", 4)
        primary.sql("CHECKPOINT")
        primary.sql("CHECKPOINT")
        target = primary.lsn("write")

        # The segment the standby needs next is really gone from the primary's pg_wal ...
        assert needed not in pg_wal_files(primary)
        # ... but it is in the archive.
        assert needed in cluster.archive.segments()

    # With the link back, the standby restores what it missed from the archive ...
    standby.wait_for_replay(target)
    assert f'restored log file "{needed}" from archive' in standby.logs(tail=500)

    # ... and streams again.
    standby.poll_query_until("SELECT status FROM pg_stat_wal_receiver", "streaming")
    primary.sql("INSERT INTO hoge VALUES (-1)")
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT count(*) FROM hoge") == primary.scalar("SELECT count(*) FROM hoge") == 4001


@pytest.mark.slots
def test_slot_keeps_wal_for_a_cut_off_standby_until_max_slot_wal_keep_size(cluster_factory):
    cluster = cluster_factory(topology="slot")
    primary, standby = cluster.primary, cluster.node("slot-standby")
    primary.sql("ALTER SYSTEM SET wal_keep_size = 0")
    notice_lost_standbys_fast(primary)
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_catchup(standby)

    # The standby streams through its slot and has no restore_command: no archive.
    assert standby.scalar("SHOW primary_slot_name") == "slot_standby"
    assert standby.scalar("SHOW restore_command") == ""

    with cut_off(standby):
        primary.poll_query_until("SELECT active FROM pg_replication_slots WHERE slot_name = 'slot_standby'", False)
        restart_lsn = Lsn.parse(primary.scalar("SELECT restart_lsn::text FROM pg_replication_slots"))
        size_before = primary.scalar("SELECT sum(size) FROM pg_ls_waldir()")

        # The primary writes and checkpoints while the standby is away ...
        generate_segments(primary, "hoge", 4)
        primary.sql("CHECKPOINT")

        # ... and keeps every segment from the slot's restart_lsn on: pg_wal grows.
        assert cluster.archive.walfile_for(restart_lsn) in pg_wal_files(primary)
        assert primary.scalar("SELECT sum(size) FROM pg_ls_waldir()") > size_before
        assert primary.scalar("SELECT wal_status FROM pg_replication_slots") in ("reserved", "extended")
        target = primary.lsn("write")

    # Back on the network, it catches up by streaming alone.
    primary.wait_for_catchup(standby, "replay", target)
    assert standby.scalar("SELECT count(*) FROM hoge") == 4000

    # Now cap what a slot may hold back, and cut the standby off again.
    primary.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'")
    primary.sql("SELECT pg_reload_conf()")
    with cut_off(standby):
        primary.poll_query_until("SELECT active FROM pg_replication_slots WHERE slot_name = 'slot_standby'", False)
        generate_segments(primary, "hoge", 4)
        primary.sql("CHECKPOINT")

        # The slot is invalidated: the WAL it needed is gone (its restart_lsn with it).
        primary.poll_query_until("SELECT wal_status FROM pg_replication_slots", "lost")
        assert primary.scalar("SELECT restart_lsn FROM pg_replication_slots") is None
        target = primary.lsn("write")
        primary.wait_for_archived(primary.switch_wal())

    # Streaming alone can no longer bring the standby up to date: the primary
    # refuses the WAL it asks for (the log is the only place that says so).
    standby.poll_log_until("has already been removed")
    assert standby.lsn("replay") < target

    # With restore_command, it gets the missing WAL from the archive.
    standby.sql("ALTER SYSTEM SET restore_command = 'cp /archive/%f %p'")
    standby.restart(wait=False)
    standby.wait_for_replay(target)
    assert standby.scalar("SELECT count(*) FROM hoge") == 8000
