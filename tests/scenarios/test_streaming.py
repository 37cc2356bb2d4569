"""Exercise 26-1, streaming: a row inserted on the primary appears on the standby."""

import pytest

from pgharness import Lsn

pytestmark = pytest.mark.streaming


def test_row_inserted_on_primary_is_visible_on_standby(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby

    # Exercise 26-1's table, with a first row, on the primary.
    primary.sql("CREATE TABLE hoge_streaming (col integer)")
    primary.sql("INSERT INTO hoge_streaming VALUES (1)")

    # Wait until the standby has replayed everything the primary has written.
    primary.wait_for_catchup(standby, "replay")

    # The standby sees the row.
    assert standby.sql("SELECT col FROM hoge_streaming") == [(1,)]

    # A second row, as in the exercise: insert on the primary, read on the standby.
    primary.sql("INSERT INTO hoge_streaming VALUES (2)")
    primary.wait_for_catchup(standby)
    assert standby.sql("SELECT col FROM hoge_streaming ORDER BY col") == [(1,), (2,)]


def test_standby_streams_and_primary_lists_it_by_name(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby

    # The standby's WAL receiver is streaming from the primary.
    assert standby.scalar("SELECT status FROM pg_stat_wal_receiver") == "streaming"

    # The primary's WAL sender lists it under its application_name, the service name.
    rows = primary.sql("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = 'standby'")
    assert rows == [("streaming", "async")]


STANDBY_POSITION = {
    "write": "SELECT written_lsn FROM pg_stat_wal_receiver",
    "flush": "SELECT flushed_lsn FROM pg_stat_wal_receiver",
    "replay": "SELECT pg_last_wal_replay_lsn()",
}


@pytest.mark.parametrize("mode", ["write", "flush", "replay"])
def test_catchup_waits_until_the_standby_has_the_target(shared_cluster, mode):
    primary, standby = shared_cluster.primary, shared_cluster.standby

    # Generate WAL and note the primary's write position.
    primary.sql(f"CREATE TABLE catchup_{mode} AS SELECT g FROM generate_series(1, 10000) g")
    target = primary.lsn("write")

    # Wait for the standby to reach it in this mode, as the primary sees it ...
    reached = primary.wait_for_catchup(standby, mode, target)
    assert reached >= target

    # ... and check the standby's own view: it has written/flushed/replayed that far.
    assert Lsn.parse(str(standby.scalar(STANDBY_POSITION[mode]))) >= reached

    # The wait reports where the standby is, not the target it was given: asked for an old
    # position after more WAL was written, it answers the newer one the standby reached.
    primary.sql(f"INSERT INTO catchup_{mode} SELECT g FROM generate_series(1, 1000) g")
    newer = primary.wait_for_catchup(standby, mode)
    assert primary.wait_for_catchup(standby, mode, target) >= newer > target
