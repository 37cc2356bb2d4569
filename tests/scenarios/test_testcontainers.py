"""A user's own containers, started with testcontainers, meet a cluster: `Cluster.connect_container` puts one
on the cluster's network, where it reaches the nodes by name and they reach it by its alias; the cluster's
removal disconnects it and leaves it running (it is the user's), and takes everything of its own."""

import pytest
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

from pgharness import ClusterError
from pgharness.errors import ToolError
from tests.scenarios.helpers import project_resources

pytestmark = pytest.mark.downstream


@pytest.fixture
def user_container(harness_image, monkeypatch):
    """Start a container of the user's own (the node image, idle) on a cluster's engine: ``user_container(
    cluster)``; removed after the test. testcontainers finds its engine by ~/.testcontainers.properties, then
    DOCKER_HOST: here the cluster's engine alone, whatever the machine's file says. Ryuk, testcontainers'
    reaper, is off: it is an image from a registry, which not every machine reaches."""
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "tc_properties", {})
    started = []

    def start(cluster, **kwargs):
        monkeypatch.setenv("DOCKER_HOST", cluster.engine.url)
        container = DockerContainer(harness_image)
        started.append(container.with_kwargs(entrypoint=["sleep", "infinity"], **kwargs).start())
        return container

    yield start
    for container in started:
        container.stop()


def networks(container):
    """The names of the networks `container` (a testcontainers container) is on now."""
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    return wrapped.attrs["NetworkSettings"]["Networks"]


def test_a_testcontainers_container_reads_the_standby_by_name_and_outlives_the_cluster(cluster_factory, user_container):
    cluster = cluster_factory()
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge AS SELECT 1 AS col")
    primary.wait_for_catchup(standby)
    app = user_container(cluster)
    # One on the cluster's network from its start, by the engine's own option.
    born_there = user_container(cluster, network=cluster.network_name)

    cluster.connect_container(app, "app")
    # It reaches the standby by name, with the connection string the nodes use among themselves ...
    code, output = app.exec(["psql", "-X", "-A", "-t", "-d", standby.conninfo(), "-c", "SELECT count(*) FROM hoge"])
    assert (code, output.strip()) == (0, b"1"), output
    # ... and the nodes reach it by its alias.
    address = networks(app)[cluster.network_name]["IPAddress"]
    assert primary.exec("getent", "hosts", "app").split()[0] == address

    # The cluster's removal disconnects the user's containers instead of failing on the network they hold.
    cluster.destroy()
    # Reading the removed cluster's archive (as a failed test's evidence does) is refused: it does not make
    # the volume again, unlabelled, for nothing to remove.
    with pytest.raises(ToolError):
        cluster.archive.files()
    assert project_resources(cluster.name) == []
    for container in (app, born_there):
        assert cluster.network_name not in networks(container)  # reloads its state too
        assert container.get_wrapped_container().status == "running"


def test_clashing_names_and_containers_not_there_or_connected_twice_are_refused(shared_cluster, user_container):
    app = user_container(shared_cluster)
    with pytest.raises(ClusterError):
        shared_cluster.connect_container(app, "standby")
    assert shared_cluster.network_name not in networks(app)
    with pytest.raises(ClusterError):
        shared_cluster.connect_container("pgharness-no-such-container")
    # Twice: the engine's refusal, as a ClusterError (the container leaves the network with its removal).
    shared_cluster.connect_container(app, "app")
    with pytest.raises(ClusterError):
        shared_cluster.connect_container(app, "app")
    # A node added later under the alias a user's container holds is refused before anything is made.
    with pytest.raises(ClusterError):
        shared_cluster.add_node("app")
    assert "app" not in [node.name for node in shared_cluster.nodes]
