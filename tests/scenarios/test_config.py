"""A node's configuration API (`pgharness.nodeconfig`): settings applied by a reload or a restart as their
context needs, refused by the server's own SQLSTATE, and pg_hba.conf lines checked before they are used."""

import psycopg
import psycopg.errors
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgharness import Cluster
from pgharness.errors import ClusterError, UnknownNode


def test_a_reloadable_setting_is_reloaded_and_reset(shared_cluster):
    primary = shared_cluster.primary
    was = primary.scalar("SHOW work_mem")
    assert primary.set_config(work_mem="24MB", statement_timeout=0) == "reload"
    # New connections run with it at once: the reload is waited for.
    assert primary.scalar("SHOW work_mem") == "24MB"
    assert primary.reset_config("work_mem", "statement_timeout") == "reload"
    assert primary.scalar("SHOW work_mem") == was


def test_a_setting_read_at_start_restarts_the_node(cluster_factory):
    node = cluster_factory(standbys=0).primary
    assert node.set_config(max_connections=42) == "restart"
    assert node.scalar("SHOW max_connections") == "42"
    assert node.reset_config() == "restart"  # every setting ALTER SYSTEM made
    assert node.scalar("SHOW max_connections") != "42"


def test_an_unknown_setting_or_a_bad_value_is_refused_with_its_sqlstate(shared_cluster):
    primary = shared_cluster.primary
    with pytest.raises(psycopg.errors.UndefinedObject):  # 42704
        primary.set_config(no_such_setting=1)
    with pytest.raises(psycopg.errors.InvalidParameterValue):  # 22023
        primary.set_config(work_mem="lots")
    # Nothing was written: the node's ALTER SYSTEM settings are as before.
    assert primary.scalar("SELECT count(*) FROM pg_file_settings WHERE sourcefile ~ 'auto' AND name = 'work_mem'") == 0


def test_an_hba_line_is_quoted_checked_and_first(cluster_factory):
    # A cluster of its own: its pg_hba.conf and roles change for good.
    primary = cluster_factory(standbys=0).primary
    role = 'odd "name", with #'
    primary.sql(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(pgsql.Identifier(role)))

    # The line goes first (it wins over the rest), with the name quoted as the file needs; the role logs in.
    line = primary.add_hba("host", "postgres", role, "all", "scram-sha-256")
    assert line == 'host postgres "odd ""name"", with #" all scram-sha-256'
    assert primary.sql("SELECT user_name FROM pg_hba_file_rules ORDER BY line_number LIMIT 1") == [([role],)]
    with psycopg.connect(make_conninfo(primary.dsn(), user=role, password="pw"), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)

    # A line the server would not read is refused in its words, and the file is as it was.
    rules = primary.sql("SELECT line_number, user_name FROM pg_hba_file_rules ORDER BY 1")
    with pytest.raises(ClusterError, match="refused by node 'primary': line 1: invalid authentication method"):
        primary.add_hba("host", "postgres", "all", "all", "no-such-method")
    assert primary.sql("SELECT line_number, user_name FROM pg_hba_file_rules ORDER BY 1") == rules


def test_a_node_added_from_an_upstream_the_cluster_has_not_is_refused_with_its_nodes(shared_cluster):
    with pytest.raises(UnknownNode) as raised:
        shared_cluster.add_node("extra", upstream="standbyy")
    assert "standbyy" in str(raised.value)
    assert "primary, standby" in str(raised.value)
    assert {node.name for node in shared_cluster.nodes} == {"primary", "standby"}


#: compose.yaml's own variables, exported by a user for something else: each, had it reached compose,
#: would show in the cluster (a table made, the standby's upstream wrong, fixed ports taken, fsync on, a
#: setting for every node).
LEAKY = {
    "PGHARNESS_INIT_SQL": "CREATE TABLE leaked (col integer)",
    "STANDBY_UPSTREAM": "no-such-upstream",
    "ARCHIVE_STANDBY_PORT": "1",
    "SLOT_STANDBY_PORT": "1",
    "PG_FSYNC": "on",
    "PGHARNESS_EXTRA_SETTINGS": "work_mem = '7MB'",
    "STANDBY_SETTINGS": "work_mem = '9MB'",
    "COMPOSE_PROFILES": "archive-only,slot",
}


def test_nothing_from_the_callers_environment_reaches_a_cluster_unless_it_is_a_setting(harness_image, monkeypatch):
    for name, value in LEAKY.items():
        monkeypatch.setenv(name, value)
    with Cluster(image=harness_image, storage="tmpfs") as cluster:
        primary, standby = cluster.primary, cluster.standby
        # The nodes compose.yaml starts by default, and nothing else ...
        assert sorted(node.name for node in cluster.nodes) == ["primary", "standby"]
        # ... no table from the exported SQL, the standby streaming from the primary ...
        assert primary.scalar("SELECT to_regclass('leaked') IS NULL")
        assert standby.scalar("SELECT status FROM pg_stat_wal_receiver") == "streaming"
        assert conninfo_to_dict(standby.scalar("SHOW primary_conninfo"))["host"] == "primary"
        # ... and the settings of compose.yaml and of the harness, not the exported ones.
        for node in (primary, standby):
            assert node.scalar("SHOW fsync") == "off"
            assert node.scalar("SHOW work_mem") == "4MB"


def test_a_test_runs_nodes_run_no_docker_healthcheck(shared_cluster):
    # The harness asks the nodes over SQL; a healthcheck would be a `docker exec` now and then, for no one.
    # Override files keep them: their services may wait for a node to be healthy (--pg-compose-file).
    expected = ["CMD", "pgharness", "health"] if shared_cluster.compose_files else ["NONE"]
    for node in (shared_cluster.primary, shared_cluster.standby):
        assert node.container.attrs["Config"]["Healthcheck"]["Test"][:3] == expected
