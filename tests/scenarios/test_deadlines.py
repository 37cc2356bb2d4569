"""Every wait and every outside call ends at its deadline, whatever the node does; waits never pass falsely."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import psycopg.errors
import pytest

from pgharness import QueryTimeout, WaitTimeout
from pgharness.compose import docker_client, run_container
from pgharness.errors import ClusterError, ToolError
from pgharness.wait import poll_until
from tests.scenarios.helpers import finish, labelled, run_pytest

pytestmark = pytest.mark.failover


def test_a_wait_on_a_frozen_primary_ends_at_its_deadline(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")

    # A frozen primary accepts TCP connections (the kernel does) and never answers.
    primary.pause()
    try:
        with ThreadPoolExecutor(1) as pool:
            # A single statement on it ends at its own deadline too (meanwhile, in a thread of its own).
            statement = pool.submit(primary.sql, "SELECT 1", timeout=2)
            started = time.monotonic()
            with pytest.raises(WaitTimeout) as excinfo:
                primary.wait_for_catchup(standby, timeout=2)
            took = time.monotonic() - started
            with pytest.raises(QueryTimeout):
                statement.result(timeout=10)  # a statement without its deadline fails here, not hangs
    finally:
        primary.unpause()
    assert took < 4, f"the wait took {took:.1f} s for a 2 s deadline"
    assert "standby" in excinfo.value.what

    # Thawed, the same node answers again.
    primary.wait_for_catchup(standby, timeout=30)


def test_a_statement_on_a_connection_made_before_the_node_froze_ends_at_its_deadline(shared_cluster):
    primary = shared_cluster.primary

    # A connection that is already open when the node freezes: connect_timeout cannot help here.
    with primary.session(query_timeout=1) as session:
        assert session.scalar("SELECT 1") == 1
        primary.pause()
        try:
            started = time.monotonic()
            with pytest.raises(QueryTimeout):
                session.scalar("SELECT 1")
            took = time.monotonic() - started
        finally:
            primary.unpause()
        assert took < 3, f"the statement took {took:.1f} s for a 1 s deadline"
        # The session connects again for the next statement.
        assert session.scalar("SELECT 2") == 2


def test_poll_log_until_only_sees_lines_logged_after_it_begins(shared_cluster):
    primary = shared_cluster.primary

    # A line logged before the wait ...
    primary.sql("DO $$ BEGIN RAISE LOG 'pgharness-marker-before'; END $$")
    primary.poll_log_until("pgharness-marker-before", since="")  # (it is in the log: from its start)

    # ... does not satisfy a wait that begins afterwards.
    with pytest.raises(WaitTimeout):
        primary.poll_log_until("pgharness-marker-before", timeout=1)

    # A line logged during the wait does; so does one after a position the caller took.
    position = primary.log_position()
    timer = threading.Timer(0.3, primary.sql, ("DO $$ BEGIN RAISE LOG 'pgharness-marker-during'; END $$",))
    timer.start()
    try:
        assert primary.poll_log_until("pgharness-marker-during", timeout=30) == "pgharness-marker-during"
    finally:
        timer.join()
    assert primary.poll_log_until("pgharness-marker-during", since=position, timeout=5) == "pgharness-marker-during"


def test_a_container_that_cannot_start_is_removed(harness_image):
    label = "org.pgharness.test=unstartable"
    client = docker_client()

    # The engine creates the container, then cannot start it: its entrypoint does not exist.
    with pytest.raises(docker.errors.APIError):
        run_container(
            client,
            harness_image,
            [],
            timeout=30,
            what="an unstartable container",
            entrypoint=["/no/such/command"],
            network_mode="none",
            labels={"org.pgharness.managed": "true", "org.pgharness.test": "unstartable"},
        )
    assert labelled(label) == []


def test_a_container_past_its_deadline_is_removed(harness_image):
    label = "org.pgharness.test=overdue"
    with pytest.raises(ClusterError, match="did not finish within 1 s"):
        run_container(
            docker_client(),
            harness_image,
            ["sleep", "30"],
            timeout=1,
            what="a sleeping container",
            entrypoint=[],
            network_mode="none",
            labels={"org.pgharness.managed": "true", "org.pgharness.test": "overdue"},
        )
    assert labelled(label) == []


def test_a_project_that_only_installs_the_plugin_gets_a_test_deadline(tmp_path, harness_image):
    # A project with no pytest-timeout setting of its own (no ini file here), whose test never returns.
    proc = run_pytest(
        tmp_path,
        """
        import threading

        def test_hangs(harness_image):
            threading.Event().wait(120)
        """,
        env_extra={"PGHARNESS_TEST_TIMEOUT": "1"},
    )
    started = time.monotonic()
    output = finish(proc, 100)
    took = time.monotonic() - started

    # The plugin's deadline (signal method) ends the test.
    assert proc.returncode == 1, output
    assert "Timeout" in output
    assert took < 60, output


def test_a_pending_statement_tells_how_it_ended(shared_cluster):
    # result() gives the rows or raises the statement's error; error() gives the error, or None on success.
    with shared_cluster.primary.background_session() as session:
        succeeded = session.send("SELECT 1")
        assert succeeded.result() == [(1,)]
        assert succeeded.error() is None
        failed = session.send("SELECT 1/0")
        assert isinstance(failed.error(), psycopg.errors.DivisionByZero)
        with pytest.raises(psycopg.errors.DivisionByZero):
            failed.result()


def test_a_background_tool_that_fails_or_outlives_its_stop_is_reported_and_removed(shared_cluster):
    tools, engine = shared_cluster.tools, shared_cluster.docker

    def gone(tool):
        return engine.containers.list(all=True, filters={"id": tool.container.id}) == []

    # A tool that failed on its own: its stop says so, with its error line.
    failing = tools.start(["sh", "-c", "echo 'error: no such thing' >&2; exit 3"], what="a failing tool")
    poll_until(failing.running, lambda running: not running, what="the failing tool to exit")
    with pytest.raises(ToolError, match="a failing tool failed: error: no such thing"):
        failing.stop()
    assert gone(failing)

    # A tool that ignores the signal (sleep, as the container's first process) is killed at the deadline.
    with pytest.raises(ToolError, match="did not finish within 1 s"), tools.start(["sleep", "60"]) as sleeper:
        sleeper.stop(timeout=1)
    assert gone(sleeper)
