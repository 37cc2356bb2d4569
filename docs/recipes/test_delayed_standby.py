"""A delayed standby (recovery_min_apply_delay): it receives WAL at once and applies it later."""


def test_a_delayed_standby_has_the_wal_but_not_the_change(shared_cluster):
    primary = shared_cluster.primary
    delayed = shared_cluster.add_node("delayed", settings={"recovery_min_apply_delay": "1h"})

    primary.sql("CREATE TABLE hoge AS SELECT 1 AS col")
    # It has written and flushed the commit ...
    written = primary.wait_for_catchup(delayed, "flush")
    assert delayed.lsn("receive") >= written
    # ... and has not applied it: the table does not exist there yet.
    assert delayed.scalar("SELECT to_regclass('hoge') IS NULL")
    assert shared_cluster.primary.lag(delayed).bytes > 0
