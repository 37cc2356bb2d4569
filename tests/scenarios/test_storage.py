"""Where the nodes keep their data: in memory (storage "tmpfs", the plugin's default) or on disk ("volume"),
for compose's nodes and for nodes added at run time alike, and kept across a crash and a restart."""

import pytest

from tests.scenarios.helpers import file_system


@pytest.mark.parametrize("storage", ["tmpfs", "volume"])
def test_every_node_keeps_its_data_where_the_storage_says_across_a_kill(cluster_factory, storage):
    cluster = cluster_factory(storage=storage)
    primary = cluster.primary
    primary.sql("CREATE TABLE t AS SELECT 1 AS a")
    added = cluster.add_node("standby2")
    for node in (primary, cluster.standby, added):
        assert (file_system(node) == "tmpfs") == (storage == "tmpfs"), node.name
    # Base backups live with the data: in memory or on disk.
    assert (file_system(added, "/backups") == "tmpfs") == (storage == "tmpfs")

    # The node added at run time keeps what it had through a crash and a start, and streams again.
    primary.wait_for_catchup(added)
    added.kill()
    added.start()
    primary.sql("INSERT INTO t VALUES (2)")
    primary.wait_for_catchup(added)
    assert added.scalar("SELECT count(*) FROM t") == 2
