"""Failover under faults (sections 26.3 and 26.5 of the manual).

PostgreSQL detects no failure and tells no standby: failover is the operator's
move. Here the harness is the operator; the scenarios measure how long writes
are unavailable and count what is lost. Timings are recorded as properties in
the JUnit report, never asserted.
"""

import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout

import psycopg
import pytest

from pgharness import WaitTimeout
from pgharness.failover import (
    SplitBrain,
    choose_new_primary,
    fence,
    multi_host_dsn,
    rejoin,
    repoint,
    single_primary,
    wait_until_unresponsive,
)
from pgharness.faults import partitioned
from pgharness.load import WriteLoad
from pgharness.wait import poll_until
from tests.scenarios.helpers import notice_lost_standbys_fast, process_stopped

pytestmark = pytest.mark.failover


def test_crash_failover_under_load_and_clients_follow(cluster, record_property):
    primary, standby = cluster.primary, cluster.standby
    WriteLoad.create_table(primary)
    primary.wait_for_catchup(standby)

    # Clients use a multi-host connection string: they look for the writable node themselves.
    dsn = multi_host_dsn([primary, standby])
    with WriteLoad(dsn, workers=2) as load:
        load.wait_for_commits(200)

        # The primary crashes (SIGKILL) under the load. Commits acknowledged after it is
        # dead can only come from the new primary.
        killed_at = time.monotonic()
        primary.kill()
        dead_at = time.monotonic()

        # The operator's move: promote the standby. Writes resume there.
        standby.promote()
        promoted_at = time.monotonic()
        load.wait_for_commits(load.log.count() + 100)

    # How long writes were unavailable (recorded, not asserted).
    first_write = load.log.first_ack_after(dead_at)
    record_property("kill_to_first_write_s", round(first_write - killed_at, 3))
    record_property("promote_call_s", round(promoted_at - killed_at, 3))

    # A new client with the same connection string reaches the new primary.
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert conn.info.port == standby.port
    assert single_primary(cluster).name == "standby"

    # Asynchronous replication may lose acknowledged commits: count them (a figure, not a failure).
    record_property("lost_acknowledged_commits", len(load.log.lost_commits(standby)))


def test_hung_primary_is_detected_fenced_and_replaced(cluster):
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge AS SELECT 1 AS col")
    primary.wait_for_catchup(standby)

    # The primary hangs: its container is frozen, its TCP port still open.
    primary.pause()

    # Detection, as a monitor does it: queries time out.
    wait_until_unresponsive(primary, timeout=30)

    # Fence it before promoting, so it can never come back as a second primary.
    fence(primary)
    standby.promote()
    standby.sql("INSERT INTO hoge VALUES (2)")

    # The old primary is down for good; the promoted standby is the only primary.
    assert primary.container.status == "exited"
    assert single_primary(cluster).name == "standby"


@pytest.mark.parametrize("fenced", [False, True], ids=["unfenced", "fenced"])
def test_partitioned_primary_is_split_brain_unless_fenced(cluster, fenced):
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge AS SELECT 1 AS col")
    primary.wait_for_catchup(standby)

    # The primary is cut off from the standby and from its clients.
    with partitioned(primary, clients=True):
        assert not primary.is_responsive()
        if fenced:
            fence(primary)
        # The operator promotes the standby, which takes writes.
        standby.promote()
        standby.sql("INSERT INTO hoge VALUES (2)")

    # After the partition heals: two writable nodes on diverged timelines, unless fenced.
    if fenced:
        assert single_primary(cluster).name == "standby"
    else:
        poll_until(primary.is_responsive, what="the old primary to answer again after the heal")
        with pytest.raises(SplitBrain, match="2 writable nodes on diverged timelines"):
            single_primary(cluster)


def test_failed_primary_rejoins_as_a_standby_with_pg_rewind(cluster):
    primary, standby = cluster.primary, cluster.standby
    notice_lost_standbys_fast(primary)
    primary.sql("CREATE TABLE hoge AS SELECT generate_series(1, 100) AS col")
    primary.wait_for_catchup(standby)

    # The primary writes transactions the standby never gets, then crashes.
    with partitioned(standby):
        primary.sql("INSERT INTO hoge SELECT generate_series(101, 110)")
        primary.kill()

    # Failover: the standby is promoted and writes on timeline 2.
    standby.promote()
    standby.sql("INSERT INTO hoge SELECT generate_series(1001, 1010)")

    # pg_rewind brings the old primary back as a standby of the new one.
    rejoined = rejoin(cluster, "primary", upstream="standby")
    assert rejoined.is_in_recovery()
    assert rejoined.timeline() == 2

    # The transactions only the old primary had are gone, on both; the tables converge.
    for node in (standby, rejoined):
        assert node.scalar("SELECT count(*) FROM hoge WHERE col BETWEEN 101 AND 110") == 0
    assert rejoined.table_checksum("hoge") == standby.table_checksum("hoge")
    single_primary(cluster)


@pytest.mark.sync
@pytest.mark.parametrize("commits_before_kill", [20, 300, 1500])
def test_synchronous_replication_loses_no_acknowledged_commit(cluster, commits_before_kill):
    primary, standby = cluster.primary, cluster.standby
    WriteLoad.create_table(primary)
    primary.set_synchronous("FIRST 1 (standby)", commit="on")

    # Clients commit under load; the primary is killed at a different point each time.
    with WriteLoad(primary.dsn(), workers=3) as load:
        load.wait_for_commits(commits_before_kill)
        primary.kill()
    standby.promote()

    # Every commit a client saw acknowledged is on the promoted standby (and it holds them, not just no fewer).
    acknowledged = set(load.log.acknowledged)
    assert load.log.lost_commits(standby) == set()
    on_standby = {(int(w), int(s)) for w, s in standby.sql("SELECT worker, seq FROM pgharness_load")}
    assert acknowledged <= on_standby


@pytest.mark.sync
def test_asynchronous_replication_reports_lost_commits(cluster, record_property):
    primary, standby = cluster.primary, cluster.standby
    WriteLoad.create_table(primary)

    # The same crash without synchronous replication.
    with WriteLoad(primary.dsn(), workers=3) as load:
        load.wait_for_commits(1500)
        primary.kill()
    standby.promote()

    # What was lost is a figure to report, not a failure: asynchronous replication allows it.
    # The figure is real: every commit the clients saw acknowledged is on the promoted standby, or counted lost.
    lost = load.log.lost_commits(standby)
    record_property("lost_acknowledged_commits", len(lost))
    present = {(int(w), int(s)) for w, s in standby.sql("SELECT worker, seq FROM pgharness_load")}
    assert lost == set(load.log.acknowledged) - present
    assert not lost & present


@pytest.mark.sync
def test_commits_block_while_the_only_synchronous_standby_is_down(cluster):
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.set_synchronous("FIRST 1 (standby)", commit="on")

    # The only synchronous standby goes down.
    standby.stop()
    with primary.background_session() as session:
        commit = session.send("INSERT INTO hoge VALUES (1)")

        # The commit waits for it: the backend is in the SyncRep wait, and has not returned ...
        commit.wait_until_blocked("SyncRep")  # raises unless it waits there
        # ... nor does it within a bounded wait.
        with pytest.raises(WaitTimeout):
            commit.result(timeout=1)

        # The standby comes back; the commit completes.
        standby.start()
        assert commit.result(timeout=60) == []
    primary.wait_for_catchup(standby)
    assert standby.sql("SELECT col FROM hoge") == [(1,)]


@pytest.mark.sync
def test_set_synchronous_returns_once_commits_wait(cluster):
    # Whether a commit waits is the checkpointer's to publish, when it reloads its configuration;
    # pg_stat_replication shows the standby as synchronous before that. With the checkpointer stopped,
    # set_synchronous does not return.
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")
    with ThreadPoolExecutor(1) as pool:
        with process_stopped(primary, "checkpointer"):
            setting = pool.submit(primary.set_synchronous, "FIRST 1 (standby)", commit="remote_apply")
            primary.poll_query_until("SELECT count(*) > 0 FROM pg_stat_replication WHERE sync_state = 'sync'", True)
            with pytest.raises(FutureTimeout):
                setting.result(timeout=2)
        setting.result(timeout=60)

    # From then on a commit waits for the standby to apply it: with replay paused, it stays in the SyncRep
    # wait until replay resumes.
    standby.sql("SELECT pg_wal_replay_pause()")
    with primary.background_session() as session:
        commit = session.send("INSERT INTO hoge VALUES (1)")
        commit.wait_until_blocked("SyncRep")  # raises unless it waits there
        standby.sql("SELECT pg_wal_replay_resume()")
        assert commit.result(timeout=60) == []
    assert standby.sql("SELECT col FROM hoge") == [(1,)]


@pytest.mark.sync
def test_remote_apply_gives_read_your_writes_on_the_standby(cluster):
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.set_synchronous("FIRST 1 (standby)", commit="remote_apply")

    # Each commit returns only once the standby has applied it: a read there right after sees it.
    with primary.connect() as writer, standby.connect() as reader:
        for i in range(1, 51):
            writer.execute("INSERT INTO hoge VALUES (%s)", (i,))
            assert reader.execute("SELECT count(*) FROM hoge").fetchone() == (i,)


@pytest.mark.cascade
def test_cascading_standby_follows_its_promoted_upstream(cluster):
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")

    # standby2 streams from standby, not from the primary.
    standby2 = cluster.add_node("standby2", upstream="standby")
    assert primary.sql("SELECT application_name FROM pg_stat_replication") == [("standby",)]
    assert standby.sql("SELECT application_name FROM pg_stat_replication") == [("standby2",)]

    # A row from the primary reaches standby2 through standby.
    primary.sql("INSERT INTO hoge VALUES (1)")
    primary.wait_for_catchup(standby)
    standby.wait_for_catchup(standby2)
    assert standby2.sql("SELECT col FROM hoge") == [(1,)]

    # The primary dies and standby is promoted: standby2 follows it onto timeline 2.
    primary.kill()
    standby.promote()
    standby.sql("INSERT INTO hoge VALUES (2)")
    standby.wait_for_catchup(standby2)
    assert standby2.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]
    assert standby2.timeline() == 2


def standby2_behind_when_the_primary_dies(cluster_factory, insert):
    """A primary and two standbys; standby2 is cut off while the primary runs `insert`, then the primary
    dies: standby has WAL that standby2 never got. Returns (standby, standby2)."""
    cluster = cluster_factory(standbys=2)
    primary, standby, standby2 = cluster.primary, cluster.standby, cluster.node("standby2")
    notice_lost_standbys_fast(primary)
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_catchup(standby2)
    with partitioned(standby2):
        primary.sql(insert)
        primary.wait_for_catchup(standby)
        primary.kill()
    return standby, standby2


def test_the_most_advanced_standby_is_chosen_and_the_other_follows_it(cluster_factory):
    # standby2 falls behind (cut off while the primary writes), then the primary dies.
    standby, standby2 = standby2_behind_when_the_primary_dies(
        cluster_factory, "INSERT INTO hoge SELECT generate_series(1, 100)"
    )

    # The harness compares how far each got, and promotes the more advanced one.
    chosen = choose_new_primary([standby, standby2])
    assert chosen.name == "standby"
    chosen.promote()

    # The other is re-pointed to the new primary and catches up on its timeline.
    repoint(standby2, chosen)
    chosen.sql("INSERT INTO hoge VALUES (101)")
    chosen.wait_for_catchup(standby2)
    assert standby2.table_checksum("hoge") == chosen.table_checksum("hoge")
    assert standby2.timeline() == 2


def test_a_standby_ahead_of_the_promoted_one_is_rewound_to_follow_it(cluster_factory):
    # An operator may promote a standby that is not the most advanced (the synchronous one, one in the
    # right data centre): a standby that got WAL the new primary never had cannot stream from it.
    standby, standby2 = standby2_behind_when_the_primary_dies(cluster_factory, "INSERT INTO hoge VALUES (1)")
    standby2.promote()

    # repoint sees that standby has WAL past the fork of standby2's timeline and rewinds it (pg_rewind).
    assert repoint(standby, standby2) is standby
    standby2.sql("INSERT INTO hoge VALUES (2)")
    standby2.wait_for_catchup(standby)
    assert standby.sql("SELECT col FROM hoge") == [(2,)]
    assert standby.timeline() == 2
