"""A cluster's arguments are checked before anything starts: a name that is not one of its nodes is refused."""

import pytest

from pgharness.cluster import Cluster
from pgharness.errors import ClusterError


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
