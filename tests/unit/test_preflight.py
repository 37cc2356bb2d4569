"""Missing prerequisites are answered in one line that says what to do."""

import stat

import pytest

from pgharness.compose import check_compose_v2
from pgharness.errors import DockerUnavailable


def fake_docker(tmp_path, script):
    """A `docker` executable on PATH that behaves as `script` says (a stand-in CLI, no engine)."""
    path = tmp_path / "docker"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(tmp_path)


def test_docker_cli_without_compose_plugin(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_docker(tmp_path, "echo \"docker: 'compose' is not a docker command.\" >&2; exit 1"))
    with pytest.raises(DockerUnavailable, match=r"Compose v2\) is not available: install the Compose v2 plugin"):
        check_compose_v2()


def test_compose_v1_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_docker(tmp_path, "echo 1.29.2"))
    with pytest.raises(DockerUnavailable, match="docker-compose v1 is not supported"):
        check_compose_v2()


def test_compose_v2_version_is_returned(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_docker(tmp_path, "echo v2.26.1"))
    assert check_compose_v2() == "2.26.1"


def test_no_docker_cli_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DockerUnavailable, match="no 'docker' command on PATH"):
        check_compose_v2()


def test_compose_is_asked_once_per_path(tmp_path, monkeypatch):
    # Every cluster start checks for Compose v2; the answer for one PATH is kept, a failure is not.
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", fake_docker(tmp_path, f"echo called >> {calls}; echo v2.26.1"))
    assert check_compose_v2() == "2.26.1"
    assert check_compose_v2() == "2.26.1"
    assert calls.read_text().count("called") == 1


def test_a_failed_compose_check_is_asked_again(tmp_path, monkeypatch):
    answer = tmp_path / "answer"
    answer.write_text("1.29.2")
    monkeypatch.setenv("PATH", fake_docker(tmp_path, f'read -r v < {answer}; echo "$v"'))
    with pytest.raises(DockerUnavailable):
        check_compose_v2()
    # The user installs Compose v2 and the same process tries again.
    answer.write_text("v2.27.0")
    assert check_compose_v2() == "2.27.0"


def compose_project(tmp_path):
    from pgharness.compose import ComposeProject

    return ComposeProject(context=tmp_path, compose_file_name=["compose.yaml"], project_name="preflight")


def test_a_start_asks_compose_nothing_but_its_command(tmp_path, monkeypatch):
    # A start that works runs `compose up` alone: no `docker compose version` before it.
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", fake_docker(tmp_path, f'echo "$*" >> {calls}'))
    project = compose_project(tmp_path)
    project.start(wait=False)
    assert [line.split()[-2:] for line in calls.read_text().splitlines()] == [["up", "--detach"]]


def test_a_compose_command_without_compose_v2_says_how_to_get_it(tmp_path, monkeypatch):
    # The docker CLI without the plugin: the failed `compose up` is told as Compose v2 missing.
    monkeypatch.setenv("PATH", fake_docker(tmp_path, "echo \"docker: 'compose' is not a docker command.\" >&2; exit 1"))
    with pytest.raises(DockerUnavailable, match=r"Compose v2\) is not available"):
        compose_project(tmp_path).start(wait=False)


def test_a_failing_compose_command_with_compose_v2_is_its_own_failure(tmp_path, monkeypatch):
    from pgharness.errors import ClusterError

    script = 'case "$*" in *version*) echo v2.26.1 ;; *) echo "no such service: x" >&2; exit 1 ;; esac'
    monkeypatch.setenv("PATH", fake_docker(tmp_path, script))
    with pytest.raises(ClusterError, match=r"docker compose up failed .*no such service: x") as excinfo:
        compose_project(tmp_path).start(wait=False)
    assert not isinstance(excinfo.value, DockerUnavailable)
