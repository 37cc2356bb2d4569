"""Clusters come down whatever happens: failed start-up, failed test, Ctrl-C. Failures leave evidence as files."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import docker
import pytest

from harness import Cluster, ClusterError
from harness.wait import poll_until

pytestmark = pytest.mark.lifecycle


def labelled(label):
    """Every container, volume and network carrying `label` (key=value)."""
    client = docker.from_env()
    filters = {"label": label}
    return (
        client.containers.list(all=True, filters=filters)
        + client.volumes.list(filters=filters)
        + client.networks.list(filters=filters)
    )


def health(label):
    """The health status of each container carrying `label`."""
    client = docker.from_env()
    return [client.containers.get(c.id).health for c in client.containers.list(all=True, filters={"label": label})]


def remove_projects(label):
    """Remove the compose projects whose resources carry `label` (cleanup after a failed test)."""
    projects = {r.attrs.get("Labels", {}).get("com.docker.compose.project") for r in labelled(label)} - {None}
    for project in projects:
        subprocess.run(["docker", "compose", "-p", project, "down", "-v"], capture_output=True, check=False)


def run_pytest(tmp_path, test_source, *args):
    """Start pytest on `test_source` in a child process; return the Popen."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(test_source))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args, "test_inner.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PGHARNESS_EVIDENCE_DIR": str(tmp_path / "evidence")},
    )


def test_failed_startup_removes_everything_and_says_why(harness_image):
    # A standby whose upstream never answers (itself), giving up after 2 s.
    cluster = Cluster(image=harness_image, env={"STANDBY_UPSTREAM": "standby", "BASEBACKUP_TIMEOUT": "2"})

    # Start-up fails with the standby's own reason in the message ...
    with pytest.raises(ClusterError) as excinfo:
        cluster.start()
    assert "no base backup from standby:5432" in str(excinfo.value)

    # ... and nothing of the project is left.
    assert labelled(f"com.docker.compose.project={cluster.name}") == []


def test_failed_test_leaves_evidence_files_and_no_cluster(tmp_path, harness_image):
    # A test that fails after writing on its cluster.
    proc = run_pytest(
        tmp_path,
        """
        def test_fails(cluster):
            cluster.primary.sql("CREATE TABLE hoge (col integer)")
            assert cluster.standby.scalar("SELECT 1") == 2
        """,
    )
    output, _ = proc.communicate(timeout=300)
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


def test_ctrl_c_in_the_middle_of_a_scenario_removes_the_cluster(tmp_path, harness_image):
    # A scenario that waits on its cluster for a long time.
    proc = run_pytest(
        tmp_path,
        """
        def test_waits(cluster):
            cluster.primary.poll_query_until("SELECT false", True, timeout=240)
        """,
    )
    owner = f"org.pgharness.owner=pytest-{proc.pid}"
    try:
        # Once its cluster is up and healthy ...
        poll_until(
            lambda: health(owner),
            lambda status: status == ["healthy", "healthy"],
            what=f"the child's cluster ({owner}) to be healthy",
            timeout=120,
            retry_on=(docker.errors.NotFound,),
        )
        # ... press Ctrl-C.
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
        remove_projects(owner)

    # pytest reports the interruption, and the cluster is gone.
    assert "KeyboardInterrupt" in output
    assert labelled(owner) == []
