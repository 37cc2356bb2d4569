"""How compose failures read: one line that says what to do (the compose process replaced by a stub)."""

import pytest

from pgharness.compose import ComposeProject, caller_environment
from pgharness.errors import ClusterError


def failing(stderr):
    return ["sh", "-c", 'printf "%s\\n" "$1" >&2; exit 1', "compose", stderr]


def test_exhausted_address_pools_name_the_limit_and_the_remedy():
    project = ComposeProject.for_cluster("pgh-test", {})
    stderr = (
        "network pgh-test_replication: Error response from daemon: could not find an available, "
        "non-overlapping IPv4 address pool among the defaults to assign to the network"
    )
    with pytest.raises(ClusterError) as excinfo:
        project.run_command(failing(stderr), timeout=10)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "default-address-pools" in message
    assert "pgharness down" in message


def test_other_failures_keep_compose_own_words():
    project = ComposeProject.for_cluster("pgh-test", {})
    with pytest.raises(ClusterError, match="no such service: nosuch"):
        project.run_command(failing("no such service: nosuch"), timeout=10)


def test_a_compose_command_past_its_deadline_says_so():
    project = ComposeProject.for_cluster("pgh-test", {})
    with pytest.raises(ClusterError, match=r"did not finish within 0\.5 s"):
        project.run_command(["sleep", "5"], timeout=0.5)


def test_the_first_line_carries_compose_own_error_line():
    # A port clash: compose prints progress lines, then the daemon's error; the cause must be on the first line.
    stderr = (
        " Network pgh-test_replication  Created\n"
        " Container pgh-test-primary-1  Starting\n"
        "Error response from daemon: driver failed programming external connectivity on endpoint "
        "pgh-test-standby-1: Bind for 127.0.0.1:25448 failed: port is already allocated"
    )
    project = ComposeProject.for_cluster("pgh-test", {})
    with pytest.raises(ClusterError) as excinfo:
        project.run_command(failing(stderr), timeout=10)
    first = str(excinfo.value).splitlines()[0]
    assert first.endswith("Bind for 127.0.0.1:25448 failed: port is already allocated"), first


def test_a_compose_process_gets_what_it_needs_of_the_callers_environment_and_nothing_of_compose_yamls():
    environ = {
        "PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "DOCKER_HOST": "tcp://10.1.1.2:2375",
        "DOCKER_CONFIG": "/cfg", "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost", "SSH_AUTH_SOCK": "/s",
        "PGHARNESS_INIT_SQL": "CREATE TABLE leaked ()", "STANDBY_UPSTREAM": "x", "PG_FSYNC": "on",
        "ARCHIVE_STANDBY_PORT": "1", "COMPOSE_PROFILES": "slot", "PRIMARY_SETTINGS": "a = 1", "POSTGRES_PASSWORD": "p",
    }  # fmt: skip
    kept = caller_environment(environ)
    assert sorted(kept) == [
        "DOCKER_CONFIG", "DOCKER_HOST", "HOME", "HTTPS_PROXY", "LANG", "LC_ALL", "PATH", "SSH_AUTH_SOCK", "no_proxy",
    ]  # fmt: skip
