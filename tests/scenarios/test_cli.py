"""The `pgharness` command as a user runs it (`make up` / `make down` call it)."""

import json
import os
import shlex
import socket
import subprocess
import sys

import docker
import psycopg
import pytest

from pgharness import Cluster, ClusterError
from pgharness.cluster import new_cluster_name
from pgharness.compose import COMPOSE_FILE
from pgharness.environments import claim_name, remove_environment, this_host
from pgharness.fixtures import remove_cluster
from pgharness.lsn import Lsn
from pgharness.versions import SUITES
from pgharness.wait import poll_until
from tests.scenarios.helpers import (
    file_system,
    free_port,
    pgharness,
    project_resources,
    remove_image_built_from,
    run_pytest,
    wait_until_ready,
)

pytestmark = pytest.mark.cli


@pytest.fixture(scope="module", autouse=True)
def suite_storage(harness_settings):
    """`pgharness up` keeps its data where the suite's clusters keep theirs (`--pg-storage`: memory unless
    asked otherwise); the manual's exercise 26-1 runs it as `make up` does, on disk."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PGHARNESS_STORAGE", harness_settings.storage)
        yield


def ok(*args, env=None):
    """Run the command (with more environment variables `env`); it must succeed; return its stdout."""
    result = pgharness(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def sql_until(environment, node, query, expected, what):
    """Run `pgharness sql` on `node` until its output is `expected` (a query may fail until then)."""
    poll_until(
        lambda: pgharness("sql", "--name", environment, node, query).stdout.strip(),
        lambda output: output == expected,
        what=what,
    )


def up_on_free_ports(name, *flags):
    """`pgharness up` of environment `name` on free host ports; return its stdout."""
    return ok("up", "--name", name, "--primary-port", str(free_port()), "--standby-port", str(free_port()), *flags)


def primary_file_system(name):
    """The file system environment `name`'s primary keeps its data on (tmpfs, ext2/ext3, ...)."""
    return file_system(Cluster.attach(name).primary)


@pytest.fixture
def environment(harness_image, harness_settings):
    """A name for a `pgharness up` environment; whatever the test leaves is removed as the plugin removes
    clusters: behind the next tests, or before them with --pg-sync-teardown (what `pgharness down` does,
    without a process of its own: the scenarios that test `down` run it; the session waits for a
    removal in the background and fails if it failed)."""
    name = new_cluster_name("pgh-cli")
    yield name
    # A handle on the project: its destroy() removes what the test left.
    remove_cluster(Cluster(name, image=harness_image), harness_settings)


@pytest.fixture(scope="module")
def running_environment(harness_image):
    """A `pgharness up` environment (primary and standby) for the scenarios that only need one to exist."""
    name = new_cluster_name("pgh-cli")
    try:
        up_on_free_ports(name)
        yield name
    finally:
        remove_environment(docker.from_env(), name)


def test_up_prints_connection_strings_that_work_and_down_removes_everything(environment, harness_settings):
    primary_port, standby_port = free_port(), free_port()

    # `pgharness up` (what `make up` runs) with exercise 26-1's pair on chosen ports, its data where
    # PGHARNESS_STORAGE says.
    ports = ["--primary-port", str(primary_port), "--standby-port", str(standby_port)]
    up = pgharness("up", "--name", environment, *ports)
    assert up.returncode == 0, up.stderr
    assert (primary_file_system(environment) == "tmpfs") == (harness_settings.storage == "tmpfs")
    # Its nodes run Docker's healthchecks, for `docker ps` (a test run's clusters run none).
    for node in Cluster.attach(environment).nodes:
        assert node.container.attrs["Config"]["Healthcheck"]["Test"][:3] == ["CMD", "pgharness", "health"]

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
    again = pgharness("up", "--name", environment, *ports)
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr

    # `pgharness down` removes its containers, volumes and network.
    assert project_resources(environment)
    down = pgharness("down", "--name", environment)
    assert down.returncode == 0, down.stderr
    assert project_resources(environment) == []

    # A name that is not an environment (a typo, or one already removed) is said: bad usage, as every unknown name.
    again = pgharness("down", "--name", environment)
    assert again.returncode == 2
    assert again.stderr.startswith(f"pgharness: error: no environment {environment!r} on this engine"), again.stderr


def test_port_in_use_is_one_line_and_leaves_nothing(environment):
    # Something else holds the primary's port.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        up = pgharness("up", "--name", environment, "--primary-port", str(taken), "--standby-port", str(free_port()))

    # One clear line, exit 1, no traceback, nothing created.
    assert up.returncode == 1
    assert up.stderr.count("\n") == 1
    assert f"port {taken}" in up.stderr
    assert "Traceback" not in up.stderr
    assert project_resources(environment) == []


def test_no_docker_daemon_is_one_line():
    # DOCKER_HOST points at a socket that does not exist.
    up = pgharness("up", "--name", "pgh-nodaemon", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})

    assert up.returncode == 1
    assert up.stderr.startswith("pgharness: error: no Docker engine answers at unix:///nonexistent/docker.sock")
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
        # Building the pgharness image on it fails with the image script's reason.
        result = pgharness("image", "--pg-image", tag)
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("pgharness: error: docker build of")
        assert "no PostgreSQL server binaries in this image" in last
    finally:
        remove_image_built_from(tag)


def test_replication_is_not_backup_by_hand(environment):
    # The README's "Replication is not backup" walk-through, through the CLI alone.
    name = ["--name", environment]
    up_on_free_ports(environment)

    # A base backup, checked; exercise 26-1's table; a restore point; the mistaken DELETE.
    ok("backup", *name, "nightly")
    assert ok("verify-backup", *name, "nightly") == "backup successfully verified"
    ok("sql", *name, "primary", "CREATE TABLE hoge AS SELECT generate_series(1, 100) AS col")
    ok("sql", *name, "primary", "SELECT pg_create_restore_point('before-delete')")
    ok("sql", *name, "primary", "DELETE FROM hoge")

    # The standby lost the rows as well (once it has replayed the DELETE).
    sql_until(environment, "standby", "SELECT count(*) FROM hoge", "0", what="the DELETE to reach the standby")

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
    refused = pgharness("rebuild", *name, "primary")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "not in recovery" in refused.stderr


def test_exercise_26_1_entirely_through_the_cli(environment, monkeypatch):
    name = ["--name", environment]

    # make up's pair, on free ports, with its data on disk (the default).
    monkeypatch.delenv("PGHARNESS_STORAGE")
    up_on_free_ports(environment)
    assert primary_file_system(environment) != "tmpfs"

    # Exercise 26-1: a table and a row on the primary; the standby sees it.
    ok("sql", *name, "primary", "CREATE TABLE hoge (col integer)")
    ok("sql", *name, "primary", "INSERT INTO hoge VALUES (1)")
    sql_until(environment, "standby", "SELECT col FROM hoge", "1", what="row 1 on the standby")

    # INSERT on the standby is refused: SQLSTATE 25006, in one line.
    refused = pgharness("sql", *name, "standby", "INSERT INTO hoge VALUES (2)")
    assert refused.returncode == 1
    assert refused.stderr.startswith("pgharness: error: SQLSTATE 25006")
    assert refused.stderr.count("\n") == 1

    # A second row on the primary reaches the standby.
    ok("sql", *name, "primary", "INSERT INTO hoge VALUES (2)")
    sql_until(environment, "standby", "SELECT count(*) FROM hoge", "2", what="row 2 on the standby")

    # Promote the standby; it writes on timeline 2.
    assert ok("promote", *name, "standby") == "standby promoted: timeline 2"
    ok("sql", *name, "standby", "INSERT INTO hoge VALUES (3)")
    assert ok("sql", *name, "standby", "SELECT col FROM hoge ORDER BY col").split() == ["1", "2", "3"]

    # The old primary still runs: two nodes accept writes, and status says so (split brain).
    rows = json.loads(ok("status", *name, "--json"))
    assert {row["node"]: row["split_brain"] for row in rows} == {"primary": True, "standby": True}
    table = ok("status", *name)
    assert table.count("primary (SPLIT BRAIN)") == 2
    assert "split brain: 2 nodes accept writes (primary, standby)" in table

    # And down removes it all.
    ok("down", *name)
    assert project_resources(environment) == []


def test_status_json_matches_what_the_nodes_report(environment):
    name = ["--name", environment]
    up = up_on_free_ports(environment, "--cascade")
    dsns = {row[0]: row[2] for row in (line.split() for line in up.splitlines()) if row and "://" in row[-1]}

    result = pgharness("status", *name, "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["node"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"primary", "standby", "cascade"}

    # Each row agrees with what the node itself says.
    for node, row in rows.items():
        with psycopg.connect(dsns[node], autocommit=True) as conn:
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
            receiver = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
        assert row["role"] == ("standby" if in_recovery else "primary")
        assert row["wal_receiver"] == (receiver[0] if receiver else None)
        assert row["timeline"] == 1
    assert Lsn.parse(rows["primary"]["current_lsn"]) >= Lsn.parse(rows["standby"]["replay_lsn"])
    assert rows["standby"]["sync_state"] == "async"
    assert rows["standby"]["lag_bytes"] is not None
    # The cascading standby is the standby's, not the primary's: its lag is against the standby.
    assert rows["standby"]["upstream"] == "primary"
    assert rows["cascade"]["upstream"] == "standby"
    assert rows["cascade"]["sync_state"] == "async"
    assert rows["cascade"]["lag_bytes"] is not None


@pytest.mark.parametrize(
    "args",
    [
        ["sql", "--name", "{env}", "nosuch", "SELECT 1"],
        ["kill", "--name", "{env}", "nosuch"],
        ["status", "--name", "pgh-no-such-environment"],
        ["up", "--bogus"],
        ["up", "--standbys", "-1"],
        ["frobnicate"],
        ["restore", "--name", "pgh-no-such-environment", "r", "--from-backup", "b", "--target", "lsn:0/zz"],
        [
            "restore",
            "--name",
            "pgh-no-such-environment",
            "r",
            "--from-backup",
            "b",
            "--target",
            "immediate",
            "--timeline",
            "x",
        ],
    ],
)
def test_unknown_names_and_bad_flags_exit_2_in_one_line(request, args):
    if "{env}" in args:
        environment = request.getfixturevalue("running_environment")
        args = [a.replace("{env}", environment) for a in args]
    result = pgharness(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    if "nosuch" in args:
        assert "its nodes: primary, standby" in result.stderr
    if args[0] == "restore":  # refused for its target or timeline, before the environment is looked for
        assert f"Invalid value for {args[-2]}" in result.stderr, result.stderr


def test_gc_removes_what_a_killed_test_run_left(tmp_path, harness_image):
    # A test run that is killed (SIGKILL) while its cluster is up cannot clean up.
    child = run_pytest(
        tmp_path,
        "def test_waits(cluster):\n    cluster.primary.poll_query_until('SELECT false', True, timeout=240)\n",
        stdout=subprocess.DEVNULL,
        # Its watchdog off: what it leaves is gc's to find (the watchdog's own test is in test_lifecycle).
        env_extra={"PGHARNESS_REAPER": "off"},
    )
    owner = f"org.pgharness.owner=pytest-{child.pid}"
    client = docker.from_env()
    try:
        wait_until_ready(owner)
    finally:
        child.kill()
        child.wait()
    left = client.containers.list(all=True, filters={"label": owner})
    assert left

    # pgharness gc finds that its owner is gone and removes it; kept environments stay. (Another run starting
    # meanwhile may have removed it first, by the same rule: the session-start reaping.)
    project = left[0].labels["com.docker.compose.project"]
    reaped_already = project_resources(project) == []
    result = pgharness("gc")
    assert result.returncode == 0, result.stderr
    assert project in result.stdout or reaped_already
    assert project_resources(project) == []


def test_gc_removes_only_what_provably_belongs_to_a_dead_process_of_this_host(harness_image):
    client = docker.from_env()
    dead = 4_194_304 + 17  # above any pid_max: no such process
    owners = {
        # A process of this host that is gone: removed.
        "pgh-gc-gone": {"org.pgharness.owner": f"pytest-{dead}", "org.pgharness.owner-host": this_host()},
        # Another machine's run on a shared engine: its pid means nothing here; kept.
        "pgh-gc-other": {"org.pgharness.owner": f"pytest-{dead}", "org.pgharness.owner-host": "ci-runner-7/0123abcd"},
        # An owner label that names no host (made before hosts were recorded): cannot be told; kept.
        "pgh-gc-unknown": {"org.pgharness.owner": f"pytest-{dead}"},
    }
    for project, labels in owners.items():
        client.volumes.create(
            f"{project}_archive",
            labels={"org.pgharness.managed": "true", "com.docker.compose.project": project, **labels},
        )
    try:
        result = pgharness("gc")
        assert result.returncode == 0, result.stderr
        assert project_resources("pgh-gc-gone") == []
        assert len(project_resources("pgh-gc-other")) == 1
        assert len(project_resources("pgh-gc-unknown")) == 1
        assert "kept: pgh-gc-other (owner pytest-4194321 runs on another host (ci-runner-7/0123abcd))" in result.stdout
        assert "kept: pgh-gc-unknown (owner pytest-4194321 names no host" in result.stdout
    finally:
        for project in owners:
            for volume in project_resources(project):
                volume.remove(force=True)


def test_up_with_a_delayed_standby(environment):
    up = up_on_free_ports(environment, "--delayed-standby", "1h")
    assert "delayed " in up

    # The delayed standby has the WAL at once and applies it an hour later.
    name = ["--name", environment]
    assert ok("sql", *name, "delayed", "SHOW recovery_min_apply_delay") == "1h"
    ok("sql", *name, "primary", "CREATE TABLE hoge (col integer)")
    sql_until(environment, "standby", "SELECT to_regclass('hoge') IS NOT NULL", "True", what="hoge on the standby")
    assert ok("sql", *name, "delayed", "SELECT to_regclass('hoge') IS NOT NULL") == "False"

    # A delay that is no duration is bad usage, in one line.
    bad = pgharness("up", "--name", environment, "--delayed-standby", "soon")
    assert (bad.returncode, bad.stderr.count("\n")) == (2, 1), bad.stderr


def test_up_with_settings_for_every_node(environment):
    # --set NAME=VALUE, repeatable: its value quoted for postgresql.conf, on every node.
    up_on_free_ports(environment, "--set", "work_mem=24MB", "--set", "cluster_name=it's mine")
    name = ["--name", environment]
    for node in ("primary", "standby"):
        assert ok("sql", *name, node, "SELECT current_setting('work_mem')") == "24MB"
        assert ok("sql", *name, node, "SELECT current_setting('cluster_name')") == "it's mine"

    # A name no setting could have is bad usage, in one line.
    bad = pgharness("up", "--name", environment, "--set", "work mem=1MB")
    assert (bad.returncode, bad.stderr.count("\n")) == (2, 1), bad.stderr


def test_up_with_a_password_that_needs_quoting(environment):
    # The password that broke `pgharness up` before (space, quote, backslash), and more.
    password = "a b'c\\d/@:?#%"
    up = pgharness(
        "up", "--name", environment, "--primary-port", str(free_port()), "--standby-port", str(free_port()),
        env={"POSTGRES_PASSWORD": password},
    )  # fmt: skip
    assert up.returncode == 0, up.stderr

    # The connection URIs it prints (percent-encoded) connect, with that password.
    uris = [line.split()[-1] for line in up.stdout.splitlines() if "postgresql://" in line]
    assert len(uris) == 3  # primary, standby, and the `connect:` line
    for uri in uris:
        with psycopg.connect(uri.strip("'"), connect_timeout=10) as conn:
            assert conn.info.password == password


ARCHIVE_READ_ONLY = """
services:
  primary:
    volumes: !override
      - primary-data:/var/lib/pgharness
      - archive:/archive:ro
"""
ARCHIVE_MISSING = """
services:
  primary:
    volumes: !override
      - primary-data:/var/lib/pgharness
"""


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        (ARCHIVE_READ_ONLY, "primary: archive: /archive is not writable by postgres"),
        (ARCHIVE_MISSING, "primary: archive: no volume is mounted at /archive"),
    ],
    ids=["archive-read-only", "archive-missing"],
)
def test_an_archive_missing_or_not_writable_at_start_is_one_line(environment, tmp_path, override, reason):
    (tmp_path / "override.yaml").write_text(override)

    state = tmp_path / "state"
    result = pgharness(
        "up", "--name", environment, "--primary-port", str(free_port()), "--standby-port", str(free_port()),
        "--compose-file", str(tmp_path / "override.yaml"), env={"XDG_STATE_HOME": str(state)},
    )  # fmt: skip

    # The primary says why it stopped; that is the error's one line. The nodes' logs are in the environment's
    # details file, which the line names: one a name, not a new file in /tmp each time.
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"pgharness: error: cluster {environment!r} did not start: {reason}")
    details = state / "pgharness" / f"{environment}.error.txt"
    assert error.endswith(f"(details: {details})"), error
    assert "--- last" in details.read_text()
    assert project_resources(environment) == []


def test_an_upstream_that_does_not_resolve_is_named(harness_image):
    # (It gives up after 1 s instead of 5.)
    cluster = Cluster(image=harness_image, env={"STANDBY_UPSTREAM": "no-such-host", "UPSTREAM_RESOLVE_TIMEOUT": "1"})

    with pytest.raises(ClusterError) as excinfo:
        cluster.start()

    first_line = str(excinfo.value).splitlines()[0]
    assert first_line == (
        f"cluster {cluster.name!r} did not start: standby: upstream host 'no-such-host' does not resolve "
        "on the replication network: is it a node of this cluster?"
    )
    assert project_resources(cluster.name) == []


def test_docker_compose_up_alone_gives_a_working_pair(harness_image):
    # compose.yaml by hand, as a user runs it: no harness code between compose and the nodes.
    name = new_cluster_name("pgh-compose")
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": name,
        "HARNESS_IMAGE": harness_image,
        "PRIMARY_PORT": "",
        "STANDBY_PORT": "",
        "PGHARNESS_OWNER": f"pytest-{os.getpid()}",
    }
    compose = ["docker", "compose", "--file", str(COMPOSE_FILE)]
    try:
        subprocess.run([*compose, "up", "--wait"], env=env, check=True, capture_output=True, timeout=180)

        def dsn(service):
            port = subprocess.run(
                [*compose, "port", service, "5432"], env=env, check=True, capture_output=True, text=True
            ).stdout.strip()
            host, _, number = port.rpartition(":")
            assert host == "127.0.0.1"
            return f"host={host} port={number} user=postgres password=postgres dbname=postgres"

        with psycopg.connect(dsn("primary"), autocommit=True) as primary:
            primary.execute("CREATE TABLE hoge AS SELECT 1 AS col")
        with psycopg.connect(dsn("standby"), autocommit=True) as standby:
            count = poll_until(
                lambda: standby.execute("SELECT count(*) FROM pg_class WHERE relname = 'hoge'").fetchone()[0],
                what="table hoge on the standby",
                timeout=30,
            )
            assert count == 1
            assert standby.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    finally:
        subprocess.run([*compose, "down", "--volumes"], env=env, check=False, capture_output=True, timeout=120)
    assert project_resources(name) == []


def test_up_logical_prints_how_to_subscribe_and_status_shows_it(environment):
    up = up_on_free_ports(environment, "--logical")
    name = ["--name", environment]
    assert "subscriber " in up

    # The walk-through `pgharness up --logical` prints, step by step.
    for node in ("primary", "subscriber"):
        ok("sql", *name, node, "CREATE TABLE hoge (col integer PRIMARY KEY)")
    ok("sql", *name, "primary", "CREATE PUBLICATION pub FOR TABLE hoge")
    [create] = [line.split("subscriber ", 1)[1] for line in up.splitlines() if "CREATE SUBSCRIPTION" in line]
    ok("sql", *name, "subscriber", shlex.split(create)[0])
    ok("sql", *name, "primary", "INSERT INTO hoge VALUES (1)")
    sql_until(environment, "subscriber", "SELECT count(*) FROM hoge", "1", what="row 1 on the subscriber")

    # status shows the publication, the subscription and its slot on the publisher.
    rows = {row["node"]: row for row in json.loads(ok("status", *name, "--json"))}
    assert [p["pubname"] for p in rows["primary"]["publications"]] == ["pub"]
    assert [(s["slot_name"], s["slot_type"]) for s in rows["primary"]["slots"]] == [("sub", "logical")]
    assert [(s["subname"], s["subenabled"]) for s in rows["subscriber"]["subscriptions"]] == [("sub", True)]
    table = ok("status", *name)
    assert "subscriptions" in table
    assert "publications" in table


def test_a_port_in_use_is_named_with_the_flag_or_variable_the_user_gave(harness_image):
    # The remedy is given in the user's own words: the flag they typed, or make up's variable.
    name = new_cluster_name("pgh-cli")
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        port = held.getsockname()[1]
        flag = pgharness("up", "--name", name, "--primary-port", str(port), "--standby-port", str(free_port()))
        env = pgharness("up", "--name", name, "--standby-port", str(free_port()), env={"PRIMARY_PORT": str(port)})
    for run, remedy in ((flag, "choose another with --primary-port"), (env, "choose another with PRIMARY_PORT=...")):
        assert run.returncode == 1, run.stderr
        [line] = run.stderr.strip().splitlines()
        assert line.startswith(f"pgharness: error: port {port} on 127.0.0.1 (for primary) is already in use"), line
        assert line.endswith(remedy), line
        assert "make down" not in line
    assert project_resources(name) == []


@pytest.mark.upgrade
def test_upgrade_through_the_cli_keeps_the_ports_and_the_standby(environment, pg_major):
    later = [v for v in sorted(SUITES) if v > pg_major]
    if not later:
        pytest.skip(f"no major the harness builds comes after PostgreSQL {pg_major}")
    name = ["--name", environment]
    before = up_on_free_ports(environment)
    connections = [line for line in before.splitlines() if line.startswith(("primary ", "standby "))]

    upgraded = pgharness("upgrade", *name, "--to", str(later[0]), timeout=900)
    assert upgraded.returncode == 0, upgraded.stderr
    # It says what it did, and how to connect: the same addresses as before.
    assert f"from PostgreSQL {pg_major} to {later[0]}" in upgraded.stdout
    assert "standby: rsync of the primary's old and new data" in upgraded.stdout
    assert [line for line in upgraded.stdout.splitlines() if line.startswith(("primary ", "standby "))] == connections

    assert ok("sql", *name, "primary", "SHOW server_version_num")[:2] == str(later[0])
    ok("sql", *name, "primary", "CREATE TABLE hoge AS SELECT 1 AS col")
    sql_until(environment, "standby", "SELECT col FROM hoge", "1", what="row 1 on the upgraded standby")


def test_two_ups_of_one_name_at_once_make_one_environment_and_nothing_unlabelled(environment):
    # Two people (or two CI jobs) run `pgharness up --name same` at the same moment.
    argv = [sys.executable, "-m", "pgharness", "up", "--name", environment]
    ports = [["--primary-port", str(free_port()), "--standby-port", str(free_port())] for _ in range(2)]
    procs = [subprocess.Popen([*argv, *p], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in ports]
    results = [(proc.wait(timeout=180), *proc.communicate()) for proc in procs]
    codes = sorted(code for code, _, _ in results)

    # One makes it; the other either found it made already, or is refused in one line naming who is making it.
    assert codes in ([0, 0], [0, 1]), results
    for code, _, stderr in results:
        assert "Traceback" not in stderr
        if code == 1:
            assert stderr.count("\n") == 1, stderr
            assert f"environment {environment!r} is being made by process " in stderr
    # The environment is whole: both nodes answer.
    ok("sql", "--name", environment, "standby", "SELECT pg_is_in_recovery()")
    # Every volume and network on the engine carries the harness's labels (none made behind its back).
    client = docker.from_env()
    mine = [v for v in client.volumes.list() if v.name.startswith(environment)]
    assert mine
    assert [v.name for v in mine if not (v.attrs.get("Labels") or {}).get("org.pgharness.managed")] == []
    assert not client.containers.list(all=True, filters={"name": claim_name(environment)})


#: The troubleshooting guide's bad-input table: what the user typed, the exit code, and what the one line
#: must name (the flag as they gave it, and the cause).
BAD_INPUT = [
    (["up", "--pg-version", "14"], 2, ["--pg-version", "no Debian suite ships PostgreSQL 14", "--pg-image"]),
    (["up", "--pg-version", "12"], 2, ["--pg-version", "PostgreSQL 12 is not supported"]),
    (["up", "--pg-version", "abc"], 2, ["--pg-version", "not a PostgreSQL version"]),
    (["upgrade", "--name", "{env}", "--to", "14"], 2, ["--to", "no Debian suite ships PostgreSQL 14", "--to IMAGE"]),
    (["upgrade", "--name", "{env}", "--to", "abc"], 2, ["--to", "neither a major version"]),
    (["upgrade", "--name", "{env}", "--to", "{major}"], 1, ["to {major}: pg_upgrade goes to a later major version"]),
    (["up", "--name", "{new}", "--set", "work_mem=lots"], 2, ["--set", "work_mem=lots", 'parameter "work_mem"']),
    (["up", "--name", "{new}", "--set", "no_such_setting=1"], 2, ["--set", "no_such_setting=1", "unrecognized"]),
    (["up", "--name", "{new}", "--compose-file", "{bad_yaml}"], 1, ["{bad_yaml}, line 2: not valid YAML"]),
]


@pytest.mark.parametrize(("args", "code", "names"), BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_input_is_refused_in_one_line_naming_the_flag_before_any_build(
    request, tmp_path, args, code, names, pg_major
):
    bad_yaml = tmp_path / "override.yaml"
    bad_yaml.write_text("services:\n\textra: {}\n")  # a tab: YAML refuses it where it stands, on line 2
    values = {"new": new_cluster_name("pgh-cli"), "major": str(pg_major), "bad_yaml": str(bad_yaml)}
    if any("{env}" in a for a in args):
        values["env"] = request.getfixturevalue("running_environment")
    ports = ["--primary-port", str(free_port()), "--standby-port", str(free_port())] if args[0] == "up" else []
    args = [a.format(**values) for a in args]
    try:
        result = pgharness(*args, *ports)
    finally:
        remove_environment(docker.from_env(), values["new"])
    assert result.returncode == code, result.stderr
    # One line of refusal (after the command's own progress line, when it had begun).
    assert result.stderr.count("pgharness: ") == 1, result.stderr
    assert "Traceback" not in result.stderr
    refusal = result.stderr.strip().splitlines()[-1]
    for name in names:
        assert name.format(**values) in refusal
    # Nothing was built on the way to the refusal.
    assert "building" not in result.stderr


def test_sql_on_a_stopped_node_says_it_is_stopped_and_how_to_start_it(running_environment):
    ok("stop", "--name", running_environment, "standby")
    try:
        result = pgharness("sql", "--name", running_environment, "standby", "SELECT 1")
    finally:
        ok("start", "--name", running_environment, "standby")
    assert result.returncode == 1
    assert "'standby' is stopped (status: exited)" in result.stderr
    assert f"pgharness start standby --name {running_environment}" in result.stderr


def test_error_files_go_with_their_environment_and_with_environments_that_are_gone(tmp_path, running_environment):
    state = tmp_path / "pgharness"
    state.mkdir()
    for env in ("pgh-long-gone", running_environment):
        (state / f"{env}.error.txt").write_text("the whole of an old error\n")
    result = pgharness("gc", env={"XDG_STATE_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    # The gone environment's file is removed; the running one's stays until it is removed.
    assert sorted(p.name for p in state.iterdir()) == [f"{running_environment}.error.txt"]


def test_wait_waits_for_a_condition_and_says_what_it_saw_last_at_its_deadline(running_environment):
    name = ["--name", running_environment]
    # A write on the primary, then the standby caught up with it: no polling loop in the shell.
    ok("sql", *name, "primary", "CREATE TABLE waited AS SELECT 1 AS col")
    assert ok("wait", *name, "standby", "--timeout", "60").startswith("standby: caught up with primary at ")
    assert ok("sql", *name, "standby", "SELECT count(*) FROM waited") == "1"
    # A segment the primary switched away from, once archived.
    segment = ok("sql", *name, "primary", "SELECT pg_walfile_name(pg_switch_wal())")
    assert ok("wait", *name, "primary", "--archived", segment) == f"primary: {segment} archived"
    ok("sql", *name, "primary", "DROP TABLE waited")
    # A position never reached: exit 1 at the deadline, in one line, with what it saw.
    result = pgharness("wait", *name, "standby", "--lsn", "FFFF/0", "--timeout", "1")
    assert result.returncode == 1
    assert "timed out after 1.0 s" in result.stderr
    assert "last seen" in result.stderr
    # The primary follows no one: a usage error.
    assert pgharness("wait", *name, "primary").returncode == 2


def test_up_with_ephemeral_ports_prints_the_ports_it_got_and_they_work(environment):
    # On a shared host the default ports collide: ask for free ones, even with make's exported defaults.
    out = ok("up", "--name", environment, "--ports", "ephemeral", env={"PRIMARY_PORT": "5433"})
    rows = (line.split() for line in out.splitlines())
    dsns = {row[0]: row[2] for row in rows if len(row) == 3 and row[0] in ("primary", "standby")}
    ports = {node: psycopg.conninfo.conninfo_to_dict(dsn)["port"] for node, dsn in dsns.items()}
    assert set(ports) == {"primary", "standby"}
    assert "5433" not in ports.values()
    assert "5434" not in ports.values()
    for node, dsn in dsns.items():
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is (node == "standby")
    # A fixed port on the same line contradicts it: a usage error, before anything starts.
    result = pgharness("up", "--name", environment, "--ports", "ephemeral", "--primary-port", "6433")
    assert result.returncode == 2
    assert "--ports ephemeral picks every port: drop --primary-port" in result.stderr


def test_degrade_and_starve_show_in_status_and_heal_undoes_them(running_environment):
    name = ["--name", running_environment]
    # A value out of range is a usage error naming the flag, before anything changes.
    refused = pgharness("degrade", *name, "standby", "--loss", "150%")
    assert refused.returncode == 2
    assert "--loss" in refused.stderr
    assert ok("degrade", *name, "standby", "--loss", "10%", "--rate", "1mbit") == (
        "standby: degraded (loss 10%, rate 1mbit)"
    )
    try:
        rows = {row["node"]: row for row in json.loads(ok("status", *name, "--json"))}
        assert rows["standby"]["faults"] == "degraded: loss 10%, rate 1mbit"
        assert rows["primary"]["faults"] is None
    finally:
        ok("heal", *name)
    rows = {row["node"]: row for row in json.loads(ok("status", *name, "--json"))}
    assert rows["standby"]["faults"] is None
    assert rows["standby"]["wal_receiver"] == "streaming"

    # Starved of CPU, through the engine: shown, and healed the same way.
    assert pgharness("starve", *name, "standby", "--cpus", "0").returncode == 2
    assert ok("starve", *name, "standby", "--cpus", "0.5") == "standby: starved (0.5 CPUs)"
    try:
        rows = {row["node"]: row for row in json.loads(ok("status", *name, "--json"))}
        assert rows["standby"]["faults"] == "starved: 0.5 CPUs"
    finally:
        ok("heal", *name)
    rows = {row["node"]: row for row in json.loads(ok("status", *name, "--json"))}
    assert rows["standby"]["faults"] is None
