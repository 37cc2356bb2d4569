"""The live-cluster registry and the teardown shield (no Docker: the registry takes any object with destroy())."""

import os
import signal

import pytest

from harness import registry


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


def test_at_exit_every_registered_cluster_gets_its_teardown():
    failing, working = Removable("a", fail=True), Removable("b")
    registry.register(failing)
    registry.register(working)
    try:
        registry._destroy_live_clusters()
        # The failure of one did not stop the other; the failed one is still registered.
        assert (failing.destroyed, working.destroyed) == (1, 1)
        assert failing in registry.live()
        assert working not in registry.live()
    finally:
        registry.unregister(failing)
