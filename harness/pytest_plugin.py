"""The harness's pytest plugin (registered through the ``pytest11`` entry point).

Hooks only: options and settings (`pgharness.options`), -n auto's workers (`pgharness.workers`), the report
header, markers and deadlines, evidence of failed tests, the shared clusters' reset after each test and the
next test's cluster started ahead (`pgharness.spare`). The fixtures (``cluster``, ``cluster_factory``,
``shared_cluster``, ``shared_cluster_factory``, ``harness_image``, ``harness_settings``, ``pg_major``) live
in `pgharness.fixtures` and are re-exported here, where pytest finds them.

Options: every setting of `pgharness.options.OPTIONS` is a flag, an environment variable and an ini
value; the command line wins over the environment, which wins over the ini file (`pgharness.options`).
The report header names each value that is not the default and where it came from.

With pytest-xdist, ``-n auto`` starts `pgharness.workers.WORKERS_PER_CPU` workers per CPU, at most what
the engines' CPUs, memory and Docker's default address pools hold; the report header says which bound
chose it.
"""

from __future__ import annotations

import logging
import os
import signal
import warnings
from collections.abc import Generator

import pytest
import pytest_timeout

from pgharness import evidence, registry, shared
from pgharness.cluster import Cluster
from pgharness.engine import resolve
from pgharness.errors import HarnessError, StartFailed
from pgharness.fixtures import (  # the fixtures, re-exported: pytest finds them in the plugin's namespace
    CLUSTERS,
    NEXT_ITEM,
    REPORTS,
    SESSION,
    SHARED_USED,
    SPARE,
    SharedClusterChanged,
    asks_for_fresh_cluster,
    cluster as cluster,
    cluster_arguments,
    cluster_factory as cluster_factory,
    evidence_path,
    harness_image as harness_image,
    harness_settings as harness_settings,
    note_baseline,
    pg_major as pg_major,
    pg_version_gate as pg_version_gate,
    remove_cluster,
    settings_of,
    shared_cluster as shared_cluster,
    shared_cluster_factory as shared_cluster_factory,
    shared_clusters as shared_clusters,
    shared_of,
)
from pgharness.image import image_exists, server_version
from pgharness.option_table import OPTIONS
from pgharness.spare import Spare, first_line
from pgharness.versions import version_matches
from pgharness.workers import auto_workers, engine_capacity, engine_of_worker, local_cpus

log = logging.getLogger("pgharness")


MARKERS = {
    "streaming": "streaming replication from a primary to a standby",
    "archive": "WAL archiving and restore_command (log shipping)",
    "readonly": "read-only behaviour of a hot standby",
    "promotion": "promoting a standby to primary",
    "slots": "replication slots, physical and logical (logical decoding)",
    "logical": "logical replication: publications, subscriptions, upgrades across major versions",
    "pitr": "point-in-time recovery from a base backup and the archive",
    "backup": "base backups, logical dumps, backup verification, rebuild guard rail, lag",
    "failover": "failover under faults: crash, hang, partition, rejoin",
    "sync": "synchronous replication and what commits it keeps: priority and quorum commit",
    "crash": "crash recovery: a killed backend, an immediate stop, prepared transactions, torn WAL",
    "degraded": "degraded conditions: slow and lossy links, black holes, full disks, starved CPU and memory",
    "cascade": "cascading standbys",
    "upgrade": "major upgrades with pg_upgrade: link and copy modes, standbys by rsync or base backup",
    "hot_standby": "hot standby queries against replay: recovery conflicts, feedback, delayed standbys, convergence",
    "security": "security defaults: loopback-only ports, SCRAM, a replication-only role, secrets kept out",
    "downstream": "use from another project: override files and added services, settings, init SQL, the wheel",
    "lifecycle": "clusters are removed after failed start-up, failed tests and Ctrl-C",
    "cli": "the pgharness command line (pgharness up / down / image), as make up and make down run it",
    "docker": "needs a Docker engine (set on every test that uses a cluster)",
    "pg(spec)": "run only on PostgreSQL versions matching spec, e.g. pg('>=17') or pg('>=13,<16'); others skip",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every setting of `pgharness.options.OPTIONS`: a flag, an ini value and an environment variable."""
    group = parser.getgroup("pgharness", "PostgreSQL replication harness")
    for option in OPTIONS:
        where = f"env {option.env}; ini {option.name}"
        if option.kind == "flag":
            group.addoption(option.flag, dest=option.name, action="store_true", default=False,
                            help=f"{option.help} ({where})")  # fmt: skip
            parser.addini(option.name, option.help, type="bool", default=None)
            continue
        repeated = option.kind in ("paths", "lines", "words")
        group.addoption(option.flag, dest=option.name, metavar=option.metavar, action="append" if repeated else "store",
                        help=f"{option.help} ({where})")  # fmt: skip
        if repeated:
            parser.addini(option.name, option.help, type="linelist", default=None)
        else:
            parser.addini(option.name, option.help, type="string", default=None)


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    config.stash[SPARE] = Spare(Cluster)
    engines = settings_of(config).engines
    if engines:
        # Before any client exists: the SDK, `docker compose` and `docker import` all read DOCKER_HOST.
        os.environ["DOCKER_HOST"] = engine_of_worker(engines, os.environ.get("PYTEST_XDIST_WORKER", ""))
        os.environ.pop("DOCKER_CONTEXT", None)
    # A CI job that is cancelled gets SIGTERM: tear down as for Ctrl-C instead of dying with clusters up.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    if not hasattr(config, "workerinput"):  # once a run: pytest-xdist's workers leave it to the controller
        config.stash[REAPED] = _reap_left_behind([*engines] or [None])


REAPED = pytest.StashKey[list[str]]()


def _reap_left_behind(engines: list[str | None]) -> list[str]:
    """Remove, on each engine of the run, the environments that provably belong to a dead process of this
    host (`pgharness.environments.gc`: a run killed with SIGKILL whose watchdog could not finish); return
    report header lines saying what was removed, or why nothing could be checked."""
    from pgharness.compose import docker_client
    from pgharness.environments import gc

    lines = []
    for url in engines:
        engine = resolve({**os.environ, "DOCKER_HOST": url}) if url else None
        try:
            removed, _ = gc(docker_client(engine, timeout=30))
        except HarnessError as e:
            lines.append(f"left-behind environments not checked: {first_line(e)}")
            continue
        if removed:
            where = f" on {url}" if url else ""
            lines.append(f"removed {len(removed)} environment(s){where} left by dead processes: {', '.join(removed)}")
    return lines


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the last fixtures' teardown (an interrupted test's included): remove the spare no test took;
    wait for the clusters still being removed in the background; a removal that failed fails the run."""
    if SESSION in session.config.stash:
        settings, _ = session.config.stash[SESSION]
        session.config.stash[SPARE].discard(lambda cluster: remove_cluster(cluster, settings))
    errors = registry.wait_for_removals()
    if errors:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for error in errors:
            line = f"pgharness: could not remove cluster {error} (tried again at exit)"
            if reporter is not None:
                reporter.write_line(line, red=True)
            else:
                log.error("%s", line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


AUTO_WORKERS = pytest.StashKey[str]()


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (``make test``'s default): as many workers as this machine and the engines hold
    (`auto_workers`); PYTEST_XDIST_AUTO_NUM_WORKERS, pytest-xdist's own setting, still wins.

    First of the hook's implementations (the first answer counts): pytest-xdist's own counts the CPUs
    alone, and plugins load in no set order.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    engines: list[str | None] = [*settings_of(config).engines] or [None]
    workers, why = auto_workers(local_cpus(), [engine_capacity(url) for url in engines])
    config.stash[AUTO_WORKERS] = f"-n auto: {workers or 'no'} workers, the least of {why}"
    return workers


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = settings_of(config)
    tag = settings.spec.tag
    try:
        version = server_version(tag) if image_exists(tag) else "not built yet: the first test builds it"
    except HarnessError as e:
        version = str(e)
    except Exception as e:  # noqa: BLE001 -- a report header must never stop the run
        version = f"unknown ({type(e).__name__}: {e})"
    lines = [f"pgharness: image {tag} ({version})"]
    lines += [f"pgharness: {line}" for line in settings.header()]
    if AUTO_WORKERS in config.stash:
        lines.append(f"pgharness: {config.stash[AUTO_WORKERS]}")
    lines += [f"pgharness: {line}" for line in config.stash.get(REAPED, [])]
    engines = settings.engines
    workers = int(getattr(config.option, "numprocesses", 0) or 0)
    if engines:
        for index, url in enumerate(engines):
            assigned = [f"gw{w}" for w in range(workers) if w % len(engines) == index]
            lines.append(f"pgharness: engine {url}" + (f" (workers {', '.join(assigned)})" if assigned else ""))
    else:
        try:
            lines.append(f"pgharness: engine {resolve()}")
        except HarnessError as e:
            lines.append(f"pgharness: engine: {e}")
    return lines


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    if report.failed and call.excinfo is not None and call.excinfo.errisinstance(StartFailed):
        # A cluster that did not start: its own words, states and log tails, not the harness's traceback
        # (a test that expects a failed start catches StartFailed, or any HarnessError, as usual).
        report.longrepr = str(call.excinfo.value)
    if report.failed and report.when in ("setup", "call"):
        clusters: list[Cluster] = [*item.stash.get(CLUSTERS, [])]
        clusters += [c for c in shared_of(item) if all(c is not known for known in clusters)]
        settings = settings_of(item.config)
        for cluster in clusters:
            try:
                path = evidence.save_evidence(cluster, evidence_path(settings, item, cluster))
                report.sections.append(("pgharness evidence", (path / "summary.txt").read_text()))
            except Exception as e:  # noqa: BLE001 -- evidence must never hide the failure itself
                log.error("could not save evidence of cluster %r: %s", cluster.name, e)
    return report


def cluster_test_timeout(config: pytest.Config) -> float | None:
    """The deadline the plugin gives a test that uses a cluster: None when the user set a pytest-timeout
    timeout (``--timeout``, ``PYTEST_TIMEOUT``, ini ``timeout``: theirs wins), else the ``pg_test_timeout``
    setting; 0 for none."""
    if pytest_timeout.get_env_settings(config).timeout is not None:
        return None
    seconds = settings_of(config).test_timeout
    return seconds if seconds > 0 else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cluster_fixtures = {"cluster", "cluster_factory", "shared_cluster", "shared_cluster_factory", "harness_image"}
    deadline = cluster_test_timeout(config)
    for item in items:
        if cluster_fixtures & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)
            # Nothing else bounds a test in a project that only installs the plugin: a commit blocked on
            # synchronous replication would hang the run. A test's own timeout mark wins.
            if deadline is not None and item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(deadline, method="signal"))
        for mark in item.iter_markers("pg"):
            if len(mark.args) != 1 or not isinstance(mark.args[0], str):
                raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.pg('>=17'), not {mark}")
            version_matches(mark.args[0], 17)  # a malformed spec fails the collection, not the test


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    item.stash[NEXT_ITEM] = nextitem


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Note what the shared cluster holds just before a test's body runs (its fixtures have run); start
    the next test's fresh cluster meanwhile when it asks for one (`pgharness.spare`)."""
    cluster = getattr(item, "funcargs", {}).get("shared_cluster")
    if isinstance(cluster, Cluster):
        note_baseline(item, cluster)
    prepare_spare(item)
    return (yield)


def prepare_spare(item: pytest.Item) -> None:
    """Start the ``cluster`` of the test after `item` now, when that test asks for the plugin's fixture and
    the session's image is known. Only in a run of one process: pytest-xdist's other workers already use the
    time a test waits, and a start ahead would take its CPU from them (the suite is CPU-bound on workers).
    Not with --pg-sync-teardown (one cluster's life at a time)."""
    nextitem = item.stash.get(NEXT_ITEM, None)
    known = item.config.stash.get(SESSION, None)
    workers = getattr(item.config, "workerinput", {}).get("workercount", 1)
    if nextitem is None or known is None or workers != 1 or not asks_for_fresh_cluster(nextitem):
        return
    settings, image = known
    if not settings.background_teardown:
        return
    try:
        item.config.stash[SPARE].prepare(cluster_arguments(settings, image, {}))
    except HarnessError as e:
        log.warning("could not start a cluster ahead for %s: %s", nextitem.nodeid, first_line(e))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """After a test's body on shared clusters, before its fixtures' teardown: remove what the body made,
    and start a cluster afresh when the body changed more than that.

    What went wrong is reported after the fixtures' teardown, as this test's: a
    `SharedClusterChanged` warning, or a failure when the cluster could not be
    started afresh. Raised before it, it would skip that teardown and fail the
    next test's setup with pytest's own error."""
    changed, failed = [], []
    for used, before in item.stash.get(SHARED_USED, []):
        problem = shared.reset(used, before)
        if problem is not None:
            changed.append(problem)
            error = _start_afresh(used, item, problem)
            if error:
                failed.append(error)
    item.stash[SHARED_USED] = []
    result = yield
    if failed:
        pytest.fail("; ".join(failed), pytrace=False)
    for problem in changed:
        warnings.warn(
            SharedClusterChanged(f"{item.nodeid} changed the shared cluster ({problem}): started afresh"), stacklevel=1
        )
    return result


def _start_afresh(cluster: Cluster, item: pytest.Item, problem: str) -> str | None:
    """Start `cluster` afresh under its name; what failed, or None."""
    log.warning("shared cluster %r changed by %s: %s; starting it afresh", cluster.name, item.nodeid, problem)
    try:
        cluster.destroy()
        cluster.start()
    except HarnessError as e:
        return f"the shared cluster could not be started afresh: {e}"
    return None
