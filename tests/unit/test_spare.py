"""The cluster started ahead for the next test (no Docker: a spare takes anything with a name and start())."""

import os
import threading
from types import SimpleNamespace

import pytest

from pgharness import fixtures, pytest_plugin
from pgharness.image import ImageSpec
from pgharness.options import Settings
from pgharness.spare import Spare

MADE = []


class Startable:
    def __init__(self, fail=False, gate=None, **kwargs):
        self.name = f"c{len(MADE)}"
        self.kwargs, self.fail, self.gate = kwargs, fail, gate
        self.started = 0
        MADE.append(self)

    def start(self):
        if self.gate is not None:
            assert self.gate.wait(10)
        self.started += 1
        if self.fail:
            raise RuntimeError("did not start\nits log tail")
        return self


def test_the_spare_serves_the_same_arguments_once():
    spare = Spare(Startable)
    spare.prepare({"storage": "tmpfs", "settings": ["a = 1"]})
    # Another shape of cluster does not get it, and it stays for the one that asks for its shape.
    assert spare.take({"storage": "volume", "settings": ["a = 1"]}) is None
    # The same arguments in another order are the same cluster.
    taken = spare.take({"settings": ["a = 1"], "storage": "tmpfs"})
    assert taken is not None
    assert (taken.started, taken.kwargs) == (1, {"storage": "tmpfs", "settings": ["a = 1"]})
    assert spare.take({"storage": "tmpfs", "settings": ["a = 1"]}) is None


def test_one_spare_at_a_time():
    spare = Spare(Startable)
    before = len(MADE)
    spare.prepare({})
    spare.prepare({})
    spare.prepare({"standbys": 2})
    assert len(MADE) == before + 1
    assert spare.take({}) is MADE[-1]


def test_take_waits_for_a_start_still_running():
    gate = threading.Event()
    spare = Spare(lambda **kwargs: Startable(gate=gate, **kwargs))
    spare.prepare({})
    taken = []
    taker = threading.Thread(target=lambda: taken.append(spare.take({})))
    taker.start()
    # The start cannot finish before the gate opens, so neither can take().
    taker.join(0.1)
    assert taker.is_alive()
    gate.set()
    taker.join(10)
    assert not taker.is_alive()
    assert taken[0] is not None
    assert taken[0].started == 1


def test_a_spare_that_did_not_start_is_none_and_gone(caplog):
    spare = Spare(lambda **kwargs: Startable(fail=True, **kwargs))
    spare.prepare({})
    assert spare.take({}) is None
    assert "the cluster started ahead did not start (did not start)" in caplog.text
    # Gone: nothing is left for the session's end to remove.
    removed = []
    spare.discard(removed.append)
    assert removed == []


def test_discard_hands_an_untaken_spare_to_removal_and_skips_a_failed_one():
    removed = []
    spare = Spare(Startable)
    spare.prepare({"standbys": 1})
    spare.discard(removed.append)
    assert [c.kwargs for c in removed] == [{"standbys": 1}]
    assert removed[0].started == 1
    # Handed over once: a second discard, or a take, finds nothing.
    spare.discard(removed.append)
    assert len(removed) == 1
    assert spare.take({"standbys": 1}) is None

    failing = Spare(lambda **kwargs: Startable(fail=True, **kwargs))
    failing.prepare({})
    failing.discard(removed.append)
    assert len(removed) == 1
    # Nothing prepared, nothing to remove.
    Spare(Startable).discard(removed.append)
    assert len(removed) == 1


class RecordingSpare:
    def __init__(self):
        self.prepared = []

    def prepare(self, kwargs):
        self.prepared.append(kwargs)


def fixture_of(module):
    return SimpleNamespace(func=SimpleNamespace(__module__=module))


def test_the_plugin_starts_ahead_what_the_next_test_asks_of_it_in_a_serial_run_with_background_teardown():
    plugin_cluster = SimpleNamespace(
        fixturenames=["cluster"],
        _fixtureinfo=SimpleNamespace(name2fixturedefs={"cluster": [fixture_of(fixtures.__name__)]}),
    )
    own_cluster = SimpleNamespace(
        fixturenames=["cluster"],
        _fixtureinfo=SimpleNamespace(
            name2fixturedefs={"cluster": [fixture_of(fixtures.__name__), fixture_of("test_mine")]}
        ),
    )
    shared_only = SimpleNamespace(
        fixturenames=["shared_cluster"], _fixtureinfo=SimpleNamespace(name2fixturedefs={"shared_cluster": []})
    )
    assert pytest_plugin.asks_for_fresh_cluster(plugin_cluster)
    assert not pytest_plugin.asks_for_fresh_cluster(own_cluster)
    assert not pytest_plugin.asks_for_fresh_cluster(shared_only)
    assert not pytest_plugin.asks_for_fresh_cluster(SimpleNamespace())  # not a function: no fixtures

    def prepared(nextitem, background_teardown=True, known=True, **xdist):
        settings = Settings(ImageSpec(17), settings=("a = 1",), background_teardown=background_teardown)
        config = SimpleNamespace(stash=pytest.Stash(), **xdist)
        config.stash[fixtures.SPARE] = spare = RecordingSpare()
        if known:
            config.stash[fixtures.SESSION] = (settings, "pgharness/postgres:17")
        item = SimpleNamespace(stash=pytest.Stash(), config=config, nodeid="test_a")
        item.stash[fixtures.NEXT_ITEM] = nextitem
        pytest_plugin.prepare_spare(item)
        return spare.prepared

    [kwargs] = prepared(plugin_cluster)
    # The arguments the `cluster` fixture gives a cluster in this session, so that it takes this one.
    assert kwargs["image"] == "pgharness/postgres:17"
    assert kwargs["settings"] == ["a = 1"]
    assert kwargs["owner"] == f"pytest-{os.getpid()}"
    assert prepared(own_cluster) == []
    assert prepared(None) == []  # the last test
    assert prepared(plugin_cluster, known=False) == []  # no test has asked for the image yet
    assert prepared(plugin_cluster, background_teardown=False) == []  # --pg-sync-teardown
    # A pytest-xdist worker of several: the others use the time its tests wait. Alone, it is a serial run.
    assert prepared(plugin_cluster, workerinput={"workerid": "gw0", "workercount": 4}) == []
    assert len(prepared(plugin_cluster, workerinput={"workerid": "gw0", "workercount": 1})) == 1
