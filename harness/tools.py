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
holds everything the tool printed. Base backups and dumps are
``cluster.backups``' business: it runs its tools through here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pgharness.compose import run_container
from pgharness.constants import ARCHIVE_PATH, BACKUPS_PATH, DATA_MOUNT, REPLICATION_NETWORK
from pgharness.errors import ClusterError, ToolError
from pgharness.wait import failure_lines

if TYPE_CHECKING:
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
    ) -> str:
        """Run `argv` in a one-off container on the cluster's network; return its output (stdout and stderr).

        The container uses `image` (default: the cluster's node image), runs
        as `user`, mounts `mounts` (volume name to path; the helpers `data`,
        `archive`, `backups` give them), and is removed afterwards. A non-zero
        exit raises `ToolError` naming `what` (default: the tool) with the
        tool's own error line; so do a tool still running after `timeout`
        seconds and one that could not start.
        """
        cluster = self.cluster
        what = what or argv[0]
        try:
            code, output = run_container(
                cluster.docker,
                image or cluster.image,
                argv,
                timeout=timeout,
                what=what,
                entrypoint=[],
                user=user,
                environment={"PGPASSWORD": cluster.password, "PGUSER": "postgres"},
                network=resource_name(cluster.name, REPLICATION_NETWORK),
                dns=["127.0.0.1"],
                volumes={name: {"bind": path, "mode": "rw"} for name, path in (mounts or {}).items()},
                labels=cluster.labels(),
            )
        except ClusterError as e:
            raise ToolError(str(e)) from None
        if code != 0:
            raise ToolError(f"{what} failed: {last_error_line(output)}", output)
        return output


__all__ = ["TOOL_TIMEOUT", "ToolError", "Tools", "data_resource", "last_error_line", "resource_name"]
