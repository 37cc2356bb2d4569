"""Logical decoding from standbys beyond the basics (PostgreSQL 16+), after
``035_standby_logical_decoding.pl`` (src/test/recovery/t/): a slot on a cascading standby, a client of a
standby's slot carried across that standby's promotion, and ``DROP DATABASE`` on the primary taking the
standby's slots of that database with it.
"""

import pytest

from pgharness.logical import create_logical_slot, pg_recvlogical, slot, slot_changes

pytestmark = [pytest.mark.logical, pytest.mark.slots, pytest.mark.pg(">=16")]


def inserts(changes):
    """The INSERT lines of decoded changes (test_decoding's text), in order."""
    return [change for change in changes if ": INSERT: " in change]


def test_a_cascading_standby_decodes_and_its_client_goes_on_across_the_cascade_s_promotion(cluster_factory):
    cluster = cluster_factory(topology="logical", subscribers=0)
    primary = cluster.primary
    primary.sql("CREATE TABLE t (id int)")
    cascade = cluster.add_node("cascade", upstream="standby")

    # A slot on the cascading standby: its running-transactions record comes from the primary, through the
    # standby in between.
    create_logical_slot(cascade, "cdc", upstream=primary)
    primary.sql("INSERT INTO t VALUES (1)")
    before = primary.lsn("write")
    cascade.wait_for_replay(before)
    assert inserts(slot_changes(cascade, "cdc", peek=True)) == ["table public.t: INSERT: id[integer]:1"]

    # A CDC client (pg_recvlogical) reads up to there and confirms it.
    received = pg_recvlogical(cascade, "cdc", endpos=before)
    assert inserts(received.splitlines()) == ["table public.t: INSERT: id[integer]:1"]
    confirmed = slot(cascade, "cdc")["confirmed_flush_lsn"]

    # The cascade is promoted (its upstreams gone): the slot keeps its position ...
    primary.kill()
    cluster.standby.kill()
    cascade.promote()
    assert slot(cascade, "cdc")["confirmed_flush_lsn"] == confirmed
    cascade.sql("INSERT INTO t VALUES (2)")

    # ... and the same client, started again on the promoted node, gets what came after, and nothing twice.
    again = pg_recvlogical(cascade, "cdc", endpos=cascade.lsn("write"))
    assert inserts(again.splitlines()) == ["table public.t: INSERT: id[integer]:2"]


def test_drop_database_on_the_primary_drops_the_standby_s_slots_of_that_database(logical):
    cluster, primary, _ = logical
    standby = cluster.standby
    primary.sql("CREATE DATABASE cdc_db")
    primary.wait_for_catchup(standby)
    create_logical_slot(standby, "in_dropped", dbname="cdc_db", upstream=primary)
    create_logical_slot(standby, "in_postgres", upstream=primary)

    primary.sql("DROP DATABASE cdc_db")
    primary.wait_for_catchup(standby)

    # Replaying the drop removes the standby's slots of that database; the other database's slot stays.
    standby.poll_query_until("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'in_dropped'", 0)
    assert slot(standby, "in_postgres")["database"] == "postgres"
    standby.sql("SELECT pg_drop_replication_slot('in_postgres')")  # the shared cluster's standby, as it was
