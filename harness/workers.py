"""How many pytest-xdist workers ``-n auto`` starts, and which engine each worker uses.

Pure logic apart from `engine_capacity`, which asks an engine: unit-tested without Docker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pgharness.compose import DEFAULT_POOL_NETWORKS
from pgharness.engine import resolve
from pgharness.errors import HarnessError


def engine_of_worker(engines: Sequence[str], worker: str) -> str:
    """The engine of pytest-xdist worker `worker` (``gw0``, ``gw1``, ...): round-robin; the first without xdist."""
    index = int(worker[2:]) if re.fullmatch(r"gw\d+", worker) else 0
    return engines[index % len(engines)]


#: Clusters one pytest-xdist worker of this suite holds at its peak: its shared pair, a shared logical
#: pair, its test's own clusters and those still being removed behind it, with room to spare.
CLUSTERS_PER_WORKER = 5
#: Workers a CPU: a worker spends much of its time waiting on containers and PostgreSQL, so one a CPU
#: leaves the CPUs idle part of the run (the bench's ``-n auto`` and ``-n 2`` rows measure it).
WORKERS_PER_CPU = 2
#: Engine memory a worker may take at its peak: its clusters' tmpfs data and shared buffers (measured as
#: the drop of the engine's MemAvailable at a run's peak, with a margin).
WORKER_MEMORY = 3 << 29  # 1.5 GiB


@dataclass(frozen=True)
class EngineCapacity:
    """What `docker info` says of an engine: its CPUs and its memory in bytes."""

    cpus: int
    memory: int


def auto_workers(local_cpus: int, engines: list[EngineCapacity | None]) -> tuple[int, str]:
    """How many workers ``pytest -n auto`` starts, and why: `WORKERS_PER_CPU` per CPU of this machine, at
    most as many per CPU of each engine and what its memory (`WORKER_MEMORY` a worker) and Docker's
    default address pools (`CLUSTERS_PER_WORKER` clusters a worker) hold; workers go to the engines
    round-robin, so the smallest engine counts once per engine. An engine that did not answer (None) is
    bounded by the address pools alone. One worker is no worker: 0, a plain run without pytest-xdist's
    processes.
    """
    limits = {f"{WORKERS_PER_CPU} per CPU of this machine": WORKERS_PER_CPU * max(1, local_cpus)}
    limits["the default address pools"] = DEFAULT_POOL_NETWORKS // CLUSTERS_PER_WORKER * len(engines)
    known = [engine for engine in engines if engine is not None]
    if known:
        limits[f"{WORKERS_PER_CPU} per CPU of the engine"] = WORKERS_PER_CPU * min(e.cpus for e in known) * len(engines)
        memory = max(1, min(engine.memory for engine in known) // WORKER_MEMORY) * len(engines)
        limits[f"the engine's memory at {WORKER_MEMORY / (1 << 30):g} GiB a worker"] = memory
    workers = min(limits.values())
    why = ", ".join(f"{value} ({name})" for name, value in limits.items())
    if len(known) < len(engines):
        why += "; an engine that did not answer is bounded by the address pools alone"
    return (workers if workers > 1 else 0), why


def engine_capacity(url: str | None) -> EngineCapacity | None:
    """The CPUs and memory of the engine at `url` (default: the user's), or None when it does not answer
    within 10 s (the run then says why at its first cluster)."""
    import docker.errors

    from pgharness.compose import ENGINE_TIMEOUT_ERRORS, docker_client

    try:
        client = docker_client(resolve({**os.environ, "DOCKER_HOST": url} if url else None), timeout=10)
    except HarnessError:
        return None
    try:
        info = client.info()
        return EngineCapacity(cpus=int(info["NCPU"]), memory=int(info["MemTotal"]))
    except (docker.errors.DockerException, *ENGINE_TIMEOUT_ERRORS, KeyError, TypeError, ValueError):
        return None
    finally:
        client.close()


def local_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform has it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
