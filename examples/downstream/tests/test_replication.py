"""A downstream project's replication tests: the smallest ones (the README's "Use it in your project")."""

import os

import psycopg
import pytest


def test_a_write_on_the_primary_is_read_on_the_standby(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    primary.sql("INSERT INTO accounts VALUES (1, 100)")
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT balance FROM accounts WHERE id = 1") == 100
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        standby.sql("INSERT INTO accounts VALUES (2, 0)")


@pytest.mark.failover
def test_the_application_keeps_its_data_across_a_failover(cluster):
    cluster.primary.sql("INSERT INTO accounts VALUES (1, 100)")
    cluster.primary.wait_for_catchup(cluster.standby)
    cluster.primary.kill()
    cluster.standby.promote()
    cluster.standby.sql("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
    assert cluster.standby.scalar("SELECT balance FROM accounts WHERE id = 1") == 101


def test_the_server_is_the_version_the_job_names(shared_cluster):
    # A CI matrix names its version in PG_VERSION; it wins over the ini's pg_version, and this proves it.
    wanted = os.environ.get("PG_VERSION")
    if wanted is None:
        pytest.skip("PG_VERSION is not set: the ini's pg_version is used")
    assert shared_cluster.primary.scalar("SELECT current_setting('server_version_num')::int / 10000") == int(wanted)
