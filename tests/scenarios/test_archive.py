"""Exercise 26-1, archive: archive_command copies completed segments into the shared archive."""

import pytest

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


def test_archive_command_refuses_to_overwrite_a_segment(shared_cluster):
    primary = shared_cluster.primary

    # A segment that is already archived ...
    segment = primary.switch_wal()
    primary.wait_for_archived(segment)

    # ... is not overwritten: the archive_command, run (as the archiver does) with another file as %p,
    # fails on its `test ! -f` (exit status 1), and the archived copy keeps its content.
    archive_command = primary.scalar("SHOW archive_command")
    archived = f"/archive/{segment}"
    before = primary.exec("md5sum", archived)
    command = archive_command.replace("%p", "/etc/hostname").replace("%f", segment)
    result = primary.container.exec_run(["sh", "-c", command], user="postgres")
    assert result.exit_code == 1
    assert primary.exec("md5sum", archived) == before

    # The refusal is about the existing file: the same command archives a file name not taken yet.
    fresh = f"{segment}.overwrite-probe"
    command = archive_command.replace("%p", "/etc/hostname").replace("%f", fresh)
    try:
        assert primary.container.exec_run(["sh", "-c", command], user="postgres").exit_code == 0
        assert fresh in shared_cluster.archive.files(node=primary)
    finally:
        primary.exec("rm", "-f", f"/archive/{fresh}")
