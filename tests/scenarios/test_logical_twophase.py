"""Two-phase logical replication (PostgreSQL 15+) under crashes, through a cascade of subscribers and with
streaming, after ``021_twophase.pl``, ``022_twophase_cascade.pl`` and ``023_twophase_stream.pl``
(src/test/subscription/t/). Each runs on the shared logical cluster with tables of its own.

A prepared transaction is finished once on every node: a ``COMMIT PREPARED`` that arrived twice would
fail to find its transaction the second time, an apply error the tests count.
"""

import pytest

from tests.scenarios.helpers import in_one_transaction

pytestmark = [pytest.mark.logical, pytest.mark.pg(">=15")]


def two_phase_subscription(publisher, subscriber, name="sub", **options):
    """Table t on both, published as `pub` on `publisher` and subscribed with two_phase as `name`;
    returned once two-phase is enabled (after the initial copy)."""
    for node in (publisher, subscriber):
        node.sql("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, note text)")  # a cascade has it
    subscription = subscriber.subscribe(publisher.publish("pub", tables=["t"]), name, two_phase=True, **options)
    subscription.wait_for_sync()
    subscriber.poll_query_until(f"SELECT subtwophasestate = 'e' FROM pg_subscription WHERE subname = '{name}'")
    return subscription


def prepared(node):
    """How many transactions are prepared on `node` (a subscriber names them after itself, not by gid)."""
    return node.scalar("SELECT count(*) FROM pg_prepared_xacts")


def prepare_two(publisher, *rows):
    """Prepare 'commit-me' and 'roll-me-back' on `publisher`, each inserting its row of `rows` into t."""
    for gid, values in zip(("commit-me", "roll-me-back"), rows, strict=True):
        in_one_transaction(publisher, f"INSERT INTO t {values}", end=f"PREPARE TRANSACTION '{gid}'")


def finish_two(publisher):
    publisher.sql("COMMIT PREPARED 'commit-me'")
    publisher.sql("ROLLBACK PREPARED 'roll-me-back'")


def test_prepared_transactions_survive_an_immediate_stop_of_both_ends_and_finish_once(logical):
    """After ``021_twophase.pl``."""
    _, publisher, subscriber = logical
    subscription = two_phase_subscription(publisher, subscriber)
    prepare_two(publisher, "VALUES (1, 'commit')", "VALUES (2, 'rollback')")
    subscription.wait_for_catchup()
    assert prepared(subscriber) == 2

    # Both ends crash with the transactions prepared; they are still prepared after recovery, on both.
    for node in (publisher, subscriber):
        node.stop("immediate")
    for node in (publisher, subscriber):
        node.start()
    assert prepared(publisher) == prepared(subscriber) == 2

    finish_two(publisher)
    subscription.wait_for_catchup()
    assert prepared(subscriber) == 0
    assert subscriber.sql("SELECT * FROM t") == [(1, "commit")]
    assert subscription.stats()["apply_error_count"] == 0


def test_two_phase_through_a_cascade_of_subscribers_with_a_streamed_transaction(logical):
    """After ``022_twophase_cascade.pl`` and ``023_twophase_stream.pl``: publisher, subscriber, second
    subscriber; a transaction larger than ``logical_decoding_work_mem`` is streamed before its PREPARE."""
    cluster, publisher, subscriber = logical
    publisher.set_config(logical_decoding_work_mem="64kB")
    first = two_phase_subscription(publisher, subscriber, streaming=True)
    second_node = cluster.add_primary("subscriber2")
    second = two_phase_subscription(subscriber, second_node, "sub2", streaming=True)

    # One small transaction and one of 5000 rows, both prepared: prepared on every node, nothing applied.
    prepare_two(publisher, "VALUES (1, 'commit')", "SELECT g, 'rollback' FROM generate_series(2, 5001) g")
    first.wait_for_catchup()
    second.wait_for_catchup()
    for node in (subscriber, second_node):
        assert prepared(node) == 2
        assert node.scalar("SELECT count(*) FROM t") == 0
    # The large one went out in pieces before its PREPARE.
    assert publisher.scalar("SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = 'sub'") >= 1

    finish_two(publisher)
    first.wait_for_catchup()
    second.wait_for_catchup()
    for node, subscription in ((subscriber, first), (second_node, second)):
        assert prepared(node) == 0
        assert node.sql("SELECT * FROM t") == [(1, "commit")]
        assert subscription.stats()["apply_error_count"] == 0
