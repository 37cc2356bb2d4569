"""The harness against a remote engine (DOCKER_HOST=tcp://...), and one run spread over two engines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from pgharness.compose import docker_client
from pgharness.engine import resolve, url_host
from pgharness.workers import WORKERS_PER_CPU
from tests.scenarios.helpers import pgharness

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
LOCAL_ENGINE = "unix:///var/run/docker.sock"


def test_clusters_run_on_the_remote_engine_and_are_reached_at_its_address(cluster, remote_engine):
    # DOCKER_HOST names the remote engine: the cluster is there, and nowhere else.
    assert resolve().url == remote_engine
    address = url_host(remote_engine)
    primary, standby = cluster.primary, cluster.standby
    assert primary.host == address
    for node in (primary, standby):
        bindings = node.container.attrs["NetworkSettings"]["Ports"]["5432/tcp"]
        assert {b["HostIp"] for b in bindings} == {address}
    local = docker_client(resolve({"DOCKER_HOST": LOCAL_ENGINE}))
    assert local.containers.list(all=True, filters={"label": f"com.docker.compose.project={cluster.name}"}) == []
    # A client on this machine reaches the nodes through the engine's address.
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id integer)")
        conn.execute("INSERT INTO t VALUES (1)")
    primary.wait_for_catchup(standby)
    with psycopg.connect(standby.dsn()) as conn:
        assert conn.execute("SELECT id FROM t").fetchall() == [(1,)]


def test_the_cli_drives_an_environment_on_the_remote_engine(remote_engine):
    name = f"remote-cli-{os.getpid()}"
    address = url_host(remote_engine)
    try:
        up = pgharness("up", "--name", name)
        assert up.returncode == 0, up.stderr
        # The connection strings name the host the user can reach: the engine's.
        assert f"@{address}:5433/" in up.stdout
        assert f"@{address}:5434/" in up.stdout
        uri = next(word for word in up.stdout.split() if word.startswith("postgresql://") and ":5433/" in word)
        with psycopg.connect(uri, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE TABLE hoge (col integer)")
            conn.execute("INSERT INTO hoge VALUES (1)")
        status = pgharness("status", "--name", name)
        assert status.returncode == 0, status.stderr
        assert "streaming" in status.stdout
        sql = pgharness("sql", "--name", name, "standby", "SELECT pg_is_in_recovery()")
        assert (sql.returncode, sql.stdout) == (0, "True\n"), sql.stderr
        promote = pgharness("promote", "--name", name, "standby")
        assert promote.returncode == 0, promote.stderr
        sql = pgharness("sql", "--name", name, "standby", "INSERT INTO hoge VALUES (2) RETURNING col")
        assert (sql.returncode, sql.stdout) == (0, "2\n"), sql.stderr
        psql = pgharness("psql", "--name", name, "primary", "--", "-Atc", "SELECT count(*) FROM hoge")
        assert (psql.returncode, psql.stdout) == (0, "1\n"), psql.stderr
        listed = pgharness("ls")
        assert name in listed.stdout, listed.stdout + listed.stderr
        # gc removes what belongs to dead processes of this client: a `pgharness up` environment is a person's.
        gc = pgharness("gc")
        assert gc.returncode == 0, gc.stderr
        assert name in pgharness("ls").stdout
    finally:
        down = pgharness("down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert name not in pgharness("ls").stdout


def test_one_run_spread_over_two_engines_names_the_engine_in_its_evidence(tmp_path, remote_engine):
    # Two workers, one per engine; every test runs on both (--dist each); one test fails on purpose.
    out, evidence = tmp_path / "out", tmp_path / "evidence"
    out.mkdir()
    env = {**os.environ, "PGHARNESS_SPREAD_OUT": str(out)}
    env.pop("DOCKER_HOST", None)
    run = subprocess.run(
        [
            sys.executable, "-m", "pytest", str(HERE / "spread_sample.py"),
            "-n", "2", "--dist", "each", "-p", "no:cacheprovider",
            "--pg-engine", LOCAL_ENGINE, "--pg-engine", remote_engine,
            "--evidence-dir", str(evidence),
        ],
        capture_output=True, text=True, timeout=600, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 failed, 2 passed" in run.stdout, run.stdout[-3000:]
    # The report header lists the engines and their workers.
    assert f"pgharness: engine {LOCAL_ENGINE} (workers gw0)" in run.stdout
    assert f"pgharness: engine {remote_engine} (workers gw1)" in run.stdout
    # Each worker ran on its own engine.
    assert (out / "gw0.engine").read_text() == LOCAL_ENGINE
    assert (out / "gw1.engine").read_text() == remote_engine
    # The failed test's evidence, once per engine, names the engine it ran on.
    statuses = [json.loads(p.read_text()) for p in evidence.glob("*fails_on_purpose*/*/status.json")]
    assert sorted(s["engine"]["url"] for s in statuses) == sorted([LOCAL_ENGINE, remote_engine])
    summaries = [p.read_text() for p in evidence.glob("*fails_on_purpose*/*/summary.txt")]
    assert any(f"on engine {remote_engine}" in s for s in summaries), summaries
    # Nothing of the run is left on either engine: neither the passing tests' clusters nor the failed ones'.
    for worker, url in (("gw0", LOCAL_ENGINE), ("gw1", remote_engine)):
        client = docker_client(resolve({"DOCKER_HOST": url}))
        names = [(out / f"{worker}.cluster").read_text()]
        names += [s["cluster"] for s in statuses if s["engine"]["url"] == url]
        for name in names:
            label = {"label": f"com.docker.compose.project={name}"}
            assert client.containers.list(all=True, filters=label) == []
            assert client.volumes.list(filters=label) == []
            assert client.networks.list(filters=label) == []


def test_an_engine_that_does_not_answer_is_one_line(remote_engine):
    # The test host's address, on a port where no engine listens.
    silent = remote_engine.rsplit(":", 1)[0] + ":2399"
    result = pgharness("ls", env={"DOCKER_HOST": silent}, timeout=200)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"no Docker engine answers at {silent}" in result.stderr


def auto_workers_line(*engines):
    """The report header's `-n auto` line of a collect-only run of the spread sample over `engines`."""
    env = {**os.environ}
    env.pop("DOCKER_HOST", None)
    env.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)
    engine_args = [arg for engine in engines for arg in ("--pg-engine", engine)]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(HERE / "spread_sample.py"), "-n", "auto", "--collect-only",
         "-p", "no:cacheprovider", *engine_args],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    lines = [line for line in run.stdout.splitlines() if line.startswith("pgharness: -n auto:")]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert len(lines) == 1, run.stdout[-3000:]
    return lines[0]


def test_n_auto_asks_every_engine_what_it_holds(remote_engine):
    cpus = [docker_client(resolve({"DOCKER_HOST": url})).info()["NCPU"] for url in (LOCAL_ENGINE, remote_engine)]
    line = auto_workers_line(LOCAL_ENGINE, remote_engine)
    # Both answered: two workers per CPU of the smaller engine, once per engine; the pools hold six an engine.
    assert f"{WORKERS_PER_CPU * min(cpus) * 2} ({WORKERS_PER_CPU} per CPU of the engine)" in line
    assert "12 (the default address pools)" in line
    assert "did not answer" not in line
    # The test host's address, on a port where no engine listens: bounded by the pools alone, and said so.
    silent = remote_engine.rsplit(":", 1)[0] + ":2399"
    line = auto_workers_line(LOCAL_ENGINE, silent)
    assert f"{WORKERS_PER_CPU * cpus[0] * 2} ({WORKERS_PER_CPU} per CPU of the engine)" in line
    assert "an engine that did not answer is bounded by the address pools alone" in line


def test_every_compose_service_is_published_on_the_remote_engines_address(cluster_factory, remote_engine):
    # The profile services too (slot-standby, archive-standby): one bind variable for all, no literal loopback.
    address = url_host(remote_engine)
    for topology, service in (("slot", "slot-standby"), ("archive-only", "archive-standby")):
        node = cluster_factory(topology=topology).node(service)
        bindings = node.container.attrs["NetworkSettings"]["Ports"]["5432/tcp"]
        assert {b["HostIp"] for b in bindings} == {address}, service
        with psycopg.connect(node.dsn(), connect_timeout=10) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
