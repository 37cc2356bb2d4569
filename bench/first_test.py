"""A pytest plugin for `make bench`: when collection ended, and when the first test's setup and call began.

Loaded with ``-p first_test`` (bench/ on PYTHONPATH); writes seconds since collection ended to the JSON file
named by PGHARNESS_BENCH_FIRST_TEST.
"""

import json
import os
import time

import pytest

_marks: dict[str, float] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    _marks["collected"] = time.perf_counter()


def pytest_runtest_setup(item: pytest.Item) -> None:
    _marks.setdefault("setup", time.perf_counter())


def pytest_runtest_call(item: pytest.Item) -> None:
    _marks.setdefault("call", time.perf_counter())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if "collected" in _marks and "call" in _marks:
        since = {k: v - _marks["collected"] for k, v in _marks.items() if k != "collected"}
        with open(os.environ["PGHARNESS_BENCH_FIRST_TEST"], "w") as f:
            json.dump(since, f)
