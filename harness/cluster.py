"""A cluster: one compose project on ``compose.yaml``, its lifecycle and its topology.

A `Cluster` owns one compose project (a unique project name, every resource
labelled), starts a named topology, finds its nodes (`pgharness.node.Node`, one
per compose service, named after it) and the services a user's override files
add (`pgharness.service.Service`), adds nodes while it runs, and removes
everything in `destroy()`, which also runs when start-up fails halfway. What it
holds beyond that is reached through it: ``cluster.archive`` (the shared WAL
archive, `pgharness.archive`) and ``cluster.backups`` (base backups, restores,
dumps, `pgharness.backup`)::

    with Cluster(image="pgharness/postgres:17") as cluster:
        cluster.primary.sql("CREATE TABLE hoge (col integer)")
        cluster.primary.wait_for_catchup(cluster.standby)

Host-to-node traffic goes only to published ports: on 127.0.0.1 for a local engine, on
the engine's own address for a remote one (`pgharness.engine`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import docker
import docker.errors
from docker.models.containers import Container

from pgharness import evidence, reaper, registry
from pgharness.archive import Archive
from pgharness.backup import Backups
from pgharness.compose import (
    KEEPER_MOUNTS,
    RUN_TIME_DATA,
    STORAGE_SERVICE,
    TMPFS_OVERRIDE,
    ComposeProject,
    check_docker_cli,
    docker_client,
    list_containers,
    network_strangers,
    remove_project,
)
from pgharness.constants import (
    CONFIG_FILES_LABEL,
    CONTAINER_PORT,
    DATA_MOUNT,
    HOST,
    KIND_LABEL,
    MANAGED_LABEL,
    NODE_LABEL,
    ONEOFF_LABEL,
    OWNER_HOST_LABEL,
    OWNER_LABEL,
    OWNER_STARTED_LABEL,
    PROJECT_LABEL,
    REPLICATION_NETWORK,
    SERVICE_LABEL,
)
from pgharness.engine import resolve
from pgharness.environments import owner_labels
from pgharness.errors import (
    ClusterError,
    HarnessError,
    PortInUse,
    StartFailed,
    UnknownEnvironment,
    UnknownNode,
    UnsupportedVersion,
)
from pgharness.lsn import Lsn
from pgharness.node import Node
from pgharness.quoting import Settings, check_file_name, check_secret, settings_lines
from pgharness.service import Service, container_env
from pgharness.tls import TlsFiles
from pgharness.tools import Tools, data_resource, resource_name
from pgharness.topology import NODE_NAME, TOPOLOGIES, parse_size, plan, variable
from pgharness.versions import DEFAULT_VERSION, parse_version_arg, unbuildable
from pgharness.wait import Deadline, log_tails

log = logging.getLogger("pgharness")

#: The settings of an independent primary added at run time (`Cluster.add_primary`): logical
#: replication on, no archiving; a subscription's apply worker started again (re-enabled, re-pointed,
#: after an error) within a second rather than PostgreSQL's 5 s (`wal_retrieve_retry_interval`).
FRESH_PRIMARY_SETTINGS = """\
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_log_hints = on
wal_retrieve_retry_interval = '1s'
fsync = off
"""


def new_cluster_name(prefix: str = "pgh") -> str:
    """A compose project name unique on this engine: ``pgh-1a2b3c4d``."""
    return f"{prefix}-{secrets.token_hex(4)}"


def port_is_free(port: int, address: str = HOST) -> bool:
    """Whether `port` on `address` (a local one) can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def disk_limits(disk: Mapping[str, str | int], services: Sequence[str]) -> dict[str, int]:
    """The compose volumes `disk` limits (node name -> ``<node>-data``; ``archive``, ``backups`` as they are),
    in bytes. `ClusterError` for a name that is no compose service of the cluster nor a shared volume."""
    limits = {}
    for name, size in disk.items():
        if name in ("archive", "backups"):
            volume = name
        elif name in services:
            volume = data_resource(name)
        else:
            raise ClusterError(
                f"disk for {name!r}: not a compose service of this cluster nor archive or backups (its services: "
                f"{', '.join(services)}); a node added later takes add_node(name, disk=...)"
            )
        try:
            limits[volume] = parse_size(size, f"disk for {name!r}")
        except ValueError as e:
            raise ClusterError(str(e)) from None
    return limits


def limited_tmpfs(size: int) -> dict[str, str]:
    """A local volume's options for a tmpfs of `size` bytes, writable by every node's postgres (sticky)."""
    return {"type": "tmpfs", "device": "tmpfs", "o": f"size={size},mode=1777"}


def chosen_image(image: str | None, pg_version: int | str | None) -> str | None:
    """`image`, or the harness's image of `pg_version` (`version_image`), or None when neither is given.

    Raises `ClusterError` when both are given (an image has its version), `UnsupportedVersion` as
    `version_image` does.
    """
    if image is not None and pg_version is not None:
        raise ClusterError(f"image={image!r} and pg_version={pg_version!r}: give one (the image has its version)")
    return image if pg_version is None else version_image(pg_version)


def version_image(pg_version: int | str | None) -> str:
    """The harness's own node image of PostgreSQL `pg_version` (``17``, ``"17"``, ``"17.2"``; default
    `DEFAULT_VERSION`), built from Debian packages when missing (`pgharness.image.ensure_image`).

    Raises `UnsupportedVersion`, naming `pg_version`, for a value that is no major version the harness serves
    or can build here, before anything is built.
    """
    from pgharness.image import ImageSpec, ensure_image

    if pg_version is None:
        return ensure_image(ImageSpec(DEFAULT_VERSION))
    if isinstance(pg_version, bool) or not isinstance(pg_version, int | str):
        raise UnsupportedVersion(f"pg_version={pg_version!r}: a major version such as 17 (an int or its text)")
    try:
        major = parse_version_arg(str(pg_version))
        why = unbuildable(major, f"give image=ensure_image(ImageSpec({major}, 'postgres:{major}')) instead")
        if why:
            raise UnsupportedVersion(why)
    except UnsupportedVersion as e:
        raise UnsupportedVersion(f"pg_version={pg_version!r}: {e}") from None
    return ensure_image(ImageSpec(major))


def _owner_variables(labels: Mapping[str, str]) -> dict[str, str]:
    """compose.yaml's owner variables from owner labels (`pgharness.environments.owner_labels`)."""
    return {
        "PGHARNESS_OWNER": labels.get(OWNER_LABEL, ""),
        "PGHARNESS_OWNER_HOST": labels.get(OWNER_HOST_LABEL, ""),
        "PGHARNESS_OWNER_STARTED": labels.get(OWNER_STARTED_LABEL, ""),
    }


class Cluster:
    """One compose project: a primary, its standbys and the shared WAL archive.

    Arguments, all keyword but `name` (default: a unique ``pgh-XXXXXXXX``):

    - `image`: the node image (``pgharness.image.ensure_image`` builds it), or
      `pg_version`: the harness's own image of that major version (default 17),
      built from Debian packages when missing, as the pytest plugin does. So a
      script needs no more than ``with Cluster() as cluster:``.
    - `topology`: the services to start, one of `TOPOLOGIES` (``streaming``,
      ``archive-only``, ``slot``, ``logical``); `compose_services` lists them
      instead. `standbys` is how many streaming standbys ``streaming`` and
      ``logical`` have: ``standby``, then ``standby2``, ``standby3``, ... (0: a
      primary alone). ``logical`` runs every node with ``wal_level = logical``
      and adds `subscribers` independent primaries (``subscriber``,
      ``subscriber2``, ...; see `add_primary`).
    - `ports`: fixed host ports by service name; services not named there (the
      default) get ephemeral ports, so clusters live side by side.
    - `password`, `replication_user`, `replication_password`: the superuser's
      password and the replication role (default: ``POSTGRES_PASSWORD``,
      ``REPLICATION_USER``, ``REPLICATION_PASSWORD``, else ``postgres``,
      ``repli``, ``repli``). Any character but NUL and line breaks.
    - `settings`: postgresql.conf settings for every node (a mapping, whose
      values are quoted; lines; or a text); `node_settings`: more for single
      nodes by name (``{"standby2": {"recovery_min_apply_delay": "30s"}}``),
      written after those. Nodes added later take theirs when they start.
    - `init_sql`: SQL (or a ``.sql`` path) run once on the new primary.
    - `tls`: replication over TLS with a CA made now (or `TlsFiles` of your own).
    - `compose_files`: override files on top of compose.yaml (your services);
      `env`: more of compose.yaml's variables (``PG_FSYNC``, ``STANDBY_UPSTREAM``, ...).
    - `storage`: where the compose nodes keep their data: ``volume`` (disk, the
      default) or ``tmpfs`` (memory, held for the cluster's lifetime; the pytest
      plugin's default: docker/compose.tmpfs.yaml says why).
    - `standby_source`: where the compose ``standby`` starts from: ``template`` (the default), the
      image's template data directory, which the primary is made from too, with the rest replayed from
      the primary's WAL, so the two start side by side; or ``basebackup``, exercise 26-1's pg_basebackup
      once the primary answers. `start()` returns once either has replayed what the primary wrote. Nodes
      added later (`add_node`, rebuilds) always take a base backup.
    - `healthchecks`: Docker's healthchecks of the nodes (what `docker ps` shows; the harness itself asks
      the nodes over SQL). The pytest plugin turns them off, as each check is a `docker exec`, unless
      there are `compose_files`, whose services may wait for a node to be healthy.
    - `disk`: size-limited storage for single volumes, by node name or ``archive`` / ``backups``
      (``{"primary": "64MB", "archive": "32MB"}``): each a tmpfs of that size, on any engine, so a disk
      can fill (``No space left on device``) without filling the machine's.
    - `owner`: the owner label (default ``pid-<this process>``): `pgharness gc`
      removes the cluster once that process is gone.
    - `start_timeout`: seconds `start()` waits for the nodes (default 120).
    - `keep`: leave the cluster running when its ``with`` block raised.

    `start()` brings the project up and waits until every node is ready;
    `destroy()` removes its containers, volumes and networks (nothing else),
    and runs also when start-up fails. Raises `ClusterError` for a bad
    argument, `QuotingError` for a secret no quoting can carry.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        image: str | None = None,
        pg_version: int | str | None = None,
        topology: str = "streaming",
        standbys: int = 1,
        subscribers: int = 1,
        compose_services: Sequence[str] = (),
        ports: Mapping[str, int] | None = None,
        password: str | None = None,
        replication_user: str | None = None,
        replication_password: str | None = None,
        settings: Settings | None = None,
        node_settings: Mapping[str, Settings] | None = None,
        init_sql: str | Path | None = None,
        tls: bool | TlsFiles = False,
        compose_files: Sequence[str | Path] = (),
        storage: str = "volume",
        standby_source: str = "template",
        healthchecks: bool = True,
        disk: Mapping[str, str | int] | None = None,
        env: Mapping[str, str] | None = None,
        owner: str | None = None,
        start_timeout: float = 120.0,
        keep: bool = False,
    ) -> None:
        self.name = name or new_cluster_name()
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, int | float) or start_timeout <= 0:
            raise ClusterError(f"start_timeout={start_timeout!r}: seconds, more than 0")
        self.image = chosen_image(image, pg_version) or version_image(None)
        self.ports = dict(ports or {})
        # Secrets and the role name go into conninfo strings, postgresql.conf and SQL: any
        # character is fine but NUL and line breaks (pgharness.quoting).
        self.password = check_secret("POSTGRES_PASSWORD", password or os.environ.get("POSTGRES_PASSWORD") or "postgres")
        self.replication_user = check_secret(
            "REPLICATION_USER", replication_user or os.environ.get("REPLICATION_USER") or "repli"
        )
        self.replication_password = check_secret(
            "REPLICATION_PASSWORD", replication_password or os.environ.get("REPLICATION_PASSWORD") or "repli"
        )
        self.keep = keep
        #: The Docker engine that runs the cluster, and where its published ports are reached.
        self.engine = resolve()
        #: The cluster's TLS files (a CA made at run time), or None.
        self.tls = TlsFiles.make() if tls is True else (tls or None)
        base = {
            "HARNESS_IMAGE": self.image,
            "PGHARNESS_BIND": self.engine.bind,
            "POSTGRES_PASSWORD": self.password,
            "REPLICATION_USER": self.replication_user,
            "REPLICATION_PASSWORD": self.replication_password,
            **_owner_variables(owner_labels(owner or f"pid-{os.getpid()}")),
            # Each connection computes the password's SCRAM key (PBKDF2) on the client's side: 2 ms of CPU at
            # PostgreSQL's 4096 iterations, a few thousand times a test run. One iteration is the same
            # protocol, and a wrong password is refused all the same (PostgreSQL 16+; older ones ignore it).
            # SCRAM_ITERATIONS= (empty) in the environment keeps the server's own count.
            "SCRAM_ITERATIONS": os.environ.get("SCRAM_ITERATIONS", "1"),
            **(self.tls.variables() if self.tls else {}),
        }
        shape = plan(
            topology=topology,
            standbys=standbys,
            subscribers=subscribers,
            compose_services=compose_services,
            ports=self.ports,
            settings=settings,
            node_settings=node_settings,
            init_sql=init_sql,
            storage=storage,
            standby_source=standby_source,
            # A service of an override file may wait for a node's health (depends_on: service_healthy).
            healthchecks=healthchecks or bool(compose_files),
            base=base,
            env=env,
        )
        #: Settings of single nodes, by node name, as postgresql.conf text.
        self.node_settings = dict(shape.node_settings)
        self.compose_files = [Path(p) for p in compose_files]
        #: Where the compose services keep their data directories: "volume" (on disk) or "tmpfs" (in memory).
        self.storage = storage
        #: Size-limited volumes, by compose volume name (``primary-data``, ``archive``): bytes.
        self.disk = disk_limits(disk or {}, shape.services)
        variables = dict(shape.variables)
        self.compose = ComposeProject.for_cluster(
            self.name, variables, wait_timeout=start_timeout, overrides=self.compose_files, storage=storage
        )
        self.compose.services = list(shape.services)
        #: Services of the override files that start with the nodes (resolved at start).
        self.added_services: list[str] = []
        #: Streaming standbys beyond the first, added once the cluster is up: standby2, standby3, ...
        self.extra_standbys = list(shape.extra_standbys)
        #: Independent primaries added once the cluster is up (the logical topology): subscriber, subscriber2, ...
        self.subscribers = list(shape.subscribers)
        self.owner = variables["PGHARNESS_OWNER"]
        #: The owner labels every container, volume and network of the cluster carries.
        self.owner_labels = owner_labels(self.owner)
        self._client = docker_client(self.engine)
        self._nodes: dict[str, Node] = {}
        # The container id of each node, as last listed (see `container`).
        self._node_ids: dict[str, str] = {}
        #: How many nodes this handle has added at run time (`add_node`, `add_primary`, restores): a shared
        #: cluster's reset clears what such nodes may have archived when it changed.
        self.nodes_run = 0
        #: The shared WAL archive: listing, waits, faults.
        self.archive = Archive(self)
        #: Base backups, point-in-time restores, dumps and rebuilds.
        self.backups = Backups(self)
        #: One-off containers beside the nodes (client tools, pg_rewind, pg_upgrade, file work on volumes).
        self.tools = Tools(self)

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, image={self.image!r})"

    @classmethod
    def attach(cls, name: str) -> Cluster:
        """The existing environment `name` (from `pgharness up`, `make up` or a kept test), to operate on.

        Its credentials, TLS files, settings and owner come from its containers,
        not from this process's environment. Raises `UnknownEnvironment` (with
        the environments there are) when the engine has none of that name.
        """
        client = docker_client()
        found = list_containers(client, {"label": f"{PROJECT_LABEL}={name}"})
        if not found:
            managed = list_containers(client, {"label": f"{MANAGED_LABEL}=true"})
            names = sorted({c.labels.get(PROJECT_LABEL, "?") for c in managed})
            raise UnknownEnvironment(
                f"no environment named {name!r} on this engine; environments: {', '.join(names) or 'none'}"
            )
        first = next((c for c in found if c.labels.get(SERVICE_LABEL) == "primary"), found[0])
        env = container_env(first)
        # The files it was made from: compose.yaml, then a user's override files (when they still exist).
        files = [Path(f) for f in first.labels.get(CONFIG_FILES_LABEL, "").split(",") if f]
        storage = "tmpfs" if TMPFS_OVERRIDE in files else "volume"
        overrides = [f for f in files[1:] if f.is_file() and f != TMPFS_OVERRIDE]
        tls = TlsFiles(*(env.get(f"PGHARNESS_TLS_{part}", "") for part in ("CA", "CERT", "KEY")))
        cluster = cls(
            name,
            image=str(first.attrs["Config"]["Image"]),
            # The cluster's own credentials, not the calling shell's environment.
            password=env.get("POSTGRES_PASSWORD"),
            replication_user=env.get("REPLICATION_USER"),
            replication_password=env.get("REPLICATION_PASSWORD"),
            owner=first.labels.get(OWNER_LABEL),
            compose_files=overrides,
            storage=storage,
            # What nodes added later (rebuild, restore, add_node) need to match the others.
            settings=env.get("PGHARNESS_EXTRA_SETTINGS") or None,
            tls=tls if tls.ca and tls.cert and tls.key else False,
        )
        # Its owner is whoever made it, not this process: keep the labels as they are.
        cluster.owner_labels = {k: v for k, v in first.labels.items() if k.startswith(OWNER_LABEL)}
        cluster.compose.variables.update(_owner_variables(cluster.owner_labels))
        return cluster

    @property
    def docker(self) -> docker.DockerClient:
        """The Docker SDK client that drives this cluster's containers."""
        return self._client

    def labels(self) -> dict[str, str]:
        """The labels of everything the cluster owns: managed, its compose project, its owner."""
        return {PROJECT_LABEL: self.name, MANAGED_LABEL: "true", **self.owner_labels}

    @property
    def down_command(self) -> str:
        """The command that removes this cluster from a shell."""
        return f"pgharness down --name {self.name}"

    # --- lifecycle -------------------------------------------------------

    def preflight(self) -> None:
        """Check what start-up needs before anything is created: the docker command, free host ports (on a
        local engine; a remote one refuses a port in use itself). Compose v2 is asked for once a compose
        command fails (`ComposeProject.run_command`).

        Raises `DockerUnavailable` or `PortInUse`, each in one line saying what to do.
        """
        check_docker_cli()
        if self.engine.remote:
            return
        # A port held by this project's own containers is not in use by someone else.
        own = self._project_ids(nodes=True)
        for service, port in self.ports.items():
            if service not in own and not port_is_free(port, self.engine.bind):
                raise PortInUse(port, self.engine.bind, service, f"port for {service} (ports=...)")

    def start(self) -> Self:
        """Bring the project up (``compose up --detach``), wait until every node is ready, add the extra
        standbys; return the cluster.

        Waits at most `start_timeout` seconds for the nodes. On any failure the
        project is removed and `ClusterError` says why in its first line (the
        failing container's own reason), with states and log tails after it.
        """
        self.preflight()
        log.info("### Starting cluster %r (image %s)", self.name, self.image)
        registry.register(self)
        # Killed before its teardown (SIGKILL, an OOM kill), this process leaves the cluster to its watchdog.
        reaper.ensure_watchdog(self.owner_labels, self.engine.url)
        try:
            if self.compose_files:
                self.added_services = self.compose.added_services()
                known = self.compose.services or []
                self.compose.services = [*known, *(s for s in self.added_services if s not in known)]
            self._make_limited_volumes()
            self.compose.start(wait=False)
            deadline = Deadline(self.compose.wait_timeout)
            # The extra standbys and subscribers start with the others, a `compose run` per core (at most
            # four) at a time: a standby waits for its upstream to answer before its base backup. Then every
            # node is waited for, all within the one start-up deadline.
            count = len(self.extra_standbys) + len(self.subscribers)
            with ThreadPoolExecutor(max_workers=max(1, min(count, os.cpu_count() or 1, 4))) as pool:
                adding = [pool.submit(self.add_node, name, wait=False) for name in self.extra_standbys]
                adding += [pool.submit(self.add_primary, name, wait=False) for name in self.subscribers]
                added = [future.result() for future in adding]
            self.wait_ready(timeout=deadline.remaining)
            self._standby_caught_up(deadline)
            for node in added:
                node.wait_ready(timeout=deadline.remaining)
        except BaseException as e:
            described = evidence.describe_failure(self) if isinstance(e, HarnessError) else ""
            reason = evidence.failure_reason(self) if isinstance(e, HarnessError) else ""
            self.destroy()
            if isinstance(e, HarnessError):
                first = f"{reason}\n{e}" if reason else str(e)
                failed = StartFailed(f"cluster {self.name!r} did not start: {first}\n{described}".rstrip())
                failed.stopped_by = e
                raise failed from None
            raise
        return self

    def _standby_caught_up(self, deadline: Deadline) -> None:
        """Wait until the compose standby of the primary has replayed what the primary wrote before it
        answered (its roles, the init SQL): a standby from the template (`standby_source`) streams that in
        after it answers; one from a base backup has it already.

        The target is the primary's last checkpoint: the shutdown checkpoint of its bootstrap (or the
        checkpoint of a base backup since), after everything it wrote before it answered. Not its write
        position: that can end inside a record written since it started (the WAL writer writes whole
        pages), which the standby cannot replay until the primary flushes the rest, at its next commit
        or the background writer's next snapshot, 15 s later; a start waited for that."""
        services = self.compose.services or []
        upstream = self.compose.variables.get("STANDBY_UPSTREAM") or "primary"
        if "primary" in services and "standby" in services and upstream == "primary":
            checkpoint = self.primary.scalar("SELECT checkpoint_lsn FROM pg_control_checkpoint()")
            self.primary.wait_for_catchup("standby", target_lsn=Lsn.parse(str(checkpoint)), timeout=deadline.remaining)

    def _make_limited_volumes(self) -> None:
        """Make the size-limited volumes (`disk`) before compose does: compose then uses them as they are (a
        volume of the project, by compose's own labels), with the harness's labels from the start."""
        for volume, size in self.disk.items():
            name = resource_name(self.name, volume)
            with contextlib.suppress(docker.errors.NotFound):
                self._client.volumes.get(name)
                continue
            self._client.volumes.create(
                name,
                driver="local",
                driver_opts=limited_tmpfs(size),
                labels={**self.labels(), "com.docker.compose.volume": volume},
            )

    def wait_ready(self, *, timeout: float | None = None) -> None:
        """Wait until every started service is ready: nodes asked over SQL (`Node.wait_ready`), a user's
        services by their healthchecks (or running, without one).

        All within one deadline of `timeout` seconds (default ``PGHARNESS_TIMEOUT``, else 60);
        raises `WaitTimeout`, or `ClusterError` when a container exits meanwhile.
        """
        deadline = Deadline(timeout)
        for service in self.compose.services or []:
            if service not in self.added_services:
                self.node(service).wait_ready(timeout=deadline.remaining)
        for service in self.added_services:
            self.service(service).wait_healthy(timeout=deadline.remaining)

    def destroy(self) -> None:
        """Remove the project's containers, volumes and networks (nothing else).

        SIGINT and SIGTERM wait until it is done (see `pgharness.registry.shielded`);
        the cluster leaves the live registry only once everything is removed, so
        a failed removal is tried again at exit. Raises `ClusterError` when
        the engine refuses to remove something (each call has a 120 s deadline).
        """
        with registry.shielded(f"removing cluster {self.name!r}"):
            log.info("### Removing cluster %r", self.name)
            # Compose's containers, volumes and network, and the harness's own (nodes added at run time).
            remove_project(self._client, self.name)
            for node in self._nodes.values():
                node.forget_port()  # a fresh start publishes new ports
            registry.unregister(self)

    def release(self) -> None:
        """Leave the cluster running after this process exits (`pgharness up`)."""
        registry.unregister(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.keep and exc is not None:
            log.warning("keeping cluster %r for inspection: remove it with `%s`", self.name, self.down_command)
            registry.unregister(self)
            return
        self.destroy()

    # --- nodes and services -------------------------------------------------

    def _project_ids(self, *, nodes: bool | None) -> dict[str, str]:
        """The ids of the project's nodes (or its other services; None: both), by name: one listing, nothing
        inspected."""
        listed = self.docker.containers.list(all=True, filters={"label": [f"{PROJECT_LABEL}={self.name}"]}, sparse=True)
        named = {}
        for c in listed:
            labels = c.attrs.get("Labels") or {}
            kind = labels.get(KIND_LABEL)
            if kind == "storage" or (nodes is not None and (kind == "postgres") != nodes):
                continue
            oneoff = labels.get(ONEOFF_LABEL) == "True"
            name = labels.get(NODE_LABEL) or (None if oneoff else labels.get(SERVICE_LABEL))
            if name:  # not a transient one-off (a backup being taken)
                named[name] = str(c.attrs["Id"])
        return named

    def _project_containers(self, *, nodes: bool) -> dict[str, Container]:
        named = {}
        for name, container_id in self._project_ids(nodes=nodes).items():
            with contextlib.suppress(docker.errors.NotFound):  # removed since the listing: not there
                named[name] = self.docker.containers.get(container_id)
        return named

    def containers(self) -> dict[str, Container]:
        """The project's PostgreSQL nodes' containers (running or not), by node name."""
        return self._project_containers(nodes=True)

    def container(self, name: str) -> Container:
        """The container of node `name`, inspected now; `UnknownNode` lists the valid names.

        Asked for each connection (a node's published port changes when it restarts): one inspection of
        the container found last time, and a listing of the project only when that one is gone.
        """
        known = self._node_ids.get(name)
        if known is not None:
            try:
                return self.docker.containers.get(known)
            except docker.errors.NotFound:  # removed, or replaced by a new one of that name
                pass
        self._node_ids = self._project_ids(nodes=True)
        try:
            return self.docker.containers.get(self._node_ids[name])
        except (KeyError, docker.errors.NotFound):
            raise UnknownNode(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        known = ", ".join(sorted(self._project_ids(nodes=True))) or "none: is the cluster up?"
        return f"cluster {self.name!r} has no node {name!r}; its nodes: {known}"

    def node(self, name: Node | str) -> Node:
        """The node `name` (a node of this cluster passes through); `UnknownNode` lists the valid names."""
        if isinstance(name, Node):
            return name
        if name not in self._nodes and name not in self._project_ids(nodes=True):
            raise UnknownNode(self._unknown(name))
        return self._handle(name)

    def _handle(self, name: str) -> Node:
        """The one `Node` of node `name` (made on first use: it keeps what its connections learnt)."""
        if name not in self._nodes:
            self._nodes[name] = Node(self, name)
        return self._nodes[name]

    @property
    def network_name(self) -> str:
        """The cluster's network (``<project>_replication``), where the nodes reach each other by name."""
        return resource_name(self.name, REPLICATION_NETWORK)

    def connect_container(self, container: WrapsContainer | Container | str, *aliases: str) -> Container:
        """Join a container of your own to the cluster's network: a testcontainers container (anything with
        ``get_wrapped_container()``), a Docker SDK container, or a container's id or name; return it.

        The nodes reach it by its container name and by `aliases`; it reaches them by theirs
        (`Node.conninfo` is the connection string from there). It stays yours: `destroy` disconnects it,
        never removes it, so that the network can go. An alias that is the name of one of the cluster's
        services or nodes (``primary``, say) is refused: two addresses under one name would send some
        connections to the wrong node. `ClusterError` when the engine refuses (the container or the
        network is gone, or the container is on the network already).
        """
        taken = set(self._project_ids(nodes=None)) | set(self._nodes)
        clashing = sorted(set(aliases) & taken)
        if clashing:
            raise ClusterError(f"alias {', '.join(clashing)}: the name of a service of cluster {self.name!r}")
        try:
            if isinstance(container, str):
                target = self._client.containers.get(container)
            else:
                target = container if isinstance(container, Container) else container.get_wrapped_container()
            self._client.networks.get(self.network_name).connect(target, aliases=list(aliases) or None)
        except docker.errors.APIError as e:  # not there, on the network already, ...
            raise ClusterError(f"cannot connect a container to cluster {self.name!r}: {e.explanation}") from None
        log.info("### %s joined the network of cluster %r (aliases: %s)", target.name, self.name, list(aliases))
        return target

    @property
    def nodes(self) -> list[Node]:
        """Every PostgreSQL node of the cluster (running or not), by name (one listing of the project)."""
        return [self._handle(name) for name in sorted(self._project_ids(nodes=True))]

    @property
    def primary(self) -> Node:
        """The node named ``primary`` (after a failover, `pgharness.failover.single_primary` finds the
        writer)."""
        return self.node("primary")

    @property
    def standby(self) -> Node:
        """The node named ``standby``."""
        return self.node("standby")

    def service_container(self, name: str) -> Container:
        """The container of service `name` of a user's override file; `UnknownNode` lists the valid names."""
        found = self._project_containers(nodes=False)
        if name not in found:
            raise UnknownNode(
                f"cluster {self.name!r} has no service {name!r}; its services: {', '.join(sorted(found)) or 'none'}"
                f" (its PostgreSQL nodes: {', '.join(sorted(self._project_ids(nodes=True))) or 'none'})"
            )
        return found[name]

    def service(self, name: str) -> Service:
        """The handle of service `name` of a user's override file (``cluster.service("pgbouncer")``)."""
        self.service_container(name)  # an unknown name is named as such
        return Service(self, name)

    @property
    def services(self) -> list[Service]:
        """The services a user's override files added (not the PostgreSQL nodes), by name."""
        return [Service(self, name) for name in sorted(self._project_containers(nodes=False))]

    # --- nodes added at run time -------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        upstream: Node | str | None = "primary",
        from_backup: str | None = None,
        streaming: bool = True,
        restore: bool = True,
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        disk: str | int | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Node:
        """Start a new standby `name`: from a fresh base backup of `upstream`, or from backup `from_backup`.

        It streams from `upstream` (unless `streaming` is false or there is no
        upstream) and restores from the shared archive (unless `restore` is
        false); its application_name is `name`. Its own `settings` (default:
        the cluster's `node_settings` for `name`) come after the cluster's.
        Once promoted it archives into the shared archive. Its data lives in a
        volume of its own, removed with the cluster; `disk` (``"64MB"``) makes
        it a tmpfs of that size. With `wait` (the default),
        returns once it is ready (streaming, when it streams), within `timeout`
        seconds (default ``PGHARNESS_TIMEOUT``, else 60). Raises `ClusterError`
        for a bad name or a failed start.
        """
        self._check_new_name(name)
        if upstream is None and from_backup is None:
            raise ClusterError("a new node needs an upstream to copy, or a backup to start from")
        if from_backup is not None:
            check_file_name("backup name", from_backup)
        # A name that is no node of this cluster is refused here, with the nodes there are (it would only
        # fail later, as a base backup from a host that does not resolve).
        upstream_name = self.node(upstream).name if upstream is not None else None
        log.info("### Adding node %r (upstream %s, backup %s)", name, upstream_name, from_backup)
        variables = {
            "UPSTREAM_HOST": upstream_name or "",
            "STREAMING": "on" if streaming else "off",
            "FROM_BACKUP": from_backup or "",
            **({} if restore else {"RESTORE_COMMAND": ""}),
            **(env or {}),
        }
        try:
            size = parse_size(disk, "disk") if disk is not None else None
        except ValueError as e:
            raise ClusterError(str(e)) from None
        return self._run_node(name, "standby", variables, settings=settings, wait=wait, timeout=timeout, disk=size)

    def add_primary(
        self,
        name: str,
        *,
        image: str | None = None,
        pg_version: int | str | None = None,
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Node:
        """Start a new, independent primary `name`: freshly initialised (its image's own initdb template),
        on the cluster's network, reached by the other nodes by its name: a logical-replication subscriber,
        the target of an upgrade.

        It runs `image` (default: the cluster's; another PostgreSQL major
        version or image works), or the harness's image of `pg_version` (as
        `Cluster` takes it), with ``wal_level = logical``, and does not
        archive (the shared archive belongs to the cluster's own timeline).
        The superuser and replication role are the cluster's. Its own
        `settings` (default: the cluster's `node_settings` for `name`) come
        after the cluster's. With `wait`, returns once it answers, within
        `timeout` seconds (default ``PGHARNESS_TIMEOUT``, else 60).
        """
        image = chosen_image(image, pg_version)
        self._check_new_name(name)
        log.info("### Adding an independent primary %r (image %s)", name, image or self.image)
        variables = {"PGHARNESS_SETTINGS": FRESH_PRIMARY_SETTINGS, "UPSTREAM_HOST": "", **(env or {})}
        return self._run_node(name, "primary", variables, settings=settings, image=image, wait=wait, timeout=timeout)

    def switch_image(self, image: str, services: Sequence[str], *, timeout: float | None = None) -> None:
        """Run compose services `services` on `image` from now on: their containers are made again on it
        (their data volumes kept), and the cluster's own image becomes `image`; returns once each is ready,
        within `timeout` seconds (default ``PGHARNESS_TIMEOUT``, else 60). For a major upgrade
        (`pgharness.upgrade`), whose data the new major's server reads."""
        unknown = [name for name in services if name not in (self.compose.services or [])]
        if unknown:
            raise ClusterError(f"{', '.join(unknown)}: not a compose service of cluster {self.name!r}")
        log.info("### Running %s on image %s", ", ".join(services), image)
        for name in services:
            # A fixed host port stays the node's (an environment attached by the command line has the
            # defaults in its variables, not the ports it was started with); an ephemeral one stays ephemeral.
            bindings = self.container(name).attrs["HostConfig"].get("PortBindings") or {}
            fixed = [b.get("HostPort") for b in bindings.get(f"{CONTAINER_PORT}/tcp") or [] if b.get("HostPort")]
            if fixed:
                self.compose.variables[variable(name, "PORT")] = str(fixed[0])
        self.image = image
        self.compose.variables["HARNESS_IMAGE"] = image
        recreate = ["up", "--detach", "--no-deps", "--force-recreate", *services]
        self.compose.run_command([*self.compose.command, *recreate])
        for name in services:
            self._node_ids.pop(name, None)
            node = self.node(name)
            node.forget_port()  # a new container publishes its port anew
            try:
                node.wait_ready(timeout=timeout)
            except ClusterError as e:  # it exited: its log says why (data of another major, say)
                raise ClusterError(f"{e}\n{log_tails((node,))}") from None

    def _check_new_name(self, name: str) -> None:
        if not NODE_NAME.fullmatch(name):
            raise ClusterError(f"node name {name!r}: use lower-case letters, digits and '-' (at most 31)")
        if name in self._project_ids(nodes=True):
            raise ClusterError(f"cluster {self.name!r} has a node {name!r} already")
        held = self._strangers_names().get(name)
        if held is not None:
            raise ClusterError(
                f"node name {name!r}: container {held!r}, not the cluster's, answers to it on the cluster's"
                " network (an alias of connect_container, say): choose another name"
            )

    def _strangers_names(self) -> dict[str, str]:
        """The names the containers on the cluster's network that are not the project's answer to (their
        container names and aliases), each with the container's name (`compose.network_strangers`). A node
        given one of them would share it, and the engine's DNS would send some of the node's connections to
        that container."""
        try:
            network = self._client.networks.get(self.network_name)
        except docker.errors.NotFound:
            return {}
        names: dict[str, str] = {}
        for container in network_strangers(self._client, network, self.name):
            endpoint = (container.attrs["NetworkSettings"]["Networks"] or {}).get(self.network_name) or {}
            for alias in (container.name, *(endpoint.get("Aliases") or []), *(endpoint.get("DNSNames") or [])):
                names[alias] = str(container.name)
        return names

    def _in_memory(self, name: str) -> dict[str, Any]:
        """The volume options that put node `name`'s data in memory when the cluster's storage is "tmpfs":
        a folder of the run-time tmpfs that the storage keeper holds, bound as the node's own volume. On a
        disk, a base backup's thousand new files cost more than their bytes, and much more on a file system
        without a journal where many were just deleted (ext4 then skips every inode freed in the last
        minute or more, one inode-table read each: this machine's disk)."""
        if self.storage != "tmpfs":
            return {}
        # `name` is a node name (NODE_NAME): a plain folder name.
        self.in_keeper(
            ["mkdir", "-m", "1777", f"{KEEPER_MOUNTS}/{RUN_TIME_DATA}/{name}"], f"no folder for node {name!r}"
        )
        held = self._client.volumes.get(resource_name(self.name, RUN_TIME_DATA))
        device = f"{held.attrs['Mountpoint']}/{name}"
        return {"driver": "local", "driver_opts": {"type": "none", "o": "bind", "device": device}}

    def in_keeper(self, argv: list[str], failure: str) -> None:
        """Run `argv` in the storage keeper (storage "tmpfs"); `ClusterError` starting with `failure` if it fails."""
        keeper: dict[str, Any] = {"label": [f"{PROJECT_LABEL}={self.name}", f"{SERVICE_LABEL}={STORAGE_SERVICE}"]}
        found = self._client.containers.list(filters=keeper, sparse=True)
        if not found:
            raise ClusterError(f"{failure}: cluster {self.name!r} has no {STORAGE_SERVICE}")
        done = found[0].exec_run(argv)
        if done.exit_code != 0:
            assert isinstance(done.output, bytes)
            raise ClusterError(f"{failure}: {done.output.decode(errors='replace').strip()}")

    def remove_node(self, name: str) -> None:
        """Remove node `name`, one added at run time (`add_node`, `add_primary`, a restore): its container,
        killed, and its data. The name is free again afterwards.

        The compose services (primary, standby, ...) are the cluster's topology: `ClusterError`; an unknown
        name is `UnknownNode`. What the node archived stays in the archive.
        """
        listed = self.docker.containers.list(
            all=True, filters={"label": [f"{PROJECT_LABEL}={self.name}", f"{NODE_LABEL}={name}"]}, sparse=True
        )
        if not listed:
            if name in self._project_ids(nodes=True):
                raise ClusterError(f"node {name!r} is a service of compose.yaml, not a node added at run time")
            raise UnknownNode(self._unknown(name))
        log.info("### Removing node %r", name)
        for container in listed:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        self._nodes.pop(name, None)
        self._node_ids.pop(name, None)
        with contextlib.suppress(docker.errors.NotFound):
            self._client.volumes.get(resource_name(self.name, data_resource(name))).remove(force=True)
        if self.storage == "tmpfs":
            self.in_keeper(
                ["rm", "-rf", f"{KEEPER_MOUNTS}/{RUN_TIME_DATA}/{name}"], f"node {name!r}'s data stays in memory"
            )

    def _run_node(
        self,
        name: str,
        role: str,
        variables: Mapping[str, str],
        *,
        settings: Settings | None,
        image: str | None = None,
        wait: bool,
        timeout: float | None,
        disk: int | None = None,
    ) -> Node:
        """One more node `name` in `role` (primary, standby): a one-off container of compose.yaml's ``node``
        service, with a labelled data volume of its own, reached on the replication network by its name."""
        self.nodes_run += 1
        volume = resource_name(self.name, data_resource(name))
        where = {"driver": "local", "driver_opts": limited_tmpfs(disk)} if disk else self._in_memory(name)
        self._client.volumes.create(volume, labels={**self.labels(), NODE_LABEL: name}, **where)
        own_settings = settings_lines(settings) if settings is not None else self.node_settings.get(name, "")
        environment = {
            "NODE_NAME": name,
            "PGHARNESS_NODE_SETTINGS": own_settings,
            **variables,
        }
        options = [
            "--detach",
            # Other nodes reach it by its node name (compose.yaml's NODE_ALIAS), as they reach compose's services.
            "--use-aliases",
            "--name", f"{self.name}-{name}",
            "--label", f"{NODE_LABEL}={name}",
            "--volume", f"{volume}:{DATA_MOUNT}",
            "--publish", f"{self.engine.bind}::{CONTAINER_PORT}",
        ]  # fmt: skip
        for key, value in environment.items():
            options += ["--env", f"{key}={value}"]
        compose_variables = {"NODE_ALIAS": name, **({"HARNESS_IMAGE": image} if image else {})}
        self.compose.run("node", role, options=options, variables=compose_variables)
        node = self.node(name)
        if wait:
            node.wait_ready(timeout=timeout)
        return node


class WrapsContainer(Protocol):
    """What `Cluster.connect_container` takes of a testcontainers container: the Docker SDK container it wraps."""

    def get_wrapped_container(self) -> Container: ...


__all__ = ["TOPOLOGIES", "Cluster", "WrapsContainer"]
