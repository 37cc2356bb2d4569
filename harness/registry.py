"""The clusters this process started and has not removed yet, and teardown that signals cannot cut short.

A cluster joins the registry when it starts and leaves it only once its
``compose down`` has succeeded, so the atexit handler removes whatever an
interrupted run (Ctrl-C, SIGTERM from a cancelled CI job, a timeout) left.
`shielded` holds SIGINT and SIGTERM back while a teardown runs: a second
signal then waits for the teardown to finish instead of aborting it halfway.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

log = logging.getLogger("harness")

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
    """Forget `cluster` (removed, or handed over to the user, as `harness up` does)."""
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


@atexit.register
def _destroy_live_clusters() -> None:
    """At exit: remove every cluster still registered, each on its own (a failure does not stop the rest)."""
    for cluster in live():
        try:
            cluster.destroy()
        except KeyboardInterrupt:
            continue  # held back until its teardown finished; the others still get theirs
        except Exception as e:  # noqa: BLE001 -- at exit, every cluster gets its teardown whatever failed before
            log.error("could not remove cluster %r: %s", cluster.name, e)
