"""Replication is not backup: base backups, point-in-time restores, logical dumps, and a guard rail.

Reached as ``cluster.backups`` (beside ``cluster.archive``). Everything here
runs PostgreSQL's own tools (pg_basebackup, pg_verifybackup, pg_dump,
pg_restore) inside containers on the cluster's network, with the client tools
of the server's own image unless told otherwise, so the major versions match
(the GitLab.com outage had a pg_dump older than its server). Backups and dumps
live in the cluster's ``backups`` volume and go with it::

    cluster.backups.take("before")
    ...
    restored = cluster.backups.restore("restored", "before", RecoveryTarget.name("before-delete"))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import docker.errors
import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from pgharness.compose import KEEPER_MOUNTS
from pgharness.constants import BACKUPS_PATH, DATA_MOUNT
from pgharness.errors import BackupError, ClusterError, HarnessError, ToolError
from pgharness.quoting import check_file_name, conninfo, settings_lines
from pgharness.recovery import ACTIONS, RecoveryTarget, TargetAction
from pgharness.tools import TOOL_TIMEOUT, last_error_line, resource_name
from pgharness.versions import supports
from pgharness.wait import log_tails, poll_until

if TYPE_CHECKING:
    from pgharness.cluster import Cluster
    from pgharness.node import Node

log = logging.getLogger("pgharness")


class Backups:
    """The base backups and dumps of a cluster, and what is made from them: ``cluster.backups``."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        #: Writes to the backups volume through this handle so far (a base backup, a dump, a user's tool
        #: with the volume mounted): when it has not moved, the volume holds what it held.
        self.runs = 0

    def __repr__(self) -> str:
        return f"Backups(cluster={self.cluster.name!r})"

    # --- base backups -------------------------------------------------------

    def take(self, name: str, *, source: Node | str = "primary", incremental_from: str | None = None) -> str:
        """Take a base backup of `source` now (pg_basebackup, with a manifest) into the backups volume as
        `name`; return `name`.

        With `incremental_from` (PostgreSQL 17+, ``summarize_wal = on``), an
        incremental backup on top of that earlier backup; ``pg_combinebackup``
        makes a full one out of the chain. Names are plain file names
        (`QuotingError` otherwise); `ClusterError` when pg_basebackup fails.
        """
        check_file_name("backup name", name)
        if incremental_from is not None:
            check_file_name("backup name", incremental_from)
        node = self.cluster.node(source)
        log.info("### Taking backup %r of node %r", name, node.name)
        extra = [f"--incremental={BACKUPS_PATH}/{incremental_from}/backup_manifest"] if incremental_from else []
        self.runs += 1
        self.cluster.compose.run(
            "node", "backup", name, *extra, options=["--rm", "-e", f"UPSTREAM_HOST={node.name}"], timeout=TOOL_TIMEOUT
        )
        return name

    def names(self) -> list[str]:
        """The base backups (folders) and dumps (``NAME.dump``) in the backups volume, sorted."""
        return sorted(self._run(["ls", "-1", BACKUPS_PATH], what="listing the backups").split())

    def clear(self) -> None:
        """Remove every base backup and dump from the backups volume."""
        log.info("### Removing every backup of cluster %r", self.cluster.name)
        if self.cluster.storage == "tmpfs":  # the storage keeper holds the volume: no tool container
            keeper_backups = f"{KEEPER_MOUNTS}/backups"
            self.cluster.in_keeper(["find", keeper_backups, "-mindepth", "1", "-delete"], "clearing the backups")
        else:
            self._run(["find", BACKUPS_PATH, "-mindepth", "1", "-delete"], what="clearing the backups")

    def verify(self, name: str) -> str:
        """Check base backup `name` against its manifest with ``pg_verifybackup``; return its report.

        Raises `BackupError` with pg_verifybackup's own complaint when the check fails.
        """
        check_file_name("backup name", name)
        log.info("### Verifying backup %r", name)
        return self._run(["pg_verifybackup", f"{BACKUPS_PATH}/{name}"], what=f"pg_verifybackup of {name!r}")

    def restore(
        self,
        name: str,
        backup: str,
        target: RecoveryTarget,
        *,
        action: TargetAction = "promote",
        inclusive: bool = True,
        archive: bool = False,
        timeout: float | None = None,
    ) -> Node:
        """Point-in-time recovery: a new node `name` from base backup `backup` plus the archive, up to `target`.

        `name` is the node the restore makes (it must not exist yet), `backup`
        a base backup `take` made, and `target` a `RecoveryTarget`:
        ``RecoveryTarget.name("before-delete")`` (a ``pg_create_restore_point``),
        ``.time(datetime)``, ``.xid(740)``, ``.lsn("0/3000060")``, ``.immediate()``,
        or ``RecoveryTarget.parse("name:before-delete")`` as the command line
        takes it, along the server's default timeline (``latest``) or the one
        ``target.on_timeline(1)`` names. The target's WAL must be in the archive: after the restore
        point, ``switch_wal()`` and ``wait_for_archived()`` on the primary.

        The node restores from the cluster's archive but archives nowhere
        (``archive_mode = off``) unless `archive` is true: promoted, it starts a
        new timeline, and its ``.history`` file in the shared archive would lead
        every standby that follows ``recovery_target_timeline = 'latest'`` onto
        that timeline at its next restart, where it cannot follow ("requested
        timeline 2 does not contain minimum recovery point"). PostgreSQL's own
        tests do the same: ``init_from_backup`` archives only when asked
        (``has_archiving``). With `archive`, it archives into the shared archive
        like any promoted node; ``cluster.archive.remove_timelines_above(1)``
        takes its timeline out again once it is removed.

        Returns the node once recovery has reached the target and done `action`:
        promoted (accepting writes), paused (read-only; ``pg_wal_replay_resume()``
        promotes it) or shut down, within `timeout` seconds (default
        ``PGHARNESS_TIMEOUT``, else 60; `WaitTimeout`). If recovery ends without
        reaching the target (its WAL not archived yet, an unknown restore point),
        raises `BackupError` with PostgreSQL's own message, the target it waited
        for and the last segment the archive held; the node is left stopped for
        inspection.
        """
        if action not in ACTIONS:
            raise BackupError(f"recovery_target_action {action!r}: one of {', '.join(ACTIONS)}")
        log.info("### Restoring node %r from backup %r to %s (%s)", name, backup, target.env(), action)
        own = self.cluster.node_settings.get(name, "").splitlines()
        no_archiving = [] if archive else ["archive_mode = off"]
        node = self.cluster.add_node(
            name,
            from_backup=backup,
            upstream=None,
            settings=[*own, *no_archiving, *settings_lines(target.settings()).splitlines()],
            env={
                "RECOVERY_TARGET": target.env(),
                "RECOVERY_TARGET_ACTION": action,
                "RECOVERY_TARGET_INCLUSIVE": "on" if inclusive else "off",
            },
            wait=False,
        )

        def state() -> str:
            container = node.container
            if container.status == "exited":
                return "exited"
            try:
                if not node.is_in_recovery():
                    return "promoted"
                if supports("replay_pause_state", node.major):
                    paused = node.scalar("SELECT pg_get_wal_replay_pause_state() = 'paused'")
                else:
                    paused = node.scalar("SELECT pg_is_wal_replay_paused()")
                return "paused" if paused else "recovering"
            except (psycopg.OperationalError, ClusterError):
                # Not answering yet, or it has just exited (then its port is gone too).
                return "exited" if node.container.status == "exited" else "starting"

        wanted = {"promote": "promoted", "pause": "paused", "shutdown": "exited"}[action]
        reached = poll_until(
            state,
            lambda s: s in (wanted, "exited"),
            what=f"node {name!r} to recover to {target.env()} and {action}",
            timeout=timeout,
            nodes=(node,),
        )
        if reached == "exited" and action != "shutdown":
            segments = self.cluster.archive.segments()
            held = f"{len(segments)} segments, the last {segments[-1]}" if segments else "no segment"
            raise BackupError(
                f"restore of {name!r} from {backup!r} to {target.env()} failed: {last_error_line(node.logs(tail=50))} "
                f"(the archive held {held}; a target in WAL not archived yet needs switch_wal() and "
                "wait_for_archived() on the primary first)"
            )
        return node

    def rebuild(self, node: Node | str, *, timeout: float | None = None) -> Node:
        """Wipe standby `node`'s data and make it again with a fresh base backup from its upstream.

        The guard rail against the GitLab.com mistake: refused (`BackupError`)
        unless the node answers, is in recovery, and is not the node its own
        primary_conninfo points at; refused for a node whose data volume cannot
        be told apart. Returns once it is ready again, within `timeout` seconds
        (default ``PGHARNESS_TIMEOUT``, else 60).
        """
        node = self.cluster.node(node)
        name = node.name
        try:
            in_recovery = node.is_in_recovery()
            primary_conninfo = str(node.scalar("SHOW primary_conninfo"))
        except (psycopg.Error, HarnessError) as e:
            raise BackupError(
                f"refusing to rebuild {name!r}: it does not answer ({type(e).__name__}), "
                "so it cannot be shown to be a standby"
            ) from None
        if not in_recovery:
            raise BackupError(
                f"refusing to rebuild {name!r}: it is not in recovery (it is a primary); "
                "wiping it would destroy the only copy of its data"
            )
        upstream = conninfo_to_dict(primary_conninfo).get("host") if primary_conninfo else None
        if not upstream:
            raise BackupError(f"refusing to rebuild {name!r}: it has no primary_conninfo to take a base backup from")
        if upstream in (name, node.container.attrs["Config"].get("Hostname")):
            raise BackupError(f"refusing to rebuild {name!r}: its primary_conninfo points at itself ({upstream})")
        tools = self.cluster.tools
        data = tools.data(node)

        log.info("### Rebuilding node %r from %r (wiping volume %s)", name, upstream, *data)
        node.stop(timeout=timeout)
        tools.run(["rm", "-rf", f"{DATA_MOUNT}/data"], mounts=data, what=f"wiping {name!r}'s data")
        try:
            node.start(timeout=timeout)
        except HarnessError as e:
            raise BackupError(f"{name!r} did not come back after the rebuild: {e}\n{log_tails((node,))}") from None
        return node

    # --- logical dumps -------------------------------------------------------

    def dump(
        self, name: str, *, source: Node | str = "primary", dbname: str = "postgres", image: str | None = None
    ) -> str:
        """``pg_dump -Fc`` database `dbname` of node `source` into /backups/`name`.dump; return that path.

        The dump runs with the client tools of the server's own image unless
        `image` says otherwise. A pg_dump that refuses the server (an older
        major version) raises `BackupError` and leaves no dump behind: an empty
        dump is never taken for a backup. `name` is a plain file name
        (`QuotingError` otherwise); `dbname` may be any database name.
        """
        node = self.cluster.node(source)
        path = f"{BACKUPS_PATH}/{check_file_name('dump name', name)}.dump"
        log.info("### Dumping %s on node %r into %s", dbname, node.name, path)
        # A fixed script: the connection string and the path reach it as arguments, never as its text.
        script = 'pg_dump --dbname="$1" --format=custom --file="$2" || { status=$?; rm -f "$2"; exit "$status"; }'
        argv = ["sh", "-c", script, "pg_dump", conninfo(host=node.name, dbname=dbname), path]
        self.runs += 1
        self._run(argv, image=image, what=f"pg_dump of {dbname!r} on {node.name}")
        return path

    def restore_dump(self, name: str, *, target: Node | str, dbname: str) -> None:
        """``pg_restore`` /backups/`name`.dump into a new database `dbname` on node `target`.

        Raises `BackupError` with pg_restore's own error line when it fails.
        """
        node = self.cluster.node(target)
        path = f"{BACKUPS_PATH}/{check_file_name('dump name', name)}.dump"
        node.sql(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))
        log.info("### Restoring %s into %s on node %r", path, dbname, node.name)
        self._run(
            ["pg_restore", f"--dbname={conninfo(host=node.name, dbname=dbname)}", "--exit-on-error", path],
            what=f"pg_restore of {name!r} into {dbname!r} on {node.name}",
        )

    # --- tools ---------------------------------------------------------------

    def volume(self) -> str:
        """The cluster's backups volume, made (with compose's own labels) when it does not exist yet."""
        name = resource_name(self.cluster.name, "backups")
        try:
            self.cluster.docker.volumes.get(name)
        except docker.errors.NotFound:
            self.cluster.docker.volumes.create(
                name, labels={**self.cluster.labels(), "com.docker.compose.volume": "backups"}
            )
        return name

    def run_tool(
        self,
        argv: list[str],
        *,
        image: str | None = None,
        what: str | None = None,
        volumes: dict[str, str] | None = None,
        timeout: float = TOOL_TIMEOUT,
        user: str = "postgres",
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Run a client tool (an argv list) with the backups volume at /backups, and any `volumes` (name to
        path); return its output: ``cluster.tools.run`` (`env` as there) for tools that work on backups
        (pg_combinebackup, pg_restore --list, pg_receivewal into a folder there). A shared cluster's reset
        clears the backups after it. `ToolError` when it fails.
        """
        self.runs += 1
        mounts = {**self.cluster.tools.backups(), **(volumes or {})}
        tools = self.cluster.tools
        return tools.run(argv, image=image, mounts=mounts, what=what, timeout=timeout, user=user, env=env)

    def _run(self, argv: list[str], *, what: str, image: str | None = None) -> str:
        """One of this module's own tools, with the backups mounted; its failure is a `BackupError`."""
        try:
            return self.cluster.tools.run(argv, image=image, mounts=self.cluster.tools.backups(), what=what)
        except ToolError as e:
            raise BackupError(str(e)) from None


__all__ = ["BackupError", "Backups"]
