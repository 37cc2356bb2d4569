"""Clusters and nodes: one compose project, one `Node` per compose service.

A `Cluster` owns one compose project on `compose.yaml` (a unique project name,
every resource labelled) and removes it in `destroy()`, which also runs when
start-up fails halfway. A `Node` is named after its compose service, which is
also its ``application_name`` on the primary: ``cluster.node("standby")``.

    with Cluster(image="pgharness/postgres:17") as cluster:
        cluster.primary.sql("CREATE TABLE hoge (col integer)")
        cluster.primary.wait_for_catchup(cluster.standby)

Host-to-node traffic goes only to ports published on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, LiteralString, Self

import docker
import docker.errors
import psycopg
from docker.models.containers import Container
from psycopg import sql as pgsql
from psycopg.abc import Params

from harness import registry
from harness.compose import (
    ENGINE_TIMEOUT_ERRORS,
    MANAGED_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    ComposeProject,
    check_compose_v2,
    docker_client,
)
from harness.environments import OWNER_HOST_LABEL, OWNER_LABEL, OWNER_STARTED_LABEL, owner_labels
from harness.errors import ClusterError, HarnessError, PortInUse, QueryTimeout, UnknownEnvironment, UnknownNode
from harness.lsn import Lsn, previous_walfile
from harness.quoting import check_file_name, check_secret, conninfo, settings_lines, uri_component
from harness.recovery import Lag, RecoveryTarget, TargetAction
from harness.session import Query, Session, bounded, open_connection
from harness.tls import TlsFiles
from harness.versions import major_from_version_num
from harness.wait import Deadline, failure_lines, log_tails, poll_until, resolve_timeout

if TYPE_CHECKING:
    from harness.archive import Archive

log = logging.getLogger("harness")

#: Where nodes are reached from the host: published ports on loopback only.
HOST = "127.0.0.1"
#: Size of the header that starts every WAL segment (SizeOfXLogLongPHD).
LONG_PAGE_HEADER_SIZE = 40
#: Where each node's data volume is mounted (PGDATA is its data/ folder).
DATA_MOUNT = "/var/lib/pgharness"
#: The port PostgreSQL listens on inside every node.
CONTAINER_PORT = 5432

LsnMode = Literal["insert", "write", "flush", "receive", "replay"]
StopMode = Literal["smart", "fast", "immediate"]

#: Label naming a node added at run time (a one-off container of the `node` service).
NODE_LABEL = "org.pgharness.node"
ONEOFF_LABEL = "com.docker.compose.oneoff"
#: Label marking a PostgreSQL node's container (compose.yaml's x-node), as opposed to a user's service.
KIND_LABEL = "org.pgharness.kind"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"

#: Named topologies: the compose services a cluster starts.
TOPOLOGIES: dict[str, tuple[str, ...]] = {
    # The seed's pair: a primary and a streaming standby that also restores from the archive.
    "streaming": ("primary", "standby"),
    # Log shipping alone: the standby has restore_command and no primary_conninfo.
    "archive-only": ("primary", "archive-standby"),
    # A standby streaming through a physical replication slot, without the archive.
    "slot": ("primary", "slot-standby"),
}

_LSN_FUNCTIONS: dict[str, str] = {
    "insert": "pg_current_wal_insert_lsn()",
    "write": "pg_current_wal_lsn()",
    "flush": "pg_current_wal_flush_lsn()",
    "receive": "pg_last_wal_receive_lsn()",
    "replay": "pg_last_wal_replay_lsn()",
}
_STOP_SIGNALS: dict[str, str] = {"smart": "SIGTERM", "fast": "SIGINT", "immediate": "SIGQUIT"}
#: Where a node's WAL is now: its write position (a primary) or its replay position (a standby).
_POSITION_QUERY = "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END"


def _owner_variables(labels: Mapping[str, str]) -> dict[str, str]:
    """compose.yaml's owner variables from owner labels (`harness.environments.owner_labels`)."""
    return {
        "PGHARNESS_OWNER": labels.get(OWNER_LABEL, ""),
        "PGHARNESS_OWNER_HOST": labels.get(OWNER_HOST_LABEL, ""),
        "PGHARNESS_OWNER_STARTED": labels.get(OWNER_STARTED_LABEL, ""),
    }


def _log_time(stamp: str) -> tuple[str, int]:
    """A Docker log timestamp (RFC 3339, nanoseconds, trailing zeros trimmed) as a comparable pair."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return whole, int(fraction.ljust(9, "0")[:9] or 0)


def dt_seconds(stamp: str) -> float:
    """The Unix time of a Docker log timestamp, to the second."""
    whole = stamp.rstrip("Z").partition(".")[0]
    return dt.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp()


def read_sql(init_sql: str | Path) -> str:
    """The SQL text of `init_sql`: a path to a .sql file, or the SQL itself."""
    if isinstance(init_sql, Path) or (init_sql.endswith(".sql") and "\n" not in init_sql):
        path = Path(init_sql)
        if not path.is_file():
            raise ClusterError(f"init SQL file {str(path)!r} not found")
        return path.read_text()
    return init_sql


def new_cluster_name(prefix: str = "pgh") -> str:
    """A compose project name unique on this engine: ``pgh-1a2b3c4d``."""
    return f"{prefix}-{secrets.token_hex(4)}"


def port_is_free(port: int) -> bool:
    """Whether `port` on 127.0.0.1 can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


class Service:
    """A container of a cluster's compose project: a node, or a service a user's override file adds.

    ``cluster.service("pgbouncer")`` is the handle of an added service:
    its container, its published ports, its log, commands inside it.
    """

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, cluster={self.cluster.name!r})"

    @property
    def container(self) -> Container:
        """The container (Docker SDK), looked up by its compose labels."""
        return self.cluster.service_container(self.name)

    @property
    def host(self) -> str:
        """Where the host reaches the service's published ports."""
        return HOST

    def published_port(self, container_port: int, protocol: str = "tcp") -> int:
        """The host port on 127.0.0.1 that reaches `container_port` of the service."""
        container = self.container
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{container_port}/{protocol}") or []
        for binding in bindings:
            if binding.get("HostIp") == HOST:
                return int(binding["HostPort"])
        raise ClusterError(
            f"{self.name!r} publishes no port for {container_port}/{protocol} on {HOST} "
            f"(status: {container.status}); is it running, and is the port published on {HOST}?"
        )

    def logs(self, tail: int = 200) -> str:
        """The last `tail` lines of the container's log."""
        raw = self.container.logs(tail=tail, stream=False)
        assert isinstance(raw, bytes)
        return raw.decode(errors="replace")

    def exec(self, *argv: str, check: bool = True, user: str = "") -> str:
        """Run a command inside the container; return its output."""
        result = self.container.exec_run(list(argv), user=user, demux=False)
        assert isinstance(result.output, bytes | None)
        output = (result.output or b"").decode(errors="replace")
        if check and result.exit_code != 0:
            raise ClusterError(
                f"{' '.join(argv)!r} failed on {self.name!r} (exit {result.exit_code}): {output.strip()}"
            )
        return output

    def status(self) -> str:
        """The container's state: running, exited, paused, ... (with health when it has one)."""
        container = self.container
        health = container.attrs["State"].get("Health", {}).get("Status")
        return f"{container.status} ({health})" if health else str(container.status)

    def wait_healthy(self, *, timeout: float | None = None) -> None:
        """Wait until the container's healthcheck reports healthy (running, for one without a healthcheck)."""

        def probe() -> str:
            container = self.container
            if container.status in ("exited", "dead"):
                raise ClusterError(f"{self.name!r} exited while starting\n{log_tails((self,))}")
            return str(container.attrs["State"].get("Health", {}).get("Status", container.status))

        poll_until(
            probe,
            lambda state: state in ("healthy", "running"),
            what=f"{self.name!r} to be healthy",
            timeout=timeout,
            nodes=(self,),
        )


def container_env(container: Container) -> dict[str, str]:
    """A container's environment variables (its Config.Env), as a mapping."""
    return dict(item.split("=", 1) for item in container.attrs["Config"].get("Env") or [] if "=" in item)


class Node(Service):
    """One PostgreSQL server: a compose service of a `Cluster`."""

    # --- the container -------------------------------------------------

    @property
    def container(self) -> Container:
        """The node's container (Docker SDK), looked up by its compose labels."""
        return self.cluster.container(self.name)

    @property
    def port(self) -> int:
        """The host port on 127.0.0.1 that reaches this node's PostgreSQL."""
        return self.published_port(CONTAINER_PORT)

    def exec(self, *argv: str, check: bool = True, user: str = "postgres") -> str:
        """Run a command inside the node (as postgres by default); return its output."""
        return super().exec(*argv, check=check, user=user)

    def data_volume(self) -> str:
        """The name of the volume holding this node's data directory (mounted at /var/lib/pgharness)."""
        mounts = [m for m in self.container.attrs.get("Mounts", []) if m.get("Destination") == DATA_MOUNT]
        if len(mounts) != 1 or mounts[0].get("Type") != "volume":
            raise ClusterError(f"node {self.name!r} keeps its data in no single volume at {DATA_MOUNT}")
        return str(mounts[0]["Name"])

    # --- SQL -----------------------------------------------------------

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A libpq connection string for this node from the host (the superuser's password included)."""
        password = self.cluster.password if user == "postgres" else None
        return conninfo(host=HOST, port=self.port, dbname=dbname, user=user, password=password)

    def uri(self, dbname: str = "postgres") -> str:
        """A ``postgresql://`` URI for this node from the host, as the superuser (parts percent-encoded)."""
        user, password = uri_component("postgres"), uri_component(self.cluster.password)
        return f"postgresql://{user}:{password}@{HOST}:{self.port}/{uri_component(dbname)}"

    def connect(self, dbname: str = "postgres", *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new psycopg connection to this node (autocommit unless told otherwise)."""
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("application_name", "pgharness")
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit, **kwargs)

    def sql(
        self, query: Query, params: Params | None = None, *, dbname: str = "postgres", timeout: float | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection, in autocommit; return its rows ([] when it returns none).

        Connecting and running end within `timeout` seconds (default
        ``PGHARNESS_TIMEOUT``, else 60): past that, `QueryTimeout` (a frozen or
        hung node). SQL errors are psycopg's, by SQLSTATE class.
        """
        budget = resolve_timeout(timeout)
        with (
            open_connection(self, budget, dbname) as conn,
            bounded(conn, budget, f"node {self.name!r} to answer {query!r}"),
        ):
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def scalar(
        self, query: Query, params: Params | None = None, *, dbname: str = "postgres", timeout: float | None = None
    ) -> Any:
        """The first column of the first row of `query` (None when there is no row); see `sql`."""
        rows = self.sql(query, params, dbname=dbname, timeout=timeout)
        return rows[0][0] if rows else None

    @property
    def major(self) -> int:
        """The server's major version (from ``server_version_num``)."""
        return major_from_version_num(int(self.scalar("SHOW server_version_num")))

    def is_in_recovery(self) -> bool:
        return bool(self.scalar("SELECT pg_is_in_recovery()"))

    def lsn(self, mode: LsnMode = "write") -> Lsn | None:
        """A WAL position of this node.

        insert/write/flush are the primary's (``pg_current_wal_*_lsn``);
        receive/replay are a standby's (``pg_last_wal_*_lsn``), None when it has
        none yet.
        """
        if mode not in _LSN_FUNCTIONS:
            raise ValueError(f"unknown LSN mode {mode!r}: one of {', '.join(_LSN_FUNCTIONS)}")
        value = self.scalar(pgsql.SQL("SELECT {}").format(pgsql.SQL(_LSN_FUNCTIONS[mode])))
        return None if value is None else Lsn.parse(str(value))

    def timeline(self) -> int:
        """The timeline this node writes (primary) or receives/replays (standby)."""
        tli = self.scalar(
            """
            SELECT CASE WHEN pg_is_in_recovery()
                        THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                                      (SELECT timeline_id FROM pg_control_checkpoint()))
                        ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
                   END
            """
        )
        return int(tli)

    def session(self, *, deadline: Deadline | None = None, query_timeout: float | None = None) -> Session:
        """One connection for many short queries (a wait's probes), made again if it is lost.

        Each query ends by `deadline` and within `query_timeout` seconds (see `Session`).
        """
        return Session(self, deadline=deadline, query_timeout=query_timeout)

    def poll_query_until(self, query: Query, expected: Any = True, *, timeout: float | None = None) -> Any:
        """Run `query` until its single value equals `expected`; return it.

        Probes every 10 ms for a second, then every 100 ms; raises `WaitTimeout`
        after `timeout` seconds (default ``PGHARNESS_TIMEOUT``, else 60), with the
        last value seen and the node's log tail, even when the node hangs.
        """
        deadline = Deadline(timeout)
        with self.session(deadline=deadline) as session:
            return poll_until(
                lambda: session.scalar(query),
                lambda value: value == expected,
                what=f"{query!r} to return {expected!r} on node {self.name!r}",
                deadline=deadline,
                nodes=(self,),
            )

    def log_position(self) -> str:
        """Where the node's log ends now: the engine's timestamp of its last line ("" for an empty log).

        Pass it to `poll_log_until` as `since` to wait for lines logged after this moment.
        """
        raw = self.container.logs(tail=1, timestamps=True)
        assert isinstance(raw, bytes)
        return raw.decode(errors="replace").split(" ", 1)[0].strip()

    def log_since(self, position: str) -> list[str]:
        """The node's log lines logged after `position` (from `log_position`), without their timestamps."""
        after = _log_time(position) if position else None
        since = int(dt_seconds(position)) if position else None
        raw = self.container.logs(timestamps=True, since=since) if since else self.container.logs(timestamps=True)
        assert isinstance(raw, bytes)
        lines = []
        for line in raw.decode(errors="replace").splitlines():
            stamp, _, text = line.partition(" ")
            if after is None or _log_time(stamp) > after:
                lines.append(text)
        return lines

    def poll_log_until(self, *texts: str, since: str | None = None, timeout: float | None = None) -> str:
        """Wait until one of `texts` appears in a line the node logs after `since`; return the one found.

        `since` is a `log_position()`; by default, the position when the call
        begins, so a line logged before it never satisfies the wait. For facts
        only the log states. Wording differs between server versions: pass each
        version's wording. Raises `WaitTimeout` after `timeout` seconds.
        """
        position = self.log_position() if since is None else since

        def probe() -> tuple[str | None, str]:
            lines = self.log_since(position)
            found = next((text for text in texts if any(text in line for line in lines)), None)
            return found, (lines[-1] if lines else "(no new log line)")

        found, _ = poll_until(
            probe,
            lambda result: result[0] is not None,
            what=f"{' or '.join(map(repr, texts))} in a new line of the log of node {self.name!r}",
            timeout=timeout,
            nodes=(self,),
        )
        assert found is not None
        return found

    # --- replication ---------------------------------------------------

    def wait_for_catchup(
        self,
        standby: Node | str,
        mode: Literal["write", "flush", "replay"] = "replay",
        target_lsn: Lsn | None = None,
        *,
        timeout: float | None = None,
    ) -> Lsn:
        """Wait until `standby` has written/flushed/replayed this node's WAL up to `target_lsn`; return
        the position it reached (``>= target_lsn``).

        Called on the upstream (the primary, or a cascading standby); polls
        ``pg_stat_replication.<mode>_lsn`` for the row whose application_name
        is the standby's name. `target_lsn` defaults to this node's current
        write LSN (its replay LSN when it is itself a standby). Raises
        `WaitTimeout` after `timeout` seconds (default ``PGHARNESS_TIMEOUT``,
        else 60), also when this node hangs.
        """
        name = standby.name if isinstance(standby, Node) else standby
        standby_node = self.cluster.node(name)
        if mode not in ("write", "flush", "replay"):
            raise ValueError(f"unknown catch-up mode {mode!r}: write, flush or replay")
        query = pgsql.SQL("SELECT {} FROM pg_stat_replication WHERE application_name = %s").format(
            pgsql.Identifier(f"{mode}_lsn")
        )
        deadline = Deadline(timeout)
        target: list[Lsn] = [target_lsn] if target_lsn is not None else []
        # One connection for the target and every probe: a connection costs more than a replayed commit.
        with self.session(deadline=deadline) as session:

            def probe() -> Lsn | str:
                if not target:
                    target.append(Lsn.parse(str(session.scalar(_POSITION_QUERY))))
                value = session.scalar(query, (name,))
                if value is None:
                    return f"no {mode}_lsn for application_name {name!r} in pg_stat_replication"
                return Lsn.parse(str(value))

            reached = poll_until(
                probe,
                lambda seen: isinstance(seen, Lsn) and seen >= target[0],
                what=f"node {name!r} to {mode} up to {target[0] if target else 'the current position'} "
                f"(pg_stat_replication.{mode}_lsn on {self.name!r})",
                deadline=deadline,
                nodes=(self, standby_node),
            )
        assert isinstance(reached, Lsn)
        return reached

    def set_synchronous(self, standby_names: str, *, commit: str = "on", timeout: float | None = None) -> None:
        """Make commits on this primary wait for standbys: ``synchronous_standby_names`` and ``synchronous_commit``.

        `standby_names` is PostgreSQL's syntax (``'FIRST 1 (standby)'``, ``'ANY 1 (standby, standby2)'``; ``''``
        for none); `commit` is ``on``, ``remote_write``, ``remote_apply``, ``local`` or ``off``. Returns once
        pg_stat_replication shows a synchronous (or quorum) standby, when any is named.
        """
        log.info("### Synchronous replication on %r: %r, synchronous_commit = %s", self.name, standby_names, commit)
        for setting, value in (("synchronous_standby_names", standby_names), ("synchronous_commit", commit)):
            self.sql(pgsql.SQL("ALTER SYSTEM SET {} = {}").format(pgsql.Identifier(setting), pgsql.Literal(value)))
        self.sql("SELECT pg_reload_conf()")
        if standby_names:
            self.poll_query_until(
                "SELECT count(*) > 0 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
                True,
                timeout=timeout,
            )

    def lag(self, standby: Node | str) -> Lag:
        """How far `standby` is behind this node, in bytes and in seconds (see `Lag`)."""
        name = standby.name if isinstance(standby, Node) else standby
        standby_node = self.cluster.node(name)
        row = self.sql(
            """SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
                      extract(epoch FROM write_lag)::float8, extract(epoch FROM flush_lag)::float8,
                      extract(epoch FROM replay_lag)::float8
                 FROM pg_stat_replication WHERE application_name = %s""",
            (name,),
        )
        if row:
            behind, write_lag, flush_lag, replay_lag = row[0]
        else:  # not connected (log shipping, or cut off): compare positions directly
            replayed = standby_node.lsn("replay")
            current = self.lsn("write")
            assert current is not None
            behind, write_lag, flush_lag, replay_lag = (current - replayed if replayed else None), None, None, None
        delay = standby_node.scalar("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8")
        # No replay position (NULL replay_lsn, nothing replayed yet) is unknown, never "0 bytes behind".
        return Lag(name, None if behind is None else int(behind), delay, write_lag, flush_lag, replay_lag)

    def wait_for_lag_below(
        self,
        standby: Node | str,
        *,
        max_bytes: int = 0,
        max_seconds: float | None = None,
        timeout: float | None = None,
    ) -> Lag:
        """Wait until `standby` is at most `max_bytes` (and `max_seconds`) behind; on timeout, report the figures."""

        name = standby.name if isinstance(standby, Node) else standby
        bound = f"{max_bytes} bytes" + (f" and {max_seconds} s" if max_seconds is not None else "")
        return poll_until(
            lambda: self.lag(name),
            lambda lag: lag.within(max_bytes, max_seconds),
            what=f"node {name!r} to lag at most {bound} behind {self.name!r}",
            timeout=timeout,
            nodes=(self, self.cluster.node(name)),
        )

    def table_checksum(self, table: str, *, dbname: str = "postgres") -> str:
        """An md5 of `table`'s rows in a stable order, to compare a table between nodes."""
        query = pgsql.SQL("SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} t").format(
            pgsql.Identifier(*table.split("."))
        )
        return str(self.scalar(query, dbname=dbname))

    def wait_for_replay(self, target_lsn: Lsn, *, timeout: float | None = None) -> Lsn:
        """Wait until this standby has replayed up to `target_lsn` (``pg_last_wal_replay_lsn()``); return
        the position it reached.

        Unlike `wait_for_catchup`, this asks the standby itself, so it serves
        standbys without a streaming connection (log shipping alone).
        """
        deadline = Deadline(timeout)
        with self.session(deadline=deadline) as session:

            def probe() -> Lsn | None:
                value = session.scalar("SELECT pg_last_wal_replay_lsn()")
                return None if value is None else Lsn.parse(str(value))

            reached = poll_until(
                probe,
                lambda seen: seen is not None and seen >= target_lsn,
                what=f"node {self.name!r} to replay up to {target_lsn} (pg_last_wal_replay_lsn())",
                deadline=deadline,
                nodes=(self,),
            )
        assert reached is not None
        return reached

    def pause_replay(self) -> None:
        """Pause WAL replay on this standby (``pg_wal_replay_pause()``); return once it is paused."""
        log.info("### Pausing replay on node %r", self.name)
        self.sql("SELECT pg_wal_replay_pause()")
        self.poll_query_until("SELECT pg_is_wal_replay_paused()", True)

    def resume_replay(self) -> None:
        """Resume WAL replay on this standby (``pg_wal_replay_resume()``)."""
        log.info("### Resuming replay on node %r", self.name)
        self.sql("SELECT pg_wal_replay_resume()")

    def wait_for_archived(self, walfile: str, *, timeout: float | None = None) -> None:
        """Wait until this node's archiver has archived `walfile`.

        Archived means: no ``.ready`` file waits for it in archive_status, and
        either its ``.done`` is there or ``pg_stat_archiver.last_archived_wal``
        has reached it.
        """
        query = """
            SELECT coalesce(last_archived_wal, '(none)')
                   || CASE WHEN EXISTS (SELECT FROM pg_ls_archive_statusdir() WHERE name = %(f)s || '.ready')
                           THEN ' (' || %(f)s || '.ready pending)' ELSE '' END,
                   NOT EXISTS (SELECT FROM pg_ls_archive_statusdir() WHERE name = %(f)s || '.ready')
                   AND (EXISTS (SELECT FROM pg_ls_archive_statusdir() WHERE name = %(f)s || '.done')
                        OR left(last_archived_wal, 24) >= %(f)s),
                   failed_count, last_failed_wal
              FROM pg_stat_archiver
        """

        def probe() -> tuple[Any, ...]:
            return self.sql(query, {"f": walfile})[0]

        poll_until(
            probe,
            lambda row: bool(row[1]),
            what=f"{walfile} to be archived by node {self.name!r} (pg_stat_archiver, archive_status)",
            timeout=timeout,
            nodes=(self,),
        )

    def switch_wal(self) -> str:
        """Close the current WAL segment (``pg_switch_wal()``); return the name of the last completed file.

        With no WAL written since the previous switch, nothing is closed and the
        previous segment is returned: ``pg_switch_wal()`` then answers the
        position just after the page header of the new, empty segment.
        """
        name, offset, segment_size = self.sql(
            """SELECT file_name, file_offset, (SELECT setting::int FROM pg_settings WHERE name = 'wal_segment_size')
                 FROM pg_walfile_name_offset(pg_switch_wal())"""
        )[0]
        if offset <= LONG_PAGE_HEADER_SIZE:
            return previous_walfile(name, segment_size)
        return str(name)

    def list_archive(self, path: str = "/archive") -> list[str]:
        """The files in the shared WAL archive, as this node's own mount of it shows them."""
        return sorted(self.exec("ls", "-1", path).split())

    def promote(self, *, timeout: float | None = None) -> None:
        """Promote this standby (``pg_promote(wait => true)``); return once it accepts writes.

        Raises `ClusterError` when promotion does not finish within `timeout`
        seconds (default ``PGHARNESS_TIMEOUT``, else 60).
        """
        log.info("### Promoting node %r", self.name)
        timeout = resolve_timeout(timeout)
        seconds = max(1, math.ceil(timeout))
        if not self.scalar("SELECT pg_promote(true, %s)", (seconds,), timeout=seconds + 10):
            raise ClusterError(f"node {self.name!r} did not finish promotion within {timeout} s\n{log_tails((self,))}")

    # --- process control -------------------------------------------------

    def stop(self, mode: StopMode = "fast", *, timeout: float | None = None) -> None:
        """Shut PostgreSQL down (smart / fast / immediate) and wait until the container exits.

        Raises `ClusterError` when it has not exited within `timeout` seconds
        (default ``PGHARNESS_TIMEOUT``, else 60).
        """
        log.info("### Stopping node %r (%s)", self.name, mode)
        timeout = resolve_timeout(timeout)
        container = self.container
        container.kill(signal=_STOP_SIGNALS[mode])
        try:
            container.wait(timeout=timeout)
        except ENGINE_TIMEOUT_ERRORS as e:  # the container did not exit in time
            raise ClusterError(
                f"node {self.name!r} did not stop ({mode}) within {timeout} s: {e}\n{log_tails((self,))}"
            ) from None

    def pause(self) -> None:
        """Freeze the node's container (docker pause): a hung server whose TCP connections stay open."""
        log.info("### Pausing node %r", self.name)
        self.container.pause()

    def unpause(self) -> None:
        log.info("### Unpausing node %r", self.name)
        self.container.unpause()

    def is_responsive(self, *, timeout: float = 2.0) -> bool:
        """Whether the node answers ``SELECT 1`` within `timeout` seconds (a hung node does not)."""
        try:
            self.sql("SELECT 1", timeout=timeout)
        except (psycopg.OperationalError, ClusterError, QueryTimeout):
            return False
        return True

    def kill(self, *, timeout: float | None = None) -> None:
        """SIGKILL the node's container: a crash, no shutdown checkpoint; return once it has exited.

        Raises `ClusterError` when it has not exited within `timeout` seconds
        (default ``PGHARNESS_TIMEOUT``, else 60).
        """
        log.info("### Killing node %r", self.name)
        timeout = resolve_timeout(timeout)
        container = self.container
        container.kill()
        try:
            container.wait(timeout=timeout)
        except ENGINE_TIMEOUT_ERRORS as e:
            raise ClusterError(f"node {self.name!r} did not exit within {timeout} s of SIGKILL: {e}") from None

    def start(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start the node's container again; wait until its healthcheck passes."""
        log.info("### Starting node %r", self.name)
        self.container.start()
        if wait:
            self.wait_healthy(timeout=timeout)

    def restart(self, mode: StopMode = "fast", *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop and start the node; with `wait`, return once its healthcheck passes (each within `timeout`)."""
        self.stop(mode, timeout=timeout)
        self.start(wait=wait, timeout=timeout)

    def wait_ready(self, *, timeout: float | None = None) -> None:
        """Wait until the node is what its healthcheck calls healthy, asking it over SQL (see `_readiness`)."""
        deadline = Deadline(timeout)
        with self.session(deadline=deadline) as session:
            poll_until(
                lambda: _readiness(self, session),
                lambda state: state == "ready",
                what=f"node {self.name!r} to be ready (answering; streaming when it has an upstream)",
                deadline=deadline,
                nodes=(self,),
            )


def _readiness(node: Node, session: Session) -> str:
    """``ready`` when `node` is what its healthcheck calls healthy, else what it is now.

    The healthcheck's test, asked over SQL from the host: a node answers; one
    that streams (UPSTREAM_HOST set, STREAMING not off) is streaming, or promoted.
    Polled every 10 ms, it sees readiness sooner than Docker's health status can.
    """
    container = node.container
    if container.status in ("exited", "dead"):
        state = container.attrs["State"]
        raise ClusterError(f"node {node.name!r} exited while starting (exit code {state.get('ExitCode')})")
    env = container_env(container)
    streams = bool(env.get("UPSTREAM_HOST")) and env.get("STREAMING", "on") != "off"
    if container.attrs["Config"].get("Cmd", [""])[:1] == ["primary"] or not streams:
        return "ready" if session.scalar("SELECT 1") == 1 else "not answering"
    streaming = session.scalar(
        "SELECT NOT pg_is_in_recovery() OR EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')"
    )
    return "ready" if streaming else "answering, not streaming yet"


class Cluster:
    """One compose project: a primary, its standbys and the shared WAL archive.

    `topology` names the services to start (see `TOPOLOGIES`; `services`
    lists them instead); `standbys` sets how many streaming standbys the
    ``streaming`` topology has (``standby``, then ``standby2``, ...).
    `ports` maps service names to fixed host ports; services not named there
    (the default) get ephemeral ports, so clusters live side by side. `env`
    sets more of compose.yaml's variables (``PG_FSYNC``, ``BASEBACKUP_TIMEOUT``,
    ``STANDBY_UPSTREAM``, ...). `start()`
    brings the project up and waits for the healthchecks; `destroy()` removes
    its containers, volumes and network, and runs also when start-up fails.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        image: str,
        ports: Mapping[str, int] | None = None,
        password: str | None = None,
        replication_user: str | None = None,
        replication_password: str | None = None,
        owner: str | None = None,
        topology: str = "streaming",
        standbys: int = 1,
        services: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        compose_files: Sequence[str | Path] = (),
        settings: Mapping[str, object] | Sequence[str] | str | None = None,
        init_sql: str | Path | None = None,
        tls: bool | TlsFiles = False,
        start_timeout: float = 120.0,
        keep: bool = False,
    ) -> None:
        self.name = name or new_cluster_name()
        self.image = image
        self.ports = dict(ports or {})
        # Secrets and the role name go into conninfo strings, postgresql.conf and SQL: any
        # character is fine but NUL and line breaks (harness.quoting).
        self.password = check_secret("POSTGRES_PASSWORD", password or os.environ.get("POSTGRES_PASSWORD") or "postgres")
        self.replication_user = check_secret(
            "REPLICATION_USER", replication_user or os.environ.get("REPLICATION_USER") or "repli"
        )
        self.replication_password = check_secret(
            "REPLICATION_PASSWORD", replication_password or os.environ.get("REPLICATION_PASSWORD") or "repli"
        )
        self.keep = keep
        variables = {
            "HARNESS_IMAGE": image,
            "POSTGRES_PASSWORD": self.password,
            "REPLICATION_USER": self.replication_user,
            "REPLICATION_PASSWORD": self.replication_password,
            **_owner_variables(owner_labels(owner or f"pid-{os.getpid()}")),
            # Empty means "an ephemeral port" in compose.yaml's ${PRIMARY_PORT-5433}.
            "PRIMARY_PORT": "",
            "STANDBY_PORT": "",
        }
        variables.update({f"{service.upper().replace('-', '_')}_PORT": str(p) for service, p in self.ports.items()})
        if settings:
            variables["PGHARNESS_EXTRA_SETTINGS"] = settings_lines(settings)
        if init_sql:
            variables["PGHARNESS_INIT_SQL"] = read_sql(init_sql)
        #: The cluster's TLS files (a CA made at run time), or None.
        self.tls = TlsFiles.make() if tls is True else (tls or None)
        if self.tls:
            variables.update(self.tls.variables())
        variables.update(env or {})
        self.compose_files = [Path(p) for p in compose_files]
        self.compose = ComposeProject.for_cluster(
            self.name, variables, wait_timeout=start_timeout, overrides=self.compose_files
        )
        if not services and topology not in TOPOLOGIES:
            raise ClusterError(f"unknown topology {topology!r}; the topologies: {', '.join(TOPOLOGIES)}")
        if standbys < 0 or (standbys != 1 and topology != "streaming"):
            raise ClusterError(f"standbys={standbys}: a streaming topology has 0 or more standbys")
        self.compose.services = list(services or TOPOLOGIES[topology])
        if standbys == 0:
            self.compose.services = ["primary"]
        #: Services of the override files that start with the nodes (resolved at start).
        self.added_services: list[str] = []
        #: Streaming standbys beyond the first, added once the cluster is up: standby2, standby3, ...
        self.extra_standbys = [f"standby{i}" for i in range(2, standbys + 1)]
        self.owner = variables["PGHARNESS_OWNER"]
        #: The owner labels every container, volume and network of the cluster carries.
        self.owner_labels = owner_labels(self.owner)
        self._client = docker_client()
        self._nodes: dict[str, Node] = {}

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, image={self.image!r})"

    @classmethod
    def attach(cls, name: str) -> Cluster:
        """The existing environment `name` (from `harness up`, `make up` or a kept test), to operate on."""
        client = docker_client()
        found = client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={name}"})
        if not found:
            managed = client.containers.list(all=True, filters={"label": f"{MANAGED_LABEL}=true"})
            names = sorted({c.labels.get(PROJECT_LABEL, "?") for c in managed})
            raise UnknownEnvironment(
                f"no environment named {name!r} on this engine; environments: {', '.join(names) or 'none'}"
            )
        first = next((c for c in found if c.labels.get(SERVICE_LABEL) == "primary"), found[0])
        env = container_env(first)
        # The files it was made from: compose.yaml, then a user's override files (when they still exist).
        files = [Path(f) for f in first.labels.get(CONFIG_FILES_LABEL, "").split(",") if f]
        overrides = [f for f in files[1:] if f.is_file()]
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
            # What nodes added later (rebuild, restore, add_node) need to match the others.
            settings=env.get("PGHARNESS_EXTRA_SETTINGS") or None,
            tls=tls if tls.ca and tls.cert and tls.key else False,
        )
        # Its owner is whoever made it, not this process: keep the labels as they are.
        cluster.owner_labels = {k: v for k, v in first.labels.items() if k.startswith(OWNER_LABEL)}
        cluster.compose.variables.update(_owner_variables(cluster.owner_labels))
        return cluster

    @property
    def archive(self) -> Archive:
        """The shared WAL archive: listing, waits, faults."""
        from harness.archive import Archive

        return Archive(self)

    @property
    def docker(self) -> docker.DockerClient:
        """The Docker SDK client that drives this cluster's containers."""
        return self._client

    # --- lifecycle -------------------------------------------------------

    def preflight(self) -> None:
        """Check what start-up needs before anything is created: Compose v2, free host ports."""
        check_compose_v2()
        # A port held by this project's own containers is not in use by someone else.
        own = self.containers()
        for service, port in self.ports.items():
            if service not in own and not port_is_free(port):
                raise PortInUse(
                    f"port {port} on {HOST} (for {service}) is already in use: stop what holds it "
                    f"(another environment? `make down`) or choose another with {service.upper()}_PORT=..."
                )

    def start(self) -> Self:
        """Bring the project up (``compose up --detach``, then `wait_ready`); on any failure, remove it and raise."""
        self.preflight()
        log.info("### Starting cluster %r (image %s)", self.name, self.image)
        registry.register(self)
        try:
            if self.compose_files:
                self.added_services = self.compose.added_services()
                self.compose.services = [*(self.compose.services or []), *self.added_services]
            self.compose.start(wait=False)
            self.wait_ready(self.compose.wait_timeout)
            for name in self.extra_standbys:
                self.add_node(name)
        except BaseException as e:
            evidence = self.describe_failure() if isinstance(e, HarnessError) else ""
            reason = self.failure_reason() if isinstance(e, HarnessError) else ""
            self.destroy()
            if isinstance(e, HarnessError):
                first = f"{reason}\n{e}" if reason else str(e)
                raise ClusterError(f"cluster {self.name!r} did not start: {first}\n{evidence}".rstrip()) from None
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Wait for every started service: nodes asked over SQL (`Node.wait_ready`), a user's services by
        their healthchecks (or running, without one)."""
        nodes = [self.node(s) for s in self.compose.services or [] if s not in self.added_services]
        deadline = time.monotonic() + timeout
        for node in nodes:
            node.wait_ready(timeout=max(0.0, deadline - time.monotonic()))
        for name in self.added_services:
            self.service(name).wait_healthy(timeout=max(0.0, deadline - time.monotonic()))

    def destroy(self) -> None:
        """Remove the project's containers, volumes and network (nothing else).

        SIGINT and SIGTERM wait until it is done (see `harness.registry.shielded`);
        the cluster leaves the live registry only once everything is removed, so
        a failed removal is tried again at exit.
        """
        with registry.shielded(f"removing cluster {self.name!r}"):
            log.info("### Removing cluster %r", self.name)
            self.compose.down()
            # Data volumes of nodes added at run time are the harness's, not compose's.
            for volume in self._client.volumes.list(filters={"label": f"{PROJECT_LABEL}={self.name}"}):
                volume.remove(force=True)
            registry.unregister(self)

    def release(self) -> None:
        """Leave the cluster running after this process exits (`harness up`)."""
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

    def labels(self) -> dict[str, str]:
        """The labels of everything the cluster owns: managed, its compose project, its owner."""
        return {PROJECT_LABEL: self.name, MANAGED_LABEL: "true", **self.owner_labels}

    @property
    def down_command(self) -> str:
        return f"harness down --name {self.name}"

    # --- nodes -------------------------------------------------------------

    def _project_containers(self, *, nodes: bool) -> dict[str, Container]:
        found = self.docker.containers.list(all=True, filters={"label": [f"{PROJECT_LABEL}={self.name}"]})
        named = {}
        for c in found:
            if (c.labels.get(KIND_LABEL) == "postgres") != nodes:
                continue
            oneoff = c.labels.get(ONEOFF_LABEL) == "True"
            name = c.labels.get(NODE_LABEL) or (None if oneoff else c.labels[SERVICE_LABEL])
            if name:  # not a transient one-off (a backup being taken)
                named[name] = c
        return named

    def containers(self) -> dict[str, Container]:
        """The project's PostgreSQL nodes' containers (running or not), by node name."""
        return self._project_containers(nodes=True)

    def services(self) -> dict[str, Service]:
        """The project's other services (added by a user's compose override files), by service name."""
        return {name: Service(self, name) for name in sorted(self._project_containers(nodes=False))}

    def service(self, name: str) -> Service:
        """The handle of service `name` of a user's override file (``cluster.service("pgbouncer")``)."""
        self.service_container(name)  # an unknown name is named as such
        return Service(self, name)

    def service_container(self, name: str) -> Container:
        found = self._project_containers(nodes=False)
        if name not in found:
            raise UnknownNode(
                f"cluster {self.name!r} has no service {name!r}; its services: {', '.join(sorted(found)) or 'none'}"
                f" (its PostgreSQL nodes: {', '.join(sorted(self.containers())) or 'none'})"
            )
        return found[name]

    def container(self, service: str) -> Container:
        try:
            return self.containers()[service]
        except KeyError:
            raise UnknownNode(self._unknown(service)) from None

    def _unknown(self, name: str) -> str:
        known = ", ".join(sorted(self.containers())) or "none: is the cluster up?"
        return f"cluster {self.name!r} has no node {name!r}; its nodes: {known}"

    def node(self, name: str) -> Node:
        """The node of service `name`; `UnknownNode` lists the valid names."""
        if name not in self._nodes:
            if name not in self.containers():
                raise UnknownNode(self._unknown(name))
            self._nodes[name] = Node(self, name)
        return self._nodes[name]

    @property
    def nodes(self) -> list[Node]:
        return [self.node(name) for name in sorted(self.containers())]

    @property
    def primary(self) -> Node:
        return self.node("primary")

    @property
    def standby(self) -> Node:
        return self.node("standby")

    # --- nodes added at run time -------------------------------------------------

    def backup(self, name: str, *, source: str = "primary", incremental_from: str | None = None) -> str:
        """Take a base backup of `source` now (pg_basebackup, with a manifest) into the backups volume as `name`.

        With `incremental_from` (PostgreSQL 17+, ``summarize_wal = on``), an
        incremental backup on top of that earlier backup; ``pg_combinebackup``
        makes a full one out of the chain.
        """
        check_file_name("backup name", name)
        if incremental_from is not None:
            check_file_name("backup name", incremental_from)
        log.info("### Taking backup %r of node %r", name, source)
        self.node(source)  # an unknown source is named as such
        extra = [f"--incremental=/backups/{incremental_from}/backup_manifest"] if incremental_from else []
        self.compose.run("node", "backup", name, *extra, options=["--rm", "-e", f"UPSTREAM_HOST={source}"])
        return name

    def backups(self) -> list[str]:
        """The base backups and dumps taken in this cluster, by name."""
        from harness.backup import list_backups

        return list_backups(self)

    def verify_backup(self, name: str) -> str:
        """``pg_verifybackup`` on backup `name`; `BackupError` with its complaint if it fails."""
        from harness.backup import verify_backup

        return verify_backup(self, name)

    def restore(
        self,
        name: str,
        backup: str,
        target: RecoveryTarget,
        *,
        action: TargetAction = "promote",
        inclusive: bool = True,
        timeout: float | None = None,
    ) -> Node:
        """Point-in-time recovery: node `name` from `backup` plus the archive, up to `target` (see harness.backup)."""
        from harness.backup import restore

        return restore(self, name, backup, target, action=action, inclusive=inclusive, timeout=timeout)

    def rebuild(self, name: str) -> Node:
        """Wipe standby `name` and take it again from its upstream, behind the guard rail (see harness.backup)."""
        from harness.backup import rebuild

        return rebuild(self, name)

    def add_node(
        self,
        name: str,
        *,
        upstream: str | None = "primary",
        from_backup: str | None = None,
        streaming: bool = True,
        restore: bool = True,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Node:
        """Start a new standby `name`: from a fresh base backup of `upstream`, or from backup `from_backup`.

        It streams from `upstream` (unless `streaming` is false or there is no
        upstream) and restores from the shared archive (unless `restore` is
        false); its application_name is `name`. Once promoted it archives into
        the shared archive. Its data lives in a volume of its own, removed with
        the cluster.
        """
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
            raise ClusterError(f"node name {name!r}: use lower-case letters, digits and '-'")
        if name in self.containers():
            raise ClusterError(f"cluster {self.name!r} has a node {name!r} already")
        if upstream is None and from_backup is None:
            raise ClusterError("a new node needs an upstream to copy, or a backup to start from")
        if from_backup is not None:
            check_file_name("backup name", from_backup)
        log.info("### Adding node %r (upstream %s, backup %s)", name, upstream, from_backup)
        volume = f"{self.name}_{name}-data"
        labels = {**self.labels(), NODE_LABEL: name}
        self._client.volumes.create(volume, labels=labels)
        variables = {
            "NODE_NAME": name,
            "UPSTREAM_HOST": upstream or "",
            "STREAMING": "on" if streaming else "off",
            "FROM_BACKUP": from_backup or "",
            "AWAIT_ALIAS": name,
            **({} if restore else {"RESTORE_COMMAND": ""}),
            **(env or {}),
        }
        options = [
            "--detach",
            "--name", f"{self.name}-{name}",
            "--label", f"{NODE_LABEL}={name}",
            "--volume", f"{volume}:/var/lib/pgharness",
            "--publish", f"{HOST}::{CONTAINER_PORT}",
        ]  # fmt: skip
        for key, value in variables.items():
            options += ["--env", f"{key}={value}"]
        self.compose.run("node", "standby", options=options)
        node = self.node(name)
        # Other nodes reach it by its node name, as they reach compose's services.
        network = self.docker.networks.get(f"{self.name}_replication")
        network.disconnect(node.container)
        network.connect(node.container, aliases=[name])
        if wait:
            node.wait_ready()
        return node

    # --- evidence ------------------------------------------------------------

    def failure_reason(self) -> str:
        """Why a container stopped, in one line: the last thing its entrypoint said (``pgharness: ...``)
        or the last FATAL of its server; empty when no container says."""
        try:
            containers = {**self.containers(), **{n: s.container for n, s in self.services().items()}}
        except Exception:  # noqa: BLE001 -- evidence gathering must never mask the failure it explains
            return ""
        for name, container in sorted(containers.items()):
            if container.status == "running":
                continue
            lines = container.logs(tail=50).decode(errors="replace").splitlines()
            said = [m.group(1) for line in lines if (m := re.match(r"pgharness: (.*)", line))]
            fatal = [line.split("FATAL:", 1)[1].strip() for line in failure_lines(lines)]
            if said or fatal:
                return f"{name}: {(said or fatal)[-1]}"
        return ""

    def describe_failure(self) -> str:
        """Container states and the recent log of every node, for an error message."""
        try:
            nodes = [Node(self, name) for name in sorted(self.containers())]
            services = list(self.services().values())
            states = ", ".join(f"{n.name}: {n.status()}" for n in [*nodes, *services]) or "no containers"
            return f"nodes: {states}\n{log_tails([*nodes, *services])}"
        except Exception as e:  # noqa: BLE001 -- evidence gathering must never mask the failure it explains
            return f"(could not describe the cluster: {e})"

    def save_evidence(self, directory: Path) -> Path:
        """Write what a failed test leaves behind, as files; return the folder.

        Per node: its log (``NODE.log``) and ``pg_controldata`` output; for the
        cluster: ``status.json`` (container states, pg_stat_replication,
        pg_stat_wal_receiver, pg_stat_archiver, pg_replication_slots per node),
        ``archive.txt`` (the shared archive, .history files included),
        ``compose.yaml`` (the resolved compose configuration) and
        ``summary.txt``. Passwords are masked.
        """
        directory.mkdir(parents=True, exist_ok=True)
        status: dict[str, Any] = {"cluster": self.name, "image": self.image, "nodes": {}}
        summary = [f"cluster {self.name} (image {self.image}); evidence in {directory}"]
        for name, container in sorted(self.containers().items()):
            (directory / f"{name}.log").write_text(self._mask(container.logs().decode(errors="replace")))
            node_status: dict[str, Any] = {"state": container.attrs["State"]}
            line = f"  {name}: {container.status}"
            if container.status == "running":
                node = self.node(name)
                node_status["sql"] = _sql_snapshot(node)
                try:
                    controldata = node.exec("sh", "-c", 'pg_controldata -D "$PGDATA"')
                except ClusterError as e:
                    controldata = str(e)
                (directory / f"{name}.controldata.txt").write_text(controldata)
                recovery = node_status["sql"].get("in_recovery")
                if recovery:
                    line += ", " + ("standby" if recovery[0].get("pg_is_in_recovery") else "primary")
            status["nodes"][name] = node_status
            summary.append(line)
        for name, service in self.services().items():  # a user's added services: their logs and states
            (directory / f"{name}.log").write_text(self._mask(service.logs(tail=1000)))
            status.setdefault("services", {})[name] = {"state": service.container.attrs["State"]}
            summary.append(f"  {name}: {service.status()} (service)")
        (directory / "status.json").write_text(self._mask(json.dumps(status, indent=2, default=str)))
        try:
            listing = "\n".join(self.archive.files())
        except HarnessError as e:
            listing = f"(archive not readable: {e})"
        (directory / "archive.txt").write_text(listing + "\n")
        try:
            config = self.compose.config_text()
        except HarnessError as e:
            config = f"# compose config failed: {e}\n"
        (directory / "compose.yaml").write_text(self._mask(config))
        (directory / "summary.txt").write_text("\n".join(summary) + "\n")
        return directory

    def _mask(self, text: str) -> str:
        """`text` with the cluster's passwords masked (see `mask`)."""
        return mask(text, (self.password, self.replication_password))


#: The documented default passwords: public, and words that appear everywhere ("postgres").
DEFAULT_PASSWORDS = frozenset({"postgres", "repli"})


def mask(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with every password value (``password=...``, ``PASSWORD: ...``) replaced by ********,
    each of `secrets` wherever it appears (but the public defaults, and values under 6 characters),
    and PEM private keys."""
    text = _PASSWORD_RE.sub(r"\1********", text)
    text = _PRIVATE_KEY_RE.sub("(private key masked)", text)
    for secret in secrets:
        if len(secret) >= 6 and secret not in DEFAULT_PASSWORDS:
            text = text.replace(secret, "********")
    return text


_PRIVATE_KEY_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL)
_PASSWORD_RE = re.compile(r"""(password\s*[=:]\s*['"]?)[^\s'"]+""", re.IGNORECASE)
_SNAPSHOT_QUERIES: dict[str, LiteralString] = {
    "in_recovery": "SELECT pg_is_in_recovery()",
    "pg_replication_slots": "SELECT * FROM pg_replication_slots",
    "pg_stat_replication": "SELECT * FROM pg_stat_replication",
    "pg_stat_wal_receiver": "SELECT * FROM pg_stat_wal_receiver",
    "pg_stat_archiver": "SELECT * FROM pg_stat_archiver",
}


def _sql_snapshot(node: Node) -> dict[str, Any]:
    snapshot: dict[str, Any] = {}
    try:
        with node.connect(connect_timeout=3) as conn:
            for key, query in _SNAPSHOT_QUERIES.items():
                cur = conn.execute(query)
                cols = [d.name for d in cur.description or []]
                snapshot[key] = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    except psycopg.Error as e:
        snapshot["error"] = f"{type(e).__name__}: {e}"
    return snapshot


__all__ = ["MANAGED_LABEL", "Cluster", "Node"]
