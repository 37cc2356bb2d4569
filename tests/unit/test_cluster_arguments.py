"""A cluster's arguments are checked before anything starts: a name that is not one of its nodes is refused."""

import pytest

from pgharness.cluster import Cluster, disk_limits
from pgharness.errors import ClusterError, HarnessError, UnsupportedVersion
from pgharness.fixtures import cluster_arguments
from pgharness.options import Settings


@pytest.mark.parametrize(
    ("kwargs", "nodes"),
    [
        ({}, "primary, standby"),
        ({"standbys": 2}, "primary, standby, standby2"),
        ({"topology": "logical"}, "primary, standby, subscriber"),
    ],
)
def test_node_settings_for_a_node_the_cluster_has_not_is_refused_with_its_nodes(kwargs, nodes):
    with pytest.raises(ClusterError) as raised:
        Cluster(image="pgharness/postgres:17", node_settings={"standbyy": {"work_mem": "8MB"}}, **kwargs)
    assert str(raised.value).startswith(
        f"node_settings for 'standbyy': no such node in this cluster (its nodes: {nodes})"
    )


@pytest.mark.parametrize(
    ("pg_version", "says"),
    [
        ("seventeen", "pg_version='seventeen': not a PostgreSQL version"),
        (9, "pg_version=9: PostgreSQL 9 is not supported"),
        ("14", "pg_version='14': no Debian suite ships PostgreSQL 14"),
        (17.0, "pg_version=17.0: a major version such as 17"),
    ],
)
def test_a_pg_version_that_cannot_be_had_is_refused_naming_pg_version_before_any_build(pg_version, says):
    # Refused from the value alone: no engine is asked (this test needs none), no image is built.
    with pytest.raises(UnsupportedVersion) as raised:
        Cluster(pg_version=pg_version)
    assert str(raised.value).startswith(says)
    assert isinstance(raised.value, HarnessError)


def test_an_image_and_a_pg_version_together_are_refused():
    with pytest.raises(ClusterError, match="give one"):
        Cluster(image="pgharness/postgres:17", pg_version=15)


def test_a_test_that_names_its_version_does_not_get_the_sessions_image():
    settings = Settings()
    assert cluster_arguments(settings, "pgharness/postgres:17-0123456789ab", {})["image"].startswith("pgharness/")
    own = cluster_arguments(settings, "pgharness/postgres:17-0123456789ab", {"pg_version": 15})
    assert "image" not in own
    assert own["pg_version"] == 15


@pytest.mark.parametrize("start_timeout", [0, -5, "60", True])
def test_a_start_timeout_that_is_no_positive_number_is_refused(start_timeout):
    with pytest.raises(ClusterError, match=r"^start_timeout=.*: seconds, more than 0"):
        Cluster(image="pgharness/postgres:17", start_timeout=start_timeout)


def test_disk_limits_name_volumes_by_node_or_shared_volume_and_refuse_the_rest():
    assert disk_limits({"primary": "64MB", "archive": "1GB"}, ("primary", "standby")) == {
        "primary-data": 64 << 20,
        "archive": 1 << 30,
    }
    with pytest.raises(ClusterError, match=r"^disk for 'primry': not a compose service of this cluster"):
        disk_limits({"primry": "64MB"}, ("primary", "standby"))
    with pytest.raises(ClusterError, match=r"^disk for 'primary' '8MB': at least 16MB"):
        disk_limits({"primary": "8MB"}, ("primary", "standby"))
    with pytest.raises(ClusterError, match="a size such as 64MB"):
        disk_limits({"archive": "big"}, ("primary",))


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"storage": "ssd"}, "storage 'ssd': one of volume, tmpfs"),
        ({"standby_source": "rsync"}, "standby_source 'rsync': one of template, basebackup"),
    ],
)
def test_a_choice_the_harness_has_not_is_refused_naming_the_argument(kwargs, says):
    with pytest.raises(ClusterError) as raised:
        Cluster(image="pgharness/postgres:17", **kwargs)
    assert str(raised.value) == says
