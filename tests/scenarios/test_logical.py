"""Logical replication and slots, as PostgreSQL's own subscription suite tests them (src/test/subscription/t/).

A publisher (the cluster's primary, wal_level = logical) and subscribers that are independent primaries,
possibly of another major version: `cluster_factory(topology="logical")`, `cluster.add_primary(...)`.
"""

import psycopg.errors
import pytest

from pgharness.constants import DATA_MOUNT
from pgharness.errors import WaitTimeout
from pgharness.failover import rejoin, repoint
from pgharness.faults import partitioned
from pgharness.load import WriteLoad
from pgharness.logical import Publication, Subscription, create_logical_slot, pg_recvlogical, slot, slot_changes
from pgharness.lsn import Lsn
from tests.scenarios.helpers import (
    generate_segments,
    in_one_transaction,
    lose_partitioned_standby,
    notice_lost_standbys_fast,
    process_stopped,
    with_a_failover_slot,
)

pytestmark = pytest.mark.logical


def same_tables(publisher, subscriber, *tables):
    for table in tables:
        assert subscriber.table_checksum(table) == publisher.table_checksum(table), table


def test_initial_sync_and_changes_with_toast_and_a_large_transaction(logical, pg_major):
    _, publisher, subscriber = logical
    # Decoding spills (or streams) transactions larger than this.
    publisher.set_config(logical_decoding_work_mem="64kB")
    schema = [
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int)",
        "CREATE TABLE documents (id int PRIMARY KEY, body text)",
    ]
    for node in (publisher, subscriber):
        for statement in schema:
            node.sql(statement)
    publisher.sql("INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 1000) g")
    # TOAST values: large and incompressible, stored out of line.
    publisher.sql(
        "INSERT INTO documents SELECT g, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300))"
        " FROM generate_series(1, 20) g"
    )
    assert publisher.scalar("SELECT pg_column_size(body) > 2000 FROM documents LIMIT 1")

    # The initial copy, then ongoing changes; a transaction larger than logical_decoding_work_mem streamed
    # while it runs where the version can (14+; in parallel, 16+).
    streaming = {"streaming": "parallel" if pg_major >= 16 else "on"} if pg_major >= 14 else {}
    publication = publisher.publish("pub", tables=["accounts", "documents"])
    subscription = subscriber.subscribe(publication, "sub", **streaming)
    subscription.wait_for_sync()
    same_tables(publisher, subscriber, "accounts", "documents")

    publisher.sql("INSERT INTO accounts SELECT g, g FROM generate_series(1001, 20000) g")
    publisher.sql("UPDATE documents SET body = body || 'changed' WHERE id % 2 = 0")
    publisher.sql("DELETE FROM accounts WHERE id % 10 = 0")
    subscription.wait_for_catchup()
    assert subscriber.scalar("SELECT count(*) FROM accounts") == 18000
    same_tables(publisher, subscriber, "accounts", "documents")


@pytest.mark.pg(">=15")
def test_row_filters_and_column_lists(logical):
    _, publisher, subscriber = logical
    publisher.sql("CREATE TABLE items (id int PRIMARY KEY, region text, price int, secret text)")
    subscriber.sql("CREATE TABLE items (id int PRIMARY KEY, region text, price int)")

    # Only rows of region 'jp', and only three of the four columns, are published.
    publication = publisher.publish(
        "pub", tables=["items"], columns={"items": ["id", "region", "price"]}, where={"items": "region = 'jp'"}
    )
    publisher.sql("INSERT INTO items VALUES (1, 'jp', 10, 'x'), (2, 'us', 20, 'y'), (3, 'jp', 30, 'z')")
    subscription = subscriber.subscribe(publication, "sub")
    subscription.wait_for_sync()
    publisher.sql("INSERT INTO items VALUES (4, 'jp', 40, 'w'), (5, 'eu', 50, 'v')")
    subscription.wait_for_catchup()

    assert subscriber.sql("SELECT id, region, price FROM items ORDER BY id") == [
        (1, "jp", 10),
        (3, "jp", 30),
        (4, "jp", 40),
    ]


def subscribed_to_t(publisher, subscriber, **options):
    """A table t (id primary key) on both, published, subscribed with `options`, synchronised."""
    for node in (publisher, subscriber):
        node.sql("CREATE TABLE t (id int PRIMARY KEY)")
    subscription = subscriber.subscribe(publisher.publish("pub", tables=["t"]), "sub", **options)
    subscription.wait_for_sync()
    return subscription


@pytest.mark.pg(">=15")
def test_a_conflict_stops_apply_until_skipped(logical, pg_major):
    _, publisher, subscriber = logical
    subscription = subscribed_to_t(publisher, subscriber, disable_on_error=True)

    # A row that already exists on the subscriber: applying the publisher's INSERT fails (23505) ...
    subscriber.sql("INSERT INTO t VALUES (1)")
    position = subscriber.log_position()
    publisher.sql("INSERT INTO t VALUES (1)")
    line = subscriber.poll_log_until("23505", since=position)
    assert line == "23505"
    # ... the error is counted, and disable_on_error disabled the subscription.
    subscriber.poll_query_until("SELECT NOT subenabled FROM pg_subscription WHERE subname = 'sub'")
    assert subscription.stats()["apply_error_count"] >= 1
    if pg_major >= 18:  # and named by its kind
        assert subscription.stats()["confl_insert_exists"] >= 1
    # A wait on it says why it does not progress: the error count and the subscriber's own error line.
    with pytest.raises(WaitTimeout) as excinfo:
        subscription.wait_for_catchup(timeout=1)
    assert "'apply_error_count': 1" in excinfo.value.what
    assert "23505" in excinfo.value.what

    # The operator skips the failed transaction (its finish LSN, which only the log holds) and enables it again.
    failed = subscription.failed_transaction()
    assert failed is not None, subscriber.logs(tail=50)
    assert failed > Lsn.parse("0/0")
    subscription.skip(failed)
    subscription.enable()
    publisher.sql("INSERT INTO t VALUES (2)")
    subscription.wait_for_catchup()
    assert subscriber.sql("SELECT id FROM t ORDER BY id") == [(1,), (2,)]


@pytest.mark.pg(">=15")
def test_two_phase_transactions_are_prepared_on_the_subscriber(logical):
    _, publisher, subscriber = logical
    subscription = subscribed_to_t(publisher, subscriber, two_phase=True)
    subscriber.poll_query_until("SELECT subtwophasestate = 'e' FROM pg_subscription WHERE subname = 'sub'")

    # A transaction prepared on the publisher is prepared on the subscriber too ...
    for gid, value in (("commit-me", 1), ("roll-me-back", 2)):
        in_one_transaction(publisher, f"INSERT INTO t VALUES ({value})", end=f"PREPARE TRANSACTION '{gid}'")
    subscription.wait_for_catchup()
    assert subscriber.scalar("SELECT count(*) FROM pg_prepared_xacts") == 2
    assert subscriber.scalar("SELECT count(*) FROM t") == 0

    # ... and committed, or rolled back, on both.
    publisher.sql("COMMIT PREPARED 'commit-me'")
    publisher.sql("ROLLBACK PREPARED 'roll-me-back'")
    subscription.wait_for_catchup()
    assert subscriber.scalar("SELECT count(*) FROM pg_prepared_xacts") == 0
    assert subscriber.sql("SELECT id FROM t") == [(1,)] == publisher.sql("SELECT id FROM t")


@pytest.mark.slots
def test_logical_decoding_reads_changes_up_to_an_lsn(logical):
    _, publisher, _ = logical
    publisher.sql("CREATE TABLE t (id int PRIMARY KEY, note text)")
    create_logical_slot(publisher, "decoder", "test_decoding")
    publisher.sql("INSERT INTO t VALUES (1, 'one')")
    middle = publisher.lsn("write")
    publisher.sql("INSERT INTO t VALUES (2, 'two')")
    end = publisher.lsn("write")

    # Peeking reads without consuming; up to an LSN, only what was committed before it.
    peeked = slot_changes(publisher, "decoder", upto_lsn=middle, peek=True)
    assert [c for c in peeked if c.startswith("table")] == ["table public.t: INSERT: id[integer]:1 note[text]:'one'"]
    assert len(slot_changes(publisher, "decoder", peek=True)) > len(peeked)

    # pg_recvlogical, inside the node, streams the same changes up to the end.
    streamed = pg_recvlogical(publisher, "decoder", endpos=end)
    assert "note[text]:'two'" in streamed
    publisher.wait_for_slot_catchup("decoder", "confirmed_flush", end)
    assert slot(publisher, "decoder")["plugin"] == "test_decoding"


def standby_slot_and_a_row(cluster_factory, slot):
    """A logical topology's primary and standby (no subscriber), logical slot `slot` on the standby (made
    with the primary's running-xacts records), then table t with a row, replayed. Returns (primary, standby)."""
    cluster = cluster_factory(topology="logical", subscribers=0)
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE t (id int)")
    primary.wait_for_catchup(standby)
    create_logical_slot(standby, slot, upstream=primary)
    primary.sql("INSERT INTO t VALUES (1)")
    primary.wait_for_catchup(standby)
    return primary, standby


@pytest.mark.slots
@pytest.mark.pg(">=16")
def test_logical_decoding_on_a_standby_and_its_invalidation(cluster_factory, pg_major):
    # A logical slot on the standby (it needs a running-xacts record from the primary to start) ...
    primary, standby = standby_slot_and_a_row(cluster_factory, "on_standby")
    # ... decodes the primary's changes.
    changes = slot_changes(standby, "on_standby")
    assert "table public.t: INSERT: id[integer]:1" in changes

    # A client streams from it (pg_recvlogical, left running): the slot is in use.
    standby.container.exec_run(
        ["pg_recvlogical", "--dbname=postgres", "--slot=on_standby", "--start", "--no-loop", "-f", "/dev/null"],
        user="postgres",
        detach=True,
    )
    standby.poll_query_until("SELECT active FROM pg_replication_slots WHERE slot_name = 'on_standby'")

    # With hot_standby_feedback off, VACUUM on the primary removes catalog rows the slot needs: invalidated.
    primary.sql("CREATE TABLE gone (id int)")
    primary.sql("DROP TABLE gone")
    primary.sql("VACUUM pg_class")
    primary.wait_for_catchup(standby)
    column = "invalidation_reason" if pg_major >= 17 else "conflicting"
    expected = "rows_removed" if pg_major >= 17 else True
    # The client using it is ended: a recovery conflict of its own kind. (Once invalidated and released: the
    # startup process holds the slot while it invalidates it.)
    standby.wait_for_conflicts("active_logicalslot")
    standby.poll_query_until(
        f"SELECT {column} FROM pg_replication_slots WHERE slot_name = 'on_standby' AND NOT active", expected
    )
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        slot_changes(standby, "on_standby")


@pytest.mark.slots
@pytest.mark.pg(">=16")
def test_a_standby_slot_is_invalidated_when_its_wal_is_removed_or_wal_level_is_lowered(cluster_factory, pg_major):
    cluster = cluster_factory(topology="logical", subscribers=0)
    primary, standby = cluster.primary, cluster.standby
    standby.set_config(hot_standby_feedback=True)  # no catalog row is removed under the slots: other causes
    primary.sql("CREATE TABLE t (id int)")
    primary.wait_for_catchup(standby)
    reason = "invalidation_reason" if pg_major >= 17 else "wal_status"

    # WAL removed: the standby keeps no more than max_slot_wal_keep_size for its slots; a restart point
    # after more than that was written gives up the slot's WAL, and the slot.
    create_logical_slot(standby, "short_of_wal", upstream=primary)
    standby.set_config(max_slot_wal_keep_size="1MB")
    generate_segments(primary, "t", 3)
    primary.sql("CHECKPOINT")
    primary.wait_for_catchup(standby)
    standby.sql("CHECKPOINT")
    standby.poll_query_until(
        f"SELECT {reason} FROM pg_replication_slots WHERE slot_name = 'short_of_wal'",
        "wal_removed" if pg_major >= 17 else "lost",
    )
    standby.reset_config("max_slot_wal_keep_size")

    # wal_level lowered on the primary: the standby can no longer decode what it replays.
    create_logical_slot(standby, "level", upstream=primary)
    assert primary.set_config(wal_level="replica") == "restart"
    primary.restart()
    column = "invalidation_reason" if pg_major >= 17 else "conflicting"
    standby.poll_query_until(
        f"SELECT {column} FROM pg_replication_slots WHERE slot_name = 'level'",
        "wal_level_insufficient" if pg_major >= 17 else True,
    )
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        slot_changes(standby, "level")


@pytest.mark.slots
@pytest.mark.pg(">=16")
def test_a_standby_slot_survives_the_standby_s_promotion(cluster_factory):
    primary, standby = standby_slot_and_a_row(cluster_factory, "kept")

    # The primary dies; the standby is promoted, and writes.
    primary.kill()
    standby.promote()
    standby.sql("INSERT INTO t VALUES (2)")

    # The slot is still there, and decodes both: what was replayed before promotion and what came after.
    changes = slot_changes(standby, "kept")
    assert [c for c in changes if c.startswith("table ")] == [
        "table public.t: INSERT: id[integer]:1",
        "table public.t: INSERT: id[integer]:2",
    ]


def publisher_failover(cluster, *, failover_slots):
    """`with_a_failover_slot`, then the publisher crashes under load: its synchronous standby is promoted,
    and the subscription is pointed at it. Returns (the old publisher, the new one, the subscriber, the
    re-pointed subscription, the write load, the subscriber's log position before the re-pointing)."""
    publisher, standby, subscriber, subscription = with_a_failover_slot(cluster, failover_slots=failover_slots)
    publisher.set_synchronous("FIRST 1 (standby2)")
    with WriteLoad(publisher.dsn(), workers=2) as load:
        load.wait_for_commits(200)
        publisher.kill()
    standby.promote()
    position = subscriber.log_position()
    return publisher, standby, subscriber, subscription.repoint(standby), load, position


def the_rest_follows(cluster, old, new):
    """The failover toolkit works with subscribers around: the other standby follows the new publisher, and
    the old publisher comes back as its standby (pg_rewind), as any failed primary does."""
    repoint(cluster.standby, new)
    rejoin(cluster, old, new)
    assert old.is_in_recovery()
    new.sql("INSERT INTO pgharness_load VALUES (98, 1)")
    for node in (cluster.standby, old):
        new.wait_for_catchup(node)
        assert node.scalar("SELECT count(*) FROM pgharness_load WHERE worker = 98") == 1


@pytest.mark.slots
@pytest.mark.failover
@pytest.mark.pg(">=17")
def test_a_subscription_continues_from_its_synchronised_slot_after_a_publisher_failover(cluster_factory):
    cluster = cluster_factory(topology="logical", standbys=2)
    old, new, subscriber, subscription, load, _ = publisher_failover(cluster, failover_slots=True)
    new.sql("INSERT INTO pgharness_load VALUES (99, 1)")  # written on the new publisher at once

    # It continues from the synchronised slot: nothing acknowledged is lost, nothing is applied twice, and
    # what the new publisher wrote before the subscription reached it is delivered too.
    subscription.wait_for_catchup()
    assert load.log.lost_commits(subscriber) == set()
    assert subscriber.sql("SELECT seq FROM pgharness_load WHERE worker = 99") == [(1,)]
    assert subscriber.table_checksum("pgharness_load") == new.table_checksum("pgharness_load")
    the_rest_follows(cluster, old, new)


@pytest.mark.slots
@pytest.mark.failover
@pytest.mark.pg("<17")
def test_before_17_a_subscription_cannot_continue_after_a_publisher_failover(cluster_factory):
    cluster = cluster_factory(topology="logical", standbys=2)
    old, new, subscriber, subscription, load, position = publisher_failover(cluster, failover_slots=False)
    new.sql("INSERT INTO pgharness_load VALUES (99, 1)")  # written on the new publisher at once

    # The slot lived on the old publisher only: the new one has none of that name.
    subscriber.poll_log_until('replication slot "sub" does not exist', since=position)

    # What is lost: a slot made now starts now. The row written before it never arrives; one after does.
    new.sql("SELECT pg_create_logical_replication_slot('sub', 'pgoutput')")
    new.sql("INSERT INTO pgharness_load VALUES (99, 2)")
    subscription.wait_for_catchup()
    assert subscriber.sql("SELECT seq FROM pgharness_load WHERE worker = 99") == [(2,)]
    assert new.sql("SELECT seq FROM pgharness_load WHERE worker = 99 ORDER BY seq") == [(1,), (2,)]
    # So is every acknowledged commit the subscriber had not applied when the publisher died.
    applied = {(w, q) for w, q in subscriber.sql("SELECT worker, seq FROM pgharness_load WHERE worker < 99")}
    assert load.log.lost_commits(subscriber) == set(load.log.acknowledged) - applied
    the_rest_follows(cluster, old, new)


@pytest.mark.slots
@pytest.mark.failover
@pytest.mark.pg(">=17")
def test_synchronized_standby_slots_hold_changes_back_while_the_standby_is_cut_off(cluster_factory):
    cluster = cluster_factory(topology="logical", standbys=2)
    publisher, standby, subscriber, subscription = with_a_failover_slot(cluster, failover_slots=True)
    notice_lost_standbys_fast(publisher)

    with partitioned(standby):
        lose_partitioned_standby(
            publisher, "SELECT active FROM pg_replication_slots WHERE slot_name = 'standby_slot'", False
        )
        publisher.sql("INSERT INTO pgharness_load VALUES (99, 1)")
        # The subscription's walsender waits for the standby to confirm the change (it is in
        # synchronized_standby_slots), so the subscriber never gets ahead of the standby that would take over.
        publisher.poll_query_until(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' "
            "AND wait_event = 'WaitForStandbyConfirmation'",
            1,
        )
        assert subscriber.sql("SELECT * FROM pgharness_load WHERE worker = 99") == []
        standby_lsn, sub_lsn = publisher.sql(
            "SELECT (SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'standby_slot'),"
            " (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'sub')"
        )[0]
        assert Lsn.parse(sub_lsn) <= Lsn.parse(standby_lsn)

    # Healed, the standby confirms, and the change goes on to the subscriber.
    subscription.wait_for_catchup()
    assert subscriber.sql("SELECT seq FROM pgharness_load WHERE worker = 99") == [(1,)]


@pytest.mark.slots
@pytest.mark.failover
@pytest.mark.pg(">=17")
def test_pg_sync_replication_slots_on_demand_and_a_slot_that_cannot_sync(cluster_factory):
    cluster = cluster_factory(topology="logical", standbys=2)
    publisher, standby, _, subscription = with_a_failover_slot(
        cluster, failover_slots=True, hold_back=False, sync_worker=False
    )
    synced = "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'sub' AND synced"

    # Without the slot-sync worker, the standby has no copy until it is asked for one.
    assert standby.sql(synced) == []
    standby.sql("SELECT pg_sync_replication_slots()")
    first = Lsn.parse(standby.scalar(synced))

    # The standby stops receiving (its WAL receiver is stopped) while the subscriber confirms more: a copy
    # of the slot now would be ahead of the standby's WAL, and the standby refuses to make it.
    with process_stopped(standby, "walreceiver"):
        received = standby.lsn("receive")
        publisher.sql("INSERT INTO pgharness_load VALUES (99, 1)")
        ahead = subscription.wait_for_catchup()
        publisher.poll_query_until(
            f"SELECT confirmed_flush_lsn > '{received}' FROM pg_replication_slots WHERE slot_name = 'sub'"
        )
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            standby.sql("SELECT pg_sync_replication_slots()")
        assert Lsn.parse(standby.scalar(synced)) == first

    # Once it has the WAL, the copy catches up.
    publisher.wait_for_catchup(standby)
    standby.sql("SELECT pg_sync_replication_slots()")
    assert Lsn.parse(standby.scalar(synced)) >= ahead


def test_a_subscriber_gets_each_change_once_across_publisher_restarts(logical):
    _, publisher, subscriber = logical
    for node in (publisher, subscriber):
        WriteLoad.create_table(node)
    subscription = subscriber.subscribe(publisher.publish("pub", tables=["pgharness_load"]), "sub")
    subscription.wait_for_sync()

    # The publisher is stopped cleanly, then crashes, each time under load; the subscription reconnects and
    # asks its slot for what follows its confirmed position. (The writers ask for the publisher's address at
    # each connection: a restarted container is published on a new port.)
    with WriteLoad(publisher.dsn, workers=2) as load:
        for stop in (publisher.restart, lambda: (publisher.kill(), publisher.start())):
            load.wait_for_commits(load.log.count() + 200)
            stop()
        load.wait_for_commits(load.log.count() + 200)
    subscription.wait_for_catchup()

    # Every acknowledged commit arrived, once: a change delivered twice would break the primary key and stop
    # the apply worker, and the tables would differ.
    assert load.log.lost_commits(subscriber) == set()
    assert subscriber.table_checksum("pgharness_load") == publisher.table_checksum("pgharness_load")


@pytest.mark.pg(">=17")
def test_blue_green_switch_to_a_standby_turned_subscriber_by_pg_createsubscriber(cluster_factory):
    # Blue-green: the standby (green) becomes a logical subscriber of the primary (blue) with
    # pg_createsubscriber, then clients switch to it. (Upgrading green in between, the point of it, needs
    # a pair that upgrades with tables: 17 to 18 is blocked, see test_upgrade.BLOCKED.)
    cluster = cluster_factory(topology="logical", subscribers=0)
    blue, green = cluster.primary, cluster.standby
    WriteLoad.create_table(blue)
    blue.wait_for_catchup(green)
    clients = {"node": blue}

    with WriteLoad(lambda: clients["node"].dsn(), workers=2) as load:
        load.wait_for_commits(200)
        # On the stopped standby's data: a publication and a slot on blue, a subscription on green
        # starting where its recovery ended; green is promoted. Its recovery streams with the connection
        # string it is given, the superuser's: blue lets that role replicate, here only.
        blue.add_hba("host", "replication", "postgres", "all", "scram-sha-256")
        green.stop()
        cluster.tools.run(
            ["sh", "-c", 'cd /tmp && exec pg_createsubscriber "$@"', "pg_createsubscriber",
             f"--pgdata={DATA_MOUNT}/data", f"--publisher-server={blue.conninfo()}", "--database=postgres",
             "--publication=bluegreen", "--subscription=bluegreen", "--socketdir=/tmp"],
            mounts=cluster.tools.data(green),
            what="pg_createsubscriber",
        )  # fmt: skip
        green.start()
        assert not green.is_in_recovery()
        subscription = Subscription(green, "bluegreen", Publication(blue, "bluegreen"))
        subscription.wait_for_catchup()
        load.wait_for_commits(load.log.count() + 200)  # blue still takes the writes; green follows

        # The switch: blue stops accepting writes (its sessions end), green catches up, the clients move.
        blue.set_config(default_transaction_read_only=True)
        blue.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                 "AND pid <> pg_backend_pid()")  # fmt: skip
        subscription.wait_for_catchup()
        on_blue = blue.scalar("SELECT count(*) FROM pgharness_load")
        clients["node"] = green
        load.wait_for_commits(load.log.count() + 200)

    # Every commit a client saw acknowledged, on blue before the switch or on green after it, is on green,
    # once (its primary key); blue took none after the switch.
    assert load.log.lost_commits(green) == set()
    rows = green.sql("SELECT worker, seq FROM pgharness_load")
    assert len(rows) == len(set(rows))
    assert blue.scalar("SELECT count(*) FROM pgharness_load") == on_blue
