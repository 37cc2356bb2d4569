"""A session held open by a test: a transaction, a cursor, a lock or a snapshot kept on a node while
something else happens (Cluster.pm's ``background_psql``)::

    with standby.background_session() as session:
        session.run("BEGIN ISOLATION LEVEL REPEATABLE READ")
        session.run("SELECT count(*) FROM hoge")                 # the snapshot is taken
        sleeping = session.send("SELECT pg_sleep(60)")           # a statement that keeps running
        primary.sql("VACUUM hoge")                               # replay will conflict with it
        error = sleeping.error()                                 # the standby cancelled it
        assert error.sqlstate == "40001"

Statements run one after another on the session's own connection, in a
thread of its own: `run` waits for the result, `send` returns a `Pending` at
once, to be asked whether it has returned, what it waits on
(``pg_stat_activity.wait_event``), and how it ended. Every statement ends at
a deadline (`pgharness.session.bounded`); closing the session (the end of its
``with`` block) cancels a statement still running, so a block never hangs.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError as FutureTimeout
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import psycopg
from psycopg.abc import Params

from pgharness.errors import HarnessError, QueryTimeout, WaitTimeout
from pgharness.session import Query, bounded, open_connection, shut_down
from pgharness.wait import Deadline, default_timeout, poll_until, resolve_timeout

if TYPE_CHECKING:
    from pgharness.node import Node

log = logging.getLogger("pgharness")

Rows = list[tuple[Any, ...]]


class Pending:
    """A statement sent on a `BackgroundSession`: still running, or how it ended."""

    def __init__(self, session: BackgroundSession, query: Query, future: Future[Rows]) -> None:
        self.session = session
        self.query = query
        self._future = future

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"Pending({self.query!r}, {state}, on {self.session.node.name!r})"

    def done(self) -> bool:
        """Whether the statement has returned (with rows or with an error)."""
        return self._future.done()

    def result(self, *, timeout: float | None = None) -> Rows:
        """Its rows, once it returns (within `timeout` seconds; default ``PGHARNESS_TIMEOUT``, else 60).

        Raises the statement's own error (psycopg's class for its SQLSTATE), or
        `WaitTimeout` when it has not returned in time.
        """
        seconds = resolve_timeout(timeout)
        try:
            return self._future.result(timeout=seconds)
        except FutureTimeout:
            raise WaitTimeout(
                f"{self.query!r} to return on node {self.session.node.name!r}", seconds, self.wait_event()
            ) from None

    def error(self, *, timeout: float | None = None) -> psycopg.Error | QueryTimeout | None:
        """The error the statement ended with, once it returns (psycopg's class for its SQLSTATE, or
        `QueryTimeout`); None when it succeeded (its rows are `result`'s). Raises `WaitTimeout` when it has
        not returned within `timeout` seconds (default ``PGHARNESS_TIMEOUT``, else 60)."""
        try:
            self.result(timeout=timeout)
        except (psycopg.Error, QueryTimeout) as e:
            return e
        return None

    def wait_event(self) -> tuple[str | None, str | None, str | None]:
        """What the session's backend is doing now: (state, wait_event_type, wait_event) from pg_stat_activity,
        or Nones when it has no backend any more."""
        row = self.session.node.sql(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s",
            (self.session.pid,),
            timeout=10,
        )
        return row[0] if row else (None, None, None)

    def wait_until_blocked(self, wait_event: str | None = None, *, timeout: float | None = None) -> str:
        """Wait until the statement is seen running and waiting (on `wait_event`, when given, e.g.
        ``SyncRep`` or ``relation``); return the wait event. Fails if it returns meanwhile.

        Raises `HarnessError` when the statement returned instead, `WaitTimeout`
        (with the last state seen) when it was never seen waiting so within
        `timeout` seconds.
        """

        def probe() -> tuple[str | None, str | None, str | None]:
            if self.done():
                raise HarnessError(f"{self.query!r} returned instead of blocking: {self._outcome()}")
            return self.wait_event()

        def blocked(seen: tuple[str | None, str | None, str | None]) -> bool:
            state, event_type, event = seen
            if state != "active" or event_type is None:
                return False
            return wait_event is None or event == wait_event

        _, _, event = poll_until(
            probe,
            blocked,
            what=f"{self.query!r} to block on node {self.session.node.name!r}"
            + (f" (wait_event {wait_event})" if wait_event else ""),
            timeout=timeout,
            nodes=(self.session.node,),
        )
        assert event is not None
        return event

    def _outcome(self) -> str:
        try:
            return f"rows {self._future.result(timeout=0)!r}"
        except (psycopg.Error, HarnessError) as e:
            return f"{type(e).__name__}: {e}"


class BackgroundSession:
    """A connection to a node that the test holds open; see the module's docstring.

    `autocommit` (default True) as for `Node.sql`: send ``BEGIN`` to hold a
    transaction. `statement_timeout` bounds each statement on the client
    (default ``PGHARNESS_TIMEOUT``, else 60 s).
    """

    def __init__(
        self, node: Node, dbname: str = "postgres", *, autocommit: bool = True, statement_timeout: float | None = None
    ) -> None:
        self.node = node
        self.dbname = dbname
        self.statement_timeout = resolve_timeout(statement_timeout)
        self._conn = open_connection(node, default_timeout(), dbname)
        self._conn.autocommit = autocommit
        #: The backend's process id (``pg_backend_pid()``), for pg_stat_activity and pg_locks.
        self.pid: int = self._conn.info.backend_pid
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pgharness-{node.name}")
        self._pending: list[Pending] = []

    def __repr__(self) -> str:
        return f"BackgroundSession({self.node.name!r}, pid={self.pid})"

    def _execute(self, query: Query, params: Params | None) -> Rows:
        with bounded(self._conn, self.statement_timeout, f"node {self.node.name!r} to answer {query!r}"):
            cur = self._conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def send(self, query: Query, params: Params | None = None) -> Pending:
        """Start `query` after those sent before; return at once with its `Pending`."""
        pending = Pending(self, query, self._executor.submit(self._execute, query, params))
        self._pending.append(pending)
        return pending

    def run(self, query: Query, params: Params | None = None, *, timeout: float | None = None) -> Rows:
        """Run `query` (after those sent before) and return its rows; raises its error."""
        return self.send(query, params).result(timeout=timeout)

    def is_alive(self) -> bool:
        """Whether the session's connection still works (a recovery conflict may have terminated it)."""
        if self._conn.closed or self._conn.broken:
            return False
        try:
            self.run("SELECT 1", timeout=10)
        except (psycopg.Error, HarnessError):
            return False
        return True

    def close(self) -> None:
        """Cancel what still runs (``pg_cancel_backend``, then the socket), wait for it, close the connection."""
        running = [p for p in self._pending if not p.done()]
        if running:
            log.info("### Cancelling %d statement(s) still running on %r", len(running), self)
            # A node that does not answer the cancel: the socket is shut down below.
            with contextlib.suppress(psycopg.Error, HarnessError):
                self.node.sql("SELECT pg_cancel_backend(%s)", (self.pid,), timeout=10)
            deadline = Deadline(10)
            for pending in running:
                try:
                    pending._future.result(timeout=deadline.remaining)  # noqa: SLF001 -- its own class's state
                except FutureTimeout:
                    shut_down(self._conn)  # the last resort: a node that does not answer the cancel
                except (psycopg.Error, HarnessError):
                    pass  # it ended with its error: that is what cancelling is for
        self._executor.shutdown(wait=True)
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
