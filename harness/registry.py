"""The clusters this process started and has not removed yet, and teardown that signals cannot cut short.

A cluster joins the registry when it starts and leaves it only once its
removal (every container, volume and network) has succeeded, so the atexit handler removes whatever an
interrupted run (Ctrl-C, SIGTERM from a cancelled CI job, a timeout) left.
`shielded` holds SIGINT and SIGTERM back while a teardown runs: a second
signal then waits for the teardown to finish instead of aborting it halfway.

`remove_in_background` takes a finished test's teardown off the next test's
critical path: a worker thread runs ``destroy()`` while the next test starts
(at most `BACKGROUND_REMOVALS` running; past that, the caller waits for the
oldest); `wait_for_pending` waits for them, `wait_for_removals` too and returns
their errors.
A removal still pending at exit is waited for before the atexit handler.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Protocol

log = logging.getLogger("pgharness")

#: The signals that interrupt a run (Ctrl-C; a cancelled CI job).
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


class Removable(Protocol):
    name: str

    def destroy(self) -> None: ...


_live: dict[int, Removable] = {}
_lock = threading.Lock()


def register(cluster: Removable) -> None:
    """Remember `cluster` until `unregister`: the atexit handler removes it if it is still there."""
    with _lock:
        _live[id(cluster)] = cluster


def unregister(cluster: Removable) -> None:
    """Forget `cluster` (removed, or handed over to the user, as `pgharness up` does)."""
    with _lock:
        _live.pop(id(cluster), None)


def live() -> list[Removable]:
    """The clusters registered now."""
    with _lock:
        return list(_live.values())


@contextmanager
def shielded(what: str) -> Iterator[None]:
    """Run the block with SIGINT and SIGTERM held back; a signal that came meanwhile is raised
    as KeyboardInterrupt once the block is done.

    Only the main thread can hold signals back; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: object) -> None:
        log.warning("%s arrived; finishing %s first", signal.Signals(signum).name, what)
        received.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in INTERRUPTS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(received[0]).name} during {what}")


#: Removals that may run behind the tests at once; one more waits for the oldest. Two: each cluster holds a
#: network from Docker's address pools (about 30 on a default engine), and pytest-xdist multiplies them.
BACKGROUND_REMOVALS = 2
_running: list[Future[None]] = []
_failures: list[str] = []
_executor: ThreadPoolExecutor | None = None


def remove_in_background(cluster: Removable) -> None:
    """Run ``cluster.destroy()`` in a worker thread; return at once, or once the oldest of
    `BACKGROUND_REMOVALS` running removals is done. The cluster stays registered until it is removed."""
    global _executor
    while True:
        with _lock:
            _running[:] = [f for f in _running if not f.done()]
            if len(_running) < BACKGROUND_REMOVALS:
                if _executor is None:
                    _executor = ThreadPoolExecutor(BACKGROUND_REMOVALS, thread_name_prefix="pgharness-removal")
                _running.append(_executor.submit(_remove, cluster))
                return
            oldest = _running[0]
        wait([oldest])


def _remove(cluster: Removable) -> None:
    try:
        cluster.destroy()
    except Exception as e:  # noqa: BLE001 -- reported by wait_for_removals; the cluster stays registered
        with _lock:
            _failures.append(f"{cluster.name}: {e}")


def wait_for_pending() -> None:
    """Wait for the background removals running now; their failures stay for `wait_for_removals`."""
    with _lock:
        running = list(_running)
    wait(running)


def wait_for_removals() -> list[str]:
    """Wait for every background removal; return (and forget) one line per removal that failed
    (``name: error``)."""
    wait_for_pending()
    with _lock:
        errors = list(_failures)
        _failures.clear()
        _running.clear()
    return errors


@atexit.register
def _destroy_live_clusters() -> None:
    """At exit: remove every cluster still registered, each on its own (a failure does not stop the rest),
    once the background removals are done."""
    for error in wait_for_removals():
        log.error("could not remove cluster %s", error)
    for cluster in live():
        try:
            cluster.destroy()
        except KeyboardInterrupt:
            continue  # held back until its teardown finished; the others still get theirs
        except Exception as e:  # noqa: BLE001 -- at exit, every cluster gets its teardown whatever failed before
            log.error("could not remove cluster %r: %s", cluster.name, e)
