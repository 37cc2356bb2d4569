"""The harness's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:
    cluster_factory   make fresh clusters in a test: ``cluster_factory()``; each
                      is removed after the test (kept with --keep-on-failure when
                      the test failed)
    cluster           a fresh primary + standby for a test that changes roles; in a run
                      of one process, started while the test before it runs
                      (`pgharness.spare`)
    shared_cluster    one primary + standby for the session, for tests that leave
                      the roles as they are; after each test, what it made is
                      removed, and a cluster it changed is started afresh
    shared_cluster_factory
                      shared clusters of other shapes: ``shared_cluster_factory(
                      topology="logical")``, one per set of arguments, reset alike
    harness_image     the node image's tag, built once per session if missing

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
import re
import signal
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_timeout

from pgharness import evidence, registry, shared
from pgharness.cluster import Cluster
from pgharness.compose import ADDRESS_POOLS_EXHAUSTED
from pgharness.engine import resolve
from pgharness.errors import HarnessError, StartFailed
from pgharness.image import ensure_image, image_exists, server_version
from pgharness.options import OPTIONS, OptionError, Settings, Sources, resolve_settings
from pgharness.spare import Spare, arguments_key, first_line
from pgharness.versions import parse_postgres_v, version_matches
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
    "sync": "synchronous replication and what commits it keeps",
    "cascade": "cascading standbys",
    "hot_standby": "hot standby queries against replay: recovery conflicts, feedback, delayed standbys, convergence",
    "security": "security defaults: loopback-only ports, SCRAM, a replication-only role, secrets kept out",
    "downstream": "use from another project: override files and added services, settings, init SQL, the wheel",
    "lifecycle": "clusters are removed after failed start-up, failed tests and Ctrl-C",
    "cli": "the pgharness command line (pgharness up / down / image), as make up and make down run it",
    "docker": "needs a Docker engine (set on every test that uses a cluster)",
    "pg(spec)": "run only on PostgreSQL versions matching spec, e.g. pg('>=17') or pg('>=13,<16'); others skip",
}

_reports = pytest.StashKey[dict[str, pytest.TestReport]]()
_clusters = pytest.StashKey[list[Cluster]]()
_shared_used = pytest.StashKey[list[tuple[Cluster, shared.Baseline]]]()
_next_item = pytest.StashKey["pytest.Item | None"]()
#: The session's settings and image, once a test has asked for them (a spare needs both).
_session = pytest.StashKey[tuple[Settings, str]]()
_settings = pytest.StashKey[Settings]()
_spare = pytest.StashKey[Spare[Cluster]]()


class SharedClusterChanged(UserWarning):
    """A test changed the shared cluster beyond what the reset removes: it was started afresh."""


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


def settings_of(config: pytest.Config) -> Settings:
    """The session's settings by `pgharness.options`' precedence (command line, environment, ini, default),
    resolved once; a bad value is a usage error (exit 4) in one line that names it as the user wrote it."""
    if _settings not in config.stash:
        sources = Sources(
            command_line={option.name: config.getoption(option.name) for option in OPTIONS},
            env=os.environ,
            ini=config.getini,
            invocation_dir=config.invocation_params.dir,
            rootdir=config.rootpath,
            inifile=config.inipath,
        )
        try:
            config.stash[_settings] = resolve_settings(sources)
        except OptionError as e:
            raise pytest.UsageError(f"pgharness: {e}") from None
    return config.stash[_settings]


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    config.stash[_spare] = Spare(Cluster)
    engines = settings_of(config).engines
    if engines:
        # Before any client exists: the SDK, `docker compose` and `docker import` all read DOCKER_HOST.
        os.environ["DOCKER_HOST"] = engine_of_worker(engines, os.environ.get("PYTEST_XDIST_WORKER", ""))
        os.environ.pop("DOCKER_CONTEXT", None)
    # A CI job that is cancelled gets SIGTERM: tear down as for Ctrl-C instead of dying with clusters up.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the last fixtures' teardown (an interrupted test's included): remove the spare no test took;
    wait for the clusters still being removed in the background; a removal that failed fails the run."""
    if _session in session.config.stash:
        settings, _ = session.config.stash[_session]
        session.config.stash[_spare].discard(lambda cluster: remove_cluster(cluster, settings))
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
    item.stash.setdefault(_reports, {})[report.when] = report
    if report.failed and call.excinfo is not None and call.excinfo.errisinstance(StartFailed):
        # A cluster that did not start: its own words, states and log tails, not the harness's traceback
        # (a test that expects a failed start catches StartFailed, or any HarnessError, as usual).
        report.longrepr = str(call.excinfo.value)
    if report.failed and report.when in ("setup", "call"):
        clusters: list[Cluster] = [*item.stash.get(_clusters, [])]
        clusters += [c for c in _shared_of(item) if all(c is not known for known in clusters)]
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


def failed_in(node: pytest.Item) -> bool:
    """Whether the test's setup or call phase failed (or errored)."""
    reports = node.stash.get(_reports, {})
    return any(r.failed for r in reports.values())


def evidence_name(nodeid: str) -> str:
    """The folder name of a test's evidence: its node id with anything but [A-Za-z0-9_.-] as ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")


def evidence_path(settings: Settings, node: pytest.Item, cluster: Cluster) -> Path:
    return settings.evidence_dir / evidence_name(node.nodeid) / cluster.name


@pytest.fixture(scope="session")
def harness_settings(pytestconfig: pytest.Config) -> Settings:
    """The session's settings (`pgharness.options.Settings`), with where each non-default came from."""
    return settings_of(pytestconfig)


@pytest.fixture(scope="session")
def pg_major(harness_image: str) -> int:
    """The major version of the server under test, read from the image's own ``postgres -V``."""
    return parse_postgres_v(server_version(harness_image))


@pytest.fixture(autouse=True)
def _pg_version_gate(request: pytest.FixtureRequest) -> None:
    """Skip a test marked ``pg(spec)`` on a server version outside spec, saying why."""
    specs = [str(mark.args[0]) for mark in request.node.iter_markers("pg")]
    if not specs:
        return
    major: int = request.getfixturevalue("pg_major")
    for spec in specs:
        if not version_matches(spec, major):
            pytest.skip(f"needs PostgreSQL {spec}; this run has PostgreSQL {major}")


@pytest.fixture(scope="session")
def harness_image(pytestconfig: pytest.Config, harness_settings: Settings) -> str:
    """The node image's tag; built (once, cached on its inputs) when missing or stale."""
    try:
        image = ensure_image(harness_settings.spec)
    except HarnessError as e:
        pytest.exit(f"pgharness: {e}", returncode=1)
    pytestconfig.stash[_session] = (harness_settings, image)
    return image


def _finish(cluster: Cluster, settings: Settings, item: pytest.Item, failed: bool) -> None:
    """After a test: remove its cluster, or keep it running with --keep-on-failure when the test failed."""
    if failed and settings.keep_on_failure:
        cluster.release()
        print(
            f"\npgharness: kept cluster {cluster.name!r} of failed {item.nodeid}:\n"
            f"  pgharness status --name {cluster.name}\n"
            f"  pgharness psql primary --name {cluster.name}\n"
            f"  pgharness logs standby --name {cluster.name}\n"
            f"  pgharness down --name {cluster.name}      (removes it)"
        )
        return
    remove_cluster(cluster, settings)


def remove_cluster(cluster: Cluster, settings: Settings) -> None:
    """Remove `cluster` as the session removes test clusters: in the background (off the next test's
    critical path; registered until it is gone, waited for at the session's end), or at once with
    --pg-sync-teardown."""
    if settings.background_teardown:
        registry.register(cluster)  # a handle on a project started elsewhere is not registered yet
        registry.remove_in_background(cluster)
    else:
        cluster.destroy()


ClusterFactory = Callable[..., Cluster]


def cluster_arguments(settings: Settings, image: str, own: dict[str, Any]) -> dict[str, Any]:
    """The `Cluster` arguments of a test's cluster: the session's settings, its image and this process as
    owner, with the test's `own` arguments winning."""
    return {**settings.cluster_kwargs(), "image": image, "owner": f"pytest-{os.getpid()}", **own}


@pytest.fixture
def cluster_factory(
    request: pytest.FixtureRequest, harness_image: str, harness_settings: Settings
) -> Iterator[ClusterFactory]:
    """Make fresh clusters for this test: ``cluster_factory(**Cluster kwargs)``.

    Each is started at once and removed after the test, also when it failed;
    a failed test's clusters leave their logs and status under --evidence-dir.
    """
    made: list[Cluster] = []
    request.node.stash[_clusters] = made

    def make(**kwargs: Any) -> Cluster:
        kwargs = cluster_arguments(harness_settings, harness_image, kwargs)
        spare = request.config.stash[_spare].take(kwargs)
        if spare is not None:
            made.append(spare)
            return spare
        try:
            return start(kwargs)
        except HarnessError as e:
            if ADDRESS_POOLS_EXHAUSTED not in str(e):
                raise
        # Docker's address pools ran out: clusters still being removed in the background hold networks;
        # once they are gone, try once more (their failures are still reported at the session's end).
        registry.wait_for_pending()
        return start(kwargs)

    def start(kwargs: dict[str, Any]) -> Cluster:
        cluster = Cluster(**kwargs)
        made.append(cluster)
        try:
            return cluster.start()
        except HarnessError:
            made.remove(cluster)
            raise

    yield make
    failed = failed_in(request.node)
    errors = []
    for cluster in reversed(made):
        try:
            _finish(cluster, harness_settings, request.node, failed)
        except Exception as e:  # noqa: BLE001 -- every cluster gets its teardown; each failure is reported
            errors.append(f"{cluster.name}: {e}")
    if errors:
        pytest.fail("could not remove clusters: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def cluster(cluster_factory: ClusterFactory) -> Cluster:
    """A fresh primary + standby for this test alone (use it when the test changes roles)."""
    return cluster_factory()


class SharedClusters:
    """The session's shared clusters: one per set of `Cluster` arguments, started on first use, removed at
    the session's end."""

    def __init__(self, image: str, settings: Settings) -> None:
        self.image, self.settings = image, settings
        self._clusters: dict[str, Cluster] = {}

    def get(self, kwargs: dict[str, Any]) -> Cluster:
        key = arguments_key(kwargs)
        if key not in self._clusters:
            cluster = Cluster(**cluster_arguments(self.settings, self.image, kwargs))
            cluster.start()
            self._clusters[key] = cluster
        return self._clusters[key]

    def close(self) -> None:
        errors = []
        for cluster in self._clusters.values():
            try:
                cluster.destroy()
            except HarnessError as e:
                errors.append(str(e))
        if errors:
            pytest.fail("could not remove shared clusters: " + "; ".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def _shared_clusters(harness_image: str, harness_settings: Settings) -> Iterator[SharedClusters]:
    clusters = SharedClusters(harness_image, harness_settings)
    yield clusters
    clusters.close()


@pytest.fixture(scope="session")
def shared_cluster(_shared_clusters: SharedClusters) -> Cluster:
    """A primary + standby shared by the session: for tests that leave the roles as they are.

    After each test, what its body made is removed (nodes it added, backups,
    databases and tables; see `pgharness.shared`) and its ALTER SYSTEM settings
    are put back; a cluster it changed otherwise (roles, slots, a paused
    replay...) is started afresh under the same name, with a
    `SharedClusterChanged` warning that names the test and the change. A test
    that fails leaves the shared cluster's logs and status under --evidence-dir.
    """
    return _shared_clusters.get({})


@pytest.fixture
def shared_cluster_factory(request: pytest.FixtureRequest, _shared_clusters: SharedClusters) -> ClusterFactory:
    """Shared clusters of other shapes: ``shared_cluster_factory(topology="logical")`` (any `Cluster`
    arguments). One per set of arguments for the session, started on first use; with none, the
    `shared_cluster`. Reset after each test as `shared_cluster` is, from what it held when the test
    first asked for it."""

    def get(**kwargs: Any) -> Cluster:
        cluster = _shared_clusters.get(kwargs)
        _note_baseline(request.node, cluster)
        return cluster

    return get


def _note_baseline(item: pytest.Item, cluster: Cluster) -> None:
    used = item.stash.setdefault(_shared_used, [])
    if all(known is not cluster for known, _ in used):
        used.append((cluster, shared.take_baseline(cluster)))


def _shared_of(item: pytest.Item) -> list[Cluster]:
    """The shared clusters test `item` used."""
    found = [cluster for cluster, _ in item.stash.get(_shared_used, [])]
    fixture = getattr(item, "funcargs", {}).get("shared_cluster")
    if isinstance(fixture, Cluster) and all(known is not fixture for known in found):
        found.append(fixture)
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    item.stash[_next_item] = nextitem


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Note what the shared cluster holds just before a test's body runs (its fixtures have run); start
    the next test's fresh cluster meanwhile when it asks for one (`pgharness.spare`)."""
    cluster = getattr(item, "funcargs", {}).get("shared_cluster")
    if isinstance(cluster, Cluster):
        _note_baseline(item, cluster)
    _prepare_spare(item)
    return (yield)


def _prepare_spare(item: pytest.Item) -> None:
    """Start the ``cluster`` of the test after `item` now, when that test asks for the plugin's fixture and
    the session's image is known. Only in a run of one process: pytest-xdist's other workers already use the
    time a test waits, and a start ahead would take its CPU from them (``make test`` on four workers here:
    87 and 89 s without, 92 s with). Not with --pg-sync-teardown (one cluster's life at a time)."""
    nextitem = item.stash.get(_next_item, None)
    known = item.config.stash.get(_session, None)
    workers = getattr(item.config, "workerinput", {}).get("workercount", 1)
    if nextitem is None or known is None or workers != 1 or not asks_for_fresh_cluster(nextitem):
        return
    settings, image = known
    if not settings.background_teardown:
        return
    try:
        item.config.stash[_spare].prepare(cluster_arguments(settings, image, {}))
    except HarnessError as e:
        log.warning("could not start a cluster ahead for %s: %s", nextitem.nodeid, first_line(e))


def asks_for_fresh_cluster(item: pytest.Item) -> bool:
    """Whether `item` uses this plugin's ``cluster`` fixture (not one of the same name of its own)."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = getattr(info, "name2fixturedefs", {}).get("cluster", ())
    return bool(definitions) and getattr(definitions[-1].func, "__module__", None) == __name__


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """After a test's body on shared clusters, before its fixtures' teardown: remove what the body made,
    and start a cluster afresh when the body changed more than that.

    What went wrong is reported after the fixtures' teardown, as this test's: a
    `SharedClusterChanged` warning, or a failure when the cluster could not be
    started afresh. Raised before it, it would skip that teardown and fail the
    next test's setup with pytest's own error."""
    changed, failed = [], []
    for cluster, before in item.stash.get(_shared_used, []):
        problem = shared.reset(cluster, before)
        if problem is not None:
            changed.append(problem)
            error = _start_afresh(cluster, item, problem)
            if error:
                failed.append(error)
    item.stash[_shared_used] = []
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
