"""`pytest -n auto` (make test's default): two workers per CPU, at most what the engines hold."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgharness import fixtures, pytest_plugin, workers
from pgharness.options import Settings
from pgharness.pytest_plugin import AUTO_WORKERS
from pgharness.workers import EngineCapacity, auto_workers

GIB = 1 << 30


def test_this_machine_gets_two_workers_per_core():
    # A worker spends much of its time waiting on containers and PostgreSQL: two a core keep the cores busy.
    workers, why = auto_workers(2, [EngineCapacity(cpus=2, memory=23 * GIB)])
    assert workers == 4
    assert why == (
        "4 (2 per CPU of this machine), 6 (the default address pools), 4 (2 per CPU of the engine), "
        "15 (the engine's memory at 1.5 GiB a worker)"
    )


def test_a_big_machine_stops_at_what_the_default_address_pools_hold():
    workers, why = auto_workers(32, [EngineCapacity(cpus=32, memory=128 * GIB)])
    assert workers == 6
    assert "6 (the default address pools)" in why


def test_an_engine_in_a_small_vm_bounds_a_big_laptop():
    # Docker Desktop: the engine has the CPUs and memory of its VM, not of the machine.
    assert auto_workers(10, [EngineCapacity(cpus=2, memory=8 * GIB)])[0] == 4
    workers, why = auto_workers(10, [EngineCapacity(cpus=8, memory=5 * GIB)])
    assert workers == 3
    assert "3 (the engine's memory at 1.5 GiB a worker)" in why


def test_one_core_gets_two_workers_where_the_memory_holds_them():
    assert auto_workers(1, [EngineCapacity(cpus=1, memory=4 * GIB)])[0] == 2


def test_one_worker_is_a_plain_run():
    assert auto_workers(8, [EngineCapacity(cpus=8, memory=2 * GIB)])[0] == 0
    assert auto_workers(1, [EngineCapacity(cpus=1, memory=2 * GIB)])[0] == 0


def test_an_engine_that_did_not_answer_is_bounded_by_the_pools_alone():
    workers, why = auto_workers(8, [None])
    assert workers == 6
    assert why == (
        "16 (2 per CPU of this machine), 6 (the default address pools); "
        "an engine that did not answer is bounded by the address pools alone"
    )


def test_workers_go_round_robin_so_the_smallest_engine_counts_once_per_engine():
    engines = [EngineCapacity(cpus=1, memory=8 * GIB), EngineCapacity(cpus=8, memory=32 * GIB)]
    assert auto_workers(16, engines)[0] == 4
    assert auto_workers(8, [EngineCapacity(cpus=16, memory=64 * GIB)] * 3)[0] == 16


class Config:
    """The part of pytest.Config the hook reads: the session's settings, resolved from `engines`."""

    def __init__(self, engines=()):
        self.stash = pytest.Stash()
        self.stash[fixtures.SETTINGS_KEY] = Settings(engines=tuple(engines))


def test_the_hook_asks_each_engine_and_says_why_in_the_header(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(8)))
    asked = []

    def capacity(url):
        asked.append(url)
        return EngineCapacity(cpus=3, memory=16 * GIB)

    monkeypatch.setattr(pytest_plugin, "engine_capacity", capacity)
    config = Config(["tcp://127.0.0.1:23751", "tcp://127.0.0.1:23752"])
    assert pytest_plugin.pytest_xdist_auto_num_workers(config) == 12
    assert asked == ["tcp://127.0.0.1:23751", "tcp://127.0.0.1:23752"]
    assert config.stash[AUTO_WORKERS] == (
        "-n auto: 12 workers, the least of 16 (2 per CPU of this machine), 12 (the default address pools), "
        "12 (2 per CPU of the engine), 20 (the engine's memory at 1.5 GiB a worker)"
    )


def test_pytest_xdists_own_setting_wins(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")
    monkeypatch.setattr(pytest_plugin, "engine_capacity", lambda url: pytest.fail("no engine is asked"))
    assert pytest_plugin.pytest_xdist_auto_num_workers(Config()) is None


def test_the_plugin_answers_before_pytest_xdist_in_whatever_order_plugins_load(tmp_path):
    # Which plugin loads first depends on where pytest runs. Seen from the checkout: pgharness first, so
    # pytest-xdist's own answer (the CPUs alone) was asked first and the engines never were.
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    env = {name: value for name, value in os.environ.items() if name != "PYTEST_XDIST_AUTO_NUM_WORKERS"}
    for cwd in (tmp_path, Path(__file__).parents[2]):
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-n", "auto", "--collect-only", "-p", "no:cacheprovider", str(tmp_path)],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "pgharness: -n auto: " in run.stdout, (cwd, run.stdout[-2000:])
