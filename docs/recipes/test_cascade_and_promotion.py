"""A cascading standby, and what happens to it when its upstream is promoted."""


def test_a_cascade_follows_its_upstream_through_a_promotion(cluster):
    primary, standby = cluster.primary, cluster.standby
    # A third node that streams from the standby, not from the primary.
    cascade = cluster.add_node("cascade", upstream="standby")

    # A row written on the primary reaches the standby, then the cascade.
    primary.sql("CREATE TABLE hoge AS SELECT 1 AS col")
    primary.wait_for_catchup(standby)
    standby.wait_for_catchup(cascade)
    assert cascade.scalar("SELECT count(*) FROM hoge") == 1

    # The operator promotes the standby (the primary is gone, say): the cascade follows it onto the new
    # timeline without being touched, and receives what the new primary writes.
    primary.kill()
    standby.promote()
    standby.sql("INSERT INTO hoge VALUES (2)")
    standby.wait_for_catchup(cascade)
    assert cascade.timeline() == standby.timeline() == 2
    assert cascade.scalar("SELECT count(*) FROM hoge") == 2
