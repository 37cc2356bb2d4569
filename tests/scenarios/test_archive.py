"""Exercise 26-1, archive: archive_command copies completed segments into the shared archive."""

import pytest

from pgharness.constants import BACKUPS_PATH
from pgharness.faults import partitioned
from pgharness.wait import poll_until

pytestmark = pytest.mark.archive


def test_switched_segment_lands_in_the_shared_archive(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    # The archiver's counters are the server's since it started: a test before this one on the shared
    # cluster may have made an attempt fail on purpose. This test counts what happens from here.
    archived_before, failed_before = primary.sql("SELECT archived_count, failed_count FROM pg_stat_archiver")[0]

    # Write something, then close the current segment so it becomes archivable.
    primary.sql("CREATE TABLE hoge_archive AS SELECT 1 AS col")
    segment = primary.switch_wal()

    # Wait until the primary's archiver reports it archived.
    primary.wait_for_archived(segment)

    # The standby, through its read-only mount of the archive, sees the segment.
    assert segment in shared_cluster.archive.files(node=standby)

    # pg_stat_archiver counts it (before PostgreSQL 15 the count arrives through the
    # statistics collector, a moment later), and no attempt failed meanwhile.
    primary.poll_query_until(f"SELECT archived_count > {archived_before} FROM pg_stat_archiver", True)
    assert primary.scalar("SELECT failed_count FROM pg_stat_archiver") == failed_before


def test_standby_cannot_write_to_the_archive(shared_cluster):
    standby = shared_cluster.standby

    # The archive is mounted read-only in the standby: it only restores from it.
    result = standby.container.exec_run(["touch", "/archive/written-by-standby"], user="postgres")
    assert result.exit_code != 0
    assert "written-by-standby" not in shared_cluster.archive.files(node=standby)


def test_archive_command_accepts_the_same_segment_again_and_refuses_other_bytes(shared_cluster):
    primary = shared_cluster.primary

    # A segment that is already archived ...
    segment = primary.switch_wal()
    primary.wait_for_archived(segment)
    archive_command = primary.scalar("SHOW archive_command")
    archived = f"/archive/{segment}"
    before = primary.exec("md5sum", archived)

    def run(source, name):
        """archive_command, run as the archiver runs it (sh -c, as postgres), with %p and %f filled in."""
        command = archive_command.replace("%p", source).replace("%f", name)
        return primary.container.exec_run(["sh", "-c", command], user="postgres").exit_code

    # ... archived again with the same bytes succeeds: a server that crashed after the copy and before it
    # recorded success does that, and archiving must go on (the manual's rule) ...
    primary.exec("cp", archived, "/tmp/same-segment")
    assert run("/tmp/same-segment", segment) == 0
    # ... with other bytes it is refused, and the archived copy keeps its content.
    assert run("/etc/hostname", segment) == 1
    assert primary.exec("md5sum", archived) == before


def test_a_segment_the_archive_holds_with_other_bytes_stops_archiving_until_it_is_gone(shared_cluster):
    primary = shared_cluster.primary
    failed_before = primary.scalar("SELECT failed_count FROM pg_stat_archiver")

    # Something else already wrote the segment the primary writes now into the archive, with other bytes.
    primary.sql("CREATE TABLE hoge_planted AS SELECT 1 AS col")  # WAL in it, so that the switch closes it
    current = primary.walfile()
    primary.exec("sh", "-c", 'echo "not this segment" > "$1"', "plant", f"/archive/{current}")
    try:
        assert primary.switch_wal() == current
        # The archiver refuses to overwrite it: pg_stat_archiver names the segment and counts the failures,
        # and the server's log has the archive command's own words.
        primary.poll_query_until(
            f"SELECT failed_count > {failed_before} AND last_failed_wal = '{current}' FROM pg_stat_archiver", True
        )
        primary.poll_log_until("is in the archive already with other contents")
    finally:
        primary.exec("rm", "-f", f"/archive/{current}")
    # Once the stray file is gone, the archiver's next try archives it and goes on.
    primary.wait_for_archived(current)


def test_a_crash_between_the_copy_and_its_record_archives_the_segment_again(cluster):
    primary = cluster.primary
    primary.sql("CREATE TABLE hoge AS SELECT 1 AS col")
    archive_command = primary.scalar("SHOW archive_command")
    # The fault: the archiver is killed right after its first copy of a segment, before the server records
    # it as archived (from PostgreSQL 14 on, the archiver uses shared memory, and the postmaster restarts
    # every process as after any crash). The restarted archiver archives the segment again.
    once = 'test -e "/tmp/crashed-%f" || { touch "/tmp/crashed-%f"; kill -KILL $PPID; }'
    primary.set_config(archive_command=f"{archive_command} && {{ {once}; }}")
    segment = primary.switch_wal()

    # The fault fired (its mark is there) ...
    poll_until(
        lambda: primary.container.exec_run(["test", "-e", f"/tmp/crashed-{segment}"]).exit_code == 0,
        what=f"the archiver to be killed after copying {segment}",
        nodes=(primary,),
    )
    # ... and the segment, copied once already, is archived again: the same bytes are accepted.
    primary.wait_for_archived(segment)
    primary.reset_config("archive_command")
    primary.wait_for_archived(primary.switch_wal())


def test_a_standby_with_archive_mode_always_archives_the_same_segments_into_the_same_archive(shared_cluster):
    primary = shared_cluster.primary
    # A standby that archives what it receives (a second copy, for when the primary's archiver lags).
    archiver = shared_cluster.add_node("archiver", settings={"archive_mode": "always"})
    primary.sql("CREATE TABLE hoge_always AS SELECT 1 AS col")

    # The primary archives a segment while the standby is cut off; the standby gets it once healed and
    # archives it under the same name: it finds identical bytes there, and succeeds.
    with partitioned(archiver):
        segment = primary.switch_wal()
        primary.wait_for_archived(segment)
    archiver.wait_for_archived(segment)
    assert archiver.scalar("SELECT failed_count FROM pg_stat_archiver") == 0


def receiving(cluster, source):
    """pg_receivewal (a one-off container in the background) from `source` through slot `receiver` into
    /backups/wal, flushing each write and reporting it at once (``--synchronous``). It sends no periodic
    status (``--status-interval=0``): the flush position the server sees comes from --synchronous alone."""
    argv = ["pg_receivewal", f"--host={source.name}", f"--directory={BACKUPS_PATH}/wal", "--slot=receiver",
            "--synchronous", "--status-interval=0", "--verbose"]  # fmt: skip
    return cluster.tools.start(argv, mounts=cluster.tools.backups(), env=cluster.tools.replication_env())


def flushed_by_receiver(source, lsn):
    """Wait until pg_receivewal has flushed `lsn`, as its walsender on `source` shows it."""
    source.poll_query_until(
        f"SELECT flush_lsn >= '{lsn}' FROM pg_stat_replication WHERE application_name = 'pg_receivewal'"
    )


def received(cluster):
    return cluster.backups.run_tool(["ls", f"{BACKUPS_PATH}/wal"], what="listing the received WAL").split()


def test_pg_receivewal_through_a_slot_archives_across_a_timeline_switch_and_a_standby_restores_from_it(shared_cluster):
    """After ``020_pg_receivewal.pl`` (src/bin/pg_basebackup/t/): pg_receivewal as the archiver, streaming
    from a standby that is then promoted."""
    cluster, primary = shared_cluster, shared_cluster.primary
    primary.sql("CREATE TABLE hoge (col integer)")
    source = cluster.add_node("source")  # archives once promoted
    source.sql("SELECT pg_create_physical_replication_slot('receiver', true)")
    cluster.backups.run_tool(["mkdir", f"{BACKUPS_PATH}/wal"], what="making the receiving folder")
    cluster.backups.take("base")

    # It flushes and reports what it receives at once, and its slot follows.
    with receiving(cluster, source):
        primary.sql("INSERT INTO hoge VALUES (1)")
        first = primary.lsn("write")
        flushed_by_receiver(source, first)
        source.poll_query_until(
            f"SELECT restart_lsn >= '{first}' FROM pg_replication_slots WHERE slot_name = 'receiver'"
        )
    # Stopped, it leaves the segment it was writing as .partial.
    assert received(cluster)[-1] == f"{primary.walfile(first)}.partial"

    # The source is promoted and writes on timeline 2. Started again, pg_receivewal goes on from the .partial
    # segment through the slot, takes the new timeline's history, and follows it.
    source.promote()
    source.sql("INSERT INTO hoge VALUES (2)")
    source.switch_wal()
    end = source.lsn("write")  # where the switched segment ends
    with receiving(cluster, source):
        flushed_by_receiver(source, end)
    files = received(cluster)
    assert "00000002.history" in files
    assert f"00000002{primary.walfile(first)[8:]}" in files  # the switch's segment, complete on timeline 2

    # A node restored from the base backup with that folder as its archive follows timeline 2 to the end.
    restored = cluster.add_node(
        "restored", upstream=None, from_backup="base", env={"RESTORE_COMMAND": f"cp {BACKUPS_PATH}/wal/%f %p"}
    )
    restored.poll_query_until("SELECT count(*) FROM hoge", 2)
    assert restored.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]
