"""Which Docker engine runs the clusters, and where the tests reach it.

The engine comes from the user's Docker configuration, as the ``docker`` CLI
(and so ``docker compose``) finds it: ``DOCKER_HOST`` (``unix://``, ``tcp://``,
with TLS through ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``, ``ssh://``), else
the context named by ``DOCKER_CONTEXT`` or the current one, else the default
socket.

Published ports: on a local engine (a socket) they are published on, and
reached at, ``127.0.0.1`` only. On a remote engine they are reached at the
engine's own host (the one in its URL) and published on that address; so
whoever reaches that host reaches them. ``PGHARNESS_HOST`` overrides where the
tests connect, ``PGHARNESS_BIND`` where ports are published (an address of the
engine's host, ``0.0.0.0`` for all of them).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pgharness.constants import HOST
from pgharness.errors import DockerUnavailable

#: The engine a client with no configuration talks to.
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
_LOCAL_SCHEMES = ("unix", "npipe", "fd")
_LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Engine:
    """A Docker engine as the harness uses it."""

    #: Its URL (``unix:///var/run/docker.sock``, ``tcp://10.0.0.2:2376``, ``ssh://ci@build``).
    url: str
    #: The Docker context it comes from, if one does ("" for DOCKER_HOST or the default socket).
    context: str
    #: Where the tests connect to published ports.
    host: str
    #: The address ports are published on.
    bind: str

    @property
    def remote(self) -> bool:
        """Whether the engine runs on another host than the tests (its ports are not on loopback)."""
        return self.host != HOST

    def __str__(self) -> str:
        return f"{self.url} (context {self.context})" if self.context else self.url


def url_host(url: str) -> str | None:
    """The host of an engine URL, or None for a local one (a socket, or a TCP port on loopback)."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    if parts.scheme in _LOCAL_SCHEMES:
        return None
    host = parts.hostname
    if not host or host in _LOCAL_NAMES:
        return None
    return host


def bind_address(host: str) -> str:
    """The address to publish ports on so that `host` reaches them: `host` itself if it is an address, else
    the IPv4 address it resolves to (raises `DockerUnavailable` when it does not resolve)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        raise DockerUnavailable(
            f"the engine's host {host!r} does not resolve ({e.strerror}): "
            "set PGHARNESS_BIND to the address its ports should be published on"
        ) from None
    return str(infos[0][4][0])


def current_context(environ: Mapping[str, str], config_dir: Path) -> str:
    """The Docker context the CLI would use: DOCKER_CONTEXT, else config.json's currentContext, else default."""
    if environ.get("DOCKER_CONTEXT"):
        return environ["DOCKER_CONTEXT"]
    try:
        config = json.loads((config_dir / "config.json").read_text())
    except (OSError, ValueError):
        return "default"
    return str(config.get("currentContext") or "default") if isinstance(config, dict) else "default"


def context_url(name: str) -> str:
    """The engine URL of Docker context `name` (raises `DockerUnavailable` for an unknown context)."""
    from docker.context import ContextAPI

    context = ContextAPI.get_context(name)
    if context is None:
        raise DockerUnavailable(f"no Docker context named {name!r}: see `docker context ls`")
    # The endpoint as the user wrote it (tcp://...); `context.Host` is the SDK's rewritten http:// form.
    return str(context.endpoints.get("docker", {}).get("Host") or context.Host)


def resolve(environ: Mapping[str, str] | None = None) -> Engine:
    """The engine of `environ` (default: this process's environment) and where to reach its ports."""
    environ = os.environ if environ is None else environ
    context = ""
    if environ.get("DOCKER_HOST"):
        url = environ["DOCKER_HOST"]
    else:
        config_dir = Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
        name = current_context(environ, config_dir)
        if name == "default":
            url = DEFAULT_SOCKET
        else:
            url, context = context_url(name), name
    remote_host = url_host(url)
    host = environ.get("PGHARNESS_HOST") or remote_host or HOST
    if environ.get("PGHARNESS_BIND"):
        bind = environ["PGHARNESS_BIND"]
    elif remote_host is None:
        bind = HOST
    else:
        bind = bind_address(host)
    return Engine(url=url, context=context, host=host, bind=bind)
