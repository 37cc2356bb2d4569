"""Which engine the harness talks to, and where it reaches published ports (no Docker needed)."""

import hashlib
import json

import pytest

from pgharness.engine import DEFAULT_SOCKET, bind_address, current_context, resolve, url_host
from pgharness.errors import DockerUnavailable


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("unix:///var/run/docker.sock", None),
        ("npipe:////./pipe/docker_engine", None),
        ("tcp://127.0.0.1:2375", None),
        ("tcp://localhost:2375", None),
        ("tcp://10.213.0.2:2375", "10.213.0.2"),
        ("tcp://docker:2376", "docker"),
        ("ssh://ci@build.example:2222", "build.example"),
        ("tcp://[fd00::2]:2375", "fd00::2"),
        ("10.0.0.5:2375", "10.0.0.5"),
    ],
)
def test_the_host_of_an_engine_url(url, host):
    assert url_host(url) == host


def test_a_local_engine_publishes_and_is_reached_on_loopback_only(tmp_path):
    engine = resolve({"DOCKER_CONFIG": str(tmp_path)})
    assert (engine.url, engine.host, engine.bind, engine.remote) == (DEFAULT_SOCKET, "127.0.0.1", "127.0.0.1", False)
    engine = resolve({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"})
    assert (engine.host, engine.bind) == ("127.0.0.1", "127.0.0.1")


def test_a_remote_engine_is_reached_and_publishes_on_its_own_address():
    engine = resolve({"DOCKER_HOST": "tcp://10.213.0.2:2375"})
    assert (engine.host, engine.bind, engine.remote) == ("10.213.0.2", "10.213.0.2", True)
    assert str(engine) == "tcp://10.213.0.2:2375"


def test_overrides_of_where_ports_are_reached_and_published():
    engine = resolve({"DOCKER_HOST": "tcp://docker:2375", "PGHARNESS_HOST": "10.1.2.3", "PGHARNESS_BIND": "0.0.0.0"})
    assert (engine.host, engine.bind) == ("10.1.2.3", "0.0.0.0")
    # Where the tests connect is where ports are published, unless told otherwise.
    assert resolve({"DOCKER_HOST": "tcp://docker:2375", "PGHARNESS_HOST": "10.1.2.3"}).bind == "10.1.2.3"


def test_a_host_name_is_published_on_the_address_it_resolves_to():
    assert bind_address("localhost") == "127.0.0.1"
    assert bind_address("fd00::2") == "fd00::2"
    with pytest.raises(DockerUnavailable, match="PGHARNESS_BIND"):
        bind_address("no-such-host.invalid")


def test_the_current_context_as_the_docker_cli_finds_it(tmp_path):
    assert current_context({}, tmp_path) == "default"
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "build-host"}))
    assert current_context({}, tmp_path) == "build-host"
    assert current_context({"DOCKER_CONTEXT": "other"}, tmp_path) == "other"
    (tmp_path / "config.json").write_text("not json")
    assert current_context({}, tmp_path) == "default"


def test_an_engine_from_a_docker_context(tmp_path, monkeypatch):
    # A context as `docker context create build-host --docker host=tcp://10.9.8.7:2375` stores it.
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"build-host").hexdigest() / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(
        json.dumps({"Name": "build-host", "Metadata": {}, "Endpoints": {"docker": {"Host": "tcp://10.9.8.7:2375"}}})
    )
    (tmp_path / "config.json").write_text("{}")  # the SDK looks for contexts beside a config.json
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    engine = resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "build-host"})
    assert (engine.url, engine.context, engine.host) == ("tcp://10.9.8.7:2375", "build-host", "10.9.8.7")
    assert str(engine) == "tcp://10.9.8.7:2375 (context build-host)"
    with pytest.raises(DockerUnavailable, match="no Docker context named 'missing'"):
        resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "missing"})
    # DOCKER_HOST wins over any context, as it does for the docker CLI.
    assert resolve({"DOCKER_HOST": "tcp://10.0.0.1:2375", "DOCKER_CONTEXT": "build-host"}).context == ""
