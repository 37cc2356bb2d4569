"""A pytest plugin for `bench/profile.py`: what each pytest process spent itself, how many clusters it
started and of which kind, and (in the controller) each test's time by file.

Loaded with ``-p cpu_profile`` (bench/ on PYTHONPATH); each process writes ``<pid>.json`` into the folder
named by PGHARNESS_BENCH_PROFILE at its end.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import resource
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

try:
    Cluster: Any = importlib.import_module("pgharness.cluster").Cluster
except ImportError:  # a checkout from before the package's rename (63352ba), run by profile.py --compare
    Cluster = importlib.import_module("harness.cluster").Cluster

_starts: Counter[str] = Counter()
_nodes: Counter[str] = Counter()
_by_file: dict[str, float] = {}
_tests = 0
_requests: Counter[str] = Counter()
#: The machine's busy CPU-seconds while each file's tests ran in this process (setup, call, teardown): what
#: they cost when this process is the only one running tests (a serial run, `profile.py --serial`).
_machine_by_file: dict[str, float] = {}
_tests_by_file: Counter[str] = Counter()

#: The function that starts a cluster, by what kind of start it is (the innermost caller wins).
_KINDS = {"_started": "spare", "get": "shared", "_start_afresh": "shared afresh", "start": "fresh"}


def _kind() -> str:
    for frame in inspect.stack()[2:8]:
        kind = _KINDS.get(frame.function)
        if kind is not None and frame.filename.endswith(("spare.py", "fixtures.py", "pytest_plugin.py")):
            return kind
    return "other"


def _counting(method: Any, counter: Counter[str], kind: Any) -> Any:
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[kind(*args) if callable(kind) else kind] += 1
        return method(self, *args, **kwargs)

    return wrapper


def _endpoint(method: str, url: str) -> str:
    """``GET /containers/{id}/json``: a request to the engine, ids and names left out."""
    path = url.split("?", 1)[0].split("/v1.", 1)[-1].split("/", 1)[-1]
    parts = path.split("/")
    kept = [parts[0], *("{id}" if i == 1 and len(parts) > 2 else part for i, part in enumerate(parts[1:], 1))]
    if len(parts) == 2 and parts[1] not in ("json", "create", "prune"):
        kept[1] = "{id}"
    return f"{method} /{'/'.join(kept)}"


def pytest_configure(config: pytest.Config) -> None:
    send = requests.Session.send

    def counted(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        _requests[_endpoint(str(request.method), str(request.url))] += 1
        return send(self, request, **kwargs)

    requests.Session.send = counted  # type: ignore[method-assign]
    Cluster.start = _counting(Cluster.start, _starts, lambda *_: _kind())
    Cluster.add_node = _counting(Cluster.add_node, _nodes, "standby")
    Cluster.add_primary = _counting(Cluster.add_primary, _nodes, "primary")


def machine_busy() -> float:
    """CPU-seconds the whole machine has spent busy since boot (/proc/stat: user, nice, system, irq, softirq)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    before = machine_busy()
    yield
    name = item.nodeid.split("::", 1)[0]
    _machine_by_file[name] = _machine_by_file.get(name, 0.0) + machine_busy() - before


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _tests
    name = report.nodeid.split("::", 1)[0]
    _by_file[name] = _by_file.get(name, 0.0) + report.duration
    if report.when == "call":
        _tests += 1
        _tests_by_file[name] += 1


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = os.environ.get("PGHARNESS_BENCH_PROFILE")
    if not folder:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    controller = not hasattr(config, "workerinput")
    data = {
        "controller": controller,
        "self_cpu_s": usage.ru_utime + usage.ru_stime,
        "cluster_starts": dict(_starts),
        "nodes_added": dict(_nodes),
        "test_seconds_by_file": dict(_by_file) if controller else {},
        "tests": _tests if controller else 0,
        "tests_by_file": dict(_tests_by_file) if controller else {},
        "engine_requests": dict(_requests),
        "machine_cpu_s_by_file": dict(_machine_by_file),
    }
    Path(folder, f"{os.getpid()}.json").write_text(json.dumps(data))
