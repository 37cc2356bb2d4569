"""A query on a hot standby cancelled by a recovery conflict, and the counter that says why."""

import psycopg.errors


def test_a_vacuum_on_the_primary_cancels_an_old_snapshot_on_the_standby(cluster_factory):
    # The standby waits 50 ms, not the default 30 s, before it cancels a query that holds replay back.
    cluster = cluster_factory(node_settings={"standby": {"max_standby_streaming_delay": "50ms"}})
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 20) g")
    primary.wait_for_catchup(standby)

    with standby.background_session() as session:
        # A snapshot on the standby that still sees the rows the primary is about to remove ...
        session.run("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert session.run("SELECT count(*) FROM t") == [(20,)]
        sleeping = session.send("SELECT pg_sleep(60)")
        sleeping.wait_until_blocked("PgSleep")

        # ... the primary updates them and VACUUM prunes the old versions: replaying that conflicts.
        primary.sql("UPDATE t SET a = a + 1")
        primary.sql("VACUUM FREEZE t")

        # The standby cancels the query (40001, serialization_failure).
        assert isinstance(sleeping.error(), psycopg.errors.SerializationFailure)
    # pg_stat_database_conflicts counts it, by kind.
    standby.wait_for_conflicts("snapshot")
    assert standby.conflicts()["snapshot"] >= 1
