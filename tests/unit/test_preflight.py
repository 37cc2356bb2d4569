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
