"""The compose project behind a cluster: one ``docker compose`` project per cluster.

`compose.yaml` at the top of the repository is the one description of the
topology. A `ComposeProject` runs it under its own project name with its own
variables (image, host ports, owner label), so that several clusters live side
by side and each is removed on its own. Commands are argument lists; the
variables are passed to the compose process explicitly, and of the caller's
environment only what compose needs to run and reach the engine
(`caller_environment`), so a user's exported PRIMARY_PORT or
PGHARNESS_INIT_SQL does not leak into a test cluster.

Why not testcontainers' ``DockerCompose``: its public API has no project name,
no variables but an env file on disk (the passwords would be written there),
and no deadline on a compose command, which every outside call here has; this
class used to subclass it and override its private ``_run_command`` with
another signature, which its next release could break without notice. What is
left of it is ``docker compose`` run as an argument list, which this module
does itself; starting a cluster costs the same (the same compose commands).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container

from pgharness.constants import PROJECT_LABEL
from pgharness.engine import Engine, resolve
from pgharness.errors import ClusterError, DockerUnavailable, WaitTimeout
from pgharness.wait import backoff, poll_until


def _compose_file() -> Path:
    """The harness's compose file: PGHARNESS_COMPOSE_FILE, else the one shipped in the package
    (an installed wheel has it in pgharness/resources/), else the repository's (a checkout)."""
    if os.environ.get("PGHARNESS_COMPOSE_FILE"):
        return Path(os.environ["PGHARNESS_COMPOSE_FILE"]).resolve()
    here = Path(__file__).resolve().parent
    packaged = here / "resources" / "compose.yaml"
    return packaged if packaged.is_file() else here.parent / "compose.yaml"


#: The compose file; its folder holds docker/, the image's build context.
COMPOSE_FILE = _compose_file()

#: The override that keeps the compose services' data directories in memory (a cluster's storage "tmpfs").
TMPFS_OVERRIDE = COMPOSE_FILE.parent / "docker" / "compose.tmpfs.yaml"
#: Its service that holds the tmpfs volumes mounted for the cluster's lifetime (not a node, not a user's).
STORAGE_SERVICE = "data-keeper"
#: Where that service mounts each of its volumes: KEEPER_MOUNTS/<volume> (docker/compose.tmpfs.yaml).
KEEPER_MOUNTS = "/keep"
#: Its volume that holds the data of nodes added at run time.
RUN_TIME_DATA = "run-time-data"

#: What the Docker SDK raises when the engine does not answer within a call's timeout (an APIError is an
#: HTTPError, a RequestException too: never catch RequestException for a timeout).
ENGINE_TIMEOUT_ERRORS = (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError)

#: Networks Docker's default address pools hold (31, one of them the default bridge): as many clusters,
#: each taking one.
DEFAULT_POOL_NETWORKS = 30
#: What Docker says when its default address pools are used up.
ADDRESS_POOLS_EXHAUSTED = "could not find an available, non-overlapping IPv4 address pool"

#: Deadline of a compose command (seconds) unless the caller gives one.
COMPOSE_TIMEOUT = 300.0
#: Deadline of ``compose down``.
DOWN_TIMEOUT = 120.0


def docker_client(engine: Engine | None = None, *, timeout: int = 120) -> docker.DockerClient:
    """A Docker SDK client for `engine` (default: the one the user's Docker configuration names, as
    `pgharness.engine.resolve` finds it: DOCKER_HOST, else the Docker context, else the default socket),
    whose calls wait at most `timeout` seconds for the engine.

    Raises `DockerUnavailable` with what to do when no engine answers.
    """
    engine = engine or resolve()
    ssh = engine.url.startswith("ssh://")
    try:
        if engine.context:
            from docker.context import ContextAPI

            context = ContextAPI.get_context(engine.context)
            assert context is not None
            client = docker.DockerClient(
                base_url=engine.url, tls=context.TLSConfig or False, timeout=timeout, use_ssh_client=ssh
            )
        else:
            # The engine's URL, with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH as the docker CLI reads them.
            environment = {**os.environ, "DOCKER_HOST": engine.url}
            client = docker.from_env(timeout=timeout, use_ssh_client=ssh, environment=environment)
        # Straight to the engine, never through a proxy the environment names; requests would also read
        # those variables again on every API call, thousands of times in a test run.
        client.api.trust_env = False
        client.ping()
    except docker.errors.DockerException as e:
        raise DockerUnavailable(
            f"no Docker engine answers at {engine}: start dockerd (or Docker Desktop), "
            f"or point DOCKER_HOST (or the Docker context) at a running engine ({type(e).__name__})"
        ) from None
    return client


def check_docker_cli() -> None:
    """`DockerUnavailable` when there is no ``docker`` command on PATH (what a start checks first: Compose
    itself is asked only when a compose command fails, by `check_compose_v2`)."""
    if shutil.which("docker", path=os.environ.get("PATH", "")) is None:
        raise DockerUnavailable("no 'docker' command on PATH: install the Docker CLI with the Compose v2 plugin")


def check_compose_v2() -> str:
    """The Compose v2 version string, or `DockerUnavailable` saying how to get it.

    Asked once per process and PATH, and only once a compose command has failed: a `docker compose
    version` costs a whole Go program's start, which a start that works need not pay; a failure is not
    remembered."""
    return _compose_version(os.environ.get("PATH", ""))


@functools.cache
def _compose_version(path: str) -> str:
    check_docker_cli()
    try:
        proc = subprocess.run(
            ["docker", "compose", "version", "--short"], capture_output=True, text=True, check=False, timeout=30
        )
    except subprocess.TimeoutExpired:
        raise DockerUnavailable("'docker compose version' did not answer within 30 s") from None
    version = proc.stdout.strip().lstrip("v")
    if proc.returncode != 0 or not version[:1].isdigit() or int(version.split(".")[0]) < 2:
        raise DockerUnavailable(
            "'docker compose' (Compose v2) is not available: install the Compose v2 plugin "
            "(Debian: docker-compose from trixie; elsewhere: docker-compose-plugin); "
            "the old docker-compose v1 is not supported"
        )
    return version


#: What a compose process takes from the caller's environment: what it needs to run and to reach the
#: engine (the docker CLI's own variables, proxies, the ssh agent for ssh:// engines), and nothing of
#: compose.yaml's: a user's exported PGHARNESS_INIT_SQL, STANDBY_UPSTREAM, PG_FSYNC, port variables or
#: COMPOSE_PROFILES must not reach a test cluster. The harness's settings reach it as the project's variables.
CALLER_VARIABLES = re.compile(
    r"PATH|HOME|USER|LOGNAME|LANG|LC_[A-Z]+|TZ|TMPDIR|XDG_(?:RUNTIME_DIR|CONFIG_HOME)|SSH_AUTH_SOCK"
    r"|DOCKER_[A-Z_]+|(?:HTTPS?|NO|ALL)_PROXY|(?:https?|no|all)_proxy"
)


def caller_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of `environ` (default: this process's) a compose process is given (`CALLER_VARIABLES`)."""
    environ = os.environ if environ is None else environ
    return {name: value for name, value in environ.items() if CALLER_VARIABLES.fullmatch(name)}


@functools.cache
def base_services() -> frozenset[str]:
    """Every service of COMPOSE_FILE, of every profile."""
    cmd = ["docker", "compose", "--file", str(COMPOSE_FILE), "--profile", "*", "config", "--services"]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            env={**caller_environment(), "COMPOSE_PROJECT_NAME": "x"},
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"docker compose config of {COMPOSE_FILE} did not answer within 60 s") from None
    if proc.returncode != 0:
        raise ClusterError(f"docker compose config of {COMPOSE_FILE} failed: {last_lines(proc.stderr)}")
    return frozenset(proc.stdout.split())


def last_lines(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def cause_line(stderr: str) -> str:
    """Compose's own error line in its output: the last that says ``Error`` (``Error response from daemon:
    ... Bind for 127.0.0.1:25448 failed: port is already allocated``), else the last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(it printed nothing)"])[-1]


def check_yaml(path: Path) -> None:
    """Refuse compose file `path` when it is not YAML, naming the file and the line (compose itself says
    ``yaml: line 1: did not find expected key``, naming neither the file nor, for a merged file, the line).
    Raises `ClusterError`."""
    import yaml

    class Loader(yaml.SafeLoader):
        """Safe YAML that takes compose's own tags (``!override``, ``!reset``) as the plain values they tag."""

    def plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_scalar(node)  # type: ignore[arg-type]

    Loader.add_multi_constructor("!", plain)
    try:
        yaml.load(path.read_text(), Loader=Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ClusterError(f"compose override file {path}{where}: not valid YAML ({problem})") from None
    except OSError as e:
        raise ClusterError(f"compose override file {path}: cannot be read ({e.strerror})") from None


@dataclass
class ComposeProject:
    """One compose project on `compose.yaml`, with its own name and variables."""

    #: The folder compose runs in (relative paths of the first file are taken from it).
    context: Path
    #: The compose files, ``-f`` after ``-f``.
    compose_file_name: list[str]
    project_name: str = "pgharness"
    variables: dict[str, str] = field(default_factory=dict)
    wait_timeout: float = 120.0
    #: The services ``up`` starts (None: every one without a profile).
    services: list[str] | None = None

    @classmethod
    def for_cluster(
        cls,
        project_name: str,
        variables: dict[str, str],
        wait_timeout: float = 120.0,
        overrides: list[Path] | None = None,
        storage: str = "volume",
    ) -> ComposeProject:
        """The project on COMPOSE_FILE (with TMPFS_OVERRIDE for `storage` "tmpfs"), a user's `overrides`
        on top (``-f`` after ``-f``)."""
        missing = [str(p) for p in overrides or [] if not p.is_file()]
        if missing:
            raise ClusterError(f"compose override file(s) not found: {', '.join(missing)}")
        for path in overrides or []:
            check_yaml(path)
        return cls(
            context=COMPOSE_FILE.parent,
            compose_file_name=[
                str(COMPOSE_FILE),
                *([str(TMPFS_OVERRIDE)] if storage == "tmpfs" else []),
                *(str(p.resolve()) for p in overrides or []),
            ],
            project_name=project_name,
            variables=variables,
            wait_timeout=wait_timeout,
        )

    def added_services(self) -> list[str]:
        """The services the override files add to COMPOSE_FILE's (those without a profile)."""
        if len(self.compose_file_name) < 2:
            return []
        cmd = [*self.command, "config", "--services"]
        merged = self.run_command(cmd).stdout.decode().split()
        return [s for s in merged if s not in base_services() and s != STORAGE_SERVICE]

    @cached_property
    def command(self) -> list[str]:
        """``docker compose --project-name NAME -f FILE ...``: the start of every command of the project."""
        files = [arg for name in self.compose_file_name for arg in ("-f", name)]
        return ["docker", "compose", "--project-name", self.project_name, *files]

    def run_command(
        self,
        cmd: list[str],
        context: str | None = None,
        *,
        timeout: float = COMPOSE_TIMEOUT,
        detached: bool = False,
        variables: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a compose command (an argv list) with the project's variables; `ClusterError` when it fails or
        has not finished within `timeout` seconds. `detached` runs it in a session of its own, so that a
        signal to this process group (a second Ctrl-C) cannot cut it short."""
        env = {**caller_environment(), **self.variables, **(variables or {}), "COMPOSE_PROJECT_NAME": self.project_name}
        verb = next((c for c in cmd if c in ("up", "down", "run", "config", "stop", "start", "exec", "ps")), cmd)
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                check=False,
                cwd=context or str(self.context),
                env=env,
                timeout=timeout,
                start_new_session=detached,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(
                f"docker compose {verb} did not finish within {timeout:g} s for project {self.project_name!r}"
            ) from None
        except FileNotFoundError:
            check_docker_cli()
            raise
        if proc.returncode != 0:
            # No Compose v2 (no plugin, or the old docker-compose) is said as such, not as this command's failure.
            check_compose_v2()
            stderr = proc.stderr.decode(errors="replace")
            if ADDRESS_POOLS_EXHAUSTED in stderr:
                raise ClusterError(
                    "the engine has no address pool left for another network (each cluster takes one): remove "
                    "environments you no longer need (`pgharness ls`, `pgharness down`), or give dockerd more pools "
                    '("default-address-pools" in /etc/docker/daemon.json, e.g. '
                    '[{"base": "10.99.0.0/16", "size": 24}], then restart dockerd)'
                )
            raise ClusterError(
                f"docker compose {verb} failed for project {self.project_name!r} "
                f"(exit {proc.returncode}): {cause_line(stderr)}\n{last_lines(stderr)}"
            )
        return proc

    def start(self, wait: bool = True) -> None:
        """``compose up --wait`` (healthchecks decide readiness, within `wait_timeout`), or
        ``compose up --detach`` when the caller waits for readiness itself."""
        services = list(self.services or [])
        waiting = ["--wait", "--wait-timeout", str(int(self.wait_timeout))] if wait else ["--detach"]
        self.run_command([*self.command, "up", *waiting, *services], timeout=self.wait_timeout + 60)

    def down(self) -> None:
        """Remove the project's containers (of every profile, one-off ones too), volumes and networks.

        The containers are killed, not shut down: their volumes go with them, so a clean shutdown would
        keep nothing, and a node whose walsender waits to send its shutdown checkpoint to a standby that
        is gone (after a split brain or a partition) held every removal for the whole stop timeout."""
        everything = ["--profile", "*", "down", "--volumes", "--remove-orphans", "--timeout", "0"]
        self.run_command([*self.command, *everything], timeout=DOWN_TIMEOUT, detached=True)

    def config_text(self) -> str:
        """The resolved compose configuration of this project (``compose config``)."""
        cmd = [*self.command, "--profile", "*", "config"]
        return self.run_command(cmd, timeout=60).stdout.decode(errors="replace")

    def run(
        self,
        service: str,
        *args: str,
        options: list[str] | None = None,
        timeout: float = COMPOSE_TIMEOUT,
        variables: dict[str, str] | None = None,
    ) -> str:
        """``compose run`` a one-off container of `service` (no dependencies started); return its output.

        `variables` override the project's compose variables for this one container (another image, say).
        """
        cmd = [*self.command, "run", "--no-deps", *(options or []), service, *args]
        return self.run_command(cmd, timeout=timeout, variables=variables).stdout.decode(errors="replace")


#: The engine's refusals of a removal that another one in progress explains: 409, a container's removal
#: already running or a volume in use; 403, a network with endpoints (a container being removed).
WAIT_FOR_OTHER_REMOVAL = (403, 409)
#: Seconds a removal waits for another process's removal of the same project to let it through.
OTHER_REMOVAL_TIMEOUT = 30.0


def remove_project(client: docker.DockerClient, name: str) -> None:
    """Remove everything of compose project `name`, found by compose's project label: its containers of
    every service and profile, one-off ones too, killed and removed at once with their anonymous volumes;
    then its networks (a container of someone else's on one is disconnected, not removed) and volumes.

    What ``compose down --volumes --remove-orphans --timeout 0`` removes, without a compose process (its
    start and the project's parsing, on every removal). What another process removes meanwhile (a
    session's start-up reaping, `pgharness gc`, a second teardown) is not an error: gone already, or
    waited for while the engine refuses a second removal, or a network or volume a container being
    removed still holds (`WAIT_FOR_OTHER_REMOVAL`, within OTHER_REMOVAL_TIMEOUT). Each engine call has
    the client's deadline (120 s); `ClusterError` names what the engine refused to remove.
    """
    label: dict[str, Any] = {"label": f"{PROJECT_LABEL}={name}"}

    def remove(thing: Any, **options: Any) -> None:
        what = f"{type(thing).__name__.lower()} {thing.name or thing.short_id!r}"

        def refused(why: str) -> ClusterError:
            return ClusterError(f"could not remove {what} of {name!r}: {why}")

        def attempt() -> str:
            """'' once it is gone; the engine's refusal while another removal holds it up."""
            try:
                thing.remove(**options)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                if e.status_code not in WAIT_FOR_OTHER_REMOVAL:
                    raise refused(str(e.explanation)) from None
                return str(e.explanation)
            return ""

        try:
            poll_until(attempt, lambda refused: not refused, what=f"{what} of {name!r} to be removed",
                       timeout=OTHER_REMOVAL_TIMEOUT, interval=backoff, retry_on=())  # fmt: skip
        except WaitTimeout as e:
            raise refused(str(e.last_seen)) from None

    containers = client.containers.list(all=True, filters=label, sparse=True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(len(containers), 8))) as pool:
            list(pool.map(lambda c: remove(c, force=True, v=True), containers))
    except RuntimeError:  # "cannot schedule new futures after interpreter shutdown": the atexit handler's turn
        for container in containers:
            remove(container, force=True, v=True)
    for network in client.networks.list(filters=label):
        _disconnect_strangers(client, network, name)
        remove(network)
    for volume in client.volumes.list(filters=label):
        remove(volume, force=True)


def _disconnect_strangers(client: docker.DockerClient, network: Any, name: str) -> None:
    """Disconnect from `network` of project `name` the containers that are not the project's: they stay,
    the network can go. A container of the project still on it is one being removed, which the network's
    removal waits for."""
    with contextlib.suppress(docker.errors.NotFound):
        network.reload()
    for container in network_strangers(client, network, name):
        # Refused (gone meanwhile, say): the network's removal below waits for it, or names it.
        with contextlib.suppress(docker.errors.APIError):
            network.disconnect(container.id, force=True)


def network_strangers(client: docker.DockerClient, network: Any, name: str) -> list[Container]:
    """The containers on `network` (as last inspected) that are not project `name`'s, each inspected: a
    user's own, joined by `Cluster.connect_container` or by a network option of theirs."""
    found = []
    for container_id in network.attrs.get("Containers") or {}:
        try:
            container = client.containers.get(container_id)
        except docker.errors.NotFound:  # gone since the network was inspected
            continue
        if container.labels.get(PROJECT_LABEL) != name:
            found.append(container)
    return found


def list_containers(client: docker.DockerClient, filters: dict[str, Any]) -> list[Container]:
    """The containers (running or not) that match `filters`, each inspected; one that is removed between the
    listing and its inspection (a one-off backup container, another run's teardown) is left out, not an error."""
    found = []
    for sparse in client.containers.list(all=True, filters=filters, sparse=True):
        try:
            found.append(client.containers.get(str(sparse.attrs["Id"])))
        except docker.errors.NotFound:
            continue
    return found


def run_container(
    client: docker.DockerClient, image: str, argv: list[str], *, timeout: float, what: str, **create: Any
) -> tuple[int, str]:
    """Run `argv` (a list, never a shell string) in a new container of `image`; return its exit code and output.

    The container is created, started, awaited at most `timeout` seconds and
    removed, whatever happens, also when it could not start. `create` holds more
    arguments of ``containers.create`` (user, environment, volumes, network,
    labels). `ClusterError` when it has not finished in time.
    """
    # With no entrypoint of the image's, the command runs under a fixed sh that writes its output to a file
    # in the container, read back from the exited container: the engine's log of a container's output
    # can lose what the container printed last (it stops copying 2 s after the process exits, and a busy
    # engine copies slower than that).
    container = start_container(client, image, argv, **create)
    try:
        return finish_container(container, timeout=timeout, what=what)
    finally:
        container.remove(force=True)


def start_container(client: docker.DockerClient, image: str, argv: list[str], **create: Any) -> Container:
    """Create and start a container of `image` running `argv` (`run_container`'s first half, for a command
    that runs in the background: `finish_container` awaits it, and the caller removes it). A container that
    could not start is removed."""
    wrapped = create.get("entrypoint") == []
    command = ["sh", "-c", TOOL_WRAPPER, "tool", *argv] if wrapped else argv
    container = client.containers.create(image, command, **create)
    try:
        container.start()
    except BaseException:
        container.remove(force=True)
        raise
    return container


def finish_container(container: Container, *, timeout: float, what: str) -> tuple[int, str]:
    """Wait at most `timeout` seconds for `container` (from `start_container`) to exit; return its exit code
    and output. `ClusterError` when it has not exited in time."""
    try:
        status = container.wait(timeout=timeout)
        output = container_output(container)
    except ENGINE_TIMEOUT_ERRORS:
        raise ClusterError(f"{what} did not finish within {timeout:g} s") from None
    return int(status.get("StatusCode", -1)), output


def container_output(container: Container) -> str:
    """What a one-off container's command has printed so far: its output file when it has no entrypoint
    (see `run_container`), else the engine's log of it."""
    wrapped = container.attrs.get("Config", {}).get("Entrypoint") in (None, [])
    output = _read_output(container) if wrapped else None
    return output if output is not None else container.logs().decode(errors="replace")


#: Where a wrapped one-off command's output goes (`run_container`), and the fixed script that sends it there
#: (the command reaches it as arguments, never as its text; stdout and stderr in the order written). The
#: command replaces the shell (exec): a signal sent to the container reaches the command itself.
TOOL_OUTPUT = "/tmp/.pgharness-tool-output"
TOOL_WRAPPER = f'exec "$@" >{TOOL_OUTPUT} 2>&1'


def _read_output(container: Container) -> str | None:
    """The output file of an exited wrapped command, read from the container; None when it has none (the
    command could not write it)."""
    try:
        chunks, _ = container.get_archive(TOOL_OUTPUT)
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        member = archive.extractfile(archive.getmembers()[0])
        return member.read().decode(errors="replace") if member is not None else None
