"""What else logical replication users ask about: partitions, replica identity, TRUNCATE, publications added
and dropped, whole schemas, a subscription owned by a non-superuser, two primaries replicating both ways.

Each runs on the shared logical cluster (`logical`) with tables of its own.
"""

import contextlib

import psycopg.errors
import pytest
from psycopg import sql as pgsql

from pgharness.logical import Subscription
from pgharness.wait import poll_until

pytestmark = pytest.mark.logical


def on_both(publisher, subscriber, *statements):
    for node in (publisher, subscriber):
        for statement in statements:
            node.sql(statement)


def rows(node, table):
    """Every row of `table`, sorted."""
    return sorted(node.sql(f"SELECT * FROM {table}"))


def test_a_partitioned_table_published_through_its_root_lands_in_a_plain_table(logical):
    _, publisher, subscriber = logical
    publisher.sql("CREATE TABLE meas (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)")
    publisher.sql("CREATE TABLE meas_low PARTITION OF meas FOR VALUES FROM (0) TO (100)")
    publisher.sql("CREATE TABLE meas_high PARTITION OF meas FOR VALUES FROM (100) TO (200)")
    subscriber.sql("CREATE TABLE meas (id int PRIMARY KEY, v text)")  # not partitioned there
    publisher.sql("INSERT INTO meas VALUES (1, 'a'), (150, 'b')")

    # Changes go out as the root's: the subscriber needs no partitions of the same names.
    publication = publisher.publish("pub", tables=["meas"], options={"publish_via_partition_root": True})
    subscription = subscriber.subscribe(publication, "sub")
    subscription.wait_for_sync()
    # An UPDATE that moves a row to the other partition is an UPDATE of the root.
    publisher.sql("UPDATE meas SET id = 101 WHERE id = 1")
    publisher.sql("INSERT INTO meas VALUES (2, 'c')")
    subscription.wait_for_catchup()
    assert rows(subscriber, "meas") == [(2, "c"), (101, "a"), (150, "b")]


def test_replica_identity_full_replicates_updates_of_a_table_without_a_key_and_truncate_empties_it(logical):
    _, publisher, subscriber = logical
    on_both(publisher, subscriber, "CREATE TABLE nokey (a int, b text)")
    publication = publisher.publish("pub", tables=["nokey"])
    publisher.sql("INSERT INTO nokey VALUES (1, 'x'), (1, 'x'), (2, 'y')")

    # Without a key or a replica identity, the publisher refuses UPDATE and DELETE of a published table.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        publisher.sql("UPDATE nokey SET b = 'z' WHERE a = 2")
    # With REPLICA IDENTITY FULL the whole old row identifies it (duplicates included).
    publisher.sql("ALTER TABLE nokey REPLICA IDENTITY FULL")
    subscription = subscriber.subscribe(publication, "sub")
    subscription.wait_for_sync()
    publisher.sql("UPDATE nokey SET b = 'z' WHERE a = 2")
    publisher.sql("DELETE FROM nokey WHERE ctid = (SELECT min(ctid) FROM nokey WHERE a = 1)")
    subscription.wait_for_catchup()
    assert rows(subscriber, "nokey") == rows(publisher, "nokey") == [(1, "x"), (2, "z")]

    # TRUNCATE is replicated too.
    publisher.sql("TRUNCATE nokey")
    subscription.wait_for_catchup()
    assert rows(subscriber, "nokey") == []


@pytest.mark.pg(">=14")
def test_publications_and_tables_added_and_dropped_with_refresh(logical):
    _, publisher, subscriber = logical
    on_both(publisher, subscriber, *(f"CREATE TABLE {t} (id int PRIMARY KEY)" for t in ("ta", "tb", "tc")))
    publisher.sql("INSERT INTO tb VALUES (1)")
    publisher.sql("INSERT INTO tc VALUES (1)")
    subscription = subscriber.subscribe(publisher.publish("pub_a", tables=["ta"]), "sub")
    publisher.publish("pub_b", tables=["tb"])
    subscription.wait_for_sync()

    # A publication added to the subscription: its tables are copied, then followed.
    subscriber.sql("ALTER SUBSCRIPTION sub ADD PUBLICATION pub_b")  # WITH (refresh = true), the default
    subscription.wait_for_sync()
    assert rows(subscriber, "tb") == [(1,)]
    # A table added to a publication: the subscription learns of it at REFRESH PUBLICATION.
    publisher.sql("ALTER PUBLICATION pub_a ADD TABLE tc")
    subscription.refresh()
    subscription.wait_for_sync()
    assert rows(subscriber, "tc") == [(1,)]

    # A publication dropped from the subscription: its tables are no longer followed.
    subscriber.sql("ALTER SUBSCRIPTION sub DROP PUBLICATION pub_b")
    publisher.sql("INSERT INTO tb VALUES (2)")
    publisher.sql("INSERT INTO ta VALUES (2)")
    subscription.wait_for_catchup()
    assert rows(subscriber, "ta") == [(2,)]
    assert rows(subscriber, "tb") == [(1,)]


@pytest.mark.pg(">=15")
def test_tables_in_schema_publishes_tables_made_later_too(logical):
    _, publisher, subscriber = logical
    on_both(publisher, subscriber, "CREATE SCHEMA sales", "CREATE TABLE sales.orders (id int PRIMARY KEY)")
    try:
        subscription = subscriber.subscribe(publisher.publish("pub", schemas=["sales"]), "sub")
        subscription.wait_for_sync()
        # A table made in the schema afterwards belongs to the publication at once; the subscriber takes it
        # on at REFRESH PUBLICATION.
        on_both(publisher, subscriber, "CREATE TABLE sales.refunds (id int PRIMARY KEY)")
        publisher.sql("INSERT INTO sales.orders VALUES (1)")
        publisher.sql("INSERT INTO sales.refunds VALUES (1)")
        subscription.refresh()
        subscription.wait_for_sync()
        assert rows(subscriber, "sales.orders") == rows(subscriber, "sales.refunds") == [(1,)]
    finally:
        with contextlib.suppress(psycopg.Error):
            subscriber.sql("DROP SUBSCRIPTION IF EXISTS sub")
        on_both(publisher, subscriber, "DROP SCHEMA sales CASCADE")


@pytest.mark.pg(">=16")
def test_a_subscription_owned_by_a_non_superuser(logical):
    _, publisher, subscriber = logical
    on_both(publisher, subscriber, "CREATE TABLE owned (id int PRIMARY KEY)")
    publication = publisher.publish("pub", tables=["owned"])
    # A role that may create subscriptions (pg_create_subscription, 16+) and owns the table it applies to.
    subscriber.sql("CREATE ROLE sub_owner LOGIN PASSWORD 'sub_owner'")
    try:
        subscriber.sql("GRANT pg_create_subscription TO sub_owner")
        subscriber.sql("GRANT CREATE ON DATABASE postgres TO sub_owner")
        subscriber.sql("ALTER TABLE owned OWNER TO sub_owner")
        with subscriber.connect(user="sub_owner", password="sub_owner") as conn:
            # The connection string carries the publisher's password: a non-superuser must use one.
            conn.execute(
                pgsql.SQL("CREATE SUBSCRIPTION sub CONNECTION {} PUBLICATION pub").format(
                    pgsql.Literal(publisher.conninfo())
                )
            )
        assert subscriber.scalar("SELECT subowner::regrole::text FROM pg_subscription") == "sub_owner"
        subscription = Subscription(subscriber, "sub", publication)
        subscription.wait_for_sync()
        publisher.sql("INSERT INTO owned VALUES (1)")
        subscription.wait_for_catchup()
        assert rows(subscriber, "owned") == [(1,)]
    finally:
        with contextlib.suppress(psycopg.Error):
            subscriber.sql("DROP SUBSCRIPTION IF EXISTS sub")
        subscriber.sql("DROP OWNED BY sub_owner CASCADE")
        subscriber.sql("DROP ROLE sub_owner")


@pytest.mark.pg(">=16")
def test_origin_none_lets_two_primaries_replicate_both_ways_without_a_loop(logical):
    _, left, right = logical
    on_both(left, right, "CREATE TABLE both_ways (id int PRIMARY KEY, side text)")
    # Each subscribes to the other, taking only changes that originated there (origin = none): a row
    # applied from the other side is not sent back to it.
    to_right = right.subscribe(left.publish("pub_left", tables=["both_ways"]), "from_left", origin="none")
    to_left = left.subscribe(right.publish("pub_right", tables=["both_ways"]), "from_right", origin="none")
    for subscription in (to_right, to_left):
        subscription.wait_for_sync()

    left.sql("INSERT INTO both_ways VALUES (1, 'left')")
    right.sql("INSERT INTO both_ways VALUES (2, 'right')")
    for subscription in (to_right, to_left):
        subscription.wait_for_catchup()
    # Each row once on each side; a loop would send row 1 back to the left and fail on its key there.
    for node in (left, right):
        assert rows(node, "both_ways") == [(1, "left"), (2, "right")]
    for subscription in (to_right, to_left):
        assert subscription.stats()["apply_error_count"] == 0


# --- row filters and column lists in motion (028_row_filter.pl, 031_column_list.pl) ------------------


@pytest.mark.pg(">=15")
def test_an_update_that_moves_a_row_across_a_row_filter_arrives_as_an_insert_or_a_delete(logical):
    """After ``028_row_filter.pl``: the filter is evaluated on the old and the new row of an UPDATE."""
    _, publisher, subscriber = logical
    on_both(publisher, subscriber, "CREATE TABLE items (id int PRIMARY KEY, region text)")
    publisher.sql("ALTER TABLE items REPLICA IDENTITY FULL")  # a filter on a column outside the key needs it
    publisher.sql("INSERT INTO items VALUES (1, 'jp'), (2, 'us'), (3, 'jp')")
    publication = publisher.publish("pub", tables=["items"], where={"items": "region = 'jp'"})
    subscription = subscriber.subscribe(publication, "sub")
    subscription.wait_for_sync()
    assert rows(subscriber, "items") == [(1, "jp"), (3, "jp")]

    publisher.sql("UPDATE items SET region = 'jp' WHERE id = 2")  # moves in: an INSERT there
    publisher.sql("UPDATE items SET region = 'us' WHERE id = 1")  # moves out: a DELETE there
    publisher.sql("UPDATE items SET region = 'us' WHERE id = 1")  # outside before and after: nothing
    subscription.wait_for_catchup()
    assert rows(subscriber, "items") == [(2, "jp"), (3, "jp")]
    assert subscription.stats()["apply_error_count"] == 0


@pytest.mark.pg(">=15")
def test_the_row_filters_of_two_publications_of_one_table_combine_with_or(logical):
    _, publisher, subscriber = logical
    on_both(publisher, subscriber, "CREATE TABLE items (id int PRIMARY KEY, region text)")
    publisher.sql("INSERT INTO items VALUES (1, 'jp'), (2, 'us'), (3, 'eu')")
    publisher.publish("pub_jp", tables=["items"], where={"items": "region = 'jp'"})
    publication = publisher.publish("pub_us", tables=["items"], where={"items": "region = 'us'"})
    # Both publications before the initial copy starts (enabled only then): a copy already under way with
    # one publication's filter would stay that way.
    subscription = subscriber.subscribe(publication, "sub", enabled=False)
    subscriber.sql("ALTER SUBSCRIPTION sub ADD PUBLICATION pub_jp WITH (refresh = false)")
    subscription.enable()
    subscription.wait_for_sync()
    publisher.sql("INSERT INTO items VALUES (4, 'jp'), (5, 'us'), (6, 'eu')")
    subscription.wait_for_catchup()
    # A row either filter lets through arrives: the initial copy and the changes alike.
    assert rows(subscriber, "items") == [(1, "jp"), (2, "us"), (4, "jp"), (5, "us")]


@pytest.mark.pg(">=15")
def test_a_column_list_changed_by_alter_publication_and_two_lists_that_conflict(logical):
    """After ``031_column_list.pl``."""
    _, publisher, subscriber = logical
    publisher.sql("CREATE TABLE items (id int PRIMARY KEY, price int, secret text)")
    subscriber.sql("CREATE TABLE items (id int PRIMARY KEY, price int, secret text)")
    publication = publisher.publish("pub", tables=["items"], columns={"items": ["id"]})
    subscription = subscriber.subscribe(publication, "sub")
    subscription.wait_for_sync()
    publisher.sql("INSERT INTO items VALUES (1, 10, 'x')")
    subscription.wait_for_catchup()
    assert rows(subscriber, "items") == [(1, None, None)]

    # The list widened: later changes carry the new column; the rest stays out.
    publisher.sql("ALTER PUBLICATION pub SET TABLE items (id, price)")
    publisher.sql("INSERT INTO items VALUES (2, 20, 'y')")
    publisher.sql("UPDATE items SET price = 11 WHERE id = 1")
    subscription.wait_for_catchup()
    assert rows(subscriber, "items") == [(1, 11, None), (2, 20, None)]

    # Two publications of one table with different lists, in one subscription: refused, and counted.
    publisher.publish("pub_secret", tables=["items"], columns={"items": ["id", "secret"]})
    subscriber.sql("ALTER SUBSCRIPTION sub ADD PUBLICATION pub_secret WITH (refresh = false)")
    publisher.sql("INSERT INTO items VALUES (3, 30, 'z')")
    subscriber.poll_query_until("SELECT apply_error_count > 0 FROM pg_stat_subscription_stats WHERE subname = 'sub'")
    assert rows(subscriber, "items") == [(1, 11, None), (2, 20, None)]
    # Taken out again, the subscription goes on.
    subscriber.sql("ALTER SUBSCRIPTION sub DROP PUBLICATION pub_secret WITH (refresh = false)")
    subscription.wait_for_catchup()
    assert rows(subscriber, "items") == [(1, 11, None), (2, 20, None), (3, 30, None)]


# --- PostgreSQL 18's conflict kinds (035_conflicts.pl, 026_stats.pl) ------------------------------------


def conflicts(subscription):
    """The subscription's ``confl_*`` counts (PostgreSQL 18), by kind."""
    return {k.removeprefix("confl_"): v for k, v in subscription.stats().items() if k.startswith("confl_")}


@pytest.mark.pg(">=18")
def test_each_kind_of_conflict_is_counted_and_the_counts_reset(logical):
    """After ``035_conflicts.pl`` and ``026_stats.pl``: the subscriber's own changes meet the publisher's.
    Origins differ only where the subscriber tracks commit timestamps (the shared cluster does)."""
    _, publisher, subscriber = logical
    publisher.sql("CREATE TABLE conf (a int PRIMARY KEY, b int UNIQUE, c int UNIQUE)")
    subscriber.sql("CREATE TABLE conf (a int PRIMARY KEY, b int UNIQUE, c int UNIQUE)")
    subscription = subscriber.subscribe(publisher.publish("pub", tables=["conf"]), "sub")
    subscription.wait_for_sync()
    # Rows the apply worker writes carry the subscription's origin (the initial copy's carry another).
    publisher.sql("INSERT INTO conf VALUES (1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4), (5, 5, 5)")
    subscription.wait_for_catchup()

    subscriber.sql("DELETE FROM conf WHERE a IN (1, 2)")  # gone there: the publisher's changes find nothing
    subscriber.sql("UPDATE conf SET c = 30 WHERE a = 3")  # changed there: a local origin
    subscriber.sql("UPDATE conf SET c = 40 WHERE a = 4")
    publisher.sql("UPDATE conf SET c = 10 WHERE a = 1")  # update_missing
    publisher.sql("DELETE FROM conf WHERE a = 2")  # delete_missing
    publisher.sql("UPDATE conf SET c = 33 WHERE a = 3")  # update_origin_differs (applied)
    publisher.sql("DELETE FROM conf WHERE a = 4")  # delete_origin_differs (applied)
    publisher.sql("UPDATE conf SET c = 55 WHERE a = 5")  # the subscription's own row: no conflict
    subscription.wait_for_catchup()
    kinds = ("update_missing", "delete_missing", "update_origin_differs", "delete_origin_differs")
    # The apply worker reports its counts to the statistics system at its own pace: waited for.
    counted = poll_until(
        lambda: conflicts(subscription),
        lambda counts: all(counts[kind] >= 1 for kind in kinds),
        what=f"one conflict of each kind {kinds} counted",
        nodes=(subscriber,),
    )
    assert all(counted[kind] == 1 for kind in kinds), counted
    assert rows(subscriber, "conf") == [(3, 3, 33), (5, 5, 55)]

    # A row that meets two local rows on two unique keys: one conflict of its own kind, and apply stops.
    subscriber.sql("INSERT INTO conf VALUES (8, 80, 9), (6, 6, 60)")
    publisher.sql("INSERT INTO conf VALUES (7, 6, 9)")
    subscriber.poll_query_until(
        "SELECT confl_multiple_unique_conflicts FROM pg_stat_subscription_stats WHERE subname = 'sub'", 1
    )
    subscriber.sql("DELETE FROM conf WHERE a IN (6, 8)")  # resolved by hand: apply goes on
    subscription.wait_for_catchup()
    assert rows(subscriber, "conf") == [(3, 3, 33), (5, 5, 55), (7, 6, 9)]

    # A table whose initial copy fails is a sync error; the reset sets every count back to zero.
    on_both(publisher, subscriber, "CREATE TABLE conf2 (a int PRIMARY KEY)")
    publisher.sql("INSERT INTO conf2 VALUES (1)")
    subscriber.sql("INSERT INTO conf2 VALUES (1)")
    publisher.sql("ALTER PUBLICATION pub ADD TABLE conf2")
    subscription.refresh()
    subscriber.poll_query_until("SELECT sync_error_count > 0 FROM pg_stat_subscription_stats WHERE subname = 'sub'")
    subscriber.sql("DELETE FROM conf2")
    subscription.wait_for_sync()
    subscriber.sql("SELECT pg_stat_reset_subscription_stats(oid) FROM pg_subscription WHERE subname = 'sub'")
    after = subscription.stats()
    assert after["sync_error_count"] == after["apply_error_count"] == 0
    assert set(conflicts(subscription).values()) == {0}
