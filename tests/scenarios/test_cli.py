"""The `harness` command as a user runs it (`make up` / `make down` call it)."""

import os
import socket
import subprocess
import sys

import docker
import psycopg
import pytest

from harness.cluster import new_cluster_name
from harness.wait import poll_until

pytestmark = pytest.mark.cli


def harness(*args, env=None, timeout=180):
    """Run `python -m harness ARGS` the way a user would; return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project_resources(name):
    """Every container, volume and network labelled with compose project `name`."""
    client = docker.from_env()
    label = {"label": f"com.docker.compose.project={name}"}
    return (
        client.containers.list(all=True, filters=label)
        + client.volumes.list(filters=label)
        + client.networks.list(filters=label)
    )


@pytest.fixture
def environment(harness_image):
    """A name for a `harness up` environment; whatever the test leaves is removed."""
    name = new_cluster_name("pgh-cli")
    yield name
    harness("down", "--name", name)


def test_up_prints_connection_strings_that_work_and_down_removes_everything(environment):
    primary_port, standby_port = free_port(), free_port()

    # `harness up` (what `make up` runs) with the seed's pair on chosen ports.
    ports = ["--primary-port", str(primary_port), "--standby-port", str(standby_port)]
    up = harness("up", "--name", environment, *ports)
    assert up.returncode == 0, up.stderr

    # It prints one connection string per node, with its role.
    rows = [line.split() for line in up.stdout.splitlines()]
    lines = {row[0]: row for row in rows if row and row[0] in ("primary", "standby")}
    assert lines["primary"][1] == "primary"
    assert lines["standby"][1] == "standby"
    assert f"127.0.0.1:{primary_port}/" in lines["primary"][2]

    # The printed strings connect; the standby is read-only, the primary is not.
    with psycopg.connect(lines["primary"][2], autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    with psycopg.connect(lines["standby"][2], autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)

    # A second `up` of the same environment is not an error: it reports it is up.
    again = harness("up", "--name", environment, *ports)
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr

    # `harness down` removes its containers, volumes and network.
    assert project_resources(environment)
    down = harness("down", "--name", environment)
    assert down.returncode == 0, down.stderr
    assert project_resources(environment) == []


def test_port_in_use_is_one_line_and_leaves_nothing(environment):
    # Something else holds the primary's port.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        up = harness("up", "--name", environment, "--primary-port", str(taken), "--standby-port", str(free_port()))

    # One clear line, exit 1, no traceback, nothing created.
    assert up.returncode == 1
    assert up.stderr.count("\n") == 1
    assert f"port {taken}" in up.stderr
    assert "Traceback" not in up.stderr
    assert project_resources(environment) == []


def test_no_docker_daemon_is_one_line():
    # DOCKER_HOST points at a socket that does not exist.
    up = harness("up", "--name", "pgh-nodaemon", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})

    assert up.returncode == 1
    assert up.stderr.startswith("harness: error: no Docker engine answers at unix:///nonexistent/docker.sock")
    assert up.stderr.count("\n") == 1


def test_image_without_postgresql_is_refused_in_one_line(harness_image):
    client = docker.from_env()
    tag = f"pgharness-test/no-postgres:{new_cluster_name('t')}"
    base = client.images.get(harness_image)

    # An image with no PostgreSQL: the node image with its server binaries removed.
    container = client.containers.run(
        base.id,
        ["sh", "-c", "rm -rf /usr/lib/postgresql /usr/local/bin/p* /usr/local/bin/initdb"],
        entrypoint=[],
        user="root",
        labels={"org.pgharness.managed": "true"},
        detach=True,
    )
    try:
        container.wait(timeout=60)
        container.commit(repository=tag.split(":")[0], tag=tag.split(":")[1])
    finally:
        container.remove(force=True)
    try:
        # Building the harness image on it fails with the image script's reason.
        result = harness("image", "--pg-image", tag)
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("harness: error: docker build of")
        assert "no PostgreSQL server binaries in this image" in last
    finally:
        client.images.remove(tag, force=True)


def test_replication_is_not_backup_by_hand(environment):
    # The README's "Replication is not backup" walk-through, through the CLI alone.
    name = ["--name", environment]
    up = harness("up", *name, "--primary-port", str(free_port()), "--standby-port", str(free_port()))
    assert up.returncode == 0, up.stderr

    def ok(*args):
        result = harness(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    # A base backup, checked; the seed's table; a restore point; the mistaken DELETE.
    ok("backup", *name, "nightly")
    assert ok("verify-backup", *name, "nightly") == "backup successfully verified"
    ok("sql", *name, "primary", "CREATE TABLE hoge AS SELECT generate_series(1, 100) AS col")
    ok("sql", *name, "primary", "SELECT pg_create_restore_point('before-delete')")
    ok("sql", *name, "primary", "DELETE FROM hoge")

    # The standby lost the rows as well (once it has replayed the DELETE).
    poll_until(
        lambda: harness("sql", *name, "standby", "SELECT count(*) FROM hoge").stdout.strip(),
        lambda count: count == "0",
        what="the DELETE to reach the standby",
    )

    # Archive the WAL past the restore point, then restore a new node to it.
    walfile = ok("sql", *name, "primary", "SELECT pg_walfile_name(pg_switch_wal())")
    poll_until(
        lambda: ok("sql", *name, "primary", "SELECT last_archived_wal FROM pg_stat_archiver"),
        lambda last: last[:24] >= walfile,
        what=f"{walfile} to be archived",
    )
    restored = ok("restore", *name, "restored", "--from-backup", "nightly", "--target", "name:before-delete")
    assert restored.split()[:2] == ["restored", "primary"]

    # The rows are back.
    assert ok("sql", *name, "restored", "SELECT count(*) FROM hoge") == "100"

    # Rebuilding the primary is refused in one line.
    refused = harness("rebuild", *name, "primary")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "not in recovery" in refused.stderr
