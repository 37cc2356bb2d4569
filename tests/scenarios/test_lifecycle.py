"""Clusters come down whatever happens: failed start-up, failed test, Ctrl-C. Failures leave evidence as files."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import docker
import pytest

import pgharness.cluster
import pgharness.image
from pgharness import Cluster, ClusterError, StartFailed, registry
from pgharness.image import ImageSpec, build_lock, ensure_image
from pgharness.wait import poll_until
from tests.scenarios.helpers import (
    default_sigint,
    finish,
    free_port,
    labelled,
    project_resources,
    remove_image_built_from,
    remove_projects,
    run_pytest,
    wait_until_ready,
)

pytestmark = pytest.mark.lifecycle


def test_failed_startup_removes_everything_and_says_why(harness_image):
    # A standby whose upstream never answers (itself), giving up after 2 s.
    cluster = Cluster(image=harness_image, env={"STANDBY_UPSTREAM": "standby", "BASEBACKUP_TIMEOUT": "2"})

    # Start-up fails with the standby's own reason in the message ...
    with pytest.raises(ClusterError) as excinfo:
        cluster.start()
    assert "standby:5432: it did not answer within 2s" in str(excinfo.value).splitlines()[0]

    # ... and nothing of the project is left.
    assert labelled(f"com.docker.compose.project={cluster.name}") == []


def test_passing_run_leaves_nothing(tmp_path, harness_image):
    # A passing run with a fresh cluster, a node added at run time, a second fresh cluster (started
    # ahead, while the first test runs), a test with a `cluster` fixture of its own, a shared cluster,
    # and a cluster a test starts itself and never removes: the atexit handler's, in an interpreter
    # already shutting down (no new threads there for a parallel removal).
    proc = run_pytest(
        tmp_path,
        """
        import pytest

        def test_fresh(cluster):
            cluster.add_node("extra")
            assert cluster.node("extra").is_in_recovery()
            cluster.primary.sql("CREATE TABLE made_by_the_first_test (a int)")
            print("first:", cluster.name)

        def test_fresh_again(cluster):
            assert cluster.primary.scalar("SELECT to_regclass('made_by_the_first_test') IS NULL")
            assert cluster.standby.is_in_recovery()
            print("second:", cluster.name)

        class TestOwnFixture:
            @pytest.fixture
            def cluster(self):
                return "its own"

            def test_own(self, cluster):
                assert cluster == "its own"

        def test_shared(shared_cluster):
            assert shared_cluster.standby.is_in_recovery()

        def test_never_removes_its_own(harness_image):
            import os

            from pgharness import Cluster

            Cluster(image=harness_image, standbys=0, owner=f"pytest-{os.getpid()}").start()
        """,
        "-s",
        "-o",
        "log_cli=true",
        "--log-cli-level=INFO",
    )
    output = finish(proc, 300)
    owner = f"org.pgharness.owner=pytest-{proc.pid}"
    left = labelled(owner)
    remove_projects(owner)  # after looking: what the run left is the finding

    assert proc.returncode == 0, output
    assert "5 passed" in output
    assert left == [], output
    assert not (tmp_path / "evidence").exists()
    # The second test's cluster was the one started ahead; the test with a fixture of its own got none.
    ahead = re.findall(r"starting cluster '([^']+)' ahead", output)
    named = dict(re.findall(r"^.*?(first|second): (\S+)$", output, re.M))
    assert ahead == [named["second"]], output
    assert named["first"] != named["second"]


def test_failed_test_leaves_evidence_files_and_no_cluster(tmp_path, harness_image):
    # A test that fails after writing on its cluster.
    proc = run_pytest(
        tmp_path,
        """
        def test_fails(cluster):
            cluster.primary.sql("CREATE TABLE hoge (col integer)")
            cluster.primary.wait_for_archived(cluster.primary.switch_wal())
            assert cluster.standby.scalar("SELECT 1") == 2
        """,
    )
    output = finish(proc, 300)
    assert proc.returncode == 1, output

    # Its evidence is on disk: logs, pg_controldata, the replication views, the archive, the compose config.
    [cluster_dir] = (tmp_path / "evidence").glob("*/*")
    assert {p.name for p in cluster_dir.iterdir()} == {
        "primary.log",
        "standby.log",
        "primary.controldata.txt",
        "standby.controldata.txt",
        "status.json",
        "archive.txt",
        "compose.yaml",
        "summary.txt",
    }
    status = json.loads((cluster_dir / "status.json").read_text())
    primary_sql = status["nodes"]["primary"]["sql"]
    assert primary_sql["pg_stat_replication"][0]["application_name"] == "standby"
    assert {"pg_stat_wal_receiver", "pg_stat_archiver", "pg_replication_slots"} <= set(primary_sql)
    assert "ready to accept" in (cluster_dir / "primary.log").read_text()
    assert "in archive recovery" in (cluster_dir / "standby.controldata.txt").read_text()
    assert "000000010000000000000001" in (cluster_dir / "archive.txt").read_text()
    assert "archive-standby" in (cluster_dir / "compose.yaml").read_text()

    # Passwords are masked in the evidence.
    assert "password=repli" not in (cluster_dir / "compose.yaml").read_text()

    # The failure report points at it.
    assert "pgharness evidence" in output
    assert str(cluster_dir) in output

    # And no container, volume or network of its cluster is left.
    assert labelled(f"com.docker.compose.project={cluster_dir.name}") == []


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGTERM, signal.SIGTERM)],
    ids=["ctrl-c", "sigterm", "sigterm-twice"],
)
def test_ctrl_c_or_sigterm_in_the_middle_of_a_scenario_removes_the_cluster(tmp_path, harness_image, signals):
    # A scenario that waits on its cluster for a long time, and one after it whose cluster is started
    # meanwhile (`pgharness.spare`): the interrupted run never gets to take it.
    proc = run_pytest(
        tmp_path,
        """
        def test_waits(cluster):
            cluster.primary.poll_query_until("SELECT false", True, timeout=240)

        def test_next(cluster):
            pass
        """,
    )
    owner = f"org.pgharness.owner=pytest-{proc.pid}"
    try:
        # Once the test's cluster is ready and the next one's nodes exist (starting, or up) ...
        wait_until_ready(owner, count=2, present=4)
        # ... press Ctrl-C, or cancel the CI job (SIGTERM); a runner may signal again 0.2 s later,
        # while the cluster comes down: that teardown must finish all the same.
        for number, signum in enumerate(signals):
            if number:
                time.sleep(0.2)  # the gap between two signals is what the sigterm-twice case is about
            proc.send_signal(signum)
        output = finish(proc, 120)
        left = labelled(owner)  # what the interrupted run left, before the cleanup below
    finally:
        proc.kill()
        proc.wait()
        remove_projects(owner)

    # pytest reports the interruption, and the cluster is gone.
    assert "KeyboardInterrupt" in output
    assert left == [], output


def test_a_cluster_whose_removal_failed_is_removed_at_exit(harness_image, monkeypatch):
    cluster = Cluster(image=harness_image)
    registry.register(cluster)

    def failing_removal(client, name):
        raise ClusterError(f"could not remove network {name}_replication of {name!r}: in use (simulated)")

    # The removal fails: the cluster stays in the registry, so the atexit handler tries again ...
    with monkeypatch.context() as patched:
        patched.setattr(pgharness.cluster, "remove_project", failing_removal)
        with pytest.raises(ClusterError):
            cluster.destroy()
        assert cluster in registry.live()
    # ... and once removal succeeds it leaves the registry.
    cluster.destroy()
    assert cluster not in registry.live()


def test_pytest_timeout_expiry_removes_the_cluster_and_keeps_evidence(tmp_path, harness_image):
    # A scenario that hangs past its pytest-timeout deadline. The deadline counts the body alone
    # (func_only): its cluster is up before the clock starts, however long a loaded machine takes to start it.
    proc = run_pytest(
        tmp_path,
        """
        import pytest

        @pytest.mark.timeout(2, func_only=True)
        def test_hangs(cluster):
            cluster.primary.poll_query_until("SELECT false", True, timeout=240)
        """,
    )
    owner = f"org.pgharness.owner=pytest-{proc.pid}"
    try:
        output = finish(proc, 180)
        left = labelled(owner)  # what the timed-out run left, before the cleanup below
    finally:
        proc.kill()
        proc.wait()
        remove_projects(owner)

    # The timeout fails the test (signal method: raised in the test, fixtures still run) ...
    assert proc.returncode == 1, output
    assert "Timeout" in output
    # ... its cluster had come up (its evidence holds the primary's log) and is gone.
    [cluster_dir] = (tmp_path / "evidence").glob("*/*")
    assert "ready to accept" in (cluster_dir / "primary.log").read_text()
    assert left == []


def test_up_interrupted_while_the_image_builds_leaves_nothing(harness_settings):
    # A base image no build has used yet (its own layer: no build cache), so that `pgharness up --image`
    # (what `make up PG_IMAGE=...` runs) builds the node image for real.
    client = docker.from_env()
    base = f"pgharness/interrupt-test:{os.getpid()}"
    scratch = client.containers.create(
        harness_settings.spec.base_tag,
        ["sh", "-c", f"echo {base} {time.time()} > /etc/pgharness-interrupt-test"],
        entrypoint=[],
        user="root",
        labels={"org.pgharness.managed": "true"},
    )
    try:
        scratch.start()
        scratch.wait(timeout=60)
        scratch.commit(*base.split(":"))
    finally:
        scratch.remove()
    name = f"pgh-interrupt-{os.getpid()}"
    node_image = ImageSpec(harness_settings.spec.pg_version, base).tag
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgharness", "up", "--name", name, "--image", base],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=default_sigint,
    )
    lines = []
    try:
        # Once the node image build runs its first RUN step ...
        for line in proc.stderr:
            lines.append(line)
            if re.match(r"#\d+ \[\d+/\d+\] RUN ", line):
                break
        # ... press Ctrl-C (SIGINT to the whole process group: harness and docker build).
        os.killpg(proc.pid, signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
        # What the interrupted command left, before the cleanup below.
        left = labelled(f"com.docker.compose.project={name}")
        built = client.images.list(node_image)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run([sys.executable, "-m", "pgharness", "down", "--name", name], capture_output=True, check=False)
        remove_image_built_from(base)
    stderr = "".join(lines) + rest

    # One line says it was interrupted; no traceback; exit 130 like any Ctrl-C'd command.
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "pgharness: interrupted"
    # No half-built node image, and nothing of the environment on the engine.
    assert built == []
    assert left == []


FAILED_STARTS = """
import pytest

from pgharness import StartFailed


def test_a_start_expected_to_fail_is_caught(cluster_factory):
    with pytest.raises(StartFailed) as raised:
        cluster_factory(env={"STANDBY_UPSTREAM": "no-such-host", "UPSTREAM_RESOLVE_TIMEOUT": "1"})
    assert "upstream host 'no-such-host' does not resolve" in str(raised.value).splitlines()[0]


def test_the_same_port_for_both_nodes(cluster_factory):
    cluster_factory(ports={"primary": PORT, "standby": PORT})
"""


def test_a_failed_start_can_be_caught_and_otherwise_reads_as_its_cause(tmp_path, harness_image):
    # pytest.raises catches a failed start (it was pytest's own failure, out of reach); one that no test
    # expects is reported in the cause's words, compose's own line first (a port clash), no traceback.
    child = run_pytest(tmp_path, FAILED_STARTS.replace("PORT", str(free_port())))
    output = finish(child, 300)
    assert child.returncode == 1, output
    assert output.strip().splitlines()[-1].startswith("1 failed, 1 passed"), output
    first = next(line for line in output.splitlines() if "did not start:" in line)
    assert first.endswith("port is already allocated"), output
    assert "Traceback" not in output, output
    assert "harness/cluster.py" not in output, output
    assert labelled(f"org.pgharness.owner=pytest-{child.pid}") == []


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ({"settings": {"shared_buffers": "lots"}}, 'invalid value for parameter "shared_buffers": "lots"'),
        (
            {"node_settings": {"standby": {"no_such_param": "on"}}},
            'unrecognized configuration parameter "no_such_param"',
        ),
    ],
    ids=["primary", "standby"],
)
def test_a_setting_the_server_refuses_is_named_with_its_reason(cluster_factory, where, said):
    # The primary's is refused as its data directory is made (single-user mode), the standby's by its server
    # (a server names unknown parameters first, and checks the values only once every name is known).
    with pytest.raises(StartFailed) as raised:
        cluster_factory(**where)
    first = str(raised.value).splitlines()[0]
    assert "contains errors: " in first, first
    assert said in first, first


#: Seconds within which a killed run's watchdog has removed what it owned (it learns of the death at once
#: from the kernel, then removes the project: about a second here).
REAP_BOUND = 30


@pytest.mark.parametrize("kill", ["the process", "its process group"])
def test_a_run_killed_with_sigkill_is_reaped_by_its_watchdog(tmp_path, harness_image, kill, record_property):
    # A test run whose cluster is up, killed with SIGKILL: no teardown, no atexit handler runs. An OOM kill
    # ends the process; a cancelled CI job signals its whole process group.
    proc = run_pytest(
        tmp_path,
        "def test_waits(cluster):\n    cluster.primary.poll_query_until('SELECT false', True, timeout=240)\n",
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    owner = f"org.pgharness.owner=pytest-{proc.pid}"
    try:
        wait_until_ready(owner)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        remove_projects(owner)
        raise
    if kill == "the process":
        proc.kill()
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    try:
        # Nothing of it is left, containers, volumes or network, within the bound: no one ran gc.
        poll_until(
            lambda: labelled(owner),
            lambda left: left == [],
            what=f"nothing labelled {owner}",
            timeout=REAP_BOUND,
            retry_on=(docker.errors.NotFound,),  # listed, then removed before its inspection
        )
    finally:
        remove_projects(owner)
    record_property("reaped_after_seconds", round(time.monotonic() - killed, 2))


def test_two_checkouts_whose_images_differ_alternate_on_one_engine_without_a_rebuild(
    tmp_path, harness_settings, monkeypatch
):
    # Two checkouts of the harness (main and a branch) whose docker/ folders differ, on one engine.
    spec = harness_settings.spec
    family = ImageSpec(spec.pg_version, spec.base_image or spec.base_tag)  # a family of its own: no one else's
    for checkout in ("main", "branch"):
        shutil.copytree(pgharness.image.DOCKER_DIR, tmp_path / checkout)
        (tmp_path / checkout / "checkout.txt").write_text(checkout)
    client = docker.from_env()
    tags = {}
    try:
        # Each builds its image once; alternating afterwards builds nothing and finds its own image.
        for checkout in ("main", "branch", "main", "branch", "main"):
            monkeypatch.setattr(pgharness.image, "DOCKER_DIR", tmp_path / checkout)
            out = io.StringIO()
            tag = ensure_image(family, out=out)
            if checkout in tags:
                assert tag == tags[checkout]
                assert "building" not in out.getvalue(), out.getvalue()
            else:
                assert "building" in out.getvalue()
                tags[checkout] = tag
        # Two images, each under its digest tag; the plain tag names the one ensured last.
        assert tags["main"] != tags["branch"]
        assert client.images.get(tags["main"]).id != client.images.get(tags["branch"]).id
        assert client.images.get(family.tag).id == client.images.get(tags["main"]).id
    finally:
        for image in client.images.list(filters={"reference": f"{family.tag}*"}):
            client.images.remove(image.id, force=True)
        build_lock(family).unlink(missing_ok=True)


def test_two_removals_of_one_project_at_once_both_succeed_and_leave_nothing(harness_image):
    # Two processes removing one project at once (a session's start-up reaping and `pgharness gc` on a
    # shared runner, two teardowns): the engine refuses the second removal of a container while the first
    # runs, and a network or volume while a container being removed still holds it. Neither is a failure.
    from concurrent.futures import ThreadPoolExecutor

    from pgharness.cluster import new_cluster_name
    from pgharness.compose import remove_project
    from pgharness.environments import owner_labels

    client = docker.from_env()
    project = new_cluster_name("pgh-race")
    # This run's owner labels: if it is killed, the next session's reaping or `pgharness gc` removes them.
    labels = {"com.docker.compose.project": project, "org.pgharness.managed": "true",
              **owner_labels(f"pytest-{os.getpid()}")}  # fmt: skip
    network = client.networks.create(f"{project}_default", labels=labels)
    for i in range(4):
        volume = client.volumes.create(f"{project}_data{i}", labels=labels)
        client.containers.run(
            harness_image, ["sleep", "600"], entrypoint=[], detach=True, labels=labels, network=network.name,
            volumes={volume.name: {"bind": "/data", "mode": "rw"}}, name=f"{project}-node{i}",
        )  # fmt: skip
    try:
        with ThreadPoolExecutor(2) as pool:
            for removal in [pool.submit(remove_project, client, project) for _ in range(2)]:
                removal.result()
    finally:
        left = project_resources(project)
        remove_project(client, project)  # what a failed removal left (waiting out one still running)
    assert left == []
