"""Load: a write load with a client-side commit log (what the clients saw acknowledged, to count what a
failover lost), and pgbench run inside a node::

    with WriteLoad(dsn, workers=2) as load:      # each worker INSERTs (worker, seq) rows, autocommit
        load.wait_for_commits(100)
        cluster.primary.kill()
        ...
    lost = load.log.lost_commits(new_primary)     # acknowledged, yet not on the new primary

Workers connect through a libpq connection string (a multi-host one finds the
new primary by itself) or a function that gives one at each connection
(``node.dsn``: a node whose container restarts is published on a new port),
reconnect after errors, and stop at `stop()`, at their
deadline, or after `max_rows`; the load is bounded in count and in time.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import psycopg

from pgharness.errors import ClusterError, QueryTimeout
from pgharness.node import Node
from pgharness.session import bounded, connect_timeout
from pgharness.wait import poll_until

log = logging.getLogger("pgharness")

TABLE = "pgharness_load"
#: Seconds a worker waits for a connection or one INSERT before it gives up and connects again.
CALL_TIMEOUT = 30.0


@dataclass
class CommitLog:
    """Every (worker, seq) whose COMMIT a client saw acknowledged, with when."""

    acknowledged: dict[tuple[int, int], float] = field(default_factory=dict)
    errors: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, key: tuple[int, int]) -> None:
        """Log that a client saw the commit of row `key` (worker, seq) acknowledged, now."""
        with self.lock:
            self.acknowledged[key] = time.monotonic()

    def error(self, message: str) -> None:
        """Log an error a client met (a lost connection during a failover, say), with when."""
        with self.lock:
            self.errors.append((time.monotonic(), message))

    def count(self) -> int:
        """How many commits were acknowledged."""
        with self.lock:
            return len(self.acknowledged)

    def first_ack_after(self, moment: float) -> float | None:
        """The monotonic time of the first acknowledged commit after `moment` (None if none yet)."""
        with self.lock:
            later = [t for t in self.acknowledged.values() if t > moment]
        return min(later) if later else None

    def lost_commits(self, node: Node) -> set[tuple[int, int]]:
        """The acknowledged commits (worker, seq) that `node` does not have: what a failover lost. An empty
        set means none; ``len()`` counts them."""
        present = {(int(w), int(s)) for w, s in node.sql(f"SELECT worker, seq FROM {TABLE}")}
        with self.lock:
            return set(self.acknowledged) - present


class WriteLoad:
    """Writer threads that INSERT one row per transaction and log every acknowledged commit."""

    def __init__(
        self, dsn: str | Callable[[], str], *, workers: int = 2, max_rows: int = 100_000, max_seconds: float = 120.0
    ) -> None:
        self.dsn = dsn
        self.workers = workers
        self.max_rows = max_rows
        self.deadline = time.monotonic() + max_seconds
        self.log = CommitLog()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @staticmethod
    def create_table(primary: Node) -> None:
        """Create the load's table (``pgharness_load (worker, seq)``) on `primary`, if it is not there."""
        primary.sql(f"CREATE TABLE IF NOT EXISTS {TABLE} (worker int, seq int, PRIMARY KEY (worker, seq))")

    def start(self) -> Self:
        """Start the writer threads; return the load."""
        for worker in range(self.workers):
            thread = threading.Thread(target=self._run, args=(worker,), name=f"pgharness-load-{worker}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop the writers and wait for them (30 s each at most)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wait_for_commits(self, count: int, *, timeout: float | None = None) -> int:
        """Wait until at least `count` commits were acknowledged in all."""
        return poll_until(self.log.count, lambda n: n >= count, what=f"{count} acknowledged commits", timeout=timeout)

    def _run(self, worker: int) -> None:
        seq = 0
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set() and time.monotonic() < self.deadline and seq < self.max_rows:
            try:
                if conn is None or conn.closed:
                    dsn = self.dsn if isinstance(self.dsn, str) else self.dsn()
                    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout(CALL_TIMEOUT))
                seq += 1
                # An INSERT that gets no answer (a hung primary) is given up, never acknowledged.
                with bounded(conn, CALL_TIMEOUT, f"INSERT ({worker}, {seq})"):
                    conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s)", (worker, seq))
                self.log.ack((worker, seq))
            except (psycopg.Error, QueryTimeout, ClusterError) as e:  # ClusterError: no address (a node down)
                self.log.error(f"worker {worker}: {type(e).__name__}: {str(e).strip()[:200]}")
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.05)  # back off before reconnecting
        if conn is not None:
            conn.close()


@dataclass(frozen=True)
class PgbenchResult:
    """What a pgbench run reports."""

    transactions: int  #: transactions actually processed
    failed: int | None  #: failed transactions (PostgreSQL 15+ reports them; None before)
    tps: float  #: transactions per second, without the initial connection time
    latency_ms: float | None  #: average latency
    output: str  #: pgbench's whole report


def pgbench_init(node: Node, *, scale: int = 1, dbname: str = "postgres") -> None:
    """``pgbench --initialize`` at `scale` in `dbname`, run inside `node` (the server's own pgbench, its local
    socket). Raises `ClusterError` with pgbench's output when it fails."""
    log.info("### pgbench --initialize --scale=%d on node %r", scale, node.name)
    node.exec("pgbench", "--initialize", f"--scale={scale}", "--quiet", dbname)


def pgbench(
    node: Node,
    *,
    clients: int = 4,
    seconds: int | None = None,
    transactions: int | None = None,
    dbname: str = "postgres",
    host: str | None = None,
    options: tuple[str, ...] = (),
) -> PgbenchResult:
    """Run pgbench inside `node` with `clients` clients for `seconds` (``-T``) or `transactions` per client
    (``-t``; default 100); return its figures.

    It connects over the node's local socket, or to `host` (another node's
    name, over the cluster's network; the superuser's password from the
    cluster). `options` are more pgbench arguments (``("-S",)`` for select-only).
    Bounded by the Docker client's deadline (120 s). Raises `ClusterError`
    with pgbench's output when it exits non-zero.
    """
    if seconds is not None and transactions is not None:
        raise ValueError("pgbench runs for seconds or for transactions, not both")
    length = [f"--time={seconds}"] if seconds is not None else [f"--transactions={transactions or 100}"]
    where = [f"--host={host}"] if host else []
    argv = ["pgbench", *where, f"--client={clients}", f"--jobs={min(clients, 2)}", *length, *options, dbname]
    log.info("### pgbench on node %r: %s", node.name, " ".join(argv[1:]))
    env = {"PGPASSWORD": node.cluster.password} if host else {}
    return parse_pgbench(node.exec(*argv, env=env))


def parse_pgbench(output: str) -> PgbenchResult:
    """The figures of a pgbench report (13 to 18 word them alike but for the failed count and tps lines)."""

    def number(pattern: str) -> str | None:
        found = re.findall(pattern, output, re.MULTILINE)
        return found[-1] if found else None

    processed = number(r"^number of transactions actually processed: (\d+)")
    tps = number(r"^tps = ([0-9.]+)")
    if processed is None or tps is None:
        raise ClusterError(f"pgbench reported no figures:\n{output.strip()}")
    failed = number(r"^number of failed transactions: (\d+)")
    latency = number(r"^latency average = ([0-9.]+) ms")
    return PgbenchResult(
        transactions=int(processed),
        failed=None if failed is None else int(failed),
        tps=float(tps),
        latency_ms=None if latency is None else float(latency),
        output=output,
    )
