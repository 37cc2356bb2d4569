"""A spare cluster made ahead: while a test runs, the next default cluster starts in a background thread, so
the next test that asks for one finds it up (its start, ~1.3 s, off that test's critical path).

A test cannot tell a spare from a cluster started for it: the same `Cluster` arguments, the same
environment (a spare made while a test had set, say, ``POSTGRES_PASSWORD`` is removed, not given to a test
that has not), never used before; its name and ports are as random as any. One spare per process at a time.
It is registered from its start like every cluster, so the session's end (`Spares.drain`), the atexit
handler and Ctrl-C remove it.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from harness import registry
from harness.cluster import Cluster

log = logging.getLogger("harness")

#: Environment variables that change from test to test without changing what a cluster is.
VOLATILE = frozenset({"PYTEST_CURRENT_TEST"})


def environment() -> dict[str, str]:
    """This process's environment as a cluster start sees it (`VOLATILE` left out)."""
    return {name: value for name, value in os.environ.items() if name not in VOLATILE}


@dataclass
class _Spare:
    kwargs: dict[str, Any]
    environ: dict[str, str]
    started: Future[Cluster]


class Spares:
    """At most one spare cluster, started in the background by `prepare` and handed out by `take`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: _Spare | None = None
        self._executor: ThreadPoolExecutor | None = None

    def prepare(self, kwargs: dict[str, Any]) -> None:
        """Start a cluster of `kwargs` in the background, in this environment, unless a spare exists."""
        with self._lock:
            if self._spare is not None:
                return
            environ = environment()
            cluster = Cluster(**kwargs)
            # Compose runs in the environment of now, whatever a test sets while it starts.
            cluster.compose.environ = dict(os.environ)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="pgharness-spare")
            self._spare = _Spare(dict(kwargs), environ, self._executor.submit(cluster.start))

    def take(self, kwargs: dict[str, Any]) -> Cluster | None:
        """The spare, up, when it was made of `kwargs` in the environment of now; else None (a spare made
        otherwise is removed in the background, one that failed to start has removed itself)."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        if spare.kwargs != kwargs or spare.environ != environment():
            spare.started.add_done_callback(_discard)
            return None
        try:
            cluster = spare.started.result()
        except Exception as e:  # noqa: BLE001 -- the caller starts a cluster itself, which says why
            log.info("the spare cluster did not start (%s); starting one now", str(e).splitlines()[0])
            return None
        cluster.compose.environ = None
        log.info("### Using the spare cluster %r", cluster.name)
        return cluster

    def drain(self) -> None:
        """Remove the spare (once its start has ended); for the session's end."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            try:
                cluster = spare.started.result()
            except Exception:  # noqa: BLE001 -- a start that failed removed its cluster itself
                return
            cluster.destroy()


def _discard(started: Future[Cluster]) -> None:
    """Remove a spare nobody will take, in the background, once its start has ended."""
    if started.exception() is None:
        registry.remove_in_background(started.result())


__all__ = ["Spares"]
