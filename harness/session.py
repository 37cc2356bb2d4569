"""Connections to a node with a deadline on every step: connecting, and each statement.

A frozen server (``docker pause``, a hung host) accepts TCP connections in the
kernel and never answers; ``statement_timeout`` cannot help, since the server
is what hangs. So the deadline is kept on the client: `bounded` shuts the
connection's socket down when a statement outlives it, which ends the wait
inside libpq at once, and raises `QueryTimeout` naming the node and the
statement. Connecting is bounded by libpq's ``connect_timeout`` (2 s at least).
"""

from __future__ import annotations

import math
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
import psycopg.errors
from psycopg import sql as pgsql
from psycopg.abc import Params

from pgharness.errors import QueryTimeout
from pgharness.wait import Deadline, default_timeout

if TYPE_CHECKING:
    from pgharness.node import Node

#: A statement: a literal string, or one composed with psycopg.sql.
Query = LiteralString | bytes | pgsql.SQL | pgsql.Composed

#: The longest a connection attempt waits for a node that does not answer.
CONNECT_TIMEOUT = 10.0


def connect_timeout(seconds: float) -> int:
    """libpq's ``connect_timeout`` for a budget of `seconds`: whole seconds, 2 at least (libpq's floor)."""
    return max(2, math.ceil(min(seconds, CONNECT_TIMEOUT)))


def open_connection(node: Node, seconds: float, dbname: str = "postgres") -> psycopg.Connection[Any]:
    """A connection to `node` made within `seconds` (libpq's floor is 2 s); `QueryTimeout` when it is not."""
    try:
        return node.connect(dbname, connect_timeout=connect_timeout(seconds))
    except psycopg.errors.ConnectionTimeout:
        raise QueryTimeout(f"node {node.name!r} to accept a connection", seconds) from None


def shut_down(conn: psycopg.Connection[Any]) -> None:
    """End whatever libpq is waiting for on `conn`: shut its socket down (the descriptor stays libpq's)."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass  # already closed: nothing waits on it


@contextmanager
def bounded(conn: psycopg.Connection[Any], seconds: float, what: str) -> Iterator[None]:
    """Run the block's statements on `conn` within `seconds`; past that, raise `QueryTimeout` for `what`.

    The connection is unusable after a timeout (its socket is shut down).
    """
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        shut_down(conn)

    timer = threading.Timer(max(seconds, 0.01), fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except psycopg.OperationalError:
        if fired.is_set():
            raise QueryTimeout(what, seconds) from None
        raise
    finally:
        timer.cancel()


class Session:
    """One connection to a node for many short queries, made again when it is lost (a restart, a kill).

    Waits probe through one: opening a connection (TCP, SCRAM) costs about 10 ms,
    more than a small commit takes to replay. Every query ends by `deadline`
    (when given) and within `query_timeout` seconds (default: the deadline's
    whole budget, else `default_timeout()`); past that it raises
    `QueryTimeout`, and the next query connects again.
    """

    def __init__(self, node: Node, *, deadline: Deadline | None = None, query_timeout: float | None = None) -> None:
        self.node = node
        self.deadline = deadline
        self.query_timeout = query_timeout
        self._conn: psycopg.Connection[Any] | None = None

    def _budget(self) -> float:
        """Seconds the next query may take: its own limit, and no later than the deadline."""
        if self.query_timeout is not None:
            per_query = self.query_timeout
        else:
            per_query = self.deadline.timeout if self.deadline else default_timeout()
        if self.deadline is None:
            return per_query
        return max(0.05, min(per_query, self.deadline.remaining))

    def scalar(self, query: Query, params: Params | None = None) -> Any:
        """The first column of the first row of `query` (None when there is no row)."""
        row = self.row(query, params)
        return row[0] if row else None

    def row(self, query: Query, params: Params | None = None) -> tuple[Any, ...] | None:
        """The first row of `query` (None when there is none)."""
        found = self.rows(query, params)
        return found[0] if found else None

    def rows(self, query: Query, params: Params | None = None) -> list[tuple[Any, ...]]:
        """Every row of `query` ([] for a statement that returns none, DDL say; autocommit)."""
        budget = self._budget()
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = open_connection(self.node, budget)
        what = f"node {self.node.name!r} to answer {query!r}"
        try:
            with bounded(self._conn, budget, what):
                cursor = self._conn.execute(query, params)
                return cursor.fetchall() if cursor.description else []
        except (psycopg.OperationalError, QueryTimeout):
            self.close()  # the next call connects again
            raise

    def close(self) -> None:
        """Close the connection (the next query opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
