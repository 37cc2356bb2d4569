"""Priority and quorum commit with three standbys (section 26.2.8 of the manual).

``FIRST 2 (a, b, c)`` waits for the two highest-priority standbys that are
connected; ``ANY 2 (a, b, c)`` for any two. Which standbys must confirm
shows in pg_stat_replication's sync_state, and in whether a commit returns
or waits in SyncRep.
"""

import pytest

from pgharness.failover import choose_new_primary
from pgharness.faults import partitioned
from pgharness.load import WriteLoad
from tests.scenarios.helpers import notice_lost_standbys_fast

pytestmark = pytest.mark.sync

MEMBERS = "(standby, standby2, standby3)"
SYNC_STATES = (
    "SELECT string_agg(application_name || '=' || sync_state, ' ' ORDER BY application_name) FROM pg_stat_replication"
)


def wait_for_sync_states(primary, **expected):
    """Wait until pg_stat_replication lists exactly `expected` (application_name=sync_state)."""
    primary.poll_query_until(SYNC_STATES, " ".join(f"{name}={state}" for name, state in sorted(expected.items())))


def commit_waits_until(primary, started, table, value):
    """A commit on `primary` waits in SyncRep until `started` (a node) is back; then it returns."""
    with primary.background_session() as session:
        commit = session.send(f"INSERT INTO {table} VALUES (%s)", (value,))
        commit.wait_until_blocked("SyncRep")  # raises unless it waits there
        started.start()
        assert commit.result(timeout=60) == []


def test_first_and_any_decide_which_standbys_must_confirm(cluster_factory):
    cluster = cluster_factory(standbys=3)
    primary = cluster.primary
    standby, standby2, standby3 = (cluster.node(name) for name in ("standby", "standby2", "standby3"))
    primary.sql("CREATE TABLE hoge (col integer)")

    # Priority: the first two listed are synchronous, the third waits its turn.
    primary.set_synchronous(f"FIRST 2 {MEMBERS}")
    wait_for_sync_states(primary, standby="sync", standby2="sync", standby3="potential")

    # The potential one dies: commits do not notice.
    standby3.kill()
    primary.sql("INSERT INTO hoge VALUES (1)")
    # A synchronous one dies as well: only one of the three is left, and a commit waits ...
    standby.kill()
    # ... until the potential one is back, and takes the dead one's place.
    commit_waits_until(primary, standby3, "hoge", 2)
    wait_for_sync_states(primary, standby2="sync", standby3="sync")
    # When the first-listed comes back, it is synchronous again and the third potential.
    standby.start()
    wait_for_sync_states(primary, standby="sync", standby2="sync", standby3="potential")

    # Quorum: all three are candidates alike; any two confirming is enough.
    primary.set_synchronous(f"ANY 2 {MEMBERS}")
    wait_for_sync_states(primary, standby="quorum", standby2="quorum", standby3="quorum")
    standby.kill()
    primary.sql("INSERT INTO hoge VALUES (3)")  # standby2 and standby3 confirm
    standby2.kill()
    commit_waits_until(primary, standby, "hoge", 4)  # one of three is not a quorum of two
    standby2.start()
    wait_for_sync_states(primary, standby="quorum", standby2="quorum", standby3="quorum")

    # Every standby has every row, the ones that were down too.
    for node in (standby, standby2, standby3):
        primary.wait_for_catchup(node)
        assert node.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,), (3,), (4,)]


def test_failover_to_the_most_advanced_quorum_member_loses_no_acknowledged_commit(cluster_factory):
    cluster = cluster_factory(standbys=3)
    primary = cluster.primary
    standby3 = cluster.node("standby3")
    members = [cluster.node(name) for name in ("standby", "standby2", "standby3")]
    notice_lost_standbys_fast(primary)
    WriteLoad.create_table(primary)
    primary.set_synchronous(f"ANY 2 {MEMBERS}")

    with WriteLoad(primary.dsn(), workers=3) as load:
        load.wait_for_commits(200)
        # standby3 is cut off: commits go on, confirmed by the other two alone ...
        with partitioned(standby3, wait=False):
            load.wait_for_commits(load.log.count() + 500)
            # ... and the primary dies under the load.
            primary.kill()
            load.stop()

            # Each acknowledged commit is on two members at least, not on every one: standby3 lacks the
            # commits after its cut. The most advanced member has all of them; the harness chooses it.
            assert load.log.lost_commits(standby3)
            chosen = choose_new_primary(members)
            assert chosen is not standby3
            chosen.promote()
            assert load.log.lost_commits(chosen) == set()
