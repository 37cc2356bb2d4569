"""The remote-engine family: run by `make test-remote` against a second Docker engine.

`make test-remote` starts that engine on a test host of its own (`.ci/remote-engine`:
a network namespace, a veth pair, a dockerd listening on TCP on its veth address),
sets PGHARNESS_REMOTE_ENGINE to its URL and runs these tests with the engine
given by DOCKER_HOST (the remote one). Without PGHARNESS_REMOTE_ENGINE they skip.
"""

import os

import pytest

REMOTE_ENGINE = os.environ.get("PGHARNESS_REMOTE_ENGINE", "")


def pytest_collection_modifyitems(items):
    if not REMOTE_ENGINE:
        skip = pytest.mark.skip(reason="no remote engine: run `make test-remote` (PGHARNESS_REMOTE_ENGINE)")
        for item in items:
            if "tests/remote" in item.nodeid:
                item.add_marker(skip)


@pytest.fixture
def remote_engine():
    """The remote engine's URL (tcp://ADDRESS:2375)."""
    return REMOTE_ENGINE
