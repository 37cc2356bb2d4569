"""A fresh cluster started ahead, while the test before the one that will ask for it runs.

pytest knows the next test while it runs the current one. When the next one
asks for the pytest plugin's ``cluster`` fixture (a fresh primary + standby
with the session's arguments), the plugin calls `Spare.prepare` as the current
test's body begins: the cluster starts in a worker thread meanwhile, and the
``cluster`` fixture `take`s it instead of starting its own. The test cannot
tell: it is the cluster it would have started (the same arguments, so the
same image, settings and storage; a fresh name and ports, as any start gives),
started a few seconds earlier. The plugin does this in a run of one process
only: under pytest-xdist, the other workers already use the time a test waits.

One spare at a time. A spare that no test took (the next test was skipped, or
the run stopped) is removed when the session ends (`discard`). A spare that did
not start removed itself, as any failed start does; the test then starts its
own, and fails with the reason if that fails too. A spare is registered with
`pgharness.registry` from its first step, as every cluster is, so an
interrupted run removes it at exit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("pgharness")


class Startable(Protocol):
    name: str

    def start(self) -> Any: ...


C = TypeVar("C", bound=Startable)


def arguments_key(kwargs: dict[str, Any]) -> str:
    """What two sets of `Cluster` arguments share when they make the same cluster: a spare serves the
    other, a shared cluster is the other's."""
    return repr(sorted(kwargs.items()))


class Spare(Generic[C]):
    """At most one cluster being started ahead, for one set of arguments."""

    def __init__(self, make: Callable[..., C]) -> None:
        self._make = make
        self._key: str | None = None
        self._future: Future[C] | None = None
        self._executor: ThreadPoolExecutor | None = None

    def prepare(self, kwargs: dict[str, Any]) -> None:
        """Start a cluster of `kwargs` in the background, unless a spare is already there."""
        if self._future is not None:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="pgharness-spare")
        cluster = self._make(**kwargs)
        log.info("starting cluster %r ahead, for the next test", cluster.name)
        self._key = arguments_key(kwargs)
        self._future = self._executor.submit(_started, cluster)

    def take(self, kwargs: dict[str, Any]) -> C | None:
        """The spare, started, when it was made with `kwargs` (waiting for its start to finish); else None,
        also when its start failed (it removed itself; the caller starts its own)."""
        if self._future is None or self._key != arguments_key(kwargs):
            return None
        future = self._future
        try:
            cluster = future.result()
        except Exception as e:  # noqa: BLE001 -- the caller's own start reports the failure if it recurs
            log.warning("the cluster started ahead did not start (%s); the test starts its own", first_line(e))
            cluster = None
        self._future = None  # only now: a start interrupted above is still the session's to discard
        return cluster

    def discard(self, remove: Callable[[C], None]) -> None:
        """Hand a spare no test took to `remove` (once its start is over); nothing when there is none."""
        future, self._future = self._future, None
        if future is None:
            return
        try:
            cluster = future.result()
        except Exception:  # noqa: BLE001 -- a failed start removed itself
            return
        remove(cluster)


def _started(cluster: C) -> C:
    cluster.start()
    return cluster


def first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
