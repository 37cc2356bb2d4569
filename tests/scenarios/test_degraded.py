"""Degraded conditions, the way replication incidents start (the GitLab.com outage began with a standby
lagging under load): a slow link, a lossy one, a black hole that only a timeout notices. Each fault is
`pgharness.faults.degraded` (``pgharness degrade``), undone when its block ends; each scenario asserts the
effect it has on replication, measured, not that the command ran.
"""

import time

import psycopg
import pytest

from pgharness.constants import ARCHIVE_PATH, DATA_MOUNT
from pgharness.convergence import assert_converged
from pgharness.errors import ClusterError, WaitTimeout
from pgharness.faults import degraded, oom_killed, replay_paused, starved
from pgharness.load import WriteLoad
from pgharness.wait import poll_until

pytestmark = pytest.mark.degraded

#: WAL the bulk write makes (about 9 MB): at 1 Mbit/s a standby needs over a minute to receive it.
BULK_ROWS = 8000
#: What a standby behind a 1 Mbit/s link still lacks a few seconds after the bulk write, at the least.
FAR_BEHIND = 4 << 20


def received_gap(primary, standby):
    """Bytes of WAL the primary has written that `standby` has not received yet."""
    written, received = primary.lsn("write"), standby.lsn("receive")
    return written - received


def test_a_standby_behind_a_slow_link_falls_behind_under_load_and_catches_up_after_heal(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    WriteLoad.create_table(primary)
    primary.sql("CREATE TABLE pad (filler text)")
    primary.wait_for_catchup(standby)

    with WriteLoad(primary.dsn(), workers=2) as load:
        load.wait_for_commits(100)
        with degraded(standby, rate="1mbit"):
            # A bulk write on top of the commits: more WAL than the link carries in a minute.
            primary.sql("INSERT INTO pad SELECT repeat('x', 1000) FROM generate_series(1, %s)", (BULK_ROWS,))
            # The standby cannot catch up in a few seconds: the link carries 125 kB/s ...
            with pytest.raises(WaitTimeout):
                primary.wait_for_catchup(standby, "write", timeout=3)
            # ... so most of the WAL is still on its way, and the primary measures a write lag.
            assert received_gap(primary, standby) > FAR_BEHIND
            lag = primary.lag(standby)
            assert lag.bytes is not None
            assert lag.bytes > FAR_BEHIND
        # Healed: it catches up, with every commit a writer saw acknowledged.
        load.wait_for_commits(load.log.count() + 100)
    primary.wait_for_catchup(standby, timeout=120)
    assert load.log.lost_commits(standby) == set()


def test_a_black_hole_is_noticed_by_the_replication_timeouts_and_the_standby_reconnects(
    shared_cluster, record_property
):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    # Short timeouts on both sides: the walsender ends a connection that has been silent this long.
    primary.set_config(wal_sender_timeout="3s")
    standby.set_config(wal_receiver_timeout="3s")
    walsender = primary.scalar("SELECT pid FROM pg_stat_replication WHERE application_name = 'standby'")
    assert walsender is not None

    # Every packet lost, none refused: no reset ends the connection, only a timeout can.
    with degraded(standby, loss="100%"):
        lost = time.monotonic()
        poll_until(
            lambda: primary.scalar("SELECT count(*) FROM pg_stat_replication WHERE pid = %s", (walsender,)),
            lambda count: count == 0,
            what="the primary's walsender to the standby to end by wal_sender_timeout",
            timeout=60,
            nodes=(primary,),
        )
        record_property("walsender_ended_after_seconds", round(time.monotonic() - lost, 2))
    # Healed (the block waited for a round trip on every replication link): a new walsender.
    assert primary.scalar("SELECT pid FROM pg_stat_replication WHERE application_name = 'standby'") != walsender


def test_a_lossy_link_slows_streaming_but_it_goes_on_and_converges(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    WriteLoad.create_table(primary)
    with degraded(standby, loss="20%"), WriteLoad(primary.dsn(), workers=2) as load:
        load.wait_for_commits(300)
        # Streaming goes on through the loss (TCP resends what is dropped): the standby receives new WAL.
        target = primary.lsn("write")
        standby.wait_for_replay(target, timeout=120)
        assert standby.scalar("SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert load.log.lost_commits(standby) == set()
    assert_converged(shared_cluster, timeout=120)


def test_delay_and_jitter_hold_a_synchronous_commit_at_least_the_delay(cluster_factory):
    cluster = cluster_factory()
    primary, standby = cluster.primary, cluster.standby
    primary.set_synchronous("FIRST 1 (standby)")
    primary.sql("CREATE TABLE hoge (col integer)")
    try:
        with degraded(standby, delay="300ms", jitter="20ms"):
            # A synchronous commit waits for the standby's reply, which the delay holds back.
            started = time.monotonic()
            primary.sql("INSERT INTO hoge VALUES (1)")
            waited = time.monotonic() - started
    except ClusterError as e:
        if "sch_netem" in str(e):
            pytest.skip(str(e))
        raise
    assert waited >= 0.28, f"a synchronous commit took {waited:.3f} s through a 300 ms (±20) delay"


def test_values_out_of_range_are_refused_before_anything_changes(shared_cluster):
    standby = shared_cluster.standby
    for kwargs in ({"loss": "150%"}, {"rate": "fast"}, {"delay": "soon"}):
        with pytest.raises(ValueError, match=next(iter(kwargs))), degraded(standby, **kwargs):
            pass
    assert shared_cluster.standby.scalar("SELECT status FROM pg_stat_wal_receiver") == "streaming"


def replay_gap(standby):
    """Bytes `standby` has received and not replayed yet."""
    return standby.lsn("receive") - standby.lsn("replay")


def test_a_cpu_starved_standby_receives_but_falls_behind_in_replay_and_catches_up_when_released(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    # Narrow rows with an index: many small WAL records, each of which replay must apply to a page.
    primary.sql("CREATE TABLE narrow (id integer PRIMARY KEY)")
    primary.wait_for_catchup(standby)
    # The standby receives the whole write (its replay held, so receiving is all it does) ...
    with replay_paused(standby):
        primary.sql("INSERT INTO narrow SELECT generate_series(1, 200000)")
        written = primary.lsn("write")
        primary.wait_for_catchup(standby, "flush", written, timeout=60)
        # ... then, at a hundredth of a CPU, replay cannot apply it within seconds (with its CPUs it does in
        # well under one): it falls behind the WAL it has.
        with starved(standby, cpus=0.01):
            standby.resume_replay()
            with pytest.raises(WaitTimeout):
                standby.wait_for_replay(written, timeout=3)
            assert replay_gap(standby) > 0
    # Released: it replays what it received and catches up.
    primary.wait_for_catchup(standby, timeout=120)
    assert standby.scalar("SELECT count(*) FROM narrow") == 200000


def test_a_backend_past_the_memory_limit_is_oom_killed_and_the_cluster_recovers(cluster_factory):
    cluster = cluster_factory()
    primary, standby = cluster.primary, cluster.standby
    WriteLoad.create_table(primary)
    started = primary.container.attrs["State"]["StartedAt"]
    with WriteLoad(primary.dsn(), workers=2) as load:
        load.wait_for_commits(100)
        with starved(primary, memory="256MB"):
            # A backend that builds a 600 MB string: past the limit the kernel kills it; its client loses
            # the connection (no SQLSTATE: the server had no chance to say anything).
            with pytest.raises(psycopg.OperationalError):
                primary.sql("SELECT length(string_agg(repeat('x', 1048576), '')) FROM generate_series(1, 600)")
            # The engine names the kill (it learns of it from an event, after the client has lost the connection) ...
            poll_until(lambda: oom_killed(primary), what="State.OOMKilled of the primary", timeout=30, nodes=[primary])
            # ... the postmaster ends every backend and recovers (restart_after_crash): the writers reconnect.
            load.wait_for_commits(load.log.count() + 100)
    # The same container all along (the postmaster survived), the standby streaming, nothing acknowledged lost.
    primary.container.reload()
    assert primary.container.attrs["State"]["StartedAt"] == started
    primary.wait_for_catchup(standby, timeout=120)
    assert load.log.lost_commits(primary) == set()
    assert load.log.lost_commits(standby) == set()


#: A fixed script (its path an argument): write zeros until the file system is full; "no space" is success.
FILL = 'dd if=/dev/zero of="$1" bs=1M 2>/dev/null; test -s "$1"'


def test_a_full_archive_stops_archiving_wal_piles_up_and_freeing_it_catches_up(cluster_factory):
    cluster = cluster_factory(topology="archive-only", disk={"archive": "256MB"})
    primary, shipper = cluster.primary, cluster.node("archive-standby")
    tools = cluster.tools
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_archived(primary.switch_wal())
    failed_before = primary.scalar("SELECT failed_count FROM pg_stat_archiver")

    # The archive fills up (a filler file): archive_command fails on the next segment ...
    tools.run(["sh", "-c", FILL, "fill", f"{ARCHIVE_PATH}/filler"], mounts=tools.archive(), user="root")
    for value in range(3):
        primary.sql("INSERT INTO hoge VALUES (%s)", (value,))
        primary.switch_wal()
    poll_until(
        lambda: primary.scalar("SELECT failed_count FROM pg_stat_archiver"),
        lambda failed: failed > failed_before,
        what="archive_command to fail on the full archive",
        nodes=(primary,),
    )
    # ... and the primary keeps each segment it could not archive in pg_wal (ready, not done).
    ready = primary.exec("sh", "-c", 'ls "$PGDATA/pg_wal/archive_status" | grep -c "[.]ready$"').strip()
    assert int(ready) >= 3

    # Freed: the archiver catches up, and the log-shipping standby restores its way to the primary.
    tools.run(["rm", "-f", f"{ARCHIVE_PATH}/filler"], mounts=tools.archive(), user="root")
    target = primary.lsn("write")
    primary.wait_for_archived(primary.switch_wal(), timeout=60)
    shipper.wait_for_replay(target, timeout=60)
    assert shipper.scalar("SELECT count(*) FROM hoge") == 3


def write_fails(node):
    """The error a small write on `node` ends with (its server's, or the lost connection's), or None."""
    try:
        node.sql("INSERT INTO pgharness_load (worker, seq) SELECT -1, coalesce(max(seq), 0) + 1 FROM pgharness_load")
    except psycopg.Error as e:
        return e
    return None


def test_a_full_data_volume_stops_the_primary_and_freeing_it_recovers_it_with_every_commit(cluster_factory):
    cluster = cluster_factory(disk={"primary": "160MB"})
    primary, standby = cluster.primary, cluster.standby
    tools = cluster.tools
    WriteLoad.create_table(primary)
    with WriteLoad(primary.dsn(), workers=2) as load:
        load.wait_for_commits(100)
        # The data volume fills up: the server cannot write its WAL.
        tools.run(["sh", "-c", FILL, "fill", f"{DATA_MOUNT}/filler"], mounts=tools.data(primary), user="root")
        # Its writes fail: the server cannot extend its WAL (a PANIC, which ends every session).
        failed = poll_until(
            lambda: write_fails(primary),
            lambda error: error is not None,
            what="a write on the full primary to fail",
            nodes=(primary,),
        )
        assert failed.sqlstate in (None, "53100", "57P02", "58030", "XX000"), failed
        # Freed and started again: it recovers, and the writers go on.
        tools.run(["rm", "-f", f"{DATA_MOUNT}/filler"], mounts=tools.data(primary), user="root")
        if primary.container.status != "running" or not primary.is_responsive():
            primary.restart()
        load.wait_for_commits(load.log.count() + 100)
    primary.wait_for_catchup(standby, timeout=120)
    assert load.log.lost_commits(primary) == set()
    assert load.log.lost_commits(standby) == set()


@pytest.mark.sync
def test_synchronous_commits_slow_down_on_a_lossy_link_and_speed_up_after_heal(cluster_factory):
    cluster = cluster_factory()
    primary, standby = cluster.primary, cluster.standby
    primary.set_synchronous("FIRST 1 (standby)")
    WriteLoad.create_table(primary)

    def rate(commits):
        """Commits per second the load reaches for its next `commits` commits (no window of fixed length)."""
        started, count = time.monotonic(), load.log.count()
        load.wait_for_commits(count + commits, timeout=120)
        return commits / (time.monotonic() - started)

    with WriteLoad(primary.dsn(), workers=2) as load:
        load.wait_for_commits(50)
        before = rate(200)
        # Every commit waits for the standby's reply: on a link that loses a third of the packets, a lost
        # message or reply costs a retransmission timeout, so the commit rate falls, a lot ...
        with degraded(standby, loss="30%"):
            # Enough commits that some of their round trips lose a packet: over 20, with both workers' commits
            # sharing round trips, a run once lost none (about 0.7^10: a few runs in a hundred).
            during = rate(60)
        # ... and comes back once healed.
        after = rate(200)
    assert during < before / 2, f"{during:.0f} commits/s on the lossy link, {before:.0f} before"
    assert after > 2 * during, f"{after:.0f} commits/s after heal, {during:.0f} on the lossy link"
    assert load.log.lost_commits(standby) == set()


@pytest.mark.sync
def test_remote_apply_waits_for_a_standby_that_cannot_replay_where_on_returns_once_flushed(cluster_factory):
    cluster = cluster_factory()
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.set_synchronous("FIRST 1 (standby)", commit="on")
    with replay_paused(standby):
        # synchronous_commit = on: the standby has flushed it: the commit returns, replayed or not.
        primary.sql("INSERT INTO hoge VALUES (1)")
        primary.set_synchronous("FIRST 1 (standby)", commit="remote_apply")
        with primary.background_session() as session:
            # remote_apply: the commit waits until the standby has replayed it, which it cannot now.
            commit = session.send("INSERT INTO hoge VALUES (2)")
            commit.wait_until_blocked("SyncRep")  # raises unless it waits there
            standby.resume_replay()
            assert commit.result(timeout=60) == []
    assert standby.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]


@pytest.mark.slots
def test_a_standby_with_a_full_disk_holds_its_slots_wal_until_the_limit_then_is_lost_and_rebuilt(cluster_factory):
    cluster = cluster_factory(
        topology="slot",
        disk={"slot-standby": "160MB"},
        node_settings={"primary": {"max_slot_wal_keep_size": "64MB", "wal_keep_size": "0"}},
    )
    primary, standby = cluster.primary, cluster.node("slot-standby")
    tools = cluster.tools
    primary.sql("CREATE TABLE pad (filler text)")
    primary.wait_for_catchup(standby)
    slot = "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'slot_standby'"
    assert primary.scalar(slot) == "reserved"

    # The standby's disk fills: it cannot write the WAL it receives, and stops taking it.
    tools.run(["sh", "-c", FILL, "fill", f"{DATA_MOUNT}/filler"], mounts=tools.data(standby), user="root")

    # The primary writes on and keeps the WAL the slot needs, up to max_slot_wal_keep_size, then gives it
    # up: the slot is lost.
    def lost():
        primary.sql("INSERT INTO pad SELECT repeat('x', 1000) FROM generate_series(1, 16000)")
        primary.sql("CHECKPOINT")
        return primary.scalar(slot)

    poll_until(lost, lambda status: status == "lost", what="the slot to be lost", timeout=120, nodes=(primary,))

    # Freed, the standby cannot stream again through a lost slot: the harness's rebuild brings it back, after
    # the lost slot is dropped (the rebuilt standby makes it again with its base backup).
    tools.run(["rm", "-f", f"{DATA_MOUNT}/filler"], mounts=tools.data(standby), user="root")
    primary.sql("SELECT pg_drop_replication_slot('slot_standby')")
    # (The full disk stopped it: a server that cannot write its WAL stops.)
    if standby.container.status != "running":
        standby.start(wait=False)
    poll_until(standby.is_responsive, bool, what="the standby to answer again", nodes=(standby,))
    cluster.backups.rebuild(standby)
    primary.wait_for_catchup(standby, timeout=120)
    assert primary.scalar(slot) == "reserved"
    assert standby.scalar("SELECT count(*) FROM pad") == primary.scalar("SELECT count(*) FROM pad")
