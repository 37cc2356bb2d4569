"""A node's first start is all or nothing: its data directory is made aside and moved into place only when complete.

These run the node image directly (no compose): one container start is the unit under test.
"""

import pytest

from pgharness.compose import docker_client, run_container
from pgharness.constants import DATA_MOUNT

pytestmark = pytest.mark.lifecycle

LABELS = {"org.pgharness.managed": "true", "org.pgharness.test": "bootstrap"}


@pytest.fixture
def data_volume():
    client = docker_client()
    volume = client.volumes.create(labels=LABELS)
    yield volume.name
    volume.remove(force=True)


def first_start(image, volume, env):
    """Start a primary on `volume` with `env`; return (exit code, output). A start that works is cut at 60 s."""
    return run_container(
        docker_client(),
        image,
        ["primary"],
        timeout=60,
        what="a primary's first start",
        environment=env,
        volumes={volume: {"bind": DATA_MOUNT, "mode": "rw"}},
        network_mode="none",
        labels=LABELS,
    )


def data_files(image, volume):
    """What the volume holds: the names under the mount, and whether data/PG_VERSION exists."""
    _, listing = run_container(
        docker_client(),
        image,
        ["sh", "-c", 'ls -A "$1"; test -e "$1/data/PG_VERSION" && echo has-PG_VERSION || true', "sh", DATA_MOUNT],
        timeout=60,
        what="listing the data volume",
        entrypoint=[],
        volumes={volume: {"bind": DATA_MOUNT, "mode": "rw"}},
        network_mode="none",
        labels=LABELS,
    )
    return listing.split()


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        # The init SQL fails: PostgreSQL's error (with its SQLSTATE), then the entrypoint's line.
        ({"PGHARNESS_INIT_SQL": "CREATE TABLE t (x nosuchtype);"}, "PGHARNESS_INIT_SQL failed"),
        # The roles cannot be made in single-user mode (a replication role named like the superuser).
        ({"REPLICATION_USER": "postgres"}, "single-user mode failed: "),
    ],
    ids=["init-sql", "single-user-sql"],
)
def test_a_failed_first_start_fails_again_the_same_way_and_never_starts_half_made(
    harness_image, data_volume, env, reason
):
    env = {"PGHARNESS_SETTINGS": "", **env}

    # The first start fails, saying why ...
    code, output = first_start(harness_image, data_volume, env)
    assert code == 1, output
    assert reason in output
    # ... and leaves no data directory that a next start could take for a finished one.
    assert "data" not in data_files(harness_image, data_volume)

    # The next start fails again, for the same reason: no primary without its roles or its schema.
    code, again = first_start(harness_image, data_volume, env)
    assert code == 1, again
    assert reason in again
    assert "has-PG_VERSION" not in data_files(harness_image, data_volume)


def test_single_user_mode_errors_carry_their_sqlstate(harness_image, data_volume):
    code, output = first_start(harness_image, data_volume, {"PGHARNESS_SETTINGS": "", "REPLICATION_USER": "postgres"})
    assert code == 1
    # duplicate_object (42710): the role exists already.
    [line] = [line for line in output.splitlines() if line.startswith("pgharness: single-user mode failed")]
    assert "42710" in line
