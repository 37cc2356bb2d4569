"""Environments on this engine: the compose projects the harness made, who owns them, and garbage collection.

Every container, volume and network of the harness carries
``org.pgharness.managed=true``, its compose project's label, and
``org.pgharness.owner``: ``pytest-<pid>`` / ``pid-<pid>`` for a process that
removes it when done, or ``harness-up`` / ``compose`` for an environment a
person asked to keep. A process owner also names its host
(``org.pgharness.owner-host``: hostname and machine id) and when the process
started (``org.pgharness.owner-started``, clock ticks after boot), because an
engine can be shared by several machines and a PID can be reused.

`gc` removes only what provably belongs to a process of this host that is gone
(a test run killed with SIGKILL, say); an environment of another host, or one
whose owner cannot be told, is listed and kept.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from pgharness.compose import list_containers, remove_project
from pgharness.constants import (
    CLAIM_KIND,
    KIND_LABEL,
    MANAGED_LABEL,
    NODE_LABEL,
    OWNER_HOST_LABEL,
    OWNER_LABEL,
    OWNER_STARTED_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
)
from pgharness.errors import EnvironmentBusy

log = logging.getLogger("pgharness")


def state_dir() -> Path:
    """Where the harness keeps what outlives a command: ``$XDG_STATE_HOME/pgharness``
    (``~/.local/state/pgharness``): the CLI's error files, the watchdogs' logs."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pgharness"


@functools.cache
def this_host() -> str:
    """This machine's identity in owner labels: its hostname and machine id (``/etc/machine-id``).

    Both, because containers made from one image share a machine id and
    machines may share a hostname.
    """
    machine_id = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine_id = Path(path).read_text().strip()
        except OSError:
            continue
        if machine_id:
            break
    return f"{socket.gethostname()}/{machine_id or 'no-machine-id'}"


def process_started(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, from /proc), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def owner_labels(owner: str) -> dict[str, str]:
    """The labels naming `owner`: for a process owner (``pytest-<pid>``), its host and start time too."""
    labels = {OWNER_LABEL: owner}
    pid = owner_pid(owner)
    if pid is not None:
        labels[OWNER_HOST_LABEL] = this_host()
        labels[OWNER_STARTED_LABEL] = process_started(pid) or ""
    return labels


@dataclass
class Environment:
    """One compose project of the harness, as the engine shows it."""

    name: str
    owner: str = ""
    owner_host: str = ""
    owner_started: str = ""
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


def owner_is_gone(owner: str, host: str = "", started: str = "") -> bool:
    """Whether the process that owns an environment has provably exited.

    Only a process of this host can be shown to be gone: one that no longer
    exists, or whose PID now belongs to a process started at another time.
    False for kept environments (no PID), for another host's, and for an owner
    label without a host (made before hosts were recorded): those cannot be told.
    """
    pid = owner_pid(owner)
    if pid is None or host != this_host():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    now = process_started(pid)
    return bool(started) and now is not None and now != started


def why_kept(e: Environment) -> str:
    """Why `gc` keeps `e`, in a few words."""
    if owner_pid(e.owner) is None:
        return f"kept by request (owner {e.owner or 'unknown'})"
    if not e.owner_host:
        return f"owner {e.owner} names no host: cannot tell whether it is gone"
    if e.owner_host != this_host():
        return f"owner {e.owner} runs on another host ({e.owner_host})"
    return f"owner {e.owner} is alive"


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
        found.owner_host = found.owner_host or labels.get(OWNER_HOST_LABEL, "")
        found.owner_started = found.owner_started or labels.get(OWNER_STARTED_LABEL, "")
        return found

    for c in list_containers(client, filters):
        if c.labels.get(KIND_LABEL) == CLAIM_KIND:
            continue  # a name held while it is made (`claimed`): not a node
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
    """Remove everything of compose project `name` (`pgharness.compose.remove_project`)."""
    remove_project(client, name)


def gc(client: docker.DockerClient) -> tuple[list[str], dict[str, str]]:
    """Remove the environments whose owning process is provably gone (`owner_is_gone`).

    Returns the names removed, and the environments kept with why each was kept.
    """
    removed, kept = [], {}
    for e in list_environments(client):
        if owner_is_gone(e.owner, e.owner_host, e.owner_started):
            log.info("### Removing %r, left by %s", e.name, e.owner)
            remove_environment(client, e.name)
            removed.append(e.name)
        else:
            kept[e.name] = why_kept(e)
    return removed, kept


#: Seconds a claim waits for a name the engine has reserved to show its container (`claimed`).
CLAIM_TIMEOUT = 10.0


def claim_name(name: str) -> str:
    """The name of the container that holds environment `name` while it is made."""
    return f"{name}-pgharness-claim"


@contextmanager
def claimed(client: docker.DockerClient, name: str, image: str, labels: Mapping[str, str]) -> Iterator[None]:
    """Hold environment `name` for this process while the block makes it; release it after.

    The hold is a container named `claim_name` (made, never started), created on the engine itself:
    the engine refuses a second container of one name, so of two callers at the same moment, on this
    host or another sharing the engine, exactly one gets it. It carries the environment's labels
    (`labels`: project, managed, owner), so ``down`` and ``gc`` see it. A hold whose owner is provably
    gone (`owner_is_gone`: a killed command) is taken over. Raises `EnvironmentBusy`, naming the process
    that holds it, when another live process does.
    """
    container_name = claim_name(name)
    claim_labels = {**labels, PROJECT_LABEL: name, MANAGED_LABEL: "true", KIND_LABEL: CLAIM_KIND}
    taken_over = False
    # The engine reserves a name before the container it names can be inspected: a create refused for a name
    # whose container is not found yet is asked again, within CLAIM_TIMEOUT.
    deadline = time.monotonic() + CLAIM_TIMEOUT
    while True:
        try:
            holder = client.containers.create(
                image, ["true"], name=container_name, labels=claim_labels, entrypoint=[], network_disabled=True
            )
            break
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise
        try:
            other = client.containers.get(container_name).labels
        except docker.errors.NotFound:
            if time.monotonic() > deadline:
                raise EnvironmentBusy(f"environment {name!r} is being made by another process: try again") from None
            time.sleep(0.05)
            continue
        owner, host = other.get(OWNER_LABEL, ""), other.get(OWNER_HOST_LABEL, "")
        if not taken_over and owner_is_gone(owner, host, other.get(OWNER_STARTED_LABEL, "")):
            taken_over = True  # a killed command's claim
            with suppress(docker.errors.NotFound):
                client.containers.get(container_name).remove(force=True)
            continue
        pid = owner_pid(owner)
        who = f"process {pid} on {host or 'an unknown host'}" if pid else owner
        raise EnvironmentBusy(
            f"environment {name!r} is being made by {who}: wait for it to finish, or choose another --name"
        )
    try:
        yield
    finally:
        with suppress(docker.errors.NotFound):
            holder.remove(force=True)
