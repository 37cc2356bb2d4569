"""A logical replication conflict stops the subscription; the operator skips the failed transaction."""

import pytest


@pytest.mark.pg(">=15")
def test_a_conflict_is_skipped_by_its_finish_lsn(shared_cluster_factory):
    cluster = shared_cluster_factory(topology="logical")
    publisher, subscriber = cluster.primary, cluster.node("subscriber")
    for node in (publisher, subscriber):
        node.sql("CREATE TABLE t (id int PRIMARY KEY)")
    subscription = subscriber.subscribe(publisher.publish("pub", tables=["t"]), "sub", disable_on_error=True)
    subscription.wait_for_sync()

    # A row the subscriber already has: the publisher's INSERT cannot be applied, and the subscription stops.
    subscriber.sql("INSERT INTO t VALUES (1)")
    publisher.sql("INSERT INTO t VALUES (1)")
    subscriber.poll_query_until("SELECT NOT subenabled FROM pg_subscription WHERE subname = 'sub'")
    assert not subscription.enabled()

    # The failed transaction's finish LSN (only the subscriber's log holds it), skipped, and apply resumes.
    subscription.skip(subscription.failed_transaction())
    subscription.enable()
    publisher.sql("INSERT INTO t VALUES (2)")
    subscription.wait_for_catchup()
    assert subscriber.sql("SELECT id FROM t ORDER BY id") == [(1,), (2,)]
