"""Log shipping and the WAL archive (sections 26.2 and 26.4 of the manual).

A standby can get WAL two ways: streaming from the primary, and restore_command
from the shared archive. These scenarios take the archive path alone, fall
back to it, do without it through a slot, and break it on purpose.
"""

import psycopg.errors
import pytest

from pgharness.constants import DATA_MOUNT
from pgharness.faults import partitioned
from pgharness.lsn import Lsn, segment_start
from pgharness.wait import poll_until
from tests.scenarios.helpers import (
    generate_segments,
    lose_partitioned_standby,
    notice_lost_standbys_fast,
    pg_wal_files,
    process_stopped,
)

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


def test_cut_off_standby_catches_up_from_the_archive_then_streams_again(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby

    # Keep no extra WAL on the primary, so what the standby misses is recycled.
    primary.set_config(wal_keep_size=0)
    notice_lost_standbys_fast(primary)
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_catchup(standby)
    needed = shared_cluster.primary.walfile(standby.lsn("replay"))

    with partitioned(standby):
        # The primary loses its standby ...
        lose_partitioned_standby(primary, "SELECT count(*) FROM pg_stat_replication", 0)

        # ... writes several segments, and checkpoints so the old ones leave pg_wal.
        generate_segments(primary, "hoge", 4)
        primary.sql("CHECKPOINT")
        primary.sql("CHECKPOINT")
        target = primary.lsn("write")

        # The segment the standby needs next is really gone from the primary's pg_wal ...
        assert needed not in pg_wal_files(primary)
        # ... but it is in the archive.
        assert needed in shared_cluster.archive.segments()

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
    primary.set_config(wal_keep_size=0)
    notice_lost_standbys_fast(primary)
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_catchup(standby)

    # The standby streams through its slot and has no restore_command: no archive.
    assert standby.scalar("SHOW primary_slot_name") == "slot_standby"
    assert standby.scalar("SHOW restore_command") == ""

    with partitioned(standby):
        lose_partitioned_standby(
            primary, "SELECT active FROM pg_replication_slots WHERE slot_name = 'slot_standby'", False
        )
        restart_lsn = Lsn.parse(primary.scalar("SELECT restart_lsn::text FROM pg_replication_slots"))
        size_before = primary.scalar("SELECT sum(size) FROM pg_ls_waldir()")

        # The primary writes and checkpoints while the standby is away ...
        generate_segments(primary, "hoge", 4)
        primary.sql("CHECKPOINT")

        # ... and keeps every segment from the slot's restart_lsn on: pg_wal grows.
        assert cluster.primary.walfile(restart_lsn) in pg_wal_files(primary)
        assert primary.scalar("SELECT sum(size) FROM pg_ls_waldir()") > size_before
        assert primary.scalar("SELECT wal_status FROM pg_replication_slots") in ("reserved", "extended")
        target = primary.lsn("write")

    # Back on the network, it catches up by streaming alone.
    primary.wait_for_catchup(standby, "replay", target)
    assert standby.scalar("SELECT count(*) FROM hoge") == 4000

    # Now cap what a slot may hold back, and cut the standby off again.
    primary.set_config(max_slot_wal_keep_size="32MB")
    with partitioned(standby, wait=False):  # it will not stream again: its WAL is gone
        lose_partitioned_standby(
            primary, "SELECT active FROM pg_replication_slots WHERE slot_name = 'slot_standby'", False
        )
        generate_segments(primary, "hoge", 4)
        primary.sql("CHECKPOINT")

        # The slot is invalidated: the WAL it needed is gone (its restart_lsn with it).
        primary.poll_query_until("SELECT wal_status FROM pg_replication_slots", "lost")
        assert primary.scalar("SELECT restart_lsn FROM pg_replication_slots") is None
        target = primary.lsn("write")
        primary.wait_for_archived(primary.switch_wal())

    # Streaming alone can no longer bring the standby up to date: the primary
    # refuses the slot or the WAL it asks for (only the log says so, in each
    # version's words).
    standby.poll_log_until("has already been removed", "can no longer access replication slot")
    assert standby.lsn("replay") < target

    # With restore_command, it gets the missing WAL from the archive.
    standby.set_config(restore_command="cp /archive/%f %p", apply=False)  # read at the restart
    standby.restart(wait=False)
    standby.wait_for_replay(target)
    assert standby.scalar("SELECT count(*) FROM hoge") == 8000


def test_failing_archive_command_keeps_wal_until_the_archive_is_back(shared_cluster):
    primary = shared_cluster.primary
    primary.sql("CREATE TABLE hoge (col integer)")
    failed_before = primary.scalar("SELECT failed_count FROM pg_stat_archiver")

    with shared_cluster.archive.read_only():
        # Three segments are completed while archive_command cannot write.
        segments = []
        for value in (1, 2, 3):
            primary.sql("INSERT INTO hoge VALUES (%s)", (value,))
            segments.append(primary.switch_wal())

        # The archiver fails, and says so in pg_stat_archiver ...
        primary.poll_query_until(f"SELECT failed_count > {failed_before} FROM pg_stat_archiver", True)
        assert primary.scalar("SELECT last_failed_wal FROM pg_stat_archiver") == segments[0]

        # ... the segments wait in pg_wal/archive_status as .ready, none is lost from pg_wal ...
        ready = {name for (name,) in primary.sql("SELECT name FROM pg_ls_archive_statusdir()")}
        assert {f"{s}.ready" for s in segments} <= ready
        assert set(segments) <= pg_wal_files(primary)
        # ... and none reached the archive.
        assert not set(segments) & set(shared_cluster.archive.segments())

    # With the archive writable again, a new segment wakes the archiver (it retries
    # by itself only once a minute), and it archives everything that waited, in order.
    primary.sql("INSERT INTO hoge VALUES (4)")
    last = primary.switch_wal()
    primary.wait_for_archived(last)

    # Every segment is in the archive exactly once: an unbroken run up to the last one.
    archived = shared_cluster.archive.segments()
    numbers = [int(name, 16) for name in archived]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert archived[-1] == last
    assert set(segments) <= set(archived)
    assert primary.scalar("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'") == 0


def two_archived_segments(primary):
    """Rows 1 and 2, each in a segment of its own, both archived; return (first segment, end LSN)."""
    primary.sql("INSERT INTO hoge VALUES (1)")
    first = primary.switch_wal()
    primary.sql("INSERT INTO hoge VALUES (2)")
    end = primary.lsn("write")
    primary.wait_for_archived(primary.switch_wal())
    return first, end


def test_missing_segment_makes_a_log_shipping_standby_wait_not_skip(shared_cluster):
    primary, archive = shared_cluster.primary, shared_cluster.archive
    primary.sql("CREATE TABLE hoge (col integer)")

    # A base backup now; then two segments, each with a row, archived.
    shared_cluster.backups.take("before")
    first, end = two_archived_segments(primary)

    with archive.missing(first):
        # A log-shipping standby (no streaming) from the backup asks the archive for the first segment ...
        standby = shared_cluster.add_node("late", from_backup="before", upstream=None)
        standby.poll_log_until(f"/archive/{first}")

        # ... and waits: it does not skip to the next segment, which the archive has.
        assert standby.lsn("replay") <= segment_start(first)
        assert standby.scalar("SELECT count(*) FROM hoge") == 0

    # Once the segment is back, it goes on, through both segments.
    standby.wait_for_replay(end)
    assert standby.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]


#: What PostgreSQL logs when a WAL record fails its checks, depending on which bytes were hit.
INVALID_RECORD = (
    "incorrect resource manager data checksum",
    "invalid record length",
    "invalid resource manager ID",
    "record with incorrect prev-link",
    "invalid magic number",
)


def test_corrupted_segment_is_refused_not_applied(shared_cluster):
    primary, archive = shared_cluster.primary, shared_cluster.archive
    primary.sql("CREATE TABLE hoge (col integer)")
    shared_cluster.backups.take("before")
    first, end = two_archived_segments(primary)

    # The first page of the first segment is overwritten with garbage, past its header.
    with archive.corrupted(first, length=8000):
        standby = shared_cluster.add_node("late", from_backup="before", upstream=None)

        # The standby restores it, finds the record invalid and says why ...
        poll_until(
            lambda: standby.logs(tail=300),
            lambda text: any(reason in text for reason in INVALID_RECORD),
            what=f"the standby to refuse the corrupted {first}",
            nodes=(standby,),
        )
        # ... and applies nothing from it.
        assert standby.lsn("replay") <= segment_start(first)
        assert standby.scalar("SELECT count(*) FROM hoge") == 0

    # With the good segment back in the archive, it fetches it again and replays both rows.
    standby.wait_for_replay(end)
    assert standby.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]


def test_standby_from_an_older_backup_follows_the_new_timeline_through_the_archive(shared_cluster):
    primary, archive = shared_cluster.primary, shared_cluster.archive
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.sql("INSERT INTO hoge VALUES (1)")

    # A base backup taken before anything is promoted.
    shared_cluster.backups.take("before-promotion")

    # A second standby that archives once promoted; it is promoted to timeline 2 and writes there.
    new_primary = shared_cluster.add_node("new-primary")
    primary.wait_for_catchup(new_primary)
    new_primary.promote()
    assert new_primary.timeline() == 2
    new_primary.sql("INSERT INTO hoge VALUES (2)")
    end = new_primary.lsn("write")
    new_primary.wait_for_archived(new_primary.switch_wal())

    # The new timeline's history file is in the archive.
    assert "00000002.history" in archive.history_files()

    # A standby restored from the older backup, with the archive alone, follows timeline 2
    # (recovery_target_timeline = 'latest', the default since PostgreSQL 12).
    follower = shared_cluster.add_node("follower", from_backup="before-promotion", upstream=None)
    assert follower.scalar("SHOW recovery_target_timeline") == "latest"
    follower.wait_for_replay(end)
    assert 'restored log file "00000002.history" from archive' in follower.logs(tail=500)
    assert follower.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]


def test_archive_cleanup_removes_only_what_the_restart_point_no_longer_needs(cluster_factory):
    cluster = cluster_factory()
    primary, archive = cluster.primary, cluster.archive
    primary.sql("CREATE TABLE hoge (col integer)")
    # A log-shipping standby that cleans the archive up after each restart point (%r: the oldest file it
    # still needs), and says when recovery ends.
    shipper = cluster.add_node(
        "shipper",
        streaming=False,
        settings={
            "archive_cleanup_command": "pg_archivecleanup /archive %r",
            "recovery_end_command": "echo ended >> /var/lib/pgharness/recovery-ended",
        },
    )
    generate_segments(primary, "hoge", 4)
    primary.sql("CHECKPOINT")
    target = primary.lsn("write")
    primary.wait_for_archived(primary.switch_wal())
    shipper.wait_for_replay(target)
    before = archive.segments()

    # A restart point on the standby (at the primary's last checkpoint) runs the cleanup.
    shipper.sql("CHECKPOINT")
    needed = shipper.scalar("SELECT redo_wal_file FROM pg_control_checkpoint()")
    assert needed in before
    assert before[0] < needed
    poll_until(lambda: archive.segments()[0], lambda first: first == needed, what=f"the archive to start at {needed}")
    # Nothing it needs went: the standby restores and replays on.
    primary.sql("INSERT INTO hoge VALUES (-1)")
    target = primary.lsn("write")
    primary.wait_for_archived(primary.switch_wal())
    shipper.wait_for_replay(target)
    assert shipper.scalar("SELECT count(*) FROM hoge") == 4001

    # recovery_end_command runs once, at promotion, and not before.
    assert shipper.exec("ls", DATA_MOUNT).split().count("recovery-ended") == 0
    shipper.promote()
    assert shipper.exec("cat", f"{DATA_MOUNT}/recovery-ended").split() == ["ended"]


def test_a_promoted_standby_archives_its_partial_segment_and_the_new_timeline_can_be_followed_from_the_archive(
    cluster_factory,
):
    cluster = cluster_factory()
    primary = cluster.primary
    primary.sql("CREATE TABLE hoge (col integer)")
    cluster.backups.take("base")
    # A standby that archives once promoted (a node added at run time; compose's standby has the archive
    # read-only).
    standby2 = cluster.add_node("standby2")
    primary.sql("INSERT INTO hoge VALUES (1)")
    primary.wait_for_catchup(standby2)
    last_of_timeline_1 = primary.walfile()

    # The primary dies with its current segment unarchived; standby2 is promoted and writes on timeline 2.
    primary.kill()
    standby2.promote()
    standby2.sql("INSERT INTO hoge VALUES (2)")
    target = standby2.lsn("write")
    standby2.wait_for_archived(standby2.switch_wal())

    # The old timeline's last segment, as far as standby2 received it, is archived as .partial, beside the
    # new timeline's history file.
    standby2.wait_for_archived(f"{last_of_timeline_1}.partial")
    assert f"{last_of_timeline_1}.partial" in cluster.archive.files()
    assert "00000002.history" in cluster.archive.history_files()

    # A node restored from the base backup with the archive alone follows the history onto timeline 2 and
    # reaches the end of it: it has the row written there only.
    follower = cluster.add_node("follower", upstream=None, from_backup="base")
    follower.wait_for_replay(target)
    assert follower.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]


def test_a_cascade_ahead_of_its_upstream_through_the_archive_waits_and_streams_once_the_upstream_catches_up(
    shared_cluster,
):
    """After ``055_cascade_reconnect.pl``: a cascading standby that restored WAL its upstream has not received
    yet asks that upstream for a position beyond its flush position; it waits and asks again instead of
    failing, and streams once the upstream has caught up."""
    primary, standby = shared_cluster.primary, shared_cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_catchup(standby)
    with process_stopped(standby, "walreceiver"):
        primary.sql("INSERT INTO hoge VALUES (1)")
        archived = primary.lsn("write")
        primary.wait_for_archived(primary.switch_wal())

        # The cascade, a copy of the standby, restores from the archive past what the standby has.
        cascade = shared_cluster.add_node("cascade", upstream=standby, wait=False)
        cascade.wait_for_replay(archived)
        assert standby.lsn("receive") < archived
        # It asks the standby for WAL from there: refused by the standby's walsender and asked again, or (newer
        # minor releases) told to wait by its own walreceiver. Either way it goes on waiting, in recovery.
        cascade.poll_log_until(
            "is ahead of the WAL flush position of this server",
            "is ahead of the upstream server's flush position",
            since="",
        )
        assert cascade.is_in_recovery()

    # Once the standby has caught up, the cascade streams from it: a row that is in no archived segment.
    primary.sql("INSERT INTO hoge VALUES (2)")
    primary.wait_for_catchup(standby)
    cascade.poll_query_until("SELECT status FROM pg_stat_wal_receiver", "streaming")
    cascade.wait_for_replay(primary.lsn("write"))
    assert cascade.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]


def test_a_fresh_cascade_with_only_the_history_file_archived_follows_the_new_timeline_by_streaming(shared_cluster):
    """After ``025_stuck_on_old_timeline.pl``: a cascade made from a backup of a standby taken before its
    promotion, restoring only history files from the archive, gets all its WAL (the old timeline's and the
    new one's) from the promoted standby."""
    primary = shared_cluster.primary
    primary.sql("CREATE TABLE hoge (col integer)")
    new_primary = shared_cluster.add_node("new-primary")  # archives once promoted
    primary.sql("INSERT INTO hoge VALUES (1)")
    primary.wait_for_catchup(new_primary)
    shared_cluster.backups.take("of-the-standby", source=new_primary)

    new_primary.promote()
    new_primary.wait_for_archived("00000002.history")
    new_primary.sql("INSERT INTO hoge VALUES (2)")

    # The archive gives the cascade history files and nothing else.
    cascade = shared_cluster.add_node(
        "cascade",
        upstream=new_primary,
        from_backup="of-the-standby",
        env={"RESTORE_COMMAND": 'case "%f" in *.history) cp "/archive/%f" "%p" ;; *) exit 1 ;; esac'},
    )
    new_primary.wait_for_catchup(cascade)
    assert cascade.timeline() == 2
    assert cascade.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]
    assert 'restored log file "00000002.history" from archive' in cascade.logs(tail=500)
