"""Synchronous replication under a write load: a failover loses no commit a client saw acknowledged."""

from pgharness.load import WriteLoad


def test_no_acknowledged_commit_is_lost_when_the_primary_dies(cluster):
    primary, standby = cluster.primary, cluster.standby
    # Commits wait until the standby has flushed them.
    primary.set_synchronous("FIRST 1 (standby)", commit="on")
    WriteLoad.create_table(primary)

    # Two clients insert a row per transaction and log every commit they saw acknowledged ...
    with WriteLoad(primary.dsn(), workers=2) as load:
        load.wait_for_commits(200)
        primary.kill()  # ... when the primary crashes.

    # The operator promotes the standby: every acknowledged commit is there.
    standby.promote()
    assert load.log.count() >= 200
    assert load.log.lost_commits(standby) == set()
