"""A node's configuration API (`pgharness.nodeconfig`): settings applied by a reload or a restart as their
context needs, refused by the server's own SQLSTATE, and pg_hba.conf lines checked before they are used."""

import psycopg
import psycopg.errors
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

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
