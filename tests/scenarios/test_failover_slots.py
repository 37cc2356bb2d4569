"""Failover slots' guards (PostgreSQL 17+), as ``040_standby_failover_slots_sync.pl`` (src/test/recovery/t/)
asserts them: what a standby may not do with a slot it holds for the primary, when synchronisation is
refused, and what happens to a synchronised slot invalidated on the standby.

The slot-sync worker is off: each synchronisation is a `pg_sync_replication_slots()` call, so the tests
say when a copy is made.
"""

import psycopg
import psycopg.errors
import pytest

from pgharness.failover import primary_conninfo
from pgharness.logical import slot, slot_changes
from tests.scenarios.helpers import generate_segments, with_a_failover_slot

pytestmark = [pytest.mark.logical, pytest.mark.slots, pytest.mark.failover, pytest.mark.pg(">=17")]


def synced_copy(cluster):
    """The subscription `sub` of a failover slot and the standby's synchronised copy of it, made on demand
    (`with_a_failover_slot` with the cluster's own standby, no slot-sync worker, nothing held back).
    Returns (publisher, standby, subscriber, subscription)."""
    publisher, standby, subscriber, subscription = with_a_failover_slot(
        cluster, failover_slots=True, hold_back=False, sync_worker=False, standby="standby"
    )
    standby.sql("SELECT pg_sync_replication_slots()")
    assert slot(standby, "sub")["synced"]
    return publisher, standby, subscriber, subscription


def replication_session(node):
    """A logical replication connection to `node` (``replication=database``), as a CDC client opens one."""
    return psycopg.connect(node.dsn(), replication="database", autocommit=True)


def test_a_synced_slot_is_the_primary_s_and_the_standby_refuses_to_use_change_or_drop_it(cluster_factory):
    cluster = cluster_factory(topology="logical")
    # A cascading standby, made before the standby's settings change (a base backup carries them along).
    cascade = cluster.add_node("cascade", upstream="standby")
    cluster.standby.sql("SELECT pg_create_physical_replication_slot('cascade_slot')")
    cascade.set_config(  # all that slot synchronisation asks of a standby
        primary_conninfo=primary_conninfo(cluster, "standby", "cascade", dbname="postgres"),
        primary_slot_name="cascade_slot",
        hot_standby_feedback="on",
    )
    publisher, standby, _, subscription = synced_copy(cluster)

    # The copy is the primary's to move: the standby refuses to decode from it, to drop it, and to alter it.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        slot_changes(standby, "sub", peek=True)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        standby.sql("SELECT pg_drop_replication_slot('sub')")
    with replication_session(standby) as conn, pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute("ALTER_REPLICATION_SLOT sub (FAILOVER false)")
    assert slot(standby, "sub")["synced"]

    # Synchronising is a standby's move: the primary refuses it ...
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        publisher.sql("SELECT pg_sync_replication_slots()")
    # ... and so does a cascading standby, which has no primary's slots to copy.
    standby.add_hba("host", "postgres", cluster.replication_user, "all", "scram-sha-256")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        cascade.sql("SELECT pg_sync_replication_slots()")
    # A standby whose primary_conninfo names no database cannot open the connection it needs.
    standby.set_config(primary_conninfo=primary_conninfo(cluster, "primary", "standby"))
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        standby.sql("SELECT pg_sync_replication_slots()")

    # A subscription's failover flag changes only while it is disabled; then the primary's slot follows it.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        subscription.node.sql("ALTER SUBSCRIPTION sub SET (failover = false)")
    subscription.disable()
    subscription.node.sql("ALTER SUBSCRIPTION sub SET (failover = false)")
    subscription.enable()
    assert slot(publisher, "sub")["failover"] is False


def test_a_synced_slot_invalidated_on_the_standby_is_dropped_and_synchronised_again(cluster_factory):
    cluster = cluster_factory(topology="logical")
    publisher, standby, _, subscription = synced_copy(cluster)
    # The primary's slot stays where it is (its subscription disabled); the standby keeps 1 MB for its slots.
    subscription.disable()
    publisher.poll_query_until("SELECT NOT active FROM pg_replication_slots WHERE slot_name = 'sub'")
    standby.set_config(max_slot_wal_keep_size="1MB")
    publisher.sql("CREATE TABLE filler (id int)")
    generate_segments(publisher, "filler", 3)
    publisher.sql("CHECKPOINT")
    publisher.wait_for_catchup(standby)
    standby.sql("CHECKPOINT")

    # The standby's restart point gives the copy's WAL up: the copy is invalidated there, the primary's is not.
    standby.poll_query_until(
        "SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = 'sub'", "wal_removed"
    )
    assert slot(publisher, "sub")["invalidation_reason"] is None

    # The next synchronisation, once the primary's slot has moved on, drops the invalid copy and makes it
    # again from the primary's slot.
    standby.reset_config("max_slot_wal_keep_size")
    subscription.enable()
    subscription.wait_for_catchup()
    publisher.wait_for_catchup(standby)
    position = standby.log_position()
    standby.sql("SELECT pg_sync_replication_slots()")
    standby.poll_log_until('dropped replication slot "sub"', since=position)
    again = slot(standby, "sub")
    assert again["synced"]
    assert not again["temporary"]
    assert again["invalidation_reason"] is None
