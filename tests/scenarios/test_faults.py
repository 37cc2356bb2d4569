"""Partitions: a packet filter inside the node cuts it off from the other nodes and leaves the host's
way in (its published port), or, with ``clients=True``, cuts that too; healing restores both."""

from pgharness.faults import heal, is_partitioned, partition, partitioned
from tests.scenarios.helpers import pgharness


def reaches(node, other):
    """Whether `node` can open a PostgreSQL connection to `other` over the cluster's network (pg_isready
    inside `node`, by `other`'s name)."""
    result = node.container.exec_run(["pg_isready", "-q", "-t", "3", "-h", other.name, "-p", "5432"])
    return result.exit_code == 0


def test_a_partitioned_node_reaches_no_other_node_and_the_host_still_reaches_it(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.wait_for_catchup(standby)
    assert reaches(standby, primary)
    assert reaches(primary, standby)

    with partitioned(standby):
        assert is_partitioned(standby)
        assert not is_partitioned(primary)
        # Neither side reaches the other. The primary's next write loses it the standby's connection at
        # once (refused, not silently dropped: no wal_sender_timeout, 60 s here, to wait for).
        assert not reaches(standby, primary)
        assert not reaches(primary, standby)
        primary.sql("INSERT INTO hoge VALUES (1)")
        primary.poll_query_until("SELECT count(*) FROM pg_stat_replication", 0, timeout=20)
        # The host still reads the standby through its published port; the row has not arrived.
        assert standby.scalar("SELECT count(*) FROM hoge") == 0
        assert standby.is_in_recovery()

    # Healed means replicating: the heal returns once the standby streams from the primary again (the
    # primary's walsender for it was gone; the standby's receiver had not noticed yet).
    assert not is_partitioned(standby)
    assert primary.scalar("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1
    assert standby.scalar("SELECT status FROM pg_stat_wal_receiver") == "streaming"
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT count(*) FROM hoge") == 1


def test_a_node_partitioned_from_its_clients_too_answers_nobody_until_healed(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    partition(primary, clients=True)
    try:
        assert is_partitioned(primary)
        assert not primary.is_responsive(timeout=3)
        assert not reaches(standby, primary)
        assert primary.container.status == "running"
    finally:
        heal(primary)
    # The heal returned once the standby streams again: the shared cluster is as the test found it.
    assert primary.is_responsive()
    assert standby.scalar("SELECT status FROM pg_stat_wal_receiver") == "streaming"
    primary.wait_for_catchup(standby)


def test_the_cli_partitions_and_heals_a_node_of_an_environment(cluster):
    standby = cluster.standby
    done = pgharness("partition", "--name", cluster.name, "standby")
    assert done.returncode == 0, done.stderr
    assert is_partitioned(standby)
    assert not reaches(standby, cluster.primary)
    done = pgharness("heal", "--name", cluster.name)
    assert done.returncode == 0, done.stderr
    assert not is_partitioned(standby)
    assert reaches(standby, cluster.primary)


def test_a_node_restarted_behind_the_harness_back_is_reached_on_its_new_port(shared_cluster):
    # The harness keeps the port its last connection reached; someone else restarts the container, which
    # publishes a new one (the engine hands out ephemeral ports in turn, never the one just freed at once).
    primary, standby = shared_cluster.primary, shared_cluster.standby
    assert standby.sql("SELECT 1") == [(1,)]
    before = standby.port
    standby.container.restart(timeout=10)
    assert standby.port != before

    # The next connections ask the engine again, and reach the node, streaming again, where it now is.
    standby.wait_ready()
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.sql("INSERT INTO hoge VALUES (1)")
    primary.wait_for_catchup(standby)
    assert standby.sql("SELECT col FROM hoge") == [(1,)]
