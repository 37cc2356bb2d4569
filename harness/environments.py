"""Environments on this engine: the compose projects the harness made, who owns them, and garbage collection.

Every container, volume and network of the harness carries
``org.pgharness.managed=true``, its compose project's label, and
``org.pgharness.owner``: ``pytest-<pid>`` / ``pid-<pid>`` for a process that
removes it when done, or ``harness-up`` / ``compose`` for an environment a
person asked to keep. `gc` removes what belongs to a process that is gone (a
test run killed with SIGKILL, say) and nothing else.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass, field

import docker

from harness.compose import MANAGED_LABEL, PROJECT_LABEL, ComposeProject

log = logging.getLogger("harness")

OWNER_LABEL = "org.pgharness.owner"
SERVICE_LABEL = "com.docker.compose.service"
NODE_LABEL = "org.pgharness.node"


@dataclass
class Environment:
    """One compose project of the harness, as the engine shows it."""

    name: str
    owner: str = ""
    created: dt.datetime | None = None
    nodes: dict[str, str] = field(default_factory=dict)  #: node name -> container status
    volumes: int = 0
    networks: int = 0

    @property
    def age(self) -> str:
        if self.created is None:
            return "?"
        seconds = int((dt.datetime.now(dt.UTC) - self.created).total_seconds())
        return (
            f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
            if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s"
        )


def owner_pid(owner: str) -> int | None:
    """The process id in an owner label (``pytest-1234``, ``pid-1234``), or None for a kept environment."""
    m = re.fullmatch(r"(?:pytest|pid)-(\d+)", owner)
    return int(m.group(1)) if m else None


def owner_is_gone(owner: str) -> bool:
    """Whether the process that owns an environment has exited (False for kept environments)."""
    pid = owner_pid(owner)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _created(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(re.sub(r"\.(\d{6})\d*", r".\1", value.replace("Z", "+00:00")))
    except ValueError:
        return None


def list_environments(client: docker.DockerClient) -> list[Environment]:
    """Every harness environment on the engine, with its nodes, volumes and networks."""
    filters: dict[str, str | list[str] | bool] = {"label": f"{MANAGED_LABEL}=true"}
    envs: dict[str, Environment] = {}

    def env(labels: dict[str, str]) -> Environment:
        name = labels.get(PROJECT_LABEL, "(no project)")
        found = envs.setdefault(name, Environment(name))
        found.owner = found.owner or labels.get(OWNER_LABEL, "")
        return found

    for c in client.containers.list(all=True, filters=filters):
        e = env(c.labels)
        node = c.labels.get(NODE_LABEL) or c.labels.get(SERVICE_LABEL) or c.name
        e.nodes[str(node)] = str(c.status)
        created = _created(str(c.attrs.get("Created", "")))
        if created and (e.created is None or created < e.created):
            e.created = created
    for v in client.volumes.list(filters=filters):
        env(v.attrs.get("Labels") or {}).volumes += 1
    for n in client.networks.list(filters=filters):
        env(n.attrs.get("Labels") or {}).networks += 1
    return sorted(envs.values(), key=lambda e: e.name)


def remove_environment(client: docker.DockerClient, name: str) -> None:
    """Remove everything of compose project `name`: compose down, then any labelled leftovers."""
    ComposeProject.for_cluster(name, {}).down()
    label: dict[str, str | list[str] | bool] = {"label": f"{PROJECT_LABEL}={name}"}
    for c in client.containers.list(all=True, filters=label):
        c.remove(force=True, v=True)  # with its anonymous volumes (an official image declares VOLUME)
    for v in client.volumes.list(filters=label):
        v.remove(force=True)
    for n in client.networks.list(filters=label):
        n.remove()


def gc(client: docker.DockerClient) -> list[str]:
    """Remove the environments whose owning process is gone; return their names."""
    removed = []
    for e in list_environments(client):
        if owner_is_gone(e.owner):
            log.info("### Removing %r, left by %s", e.name, e.owner)
            remove_environment(client, e.name)
            removed.append(e.name)
    return removed
