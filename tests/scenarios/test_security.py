"""Security defaults: loopback-only ports, SCRAM over the network, a replication role that only replicates,
secrets that stay out of images and evidence."""

import json
import os
import subprocess

import docker
import psycopg
import pytest

from pgharness.compose import COMPOSE_FILE
from pgharness.evidence import save_evidence
from tests.scenarios.helpers import connect_kwargs, refused

pytestmark = pytest.mark.security

LOOPBACK = "127.0.0.1"


def published_bindings(container):
    """(container port, host ip, host port) of every port the container publishes."""
    container.reload()
    ports = container.attrs["NetworkSettings"]["Ports"] or {}
    return [(port, b["HostIp"], b["HostPort"]) for port, bindings in ports.items() for b in bindings or []]


def test_compose_file_publishes_every_port_on_loopback_only():
    # Every service of every profile, as compose resolves it with its default variables.
    config = subprocess.run(
        ["docker", "compose", "--file", str(COMPOSE_FILE), "--profile", "*", "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "COMPOSE_PROJECT_NAME": "pgh-security-check"},
    )
    services = json.loads(config.stdout)["services"]
    published = {name: service.get("ports", []) for name, service in services.items()}

    assert {"primary", "standby", "archive-standby", "slot-standby"} <= {n for n, p in published.items() if p}
    for name, ports in published.items():
        for port in ports:
            assert port.get("host_ip") == LOOPBACK, f"{name} publishes {port} beyond {LOOPBACK}"


def test_running_nodes_bind_only_loopback(shared_cluster):
    # The compose services and a node added at run time (compose run --publish).
    shared_cluster.add_node("extra")

    bindings = {node.name: published_bindings(node.container) for node in shared_cluster.nodes}

    assert set(bindings) == {"primary", "standby", "extra"}
    for name, found in bindings.items():
        assert found, f"{name} publishes no port"
        for port, host_ip, _ in found:
            assert host_ip not in ("0.0.0.0", "::", ""), f"{name} publishes {port} on every address"
            assert host_ip == LOOPBACK, f"{name} publishes {port} on {host_ip}"


def test_the_nodes_share_one_network_that_does_not_masquerade(shared_cluster):
    # Every node is on the cluster's own network alone, and the engine does not masquerade its traffic:
    # what a node sends beyond this machine gets no way back.
    shared_cluster.add_node("extra")

    networks = {node.name: set(node.container.attrs["NetworkSettings"]["Networks"]) for node in shared_cluster.nodes}

    assert set(networks) == {"primary", "standby", "extra"}
    assert set(map(frozenset, networks.values())) == {frozenset({f"{shared_cluster.name}_replication"})}
    options = shared_cluster.docker.networks.get(f"{shared_cluster.name}_replication").attrs["Options"]
    assert options.get("com.docker.network.bridge.enable_ip_masquerade") == "false"


def test_wrong_password_is_refused_for_the_superuser_and_the_replication_role(shared_cluster):
    primary = shared_cluster.primary
    superuser = connect_kwargs(primary, user="postgres")
    replication = connect_kwargs(primary, user=shared_cluster.replication_user, replication="true")

    # With their passwords both connect: the superuser to a database, repli as a walsender.
    with psycopg.connect(**superuser, password=shared_cluster.password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    with psycopg.connect(**replication, password=shared_cluster.replication_password) as conn:
        system = conn.pgconn.exec_(b"IDENTIFY_SYSTEM")
        assert system.status == psycopg.pq.ExecStatus.TUPLES_OK

    # With a wrong one both are refused: invalid_password (28P01). Without one, there is no trust to fall back on.
    for kwargs in (superuser, replication):
        refused(primary, "28P01", **kwargs, password="wrong")
        # No password: the server asks for one (SCRAM) and the client has none to give. libpq says so itself,
        # before any server error exists, so its own words are the reason to check.
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(**kwargs, password="")


def test_replication_role_cannot_open_a_database_session(shared_cluster):
    kwargs = connect_kwargs(shared_cluster.primary, user=shared_cluster.replication_user)

    # The right password, yet pg_hba.conf rejects repli for every database:
    # invalid_authorization_specification (28000).
    refused(shared_cluster.primary, "28000", **kwargs, password=shared_cluster.replication_password)


def test_trust_only_on_the_local_socket_and_passwords_stored_as_scram(shared_cluster):
    primary = shared_cluster.primary

    rules = primary.sql("SELECT type, auth_method FROM pg_hba_file_rules WHERE error IS NULL")
    assert {method for kind, method in rules if kind == "local"} == {"trust"}
    assert {method for kind, method in rules if kind != "local"} == {"scram-sha-256", "reject"}

    # Stored as SCRAM secrets (SCRAM-SHA-256$<iterations>:<salt>$<keys>). Their iteration count is the
    # harness's SCRAM_ITERATIONS (1 unless the environment says otherwise; empty: the server's) where the
    # server has scram_iterations (16+), and the server's 4096 before.
    stored = primary.sql(
        "SELECT rolname, split_part(split_part(rolpassword, '$', 2), ':', 1) FROM pg_authid"
        " WHERE rolname = ANY(%s) AND rolpassword LIKE 'SCRAM-SHA-256$%%' ORDER BY 1",
        (["postgres", shared_cluster.replication_user],),
    )
    iterations = (os.environ.get("SCRAM_ITERATIONS", "1") or "4096") if primary.major >= 16 else "4096"
    assert stored == [("postgres", iterations), (shared_cluster.replication_user, iterations)]

    # Over TCP inside the node, no password means no session.
    result = primary.container.exec_run(["psql", "-h", "127.0.0.1", "-w", "-Atc", "SELECT 1"], user="postgres")
    assert result.exit_code != 0
    assert b"password" in result.output


def test_no_secret_is_written_into_the_image(harness_image):
    image = docker.from_env().images.get(harness_image)

    env = image.attrs["Config"].get("Env") or []
    assert not [e for e in env if "PASSWORD" in e.split("=", 1)[0]]
    assert not [step for step in image.history() if "PASSWORD" in (step.get("CreatedBy") or "")]

    # The template cluster in the image has roles without passwords: they are set at the first start.
    client = docker.from_env()
    found = client.containers.run(
        harness_image,
        ["sh", "-c", 'grep -rlF "SCRAM-SHA-256" "$PGHARNESS_TEMPLATE" || true'],
        entrypoint=[],
        remove=True,
        network_mode="none",
        labels={"org.pgharness.managed": "true"},
    )
    assert found.strip() == b""


def test_secrets_come_from_the_environment_and_are_masked_in_evidence(cluster_factory, monkeypatch, tmp_path):
    superuser_secret, replication_secret = "Sup3r-s3cret-4f9a", "R3pl-s3cret-77c1"
    monkeypatch.setenv("POSTGRES_PASSWORD", superuser_secret)
    monkeypatch.setenv("REPLICATION_PASSWORD", replication_secret)

    cluster = cluster_factory()
    cluster.primary.sql("CREATE TABLE secrets_check (id integer)")
    cluster.primary.wait_for_catchup(cluster.standby)

    # The nodes use them: the default password is refused, the chosen one works.
    refused(cluster.primary, "28P01", **connect_kwargs(cluster.primary, user="postgres"), password="postgres")
    with psycopg.connect(**connect_kwargs(cluster.standby, user="postgres"), password=superuser_secret) as conn:
        assert conn.execute("SELECT count(*) FROM secrets_check").fetchone() == (0,)

    # Evidence (logs, compose config with its environment, status) never shows them.
    folder = save_evidence(cluster, tmp_path / "evidence")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "compose.yaml" for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        assert superuser_secret not in text, path.name
        assert replication_secret not in text, path.name
