"""One-off containers: a tool (an argv list, never a shell string) run once beside a cluster's nodes.

Reached as ``cluster.tools``. A tool container runs on the cluster's network
(it reaches the nodes by name), with the cluster's node image unless told
otherwise (so client tools match the server's major version), as postgres with
the superuser's password in ``PGPASSWORD``, with the volumes it is given, and
is removed afterwards, also when it could not start. The mounts name the
cluster's resources once (`resource_name`)::

    tools = cluster.tools
    tools.run(["pg_controldata", f"{DATA_MOUNT}/data"], mounts=tools.data(node))
    tools.run(["ls", ARCHIVE_PATH], mounts=tools.archive())

A failure raises `ToolError` with the tool's own error line; its ``output``
holds everything the tool printed. ``tools.start(argv, ...)`` runs a tool in
the background until it is stopped (`BackgroundTool`: an archiver such as
pg_receivewal, a client left streaming). Base backups and dumps are
``cluster.backups``' business: it runs its tools through here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import docker.errors

from pgharness.compose import container_output, finish_container, run_container, start_container
from pgharness.constants import ARCHIVE_PATH, BACKUPS_PATH, DATA_MOUNT
from pgharness.errors import ClusterError, ToolError
from pgharness.wait import failure_lines

if TYPE_CHECKING:
    from docker.models.containers import Container

    from pgharness.cluster import Cluster
    from pgharness.node import Node

log = logging.getLogger("pgharness")

#: Seconds a tool may run (a dump, a rewind, pg_upgrade, a listing) unless the caller says otherwise.
TOOL_TIMEOUT = 600.0


def resource_name(project: str, resource: str) -> str:
    """The engine's name of compose project `project`'s `resource`: a volume (``archive``, ``backups``,
    ``<node>-data``) or the network (``replication``), as compose names them (``<project>_<resource>``)."""
    return f"{project}_{resource}"


def data_resource(node_name: str) -> str:
    """The compose resource of node `node_name`'s data volume (compose.yaml's ``primary-data``, ...)."""
    return f"{node_name}-data"


def last_error_line(output: str) -> str:
    """The line of a tool's output or a server log that says what went wrong."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for marker in ("FATAL:", "error:", "ERROR:", "PANIC:"):
        found = failure_lines(lines, marker)
        if found:
            return found[-1]
    return lines[-1] if lines else "(no output)"


class Tools:
    """One-off containers beside a cluster's nodes: ``cluster.tools``."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def __repr__(self) -> str:
        return f"Tools(cluster={self.cluster.name!r})"

    # --- mounts: volume name -> where the tool sees it ---------------------------

    def data(self, node: Node | str, at: str = DATA_MOUNT) -> dict[str, str]:
        """Node `node`'s data volume, mounted at `at` (default where the node has it: PGDATA is its data/).
        The node should be stopped while a tool writes there."""
        return {self.cluster.node(node).data_volume(): at}

    def archive(self) -> dict[str, str]:
        """The cluster's shared WAL archive, at /archive."""
        return {resource_name(self.cluster.name, "archive"): ARCHIVE_PATH}

    def backups(self) -> dict[str, str]:
        """The cluster's backups volume, at /backups (made, with compose's labels, when it does not exist)."""
        return {self.cluster.backups.volume(): BACKUPS_PATH}

    def replication_env(self) -> dict[str, str]:
        """libpq's variables for the cluster's replication role: for pg_receivewal, pg_basebackup and the
        other tools that open replication connections (pg_hba.conf allows those to that role only)."""
        return {"PGUSER": self.cluster.replication_user, "PGPASSWORD": self.cluster.replication_password}

    # --- running ------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        image: str | None = None,
        mounts: Mapping[str, str] | None = None,
        what: str | None = None,
        timeout: float = TOOL_TIMEOUT,
        user: str = "postgres",
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Run `argv` in a one-off container on the cluster's network; return its output (stdout and stderr).

        The container uses `image` (default: the cluster's node image), runs
        as `user`, mounts `mounts` (volume name to path; the helpers `data`,
        `archive`, `backups` give them), and is removed afterwards. Its
        environment has libpq's ``PGUSER``/``PGPASSWORD`` for the superuser;
        `env` adds to it or replaces them (``tools.replication_env()`` for the
        replication role, which pg_hba.conf lets replicate). A non-zero
        exit raises `ToolError` naming `what` (default: the tool) with the
        tool's own error line; so do a tool still running after `timeout`
        seconds and one that could not start.
        """
        what = what or argv[0]
        create = self._create(mounts=mounts, user=user, env=env)
        try:
            code, output = run_container(self.cluster.docker, image or self.cluster.image, argv, timeout=timeout,
                                         what=what, **create)  # fmt: skip
        except ClusterError as e:
            raise ToolError(str(e)) from None
        return _succeeded(what, code, output)

    def start(
        self,
        argv: list[str],
        *,
        image: str | None = None,
        mounts: Mapping[str, str] | None = None,
        what: str | None = None,
        user: str = "postgres",
        env: Mapping[str, str] | None = None,
    ) -> BackgroundTool:
        """Start `argv` in a one-off container as `run` does, and return at once: a tool that runs until it
        is stopped (an archiver such as ``pg_receivewal``, a client left streaming). Use it as a context
        manager, or call `BackgroundTool.stop`; it carries the cluster's labels, so the cluster's removal
        (and the reaper) take it too. `ToolError` when it cannot start."""
        what = what or argv[0]
        create = self._create(mounts=mounts, user=user, env=env)
        log.info("### Starting %s in the background", what)
        try:
            container = start_container(self.cluster.docker, image or self.cluster.image, argv, **create)
        except docker.errors.APIError as e:
            raise ToolError(f"{what} could not start: {e.explanation or e}") from None
        return BackgroundTool(container, what)

    def _create(self, *, mounts: Mapping[str, str] | None, user: str, env: Mapping[str, str] | None) -> dict[str, Any]:
        """The engine's arguments for a one-off container (``containers.create``) besides its image.

        Every volume in `mounts` must exist: the engine would make a missing one, with no label (nothing
        would ever remove it), as a failed test's evidence did for the archive of a cluster it had removed.
        `ToolError` names it."""
        cluster = self.cluster
        for name in mounts or {}:
            try:
                cluster.docker.volumes.get(name)
            except docker.errors.NotFound:
                raise ToolError(
                    f"volume {name!r} of cluster {cluster.name!r} is gone (was the cluster removed?)"
                ) from None
        return {
            "entrypoint": [],
            "user": user,
            "environment": {"PGPASSWORD": cluster.password, "PGUSER": "postgres", **(env or {})},
            "network": cluster.network_name,
            "dns": ["127.0.0.1"],
            "volumes": {name: {"bind": path, "mode": "rw"} for name, path in (mounts or {}).items()},
            "labels": cluster.labels(),
        }


class BackgroundTool:
    """A tool running in a one-off container (`Tools.start`) until it is stopped."""

    def __init__(self, container: Container, what: str) -> None:
        self.container = container
        self.what = what
        self._finished: tuple[int, str] | None = None

    def __repr__(self) -> str:
        return f"BackgroundTool({self.what!r}, container={self.container.name!r})"

    def __enter__(self) -> BackgroundTool:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.stop(check=kind is None)

    def running(self) -> bool:
        """Whether the tool is still running."""
        if self._finished is not None:
            return False
        self.container.reload()
        return self.container.status == "running"

    def output(self) -> str:
        """What the tool has printed so far (stdout and stderr, in order)."""
        return self._finished[1] if self._finished is not None else container_output(self.container)

    def stop(self, *, signal: str = "SIGINT", timeout: float = 30.0, check: bool = True) -> str:
        """Send `signal` (SIGINT: most PostgreSQL tools finish cleanly on it), wait at most `timeout`
        seconds, remove the container; return the tool's output. With `check`, `ToolError` when it exited
        non-zero (before the signal, or on it) or did not exit in time (it is killed)."""
        if self._finished is None:
            try:
                with contextlib.suppress(docker.errors.APIError):  # it may have exited already
                    self.container.kill(signal=signal)
                try:
                    self._finished = finish_container(self.container, timeout=timeout, what=self.what)
                except ClusterError as e:
                    self._finished = (-1, str(e))
            finally:
                self.container.remove(force=True)
            log.info("### Stopped %s (exit %d)", self.what, self._finished[0])
        code, output = self._finished
        return _succeeded(self.what, code, output) if check else output


def _succeeded(what: str, code: int, output: str) -> str:
    """A tool's `output`, once its exit `code` says it succeeded; else `ToolError` with its error line."""
    if code != 0:
        raise ToolError(f"{what} failed: {last_error_line(output)}", output)
    return output


__all__ = ["TOOL_TIMEOUT", "BackgroundTool", "ToolError", "Tools", "data_resource", "last_error_line", "resource_name"]
