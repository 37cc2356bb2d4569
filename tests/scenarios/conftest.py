"""Fixtures shared by scenario modules (the harness's own come from its pytest plugin)."""

import pytest


@pytest.fixture
def logical(shared_cluster_factory):
    """A publisher (with its standby) and one subscriber: a shared cluster, given back after each test
    as it was before (its subscriptions, publications, slots and tables dropped), with commit timestamps
    tracked (conflicts whose origins differ are told by them)."""
    # Commit timestamps on every node: a subscriber tells its own changes from the publisher's by them.
    settings = {"max_prepared_transactions": 10, "track_commit_timestamp": True}
    cluster = shared_cluster_factory(topology="logical", settings=settings)
    return cluster, cluster.primary, cluster.node("subscriber")
