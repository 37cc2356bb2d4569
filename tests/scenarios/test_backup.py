"""Replication is not backup (the lesson of the GitLab.com outage, as the notes on the manual's chapter 26 tell it).

A mistaken DELETE reaches every standby at once; only a base backup plus the
WAL archive brings the rows back. Backups that were never verified, a pg_dump
of the wrong major version, and a rebuild that wipes the wrong data directory
are what turned the GitLab.com incident into an outage.
"""

import psycopg.errors
import pytest
from psycopg import sql as pgsql

from pgharness import WaitTimeout
from pgharness.constants import BACKUPS_PATH, DATA_MOUNT
from pgharness.errors import BackupError, QuotingError
from pgharness.faults import replay_paused
from pgharness.image import ImageSpec, ensure_image
from pgharness.recovery import RecoveryTarget
from pgharness.shared import reset, take_baseline
from pgharness.versions import SUITES


@pytest.mark.pitr
def test_mistaken_delete_replicates_and_the_backup_brings_the_rows_back(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby

    # A base backup, then exercise 26-1's table with rows.
    shared_cluster.backups.take("nightly")
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.sql("INSERT INTO hoge SELECT generate_series(1, 100)")
    checksum = primary.table_checksum("hoge")

    # A restore point, then the mistake: DELETE without WHERE.
    primary.sql("SELECT pg_create_restore_point('before-delete')")
    primary.sql("DELETE FROM hoge")

    # Replication is not backup: the standby has lost the rows too.
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT count(*) FROM hoge") == 0

    # The archive has the WAL past the restore point.
    primary.wait_for_archived(primary.switch_wal())

    # A new node from the backup and the archive, recovered to the restore point ...
    restored = shared_cluster.backups.restore("restored", "nightly", RecoveryTarget.name("before-delete"))

    # ... has every row back, exactly, and accepts writes.
    assert restored.table_checksum("hoge") == checksum
    assert not restored.is_in_recovery()
    restored.sql("INSERT INTO hoge VALUES (101)")
    assert restored.scalar("SELECT count(*) FROM hoge") == 101


def three_transactions(cluster):
    """Rows 1, 2, 3 committed one transaction each after a base backup; return what marks the second."""
    primary = cluster.primary
    primary.sql("CREATE TABLE hoge (col integer)")
    cluster.backups.take("base")
    marks = {}
    for value in (1, 2, 3):
        with primary.connect() as conn:
            with conn.transaction():
                xid = conn.execute("INSERT INTO hoge VALUES (%s) RETURNING txid_current()", (value,)).fetchone()[0]
            lsn, now = conn.execute("SELECT pg_current_wal_lsn()::text, clock_timestamp()").fetchone()
        if value == 2:
            # The second transaction's xid, the WAL position just after its commit, and a time
            # after its commit and before the third one's.
            marks = {"xid": xid, "lsn": lsn, "time": now}
    primary.wait_for_archived(primary.switch_wal())
    return marks


@pytest.mark.pitr
@pytest.mark.parametrize(
    ("kind", "inclusive", "rows"),
    [
        ("xid", True, [1, 2]),  # recovery_target_inclusive: stop just after the target transaction
        ("xid", False, [1]),  # ... or just before it
        ("lsn", True, [1, 2]),
        ("time", True, [1, 2]),
    ],
)
def test_recovery_stops_exactly_at_the_target(shared_cluster, kind, inclusive, rows):
    marks = three_transactions(shared_cluster)
    target = getattr(RecoveryTarget, kind)(marks[kind])

    # Recover from the backup to the target, then promote.
    restored = shared_cluster.backups.restore("restored", "base", target, inclusive=inclusive)

    # Exactly the transactions before the target (and the target's own, when inclusive).
    assert [r[0] for r in restored.sql("SELECT col FROM hoge ORDER BY col")] == rows


@pytest.mark.pitr
def test_recovery_paused_at_the_target_is_read_only_until_resumed(shared_cluster):
    marks = three_transactions(shared_cluster)

    # Recover to the second transaction and pause there instead of promoting.
    paused = shared_cluster.backups.restore("paused", "base", RecoveryTarget.xid(marks["xid"]), action="pause")

    # The node shows the data as of the target, and is read-only.
    assert paused.is_in_recovery()
    assert paused.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        paused.sql("INSERT INTO hoge VALUES (4)")

    # Resuming ends recovery at the target: the node is promoted and writes.
    paused.resume_replay()
    paused.poll_query_until("SELECT pg_is_in_recovery()", False)
    paused.sql("INSERT INTO hoge VALUES (4)")
    assert paused.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,), (4,)]


@pytest.mark.pitr
def test_target_beyond_the_archive_fails_loudly(shared_cluster):
    primary, archive = shared_cluster.primary, shared_cluster.archive
    primary.sql("CREATE TABLE hoge (col integer)")
    shared_cluster.backups.take("base")

    # A restore point in a segment that then goes missing from the archive.
    primary.sql("INSERT INTO hoge VALUES (1)")
    segment = primary.switch_wal()
    primary.sql("SELECT pg_create_restore_point('unreachable')")
    primary.wait_for_archived(primary.switch_wal())

    # Recovery runs out of WAL before the target: the harness says so, with PostgreSQL's words ...
    with archive.missing(segment), pytest.raises(BackupError) as excinfo:
        shared_cluster.backups.restore("restored", "base", RecoveryTarget.name("unreachable"))
    assert "FATAL" in str(excinfo.value)
    assert "recovery target" in str(excinfo.value)

    # ... and no node claims success: the restored node is down, not a primary.
    assert shared_cluster.node("restored").container.status == "exited"


@pytest.mark.backup
def test_verifybackup_passes_a_good_backup_and_fails_a_changed_one(shared_cluster):
    # A fresh base backup is listed, and verifies against its manifest.
    shared_cluster.backups.take("good")
    assert shared_cluster.backups.names() == ["good"]
    assert "backup successfully verified" in shared_cluster.backups.verify("good")

    # One file changed after the fact, and the same check fails.
    shared_cluster.backups.take("tampered")
    shared_cluster.backups.run_tool(["sh", "-c", "echo '# changed' >> /backups/tampered/postgresql.conf"])
    with pytest.raises(BackupError, match="pg_verifybackup of 'tampered' failed"):
        shared_cluster.backups.verify("tampered")


@pytest.mark.backup
def test_dump_and_restore_round_trip_between_nodes(shared_cluster):
    primary = shared_cluster.primary
    primary.sql("CREATE TABLE hoge (col integer, label text)")
    primary.sql("INSERT INTO hoge SELECT g, md5(g::text) FROM generate_series(1, 1000) g")

    # pg_dump on the primary, with the client tools of the server's own image.
    shared_cluster.backups.dump("hoge", source="primary")

    # pg_restore into a fresh database on another writable node.
    other = shared_cluster.add_node("other")
    other.promote()
    shared_cluster.backups.restore_dump("hoge", target="other", dbname="restored")

    # The table is identical on both.
    assert other.table_checksum("hoge", dbname="restored") == primary.table_checksum("hoge")


#: A database name that is a shell command, quoted words and a connection-string fragment (under 63 bytes).
HOSTILE_DBNAME = "db $(touch /backups/pwned);'q' \"d\" `id` x=y"


@pytest.mark.backup
def test_hostile_names_are_plain_names_or_refused_and_nothing_runs(shared_cluster):
    primary = shared_cluster.primary

    # A database whose name is a shell command and a connection-string fragment is dumped as a plain name ...
    primary.sql(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(HOSTILE_DBNAME)))
    try:
        primary.sql("CREATE TABLE hostile (col integer)", dbname=HOSTILE_DBNAME)
        primary.sql("INSERT INTO hostile VALUES (42)", dbname=HOSTILE_DBNAME)
        path = shared_cluster.backups.dump("hostile", source="primary", dbname=HOSTILE_DBNAME)
        assert path == "/backups/hostile.dump"
        # ... and the dump holds that database's table.
        listing = shared_cluster.backups.run_tool(["pg_restore", "--list", path])
        assert "TABLE public hostile" in listing
    finally:
        primary.sql(pgsql.SQL("DROP DATABASE {}").format(pgsql.Identifier(HOSTILE_DBNAME)))

    # Names that would become paths or shell words are refused in one line, before anything runs.
    for name in ("$(touch /backups/pwned)", "../escape", "a b", "x;y"):
        with pytest.raises(QuotingError) as excinfo:
            shared_cluster.backups.dump(name, source="primary")
        assert "\n" not in str(excinfo.value)
        with pytest.raises(QuotingError):
            shared_cluster.backups.take(name)

    # Nothing ran: no file was touched in the backups volume.
    assert "pwned" not in shared_cluster.backups.names()


@pytest.mark.backup
def test_pg_dump_of_an_older_major_version_fails_loudly_and_leaves_no_dump(shared_cluster):
    major = int(shared_cluster.primary.scalar("SHOW server_version_num")) // 10000
    older = [v for v in SUITES if v < major]
    if not older:
        pytest.skip(f"no older major version than {major} to build a pg_dump from")

    # The GitLab.com symptom: a pg_dump older than the server.
    old_image = ensure_image(ImageSpec(max(older)))
    with pytest.raises(BackupError, match="server version mismatch"):
        shared_cluster.backups.dump("stale", source="primary", image=old_image)

    # The harness leaves no empty dump that could pass for a backup.
    assert "stale.dump" not in shared_cluster.backups.run_tool(["ls", "/backups"])


@pytest.mark.backup
def test_rebuild_refuses_the_primary_and_rebuilds_a_standby(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    primary.sql("CREATE TABLE hoge AS SELECT generate_series(1, 1000) AS col")
    before = primary.table_checksum("hoge")

    # Rebuilding the primary (the GitLab.com mistake) is refused, and its data is untouched.
    with pytest.raises(BackupError, match="not in recovery"):
        shared_cluster.backups.rebuild("primary")
    assert primary.table_checksum("hoge") == before

    # So is rebuilding a standby whose primary_conninfo points at itself.
    standby.set_config(primary_conninfo="host=standby user=repli")
    with pytest.raises(BackupError, match="points at itself"):
        shared_cluster.backups.rebuild("standby")
    standby.reset_config("primary_conninfo")

    # A real standby is wiped, taken again from the primary, and streams.
    standby.sql("SELECT 1")  # reachable
    rebuilt = shared_cluster.backups.rebuild("standby")
    primary.sql("INSERT INTO hoge VALUES (1001)")
    primary.wait_for_catchup(rebuilt)
    assert rebuilt.table_checksum("hoge") == primary.table_checksum("hoge")
    assert rebuilt.scalar("SELECT status FROM pg_stat_wal_receiver") == "streaming"


@pytest.mark.backup
def test_lag_grows_while_replay_is_paused_and_the_bounded_wait_reports_it(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_catchup(standby)

    with replay_paused(standby):
        # Writes on the primary while the standby does not replay.
        primary.sql("INSERT INTO hoge SELECT generate_series(1, 1000)")
        first = primary.lag(standby)
        primary.sql("INSERT INTO hoge SELECT generate_series(1, 1000)")
        second = primary.lag(standby)

        # Lag grows, in bytes and in seconds.
        assert 0 < first.bytes < second.bytes
        assert 0 < first.replay_delay < second.replay_delay

        # A bounded wait for the lag to vanish fails, with the figures.
        with pytest.raises(WaitTimeout) as excinfo:
            primary.wait_for_lag_below(standby, max_bytes=0, timeout=1)
        assert excinfo.value.last_seen.bytes >= second.bytes

    # Replay resumed: the lag comes down to zero.
    lag = primary.wait_for_lag_below(standby, max_bytes=0)
    assert lag.bytes == 0


@pytest.mark.pitr
def test_a_target_whose_wal_is_not_archived_yet_says_what_it_waited_for(shared_cluster):
    primary = shared_cluster.primary
    shared_cluster.backups.take("base")

    # A restore point made, but its WAL never switched out: the archive does not hold it yet.
    primary.sql("SELECT pg_create_restore_point('too-soon')")
    with pytest.raises(BackupError) as excinfo:
        shared_cluster.backups.restore("restored", "base", RecoveryTarget.name("too-soon"))
    message = str(excinfo.value)
    assert "to name:too-soon failed" in message
    assert "the archive held" in message
    assert "switch_wal()" in message


def restore_beside_the_running_cluster(cluster, **restore):
    """A base backup and a restore point on `cluster`'s primary, then a node restored to it and promoted
    "while the cluster keeps running" (the backups guide's story); return the restored node."""
    primary = cluster.primary
    primary.sql("CREATE TABLE hoge (col integer)")
    cluster.backups.take("base")
    primary.sql("SELECT pg_create_restore_point('here')")
    primary.wait_for_archived(primary.switch_wal())
    restored = cluster.backups.restore("restored", "base", RecoveryTarget.name("here"), **restore)
    # Promoted: a timeline of its own, and writes.
    assert restored.timeline() > primary.timeline()
    restored.sql("INSERT INTO hoge VALUES (1)")
    return restored


def standby_restarts_and_streams(cluster):
    """Restart the standby, which follows recovery_target_timeline = 'latest' through the archive; it must
    come back streaming from the primary on the primary's timeline."""
    primary, standby = cluster.primary, cluster.standby
    standby.restart()
    primary.sql("INSERT INTO hoge VALUES (2)")
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT count(*) FROM hoge") == 1
    assert standby.scalar("SELECT status FROM pg_stat_wal_receiver") == "streaming"


@pytest.mark.pitr
def test_a_restored_node_archives_nowhere_so_the_running_standby_can_still_restart(shared_cluster):
    histories = shared_cluster.archive.history_files()
    restored = restore_beside_the_running_cluster(shared_cluster)

    # It does not archive (the shared archive belongs to the cluster's timeline): no archiver, no history.
    assert restored.scalar("SHOW archive_mode") == "off"
    restored.switch_wal()
    assert shared_cluster.archive.history_files() == histories

    # So the cluster's standby, restarted, stays on the cluster's timeline.
    standby_restarts_and_streams(shared_cluster)


@pytest.mark.pitr
def test_a_restored_node_asked_to_archive_poisons_the_archive_until_the_reset_takes_its_timeline_out(
    shared_cluster,
):
    before = take_baseline(shared_cluster)
    restored = restore_beside_the_running_cluster(shared_cluster, archive=True)

    # Asked to, it archives its timeline into the shared archive: the hazard is real.
    restored.wait_for_archived(restored.switch_wal())
    timeline = restored.timeline()
    assert f"{timeline:08X}.history" in shared_cluster.archive.history_files()
    # The test removes the node itself; the shared cluster's reset still notices the timeline it left ...
    shared_cluster.remove_node("restored")
    assert reset(shared_cluster, before) is None
    assert f"{timeline:08X}.history" not in shared_cluster.archive.history_files()
    # ... and the standby restarts on the cluster's timeline again.
    shared_cluster.primary.sql("CREATE TABLE hoge (col integer)")
    standby_restarts_and_streams(shared_cluster)


@pytest.mark.pitr
@pytest.mark.failover
def test_a_target_on_the_old_timeline_held_only_by_the_new_timeline_s_segment_and_a_later_recovery_across_both(
    cluster_factory,
):
    """After ``028_pitr_timelines.pl``: the primary dies before archiving the segment that holds the target;
    the promoted standby archives that segment's old-timeline part inside its own timeline's segment (the
    old one only as ``.partial``). Recovery to the target needs the new timeline's history; a node made
    from the same backup afterwards follows timeline 1 to the third, the one the recovery started."""
    cluster = cluster_factory(standbys=0)
    primary, archive = cluster.primary, cluster.archive
    primary.sql("CREATE TABLE foo (i int)")
    cluster.backups.take("base")
    standby = cluster.add_node("standby2")  # archives once promoted
    primary.sql("INSERT INTO foo VALUES (1)")
    primary.sql("SELECT pg_create_restore_point('rp')")
    primary.sql("INSERT INTO foo VALUES (2)")
    primary.wait_for_catchup(standby)
    holding_the_target = primary.walfile()

    primary.kill()  # its current segment, with the target, never reaches the archive
    standby.promote()
    standby.wait_for_archived(standby.switch_wal())
    standby.wait_for_archived(f"{holding_the_target}.partial")
    assert holding_the_target not in archive.segments()
    assert f"00000002{holding_the_target[8:]}" in archive.segments()
    standby.kill()

    # Along timeline 1 alone the target is not there: recovery ends before it, and the node stops.
    with pytest.raises(BackupError):
        cluster.backups.restore("only-tl1", "base", RecoveryTarget.name("rp").on_timeline(1))
    assert cluster.node("only-tl1").container.status == "exited"
    # Along the latest timeline (2) it reads the target from timeline 2's segment, and stops there.
    target = RecoveryTarget.name("rp").on_timeline("latest")
    pitr = cluster.backups.restore("pitr", "base", target, archive=True)
    assert pitr.sql("SELECT i FROM foo") == [(1,)]
    assert pitr.timeline() == 3  # 2 is taken: the archive holds its history
    pitr.sql("INSERT INTO foo VALUES (3)")
    end = pitr.lsn("write")
    pitr.wait_for_archived(pitr.switch_wal())

    # A later archive recovery from the same backup follows timeline 1, then 3 (branched at the target).
    later = cluster.add_node("later", upstream=None, from_backup="base")
    later.wait_for_replay(end)
    assert later.sql("SELECT i FROM foo ORDER BY i") == [(1,), (3,)]
    later.sql("CHECKPOINT")  # a restart point at the promoted node's checkpoint: its timeline shows
    assert later.timeline() == 3


# A copy of a running data directory, as a snapshot tool takes it: everything but the WAL and the
# postmaster's own files (a constant script; the paths come as arguments). A file removed while it is
# copied (a dropped table's, a temporary one) is not needed: the copy goes on, as pg_basebackup's does;
# any other error fails it.
COPY_DATA = """
cd "$1" && mkdir -p "$2/pg_wal" || exit 1
for f in *; do
    case "$f" in pg_wal | postmaster.pid | postmaster.opts) ;; *) cp -a "$f" "$2/" 2>>/tmp/copy-errors ;; esac
done
! grep -v 'No such file or directory' /tmp/copy-errors
"""
# Then, after the checkpoint: the WAL (the snapshot of its own volume) and pg_control.
COPY_LAST = 'cp -a "$1/pg_wal/." "$2/pg_wal/" && cp "$1/global/pg_control" "$2/global/pg_control"'


@pytest.mark.backup
def test_a_low_level_backup_restores_with_its_backup_label_and_silently_loses_data_without_it(shared_cluster):
    """After ``042_low_level_backup.pl``: the data directory copied by hand between ``pg_backup_start`` and
    ``pg_backup_stop`` (``pg_start_backup``/``pg_stop_backup`` before 15), the way snapshot-based backup
    tools work, with the WAL and ``pg_control`` copied last, after a checkpoint that came after a canary
    table."""
    cluster, primary = shared_cluster, shared_cluster.primary
    backups, tools = cluster.backups, cluster.tools
    data = f"{DATA_MOUNT}/data"
    start, stop = (
        ("pg_backup_start('snap', true)", "pg_backup_stop()")
        if primary.major >= 15
        else ("pg_start_backup('snap', true, false)", "pg_stop_backup(false)")
    )
    with primary.background_session() as session:
        session.run(f"SELECT {start}")  # non-exclusive: the session that starts it must stop it
        backups.run_tool(
            ["sh", "-c", COPY_DATA, "sh", data, f"{BACKUPS_PATH}/lowlevel"],
            volumes=tools.data(primary),
            what="copying the running data directory",
        )
        primary.sql("CREATE TABLE canary (id int)")
        primary.wait_for_archived(primary.switch_wal())
        primary.sql("CHECKPOINT")  # pg_control now points past where the backup began
        backups.run_tool(
            ["sh", "-c", COPY_LAST, "sh", data, f"{BACKUPS_PATH}/lowlevel"],
            volumes=tools.data(primary),
            what="copying the WAL and pg_control last",
        )
        label = session.run(f"SELECT labelfile FROM {stop}")[0][0]  # waits for its WAL to be archived
    canary = "SELECT count(*) FROM pg_class WHERE relname = 'canary'"

    # Without backup_label, crash recovery starts at pg_control's checkpoint: the canary, made before it,
    # is missing, and nothing says so (the manual's warning).
    without = cluster.add_node("without-label", from_backup="lowlevel", upstream=None)
    assert without.scalar(canary) == 0

    # With backup_label, recovery starts where the backup began: the canary is there.
    backups.run_tool(
        ["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", label, f"{BACKUPS_PATH}/lowlevel/backup_label"],
        what="writing backup_label",
    )
    labelled = cluster.add_node("with-label", from_backup="lowlevel", upstream=None)
    labelled.poll_query_until(canary, 1)
