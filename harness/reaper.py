"""A watchdog for each process that owns clusters: when that process is gone, what it owned goes too.

A test run killed with SIGKILL (the kernel's OOM killer, a cancelled CI job
that kills the whole process group) runs no teardown, no atexit handler. The
session-start reaping of the pytest plugin removes what such a run left, but
only when a next run comes. testcontainers answers this with Ryuk, a container
that outlives its client; here the same job is done by a small process that
the first cluster a process starts spawns (`ensure_watchdog`):

- it runs in a session of its own (``setsid``): a signal to the test's
  process group does not reach it;
- it learns that its owner exited from the kernel (a pidfd, where Linux has
  one; else by asking every half second), with no traffic to the engine
  while the owner lives;
- then it removes every container, volume and network labelled with that
  owner (``org.pgharness.owner``, its host and start time: a reused PID is
  another owner), on the owner's engine (``DOCKER_HOST``, a remote one too),
  sweeping again for a few seconds for what a compose process of the dead
  owner was still creating, and exits.

``PGHARNESS_REAPER=off`` starts no watchdog (``pgharness gc`` then remains the
way to remove what a killed process left). The watchdog writes what it did to
``$XDG_STATE_HOME/pgharness/reaper-<pid>.log``, removed when it found nothing; the newest 20 are kept.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("pgharness")

#: Seconds the watchdog keeps sweeping after the owner is gone (a compose process it left may still create).
SWEEP_SECONDS = 10.0
#: The environment variable that turns the watchdog off.
SWITCH = "PGHARNESS_REAPER"

_started: set[tuple[int, str]] = set()
_lock = threading.Lock()


def enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether a watchdog is started (``PGHARNESS_REAPER`` is not off/0/false/no)."""
    return environ.get(SWITCH, "").strip().lower() not in ("off", "0", "false", "no")


def _log_path(pid: int) -> Path:
    from pgharness.environments import state_dir

    return state_dir() / f"reaper-{pid}.log"


def ensure_watchdog(owner_labels: dict[str, str], engine_url: str) -> int | None:
    """Start the watchdog of this process for the clusters on `engine_url` labelled `owner_labels`, once per
    process and engine; return its pid (None: off, or started before).

    Only a process owner that is this process is watched (``pytest-<pid>``, ``pid-<pid>``): an environment a
    person keeps (``harness-up``) has no watchdog.
    """
    from pgharness.constants import OWNER_LABEL, OWNER_STARTED_LABEL
    from pgharness.environments import owner_pid

    pid = os.getpid()
    if not enabled() or owner_pid(owner_labels.get(OWNER_LABEL, "")) != pid:
        return None
    with _lock:
        if (pid, engine_url) in _started:
            return None
        _started.add((pid, engine_url))
    path = _log_path(pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "pgharness.reaper",
        "--pid", str(pid),
        "--owner", owner_labels[OWNER_LABEL],
        "--started", owner_labels.get(OWNER_STARTED_LABEL, ""),
    ]  # fmt: skip
    # The same environment: the child finds the engine as this process did (DOCKER_HOST, a context).
    env = dict(os.environ)
    # posix_spawn, not subprocess: no Popen object is left to warn at exit about a child still running,
    # and the child is in a new session from its first instruction.
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    child = os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
    log.info("### Watchdog %d removes what process %d leaves if it is killed", child, pid)
    return child


def wait_for_exit(pid: int, started: str) -> None:
    """Return once process `pid` (started at `started` clock ticks, if given) no longer exists."""
    from pgharness.environments import process_started

    def gone() -> bool:
        now = process_started(pid)
        return now is None or (bool(started) and now != started)

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None and not gone():
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.poll()  # readable once the process has exited
        finally:
            os.close(fd)
        return
    while not gone():
        time.sleep(0.5)


def sweep(owner: str, started: str) -> list[str]:
    """Remove every compose project with resources labelled as owned by `owner` (of this host, started at
    `started`); return the projects' names."""
    from pgharness.compose import docker_client, remove_project
    from pgharness.constants import OWNER_HOST_LABEL, OWNER_LABEL, OWNER_STARTED_LABEL, PROJECT_LABEL
    from pgharness.environments import this_host

    client = docker_client()
    labels = [f"{OWNER_LABEL}={owner}", f"{OWNER_HOST_LABEL}={this_host()}"]
    if started:
        labels.append(f"{OWNER_STARTED_LABEL}={started}")
    filters: dict[str, str | list[str] | bool] = {"label": labels}
    found = (
        client.containers.list(all=True, filters=filters, sparse=True)
        + client.volumes.list(filters=filters)
        + client.networks.list(filters=filters)
    )
    projects = sorted({(thing.attrs.get("Labels") or {}).get(PROJECT_LABEL, "") for thing in found} - {""})
    for project in projects:
        remove_project(client, project)
    return projects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgharness.reaper", description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--started", default="")
    args = parser.parse_args(argv)
    wait_for_exit(args.pid, args.started)
    removed: list[str] = []
    quiet_since = time.monotonic()
    end = time.monotonic() + SWEEP_SECONDS
    while time.monotonic() < end:
        try:
            projects = sweep(args.owner, args.started)
        except Exception as e:  # noqa: BLE001 -- an engine that does not answer now may answer at the next sweep
            print(f"{time.strftime('%H:%M:%S')} sweep failed: {type(e).__name__}: {e}", flush=True)
            projects = []
        if projects:
            print(f"{time.strftime('%H:%M:%S')} removed {', '.join(projects)} left by {args.owner}", flush=True)
            removed += projects
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 3.0:
            break
        time.sleep(1.0)
    if not removed:
        with contextlib.suppress(OSError):
            _log_path(args.pid).unlink()
    _keep_newest_logs(KEPT_LOGS)
    return 0


#: How many watchdog logs (each of a watchdog that removed something) are kept; older ones go.
KEPT_LOGS = 20


def _keep_newest_logs(count: int) -> None:
    """Remove all but the `count` newest watchdog logs, so they do not pile up."""
    with contextlib.suppress(OSError):  # another watchdog pruning at the same moment: its files are gone
        logs = sorted(_log_path(0).parent.glob("reaper-*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in logs[count:]:
            old.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
