"""One PostgreSQL server: SQL, WAL positions, every wait, promotion, and control of its container.

In the spirit of PostgreSQL's own Cluster.pm: one object per server, named
after its compose service (also its ``application_name`` upstream), with the
waits on it: ``primary.wait_for_catchup(standby)``, ``standby.wait_for_replay(lsn)``,
``node.poll_query_until(...)``. Every statement and every wait ends at a
deadline (``PGHARNESS_TIMEOUT``, else 60 s, read when called), even when the
node hangs.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from docker.models.containers import Container
from psycopg import sql as pgsql
from psycopg.abc import Params

from pgharness import logical, nodeconfig
from pgharness.background import BackgroundSession
from pgharness.compose import ENGINE_TIMEOUT_ERRORS
from pgharness.constants import CONTAINER_PORT, DATA_MOUNT, LONG_PAGE_HEADER_SIZE
from pgharness.errors import ClusterError, QueryTimeout, UnknownNode
from pgharness.logical import Publication, Subscription
from pgharness.lsn import Lsn, previous_walfile
from pgharness.quoting import conninfo, uri_component, uri_host
from pgharness.recovery import Lag
from pgharness.service import Service, container_env
from pgharness.session import Query, Session, bounded, open_connection
from pgharness.versions import major_from_version_num
from pgharness.wait import Deadline, backoff, log_tails, poll_until, resolve_timeout

if TYPE_CHECKING:
    from pgharness.cluster import Cluster

log = logging.getLogger("pgharness")

LsnMode = Literal["insert", "write", "flush", "receive", "replay"]
StopMode = Literal["smart", "fast", "immediate"]

_LSN_FUNCTIONS: dict[str, str] = {
    "insert": "pg_current_wal_insert_lsn()",
    "write": "pg_current_wal_lsn()",
    "flush": "pg_current_wal_flush_lsn()",
    "receive": "pg_last_wal_receive_lsn()",
    "replay": "pg_last_wal_replay_lsn()",
}
_STOP_SIGNALS: dict[str, str] = {"smart": "SIGTERM", "fast": "SIGINT", "immediate": "SIGQUIT"}
#: Where a node's WAL is now: its write position (a primary) or its replay position (a standby).
_POSITION_QUERY = """SELECT pg_is_in_recovery(),
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END"""

#: Flush all WAL written so far: a transaction id taken and committed, synchronous locally only (a synchronous
#: standby that is down must not hold it). WAL that belongs to no transaction (a hint bit's page image) is
#: otherwise written only up to the last whole page, and flushed at the next commit or the background writer's
#: next snapshot record, up to 15 s later.
FLUSH_WAL_SQL = "SELECT set_config('synchronous_commit', 'local', true), pg_current_xact_id()"

#: How long a standby may hold a primary's WAL up to the target without replaying any of it before the primary
#: is asked to write the rest of the record that the target cuts (`_PartialRecord`).
_STALL_BEFORE_NUDGE = 0.5


class _PartialRecord:
    """A primary's write position can end inside a record: the WAL writer writes whole pages, and the rest of a
    record that no commit flushed (a hint bit's page image, say) waits for the next flush, at worst the 15 s
    until the background writer's next snapshot record. A standby replays whole records only, so a wait for
    it to replay up to that position would wait as long. When a standby has held the WAL up to the target
    for `_STALL_BEFORE_NUDGE` seconds without replaying any more of it, the primary is asked once to flush
    (`FLUSH_WAL_SQL`). A server that refuses (read-only, say) is left as it is."""

    def __init__(self, session: Session, *, armed: bool) -> None:
        self.session = session
        self.replayed: Lsn | None = None
        self.since = 0.0
        self.nudged = not armed

    def check(self, target: Lsn, replayed: Lsn, held: Lsn | None) -> None:
        if self.nudged or held is None or not replayed < target <= held:
            self.replayed = None
            return
        if replayed != self.replayed:  # still replaying: not stalled
            self.replayed, self.since = replayed, time.monotonic()
            return
        if time.monotonic() - self.since < _STALL_BEFORE_NUDGE:
            return
        self.nudged = True
        log.debug("a standby holds WAL up to %s, replayed up to %s: nudging the primary", target, replayed)
        try:
            self.session.rows(FLUSH_WAL_SQL)
        except psycopg.Error as e:
            log.debug("the nudge was refused: %s", e)


def _log_time(stamp: str) -> tuple[str, int]:
    """A Docker log timestamp (RFC 3339, nanoseconds, trailing zeros trimmed) as a comparable pair."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return whole, int(fraction.ljust(9, "0")[:9] or 0)


def _log_seconds(stamp: str) -> int:
    """The Unix time of a Docker log timestamp, to the second."""
    whole = stamp.rstrip("Z").partition(".")[0]
    return int(dt.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp())


class Node(Service):
    """One PostgreSQL server: a compose service of a `Cluster`."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        super().__init__(cluster, name)
        #: The published port the last connection reached (`connect`); None: ask the engine.
        self._connect_port: int | None = None

    # --- the container -------------------------------------------------

    @property
    def container(self) -> Container:
        """The node's container (Docker SDK), looked up by its compose labels."""
        return self.cluster.container(self.name)

    @property
    def port(self) -> int:
        """The published port that reaches this node's PostgreSQL (at `host`)."""
        return self.published_port(CONTAINER_PORT)

    def exec(self, *argv: str, check: bool = True, user: str = "postgres", env: Mapping[str, str] | None = None) -> str:
        """Run a command inside the node (as postgres by default); see `Service.exec`."""
        return super().exec(*argv, check=check, user=user, env=env)

    def data_volume(self) -> str:
        """The name of the volume holding this node's data directory (mounted at /var/lib/pgharness)."""
        mounts = [m for m in self.container.attrs.get("Mounts", []) if m.get("Destination") == DATA_MOUNT]
        if len(mounts) != 1 or mounts[0].get("Type") != "volume":
            raise ClusterError(f"node {self.name!r} keeps its data in no single volume at {DATA_MOUNT}")
        return str(mounts[0]["Name"])

    # --- SQL -----------------------------------------------------------

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A libpq connection string for this node from the host (the superuser's password included)."""
        return self._dsn_at(self.port, dbname, user)

    def _dsn_at(self, port: int, dbname: str, user: str = "postgres") -> str:
        password = self.cluster.password if user == "postgres" else None
        return conninfo(host=self.host, port=port, dbname=dbname, user=user, password=password)

    def conninfo(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A libpq connection string for this node as the other nodes see it: its name on the cluster's
        network, port 5432, with the real credentials (the superuser's, or the replication role's), quoted.
        For ``CREATE SUBSCRIPTION ... CONNECTION``, ``primary_conninfo``, dblink."""
        passwords = {
            "postgres": self.cluster.password,
            self.cluster.replication_user: self.cluster.replication_password,
        }
        return conninfo(host=self.name, port=CONTAINER_PORT, dbname=dbname, user=user, password=passwords.get(user))

    def uri(self, dbname: str = "postgres") -> str:
        """A ``postgresql://`` URI for this node from the host, as the superuser (parts percent-encoded)."""
        user, password = uri_component("postgres"), uri_component(self.cluster.password)
        return f"postgresql://{user}:{password}@{uri_host(self.host)}:{self.port}/{uri_component(dbname)}"

    def connect(self, dbname: str = "postgres", *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new psycopg connection to this node (autocommit unless told otherwise).

        The node's published port is asked of the engine once and kept while connections to it succeed:
        a connection that fails asks again, and tries once more when the port has changed (a restart
        publishes a new one). A port a node gave up is not handed to another container meanwhile: the
        engine hands out ephemeral ports in turn and comes back to a freed one only after the whole range
        (some 28,000 starts). The inspection this saves was a fifth of a test process's CPU.
        """
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("application_name", "pgharness")
        kept = self._connect_port
        port = kept if kept is not None else self.port
        try:
            conn = psycopg.connect(self._dsn_at(port, dbname), autocommit=autocommit, **kwargs)
        except psycopg.OperationalError:
            self.forget_port()
            fresh = self.port if kept is not None else port  # a port just asked for is not asked for again
            if fresh == port:
                raise
            port = fresh
            conn = psycopg.connect(self._dsn_at(port, dbname), autocommit=autocommit, **kwargs)
        self._connect_port = port
        return conn

    def forget_port(self) -> None:
        """Ask the engine for the port at the next connection (the node was started again, or removed)."""
        self._connect_port = None

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
        """Whether the node is a standby (``pg_is_in_recovery()``); see `sql` for its deadline."""
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
        """The timeline this node writes (primary) or receives (a streaming standby); for a standby that does
        not stream, the timeline of its last restart point (PostgreSQL shows no replayed timeline)."""
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

    def background_session(
        self, dbname: str = "postgres", *, autocommit: bool = True, statement_timeout: float | None = None
    ) -> BackgroundSession:
        """A connection the test holds open (a transaction, a cursor, a lock, a snapshot), whose statements
        can run in the background and be asked whether they block and how they ended; see
        `pgharness.background`. Use it as a context manager: its end cancels what still runs."""
        return BackgroundSession(self, dbname, autocommit=autocommit, statement_timeout=statement_timeout)

    def session(self, *, deadline: Deadline | None = None, query_timeout: float | None = None) -> Session:
        """One connection for many short queries (a wait's probes), made again if it is lost.

        Each query ends by `deadline` and within `query_timeout` seconds (see `Session`).
        """
        return Session(self, deadline=deadline, query_timeout=query_timeout)

    def poll_query_until(self, query: Query, expected: Any = True, *, timeout: float | None = None) -> Any:
        """Run `query` until its single value equals `expected`; return it.

        Probes as `poll_until` does (every 10 ms at first, at most every 100 ms); raises `WaitTimeout`
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
        # The engine filters to the second; the exact cut is made below, on its nanosecond timestamps.
        raw = self.container.logs(timestamps=True, since=_log_seconds(position) if position else None)
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

    # --- configuration (pgharness.nodeconfig) ---------------------------

    def set_config(
        self,
        settings: Mapping[str, object] | None = None,
        /,
        *,
        apply: bool = True,
        timeout: float | None = None,
        **more: object,
    ) -> Literal["reload", "restart"] | None:
        """Set settings on this node (``ALTER SYSTEM``), then reload, or restart when one of them is read only
        at server start; return which was done. ``node.set_config(work_mem="64MB")``, or a mapping for
        names that are no Python identifiers (``{"auto_explain.log_min_duration": 0}``).

        The server refuses an unknown setting (42704) or a bad value (22023) with psycopg's error for that
        SQLSTATE, before anything changes. Returns within `timeout` seconds (default ``PGHARNESS_TIMEOUT``,
        else 60) once new connections run with the settings; `WaitTimeout` past that. With ``apply=False``
        the settings are written only (None), for a test that restarts the node its own way.
        """
        return nodeconfig.set_config(self, {**(settings or {}), **more}, apply=apply, timeout=timeout)

    def reset_config(self, *names: str, timeout: float | None = None) -> Literal["reload", "restart"]:
        """``ALTER SYSTEM RESET`` each of `names` (every setting ALTER SYSTEM made, when none is named), then
        reload or restart as `set_config` does; return which was done."""
        return nodeconfig.reset_config(self, names, timeout=timeout)

    def reload(self, *, timeout: float | None = None) -> None:
        """Reload the configuration files (``pg_reload_conf()``); return once new connections read them."""
        nodeconfig.reload(self, timeout=timeout)

    def add_hba(self, *fields: str, first: bool = True, timeout: float | None = None) -> str:
        """Add a pg_hba.conf line from its fields, first (it wins over the rest) or last, quoted as the file
        needs; the server must read every line of the file (else `ClusterError` with its words, and the line
        is taken out again); then reload. Returns the line.
        ``node.add_hba("host", "postgres", "repli", "all", "scram-sha-256")``."""
        return nodeconfig.add_hba(self, *fields, first=first, timeout=timeout)

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
        write LSN (its replay LSN when it is itself a standby). A primary
        whose write position ends inside a record, which the standby cannot
        replay until the rest is written, is asked to write it once the
        standby holds that WAL and replays no more (see `_PartialRecord`:
        PostgreSQL itself would leave it for up to 15 s). Raises
        `WaitTimeout` after `timeout` seconds (default ``PGHARNESS_TIMEOUT``,
        else 60), also when this node hangs. `standby` may also be the
        application_name of another client, a logical subscription's say.
        """
        standby_node: Node | None
        try:
            standby_node = self.cluster.node(standby)  # known nodes are cached: no engine call
            name = standby_node.name
        except UnknownNode:
            standby_node, name = None, str(standby)
        if mode not in ("write", "flush", "replay"):
            raise ValueError(f"unknown catch-up mode {mode!r}: write, flush or replay")
        query = pgsql.SQL("SELECT {}, flush_lsn FROM pg_stat_replication WHERE application_name = %s").format(
            pgsql.Identifier(f"{mode}_lsn")
        )
        deadline = Deadline(timeout)
        target: list[Lsn] = [target_lsn] if target_lsn is not None else []
        # One connection for the target and every probe: a connection costs more than a replayed commit.
        with self.session(deadline=deadline) as session:
            partial: _PartialRecord | None = None

            def probe() -> Lsn | str:
                nonlocal partial
                if partial is None:
                    recovering, position = session.row(_POSITION_QUERY) or (True, None)
                    if not target:
                        target.append(Lsn.parse(str(position)))
                    # A standby's target, its replay position, ends a record; a received position is no record's.
                    partial = _PartialRecord(session, armed=mode == "replay" and not recovering)
                value, held = session.row(query, (name,)) or (None, None)
                if value is None:
                    return f"no {mode}_lsn for application_name {name!r} in pg_stat_replication"
                reached = Lsn.parse(str(value))
                partial.check(target[0], reached, None if held is None else Lsn.parse(str(held)))
                return reached

            reached = poll_until(
                probe,
                lambda seen: isinstance(seen, Lsn) and seen >= target[0],
                what=f"node {name!r} to {mode} up to {target[0] if target else 'the current position'} "
                f"(pg_stat_replication.{mode}_lsn on {self.name!r})",
                deadline=deadline,
                nodes=(self, standby_node) if standby_node else (self,),
            )
        assert isinstance(reached, Lsn)
        return reached

    def set_synchronous(self, standby_names: str, *, commit: str = "on", timeout: float | None = None) -> None:
        """Make commits on this primary wait for standbys: ``synchronous_standby_names`` and ``synchronous_commit``.

        `standby_names` is PostgreSQL's syntax (``'FIRST 1 (standby)'``, ``'ANY 1 (standby, standby2)'``; ``''``
        for none); `commit` is ``on``, ``remote_write``, ``remote_apply``, ``local`` or ``off``. Returns once
        pg_stat_replication shows a synchronous (or quorum) standby, when any is named, and once commits
        on connections opened from then on follow the new settings; all within `timeout` seconds (default
        ``PGHARNESS_TIMEOUT``, else 60).

        Whether a commit waits at all is the checkpointer's to say (it publishes "standbys are named" to
        the other processes when it reloads its configuration), and pg_stat_replication can show a
        synchronous standby before it has: a commit then returns without waiting. So a ``CHECKPOINT``
        follows, on a connection of its own: the postmaster forwards the reload to the checkpointer before
        it accepts that connection, and the checkpointer reloads before it starts the checkpoint.
        """
        log.info("### Synchronous replication on %r: %r, synchronous_commit = %s", self.name, standby_names, commit)
        deadline = Deadline(timeout)
        self.set_config(synchronous_standby_names=standby_names, synchronous_commit=commit, timeout=deadline.remaining)
        if standby_names:
            self.poll_query_until(
                "SELECT count(*) > 0 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
                True,
                timeout=deadline.remaining,
            )
        self.sql("CHECKPOINT", timeout=deadline.remaining)

    def lag(self, standby: Node | str) -> Lag:
        """How far `standby` is behind this node, in bytes and in seconds (see `Lag`)."""
        standby_node = self.cluster.node(standby)
        name = standby_node.name
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

        name = self.cluster.node(standby).name
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

    # --- logical replication (pgharness.logical) -----------------------

    def publish(self, name: str, **kwargs: Any) -> Publication:
        """``CREATE PUBLICATION`` on this node; see `pgharness.logical.publish` for the arguments."""
        return logical.publish(self, name, **kwargs)

    def subscribe(self, publication: Publication, name: str, **kwargs: Any) -> Subscription:
        """``CREATE SUBSCRIPTION`` on this node to `publication`; see `pgharness.logical.subscribe`."""
        return logical.subscribe(self, publication, name, **kwargs)

    def wait_for_slot_catchup(
        self, slot: str, position: logical.SlotPosition, target: Lsn, *, timeout: float | None = None
    ) -> Lsn:
        """Wait until `slot`'s ``restart_lsn`` or ``confirmed_flush_lsn`` reaches `target`; see
        `pgharness.logical.wait_for_slot_catchup`."""
        return logical.wait_for_slot_catchup(self, slot, position, target, timeout=timeout)

    # --- hot standby: recovery conflicts and replay ---------------------

    def conflicts(self, dbname: str = "postgres") -> dict[str, int]:
        """This standby's recovery conflicts in `dbname` by kind (``pg_stat_database_conflicts``, without the
        ``confl_`` prefix): snapshot, lock, tablespace, bufferpin, deadlock (and active_logicalslot, 16+).

        The counters are the cumulative statistics system's: a cancelled
        backend reports its conflict a moment later, so wait for a count with
        `wait_for_conflicts`.
        """
        with self.connect(dbname) as conn:
            cur = conn.execute("SELECT * FROM pg_stat_database_conflicts WHERE datname = current_database()")
            row = cur.fetchone()
            names = [d.name for d in cur.description or []]
        if row is None:
            return {}
        return {
            name.removeprefix("confl_"): int(value)
            for name, value in zip(names, row, strict=True)
            if name.startswith("confl_")
        }

    def wait_for_conflicts(
        self, kind: str, count: int = 1, *, dbname: str = "postgres", timeout: float | None = None
    ) -> dict[str, int]:
        """Wait until ``pg_stat_database_conflicts.confl_<kind>`` of `dbname` reaches `count`; return all the
        counters. Raises `WaitTimeout` with the counters last seen."""
        return poll_until(
            lambda: self.conflicts(dbname),
            lambda seen: seen.get(kind, 0) >= count,
            what=f"{count} {kind} conflict(s) in {dbname} on node {self.name!r} (pg_stat_database_conflicts)",
            timeout=timeout,
            nodes=(self,),
        )

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

    # --- WAL and the archive --------------------------------------------

    def walfile(self, lsn: Lsn | None = None) -> str:
        """The name of the WAL file that holds `lsn` (default: the current write position) on this node's
        timeline (``pg_walfile_name``)."""
        if lsn is None:
            return str(self.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())"))
        return str(self.scalar("SELECT pg_walfile_name(%s::pg_lsn)", (str(lsn),)))

    def wait_for_archived(self, walfile: str | Lsn, *, timeout: float | None = None) -> str:
        """Wait until this node's archiver has archived `walfile` (a file name, or an `Lsn`: the WAL file
        holding it); return the file name.

        Archived means: no ``.ready`` file waits for it in archive_status, and
        either its ``.done`` is there or (for a segment)
        ``pg_stat_archiver.last_archived_wal`` has reached it. Raises
        `WaitTimeout` after `timeout` seconds (default ``PGHARNESS_TIMEOUT``,
        else 60), with the archiver's failure count and last failed file.
        """
        if isinstance(walfile, Lsn):
            walfile = self.walfile(walfile)
        query = """
            SELECT coalesce(last_archived_wal, '(none)')
                   || CASE WHEN EXISTS (SELECT FROM pg_ls_archive_statusdir() WHERE name = %(f)s || '.ready')
                           THEN ' (' || %(f)s || '.ready pending)' ELSE '' END,
                   NOT EXISTS (SELECT FROM pg_ls_archive_statusdir() WHERE name = %(f)s || '.ready')
                   AND (EXISTS (SELECT FROM pg_ls_archive_statusdir() WHERE name = %(f)s || '.done')
                        OR (length(%(f)s) = 24 AND left(last_archived_wal, 24) >= %(f)s)),
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
        return walfile

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

    # --- promotion -------------------------------------------------------

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
        """Thaw the node's container (docker unpause)."""
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

    def wait_exited(self, *, timeout: float | None = None) -> int:
        """Wait until the node's server has ended by itself (a crash with ``restart_after_crash = off``, a
        recovery that shut down); return its exit code. `WaitTimeout` (with the node's log) when it still
        runs after `timeout` seconds (default ``PGHARNESS_TIMEOUT``, else 60)."""
        poll_until(
            lambda: str(self.container.status),
            lambda status: status in ("exited", "dead"),
            what=f"node {self.name!r} to exit",
            timeout=timeout,
            nodes=(self,),
        )
        return int(self.container.attrs["State"]["ExitCode"])

    def start(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start the node's container again; with `wait`, return once it is ready (`wait_ready`: answering,
        and streaming when it streams), within `timeout` seconds (default ``PGHARNESS_TIMEOUT``, else 60)."""
        log.info("### Starting node %r", self.name)
        self.forget_port()  # a start publishes the port anew
        self.container.start()
        if wait:
            self.wait_ready(timeout=timeout)

    def restart(self, mode: StopMode = "fast", *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop and start the node; with `wait`, return once it is ready again (each step within `timeout`)."""
        self.stop(mode, timeout=timeout)
        self.start(wait=wait, timeout=timeout)

    def readiness(self, *, timeout: float | None = None) -> str:
        """``ready`` when the node is now what its healthcheck calls healthy, else what it is instead (one
        probe over SQL, within `timeout` seconds; see `_readiness`). `ClusterError` when it has exited."""
        deadline = Deadline(timeout)
        question = _readiness_question(self)
        with self.session(deadline=deadline) as session:
            return _readiness(self, session, question)

    def wait_ready(self, *, timeout: float | None = None) -> None:
        """Wait until the node is what its healthcheck calls healthy, asking it over SQL (see `_readiness`).

        Its probes back off (`backoff`): until the node answers, each is a connection attempt and an
        inspection, on the CPU the starting server needs."""
        deadline = Deadline(timeout)
        question = _readiness_question(self)
        with self.session(deadline=deadline) as session:
            poll_until(
                lambda: _readiness(self, session, question),
                lambda state: state == "ready",
                what=f"node {self.name!r} to be ready (answering; streaming when it has an upstream)",
                deadline=deadline,
                interval=backoff,
                nodes=(self,),
            )


#: What a node that streams must answer to be ready: it streams, or it was promoted.
_STREAMING = "SELECT NOT pg_is_in_recovery() OR EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')"


def _readiness_question(node: Node) -> str:
    """The query `_readiness` asks `node`, by how its container was made (one inspection): a node that
    streams (UPSTREAM_HOST set, STREAMING not off, not started as a primary) must stream, any other answer."""
    container = node.container
    env = container_env(container)
    streams = bool(env.get("UPSTREAM_HOST")) and env.get("STREAMING", "on") != "off"
    primary = container.attrs["Config"].get("Cmd", [""])[:1] == ["primary"]
    return _STREAMING if streams and not primary else "SELECT true"


def _readiness(node: Node, session: Session, question: str) -> str:
    """``ready`` when `node` is what its healthcheck calls healthy, else what it is now.

    The healthcheck's test (`question`), asked over SQL from the host. While the node does not answer,
    each connection attempt asks the engine for its port, which says when the container is stopped: that
    is told as its exit (`ClusterError`), and a probe of a node that answers asks the engine nothing.
    """
    try:
        answer = session.scalar(question)
    except ClusterError:
        state = node.container.attrs["State"]
        if state.get("Status") in ("exited", "dead"):
            raise ClusterError(
                f"node {node.name!r} exited while starting (exit code {state.get('ExitCode')})"
            ) from None
        raise
    if answer:
        return "ready"
    return "answering, not streaming yet" if question == _STREAMING else "not answering"
