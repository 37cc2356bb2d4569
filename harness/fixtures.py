"""The plugin's fixtures and what they share with its hooks: the session's settings, the fresh and shared
clusters, and the evidence of a failed test (the hooks live in `pgharness.pytest_plugin`, which
re-exports these fixtures for pytest).

Fixtures::

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
    harness_settings  the session's settings (`pgharness.options.Settings`)
    pg_major          the major version of the server under test
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgharness import registry, shared
from pgharness.cluster import Cluster
from pgharness.compose import ADDRESS_POOLS_EXHAUSTED
from pgharness.errors import HarnessError
from pgharness.image import ensure_image, server_version
from pgharness.option_table import OPTIONS
from pgharness.options import OptionError, Settings, Sources, resolve_settings
from pgharness.spare import Spare, arguments_key
from pgharness.versions import parse_postgres_v, version_matches

log = logging.getLogger("pgharness")


# The state the fixtures share with the plugin's hooks (`pgharness.pytest_plugin`), kept in pytest's stashes.

#: On a test item: its reports by phase (setup, call, teardown), for `failed_in`.
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
#: On a test item: the fresh clusters `cluster_factory` made for it.
CLUSTERS = pytest.StashKey[list[Cluster]]()
#: On a test item: the shared clusters it used, each with what it held before the test (`note_baseline`).
SHARED_USED = pytest.StashKey[list[tuple[Cluster, shared.Baseline]]]()
#: On a test item: the item that runs after it (the spare is started for that one).
NEXT_ITEM = pytest.StashKey["pytest.Item | None"]()
#: On the config: the session's settings and image, once a test has asked for them (a spare needs both).
SESSION = pytest.StashKey[tuple[Settings, str]]()
#: On the config: the session's settings, resolved once (`settings_of`).
SETTINGS_KEY = pytest.StashKey[Settings]()
#: On the config: the next test's cluster, started ahead (`pgharness.spare`).
SPARE = pytest.StashKey[Spare[Cluster]]()


class SharedClusterChanged(UserWarning):
    """A test changed the shared cluster beyond what the reset removes: it was started afresh."""


def settings_of(config: pytest.Config) -> Settings:
    """The session's settings by `pgharness.options`' precedence (command line, environment, ini, default),
    resolved once; a bad value is a usage error (exit 4) in one line that names it as the user wrote it."""
    if SETTINGS_KEY not in config.stash:
        sources = Sources(
            command_line={option.name: config.getoption(option.name) for option in OPTIONS},
            env=os.environ,
            ini=config.getini,
            invocation_dir=config.invocation_params.dir,
            rootdir=config.rootpath,
            inifile=config.inipath,
        )
        try:
            config.stash[SETTINGS_KEY] = resolve_settings(sources)
        except OptionError as e:
            raise pytest.UsageError(f"pgharness: {e}") from None
    return config.stash[SETTINGS_KEY]


def failed_in(node: pytest.Item) -> bool:
    """Whether the test's setup or call phase failed (or errored)."""
    reports = node.stash.get(REPORTS, {})
    return any(r.failed for r in reports.values())


def evidence_name(nodeid: str) -> str:
    """The folder name of a test's evidence: its node id with anything but ``[A-Za-z0-9_.-]`` as ``_``."""
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


@pytest.fixture(autouse=True, name="_pg_version_gate")
def pg_version_gate(request: pytest.FixtureRequest) -> None:
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
    pytestconfig.stash[SESSION] = (harness_settings, image)
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
    # A test that names its own version (cluster_factory(pg_version=15)) gets that version's image, not the
    # session's.
    session_image = {} if own.get("pg_version") is not None else {"image": image}
    kwargs = {**settings.cluster_kwargs(), **session_image, "owner": f"pytest-{os.getpid()}", **own}
    # compose.yaml's variables: the session's (PG_FSYNC) with the test's own on top.
    env = {**settings.cluster_kwargs().get("env", {}), **(own.get("env") or {})}
    if env:
        kwargs["env"] = env
    return kwargs


@pytest.fixture
def cluster_factory(
    request: pytest.FixtureRequest, harness_image: str, harness_settings: Settings
) -> Iterator[ClusterFactory]:
    """Make fresh clusters for this test: ``cluster_factory(**Cluster kwargs)``.

    Each is started at once and removed after the test, also when it failed;
    a failed test's clusters leave their logs and status under --evidence-dir.
    """
    made: list[Cluster] = []
    request.node.stash[CLUSTERS] = made

    def make(**kwargs: Any) -> Cluster:
        kwargs = cluster_arguments(harness_settings, harness_image, kwargs)
        spare = request.config.stash[SPARE].take(kwargs)
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
        self.CLUSTERS: dict[str, Cluster] = {}

    def get(self, kwargs: dict[str, Any]) -> Cluster:
        key = arguments_key(kwargs)
        if key not in self.CLUSTERS:
            cluster = Cluster(**cluster_arguments(self.settings, self.image, kwargs))
            cluster.start()
            self.CLUSTERS[key] = cluster
        return self.CLUSTERS[key]

    def close(self) -> None:
        errors = []
        for cluster in self.CLUSTERS.values():
            try:
                cluster.destroy()
            except HarnessError as e:
                errors.append(str(e))
        if errors:
            pytest.fail("could not remove shared clusters: " + "; ".join(errors), pytrace=False)


@pytest.fixture(scope="session", name="_shared_clusters")
def shared_clusters(harness_image: str, harness_settings: Settings) -> Iterator[SharedClusters]:
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
        note_baseline(request.node, cluster)
        return cluster

    return get


def note_baseline(item: pytest.Item, cluster: Cluster) -> None:
    used = item.stash.setdefault(SHARED_USED, [])
    if all(known is not cluster for known, _ in used):
        used.append((cluster, shared.take_baseline(cluster)))


def shared_of(item: pytest.Item) -> list[Cluster]:
    """The shared clusters test `item` used."""
    found = [cluster for cluster, _ in item.stash.get(SHARED_USED, [])]
    fixture = getattr(item, "funcargs", {}).get("shared_cluster")
    if isinstance(fixture, Cluster) and all(known is not fixture for known in found):
        found.append(fixture)
    return found


def asks_for_fresh_cluster(item: pytest.Item) -> bool:
    """Whether `item` uses this plugin's ``cluster`` fixture (not one of the same name of its own)."""
    if "cluster" not in getattr(item, "fixturenames", ()):  # pytest's public list of the names it asks for
        return False
    # Which definition serves the name, this plugin's or the project's own, pytest tells only through the
    # item's fixture info: no public API says it, and a spare started for a project's own fixture is wasted.
    info = getattr(item, "_fixtureinfo", None)
    definitions = getattr(info, "name2fixturedefs", {}).get("cluster", ())
    return bool(definitions) and getattr(definitions[-1].func, "__module__", None) == __name__
