"""What else logical replication users ask about: partitions, replica identity, TRUNCATE, publications added
and dropped, whole schemas, a subscription owned by a non-superuser, two primaries replicating both ways.

Each runs on the shared logical cluster (`logical`) with tables of its own.
"""

import contextlib

import psycopg.errors
import pytest
from psycopg import sql as pgsql

from pgharness.logical import Subscription

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
