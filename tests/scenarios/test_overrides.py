"""A downstream project's additions: its own service (PgBouncer) through an override file, settings, init SQL."""

import re
from pathlib import Path

import psycopg
import pytest

from pgharness import Cluster, ClusterError
from pgharness.image import debian_image
from pgharness.wait import poll_until

pytestmark = pytest.mark.downstream

PGBOUNCER_OVERRIDE = Path(__file__).resolve().parents[2] / "examples" / "pgbouncer" / "compose.pgbouncer.yaml"


@pytest.fixture(scope="session")
def pgbouncer_image(pg_major):
    """PgBouncer from Debian packages (mmdebstrap | docker import), built once and cached on its inputs."""
    return debian_image("pgharness/pgbouncer:trixie", ("pgbouncer", "postgresql-client"))


def through(service, cluster, **kwargs):
    """A connection to the primary's database through `service` (its published port 6432)."""
    return psycopg.connect(
        host=service.host,
        port=service.published_port(6432),
        user="postgres",
        password=cluster.password,
        dbname="postgres",
        connect_timeout=5,
        autocommit=True,
        prepare_threshold=None,  # transaction pooling: no server-side prepared statements
        **kwargs,
    )


def test_a_client_goes_through_pgbouncer_before_and_after_a_failover(cluster_factory, pgbouncer_image):
    cluster = cluster_factory(compose_files=[PGBOUNCER_OVERRIDE], env={"PGBOUNCER_IMAGE": pgbouncer_image})
    pgbouncer = cluster.service("pgbouncer")
    primary, standby = cluster.primary, cluster.standby

    # The added service is a service, not a node; it started with the cluster.
    assert [n.name for n in cluster.nodes] == ["primary", "standby"]
    assert [service.name for service in cluster.services] == ["pgbouncer"]

    # Before: the client's writes go through PgBouncer to the primary.
    with through(pgbouncer, cluster) as conn:
        conn.execute("CREATE TABLE orders (id integer PRIMARY KEY)")
        conn.execute("INSERT INTO orders VALUES (1)")
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    primary.wait_for_catchup(standby)

    # The primary dies; the operator promotes the standby and points PgBouncer at it.
    primary.kill()
    standby.promote()
    pgbouncer.exec("sh", "-c", "sed -i 's/host=primary/host=standby/' /tmp/pgbouncer/pgbouncer.ini && kill -HUP 1")

    # After: the same client address reaches the new primary, with the data it had.
    def write_through():
        with through(pgbouncer, cluster) as conn:
            conn.execute("INSERT INTO orders VALUES (2)")
            return conn.execute("SELECT array_agg(id ORDER BY id), pg_is_in_recovery() FROM orders").fetchone()

    result = poll_until(
        write_through, what="a write through PgBouncer to the new primary", timeout=30, nodes=[pgbouncer]
    )
    assert result == ([1, 2], False)
    assert standby.scalar("SELECT count(*) FROM orders") == 2


def test_settings_and_init_sql_reach_every_node(cluster_factory):
    cluster = cluster_factory(
        settings={"work_mem": "12MB", "log_min_duration_statement": 250},
        init_sql="CREATE SCHEMA app;\nCREATE EXTENSION pgcrypto SCHEMA app;\n"
        "CREATE TABLE app.accounts (id uuid PRIMARY KEY DEFAULT app.gen_random_uuid());\n",
    )
    primary, standby = cluster.primary, cluster.standby

    for node in (primary, standby):
        assert node.scalar("SHOW work_mem") == "12MB"
        assert node.scalar("SHOW log_min_duration_statement") == "250ms"
    # The init SQL ran once on the primary; the standby has its result through its base backup or, from the
    # template, the primary's WAL.
    primary.sql("INSERT INTO app.accounts DEFAULT VALUES")
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT count(*) FROM app.accounts") == 1
    assert (
        standby.scalar("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgcrypto'") == "app"
    )


def test_settings_of_one_node_reach_that_node_alone(cluster_factory):
    # One delayed standby of two, and a primary with more work_mem: settings per node, on top of everyone's.
    cluster = cluster_factory(
        standbys=2,
        settings={"work_mem": "12MB"},
        node_settings={"primary": {"work_mem": "24MB"}, "standby2": {"recovery_min_apply_delay": "1h"}},
    )
    primary, standby, standby2 = cluster.primary, cluster.standby, cluster.node("standby2")

    # Each node's own line wins over the cluster's; a node without one keeps the cluster's.
    assert primary.scalar("SHOW work_mem") == "24MB"
    assert standby.scalar("SHOW work_mem") == "12MB"
    assert standby2.scalar("SHOW recovery_min_apply_delay") == "1h"
    assert standby.scalar("SHOW recovery_min_apply_delay") == "0"

    # The delay is real: a commit reaches the standby's WAL at once, and is applied on the prompt standby only.
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_catchup(standby)
    primary.wait_for_catchup(standby2, "flush")
    assert standby.scalar("SELECT to_regclass('hoge') IS NOT NULL") is True
    assert standby2.scalar("SELECT to_regclass('hoge') IS NOT NULL") is False

    # A node added later takes the settings given for it.
    late = cluster.add_node("late", settings={"work_mem": "48MB"})
    assert late.scalar("SHOW work_mem") == "48MB"


def test_init_sql_that_fails_stops_the_start_with_its_error(harness_image):
    cluster = Cluster(image=harness_image, init_sql="CREATE TABLE broken (id nosuchtype);", start_timeout=60)
    with pytest.raises(ClusterError) as excinfo:
        cluster.start()
    assert "PGHARNESS_INIT_SQL failed" in str(excinfo.value)
    # psql reports it with its SQLSTATE (VERBOSITY verbose): undefined_object.
    assert re.search(r"ERROR:\s+42704:", str(excinfo.value))
    # The start ended when the primary exited (the readiness probes saw it), not at its deadline (a
    # WaitTimeout, no ClusterError).
    assert isinstance(excinfo.value.stopped_by, ClusterError), repr(excinfo.value.stopped_by)
