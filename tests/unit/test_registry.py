"""The live-cluster registry and the teardown shield (no Docker: the registry takes any object with destroy())."""

import os
import signal
import threading

import pytest

from pgharness import registry


class Removable:
    def __init__(self, name, fail=False):
        self.name = name
        self.fail = fail
        self.destroyed = 0

    def destroy(self):
        self.destroyed += 1
        if self.fail:
            raise RuntimeError("compose down failed")
        registry.unregister(self)


@pytest.fixture
def sigterm_raises():
    """SIGTERM raises KeyboardInterrupt in this process for the test (as the plugin arranges for a run)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_shielded_holds_a_signal_until_the_block_is_done(sigterm_raises):
    finished = []

    def teardown():
        with registry.shielded("removing a cluster"):
            os.kill(os.getpid(), signal.SIGTERM)  # delivered now; without the shield it would raise here
            finished.append("the rest of the teardown")

    with pytest.raises(KeyboardInterrupt, match="during removing a cluster"):
        teardown()
    assert finished == ["the rest of the teardown"]
    # Afterwards the signal is handled as before.
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)


def test_a_block_without_a_signal_raises_nothing(sigterm_raises):
    with registry.shielded("removing a cluster"):
        pass


def test_at_exit_every_registered_cluster_gets_its_teardown(monkeypatch):
    # A registry of its own: this process's real clusters (a session's shared cluster) are not the test's.
    monkeypatch.setattr(registry, "_live", {})
    monkeypatch.setattr(registry, "wait_for_removals", list)
    failing, working = Removable("a", fail=True), Removable("b")
    registry.register(failing)
    registry.register(working)
    try:
        registry._destroy_live_clusters()  # noqa: SLF001 -- the atexit handler itself, called as atexit would
        # The failure of one did not stop the other; the failed one is still registered.
        assert (failing.destroyed, working.destroyed) == (1, 1)
        assert failing in registry.live()
        assert working not in registry.live()
    finally:
        registry.unregister(failing)


class SlowRemovable(Removable):
    """Its removal waits for `gate`; records how many removals ran at once and signals `started`."""

    running = 0
    most = 0
    started = threading.Semaphore(0)

    def __init__(self, name, gate, fail=False):
        super().__init__(name, fail)
        self.gate = gate

    def destroy(self):
        cls = type(self)
        cls.running += 1
        cls.most = max(cls.most, cls.running)
        cls.started.release()
        try:
            self.gate.wait(10)
            super().destroy()
        finally:
            cls.running -= 1


def test_background_removals_are_bounded_waited_for_and_report_failures(monkeypatch):
    monkeypatch.setattr(registry, "BACKGROUND_REMOVALS", 2)
    monkeypatch.setattr(SlowRemovable, "started", threading.Semaphore(0))
    monkeypatch.setattr(SlowRemovable, "most", 0)
    gate = threading.Event()
    clusters = [SlowRemovable(f"c{i}", gate, fail=(i == 1)) for i in range(4)]
    for cluster in clusters:
        registry.register(cluster)
    # The first two return at once, while their removals wait on the gate.
    registry.remove_in_background(clusters[0])
    registry.remove_in_background(clusters[1])
    assert all(c.destroyed == 0 for c in clusters)
    # A third waits for the oldest: the gate opens only once it does (no timer), so returning proves it waited.
    waited = []
    real_wait = registry.wait

    def wait_and_open(futures):
        waited.append(len(futures))
        # Both removals are inside destroy() before the gate opens, so they overlap on any scheduler.
        if not gate.is_set():
            assert SlowRemovable.started.acquire(timeout=10)
            assert SlowRemovable.started.acquire(timeout=10)
            gate.set()
        return real_wait(futures)

    monkeypatch.setattr(registry, "wait", wait_and_open)
    registry.remove_in_background(clusters[2])
    assert waited[:1] == [1]
    registry.remove_in_background(clusters[3])
    # Waiting for what runs keeps the failures for the one who reports them.
    registry.wait_for_pending()
    assert registry.wait_for_removals() == ["c1: compose down failed"]
    assert [c.destroyed for c in clusters] == [1, 1, 1, 1]
    assert SlowRemovable.most == 2
    # The one that failed stays registered (the atexit handler tries it again); the others left.
    assert [c.name for c in registry.live() if c in clusters] == ["c1"]
    registry.unregister(clusters[1])
    assert registry.wait_for_removals() == []
