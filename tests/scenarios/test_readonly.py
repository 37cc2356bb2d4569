"""Exercise 26-1, read-only standby: reads work, every write fails with SQLSTATE 25006."""

import psycopg.errors
import pytest

pytestmark = pytest.mark.readonly


@pytest.fixture
def seeded(shared_cluster):
    """The exercise's table with one row on the primary, replayed on the standby, for one test and dropped
    after it. (What fixtures make is part of the shared cluster's baseline, which the reset keeps; a
    module-wide table would be made twice when a shuffled run comes back to this module, and would be
    missing after another test's change had the shared cluster started afresh.)"""
    primary, standby = shared_cluster.primary, shared_cluster.standby
    primary.sql("CREATE TABLE hoge_readonly (col integer)")
    primary.sql("INSERT INTO hoge_readonly VALUES (1)")
    primary.sql("CREATE SEQUENCE hoge_readonly_seq")
    primary.wait_for_catchup(standby)
    yield shared_cluster
    primary.sql("DROP TABLE hoge_readonly")
    primary.sql("DROP SEQUENCE hoge_readonly_seq")


def test_standby_is_in_recovery_and_serves_reads(seeded, shared_cluster):
    standby = shared_cluster.standby

    # The standby is a hot standby: in recovery, yet accepting queries.
    assert standby.is_in_recovery()
    assert standby.sql("SELECT col FROM hoge_readonly") == [(1,)]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO hoge_readonly VALUES (2)",
        "UPDATE hoge_readonly SET col = 3",
        "DELETE FROM hoge_readonly",
        "CREATE TABLE hoge_readonly_new (col integer)",
        "SELECT nextval('hoge_readonly_seq')",
    ],
)
def test_writes_fail_with_read_only_sql_transaction(seeded, shared_cluster, statement):
    standby = shared_cluster.standby

    # Each write is refused with SQLSTATE 25006 (read_only_sql_transaction).
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as excinfo:
        standby.sql(statement)
    assert excinfo.value.sqlstate == "25006"

    # And nothing changed on the standby.
    assert standby.sql("SELECT col FROM hoge_readonly") == [(1,)]


def test_the_primary_accepts_the_same_writes(seeded, shared_cluster):
    primary = shared_cluster.primary

    # The same statement that the standby refuses works on the primary (so the refusal is about the role).
    primary.sql("CREATE TABLE hoge_readonly_primary (col integer)")
    primary.sql("INSERT INTO hoge_readonly_primary VALUES (2)")
    first = primary.scalar("SELECT nextval('hoge_readonly_seq')")
    assert primary.scalar("SELECT nextval('hoge_readonly_seq')") == first + 1
    assert primary.sql("SELECT col FROM hoge_readonly_primary") == [(2,)]
