"""Waits: conditions polled under a deadline, never fixed sleeps.

Like PostgreSQL's own ``poll_query_until``: probe every `interval` seconds
until the condition holds or the deadline passes; a wait that times out
raises `WaitTimeout` naming what it waited for, the last value it saw and the
recent log of the nodes involved.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import psycopg

from pgharness.errors import HarnessError, QueryTimeout, WaitTimeout

T = TypeVar("T")

#: Default deadline of a wait or an outside call, in seconds, when ``PGHARNESS_TIMEOUT`` is not set.
DEFAULT_TIMEOUT = 60.0
#: Seconds between two probes: short at first (most waits end within a second), then longer.
FIRST_INTERVAL = 0.01
DEFAULT_INTERVAL = 0.1
#: How long a wait polls at FIRST_INTERVAL.
FAST_POLLING_SECONDS = 1.0
#: A wait whose probes cost more than a query on an open connection (`backoff`) sleeps this share of the time
#: it has waited between two of them.
BACKOFF = 0.25
#: Log lines of each node attached to a timeout.
LOG_TAIL_LINES = 30

#: Errors a probe may raise while a node is still coming up, or while it does not answer; they are retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (psycopg.OperationalError, QueryTimeout)


def default_timeout() -> float:
    """The deadline of a wait or an outside call when none is given: ``PGHARNESS_TIMEOUT`` (read now), else 60 s."""
    value = os.environ.get("PGHARNESS_TIMEOUT", "")
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise HarnessError(f"PGHARNESS_TIMEOUT={value!r}: give a number of seconds, e.g. 60") from None
    if seconds <= 0:
        raise HarnessError(f"PGHARNESS_TIMEOUT={value!r}: give a positive number of seconds")
    return seconds


def resolve_timeout(timeout: float | None) -> float:
    """`timeout`, or `default_timeout()` when it is None."""
    return default_timeout() if timeout is None else float(timeout)


class HasLogs(Protocol):
    name: str

    def logs(self, tail: int = ...) -> str: ...


class Deadline:
    """A point in time after which a wait gives up (`timeout` seconds from now; None: `default_timeout()`).

    One deadline can bound a wait and every query its probes run (see `pgharness.session.Session`).
    """

    def __init__(self, timeout: float | None = None) -> None:
        timeout = resolve_timeout(timeout)
        self.timeout = timeout
        self._start = time.monotonic()
        self._end = self._start + timeout

    @property
    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return time.monotonic() - self._start

    @property
    def remaining(self) -> float:
        """Seconds left (0 once expired)."""
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self._end


#: SQLSTATE of a client turned away while the server starts, recovers or stops (``57P03``,
#: cannot_connect_now): the harness's own probes cause these; they never say why a node failed.
CANNOT_CONNECT_NOW = re.compile(r"\b57P03\b")


def failure_lines(lines: Iterable[str], marker: str = "FATAL:") -> list[str]:
    """The log lines with `marker`, but the refusals of clients during start-up (SQLSTATE 57P03)."""
    return [line for line in lines if marker in line and not CANNOT_CONNECT_NOW.search(line)]


def log_tails(nodes: Iterable[HasLogs], lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` log lines of each node, headed by its name."""
    parts = []
    for node in nodes:
        try:
            text = node.logs(tail=lines)
        except Exception as e:  # noqa: BLE001 -- evidence gathering must never mask the timeout it explains
            text = f"(log unavailable: {e})"
        parts.append(f"--- last {lines} log lines of node {node.name!r} ---\n{text.rstrip()}")
    return "\n".join(parts)


def fixed_pace(waited: float) -> float:
    """The default pause before the next probe of a wait that has waited `waited` seconds: FIRST_INTERVAL
    for FAST_POLLING_SECONDS, DEFAULT_INTERVAL after; a probe is a query on an open connection."""
    return FIRST_INTERVAL if waited < FAST_POLLING_SECONDS else DEFAULT_INTERVAL


def backoff(waited: float) -> float:
    """A pause for waits whose probes are dear (a connection attempt, an inspection of the container):
    FIRST_INTERVAL at first, then BACKOFF times the time waited, at most DEFAULT_INTERVAL. The end is seen at
    most a quarter of the wait late, for a fraction of the probes: on few cores they take the CPU from what
    they wait for."""
    return min(DEFAULT_INTERVAL, max(FIRST_INTERVAL, BACKOFF * waited))


def poll_until(
    probe: Callable[[], T],
    done: Callable[[T], bool] = bool,
    *,
    what: str,
    timeout: float | None = None,
    interval: float | Callable[[float], float] | None = None,
    nodes: Iterable[HasLogs] = (),
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
    deadline: Deadline | None = None,
) -> T:
    """Call `probe` until `done(result)` holds; return that result.

    The wait ends at `deadline` (one the caller shares with its probes'
    queries), else `timeout` seconds from now (default: `default_timeout()`).
    Exceptions in `retry_on` (by default a lost connection, or a query that
    got no answer in time) count as "not yet" and are reported as the last
    value seen. On timeout, raises `WaitTimeout` with `what`, the last value
    and the log tails of `nodes`. Probes come every `interval` seconds, or
    after `interval(seconds waited so far)`; by default every 10 ms for the
    first second, then every 100 ms (`fixed_pace`; `backoff` for dear probes).
    The pace is the wait's own, whatever `deadline` it shares.
    """
    if deadline is None:
        deadline = Deadline(timeout)
    started = time.monotonic()
    pace = fixed_pace if interval is None else interval
    last: object = "(nothing yet)"
    while True:
        try:
            result = probe()
        except retry_on as e:
            last = f"{type(e).__name__}: {str(e).strip()}"
        else:
            if done(result):
                return result
            last = result
        if deadline.expired:
            raise WaitTimeout(what, deadline.timeout, last, log_tails(nodes))
        pause = pace(time.monotonic() - started) if callable(pace) else pace
        time.sleep(min(pause, deadline.remaining))
