"""Exercise 26-1, promotion: the standby becomes a primary on timeline 2 and accepts writes."""

import psycopg.errors
import pytest

pytestmark = pytest.mark.promotion


def test_promoted_standby_leaves_recovery_and_accepts_writes(cluster):
    primary, standby = cluster.primary, cluster.standby

    # Rows written on the primary before the promotion, replayed by the standby.
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.sql("INSERT INTO hoge VALUES (1), (2)")
    primary.wait_for_catchup(standby)

    # Before: the standby is in recovery on timeline 1 and refuses writes.
    assert standby.is_in_recovery()
    assert standby.timeline() == 1
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        standby.sql("INSERT INTO hoge VALUES (3)")

    # Promote it (pg_ctl promote in exercise 26-1; SELECT pg_promote() here).
    standby.promote()

    # It has left recovery and writes on a new timeline, 2.
    assert not standby.is_in_recovery()
    assert standby.timeline() == 2

    # Every row written before the promotion is there.
    assert standby.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,)]

    # And INSERT works now.
    standby.sql("INSERT INTO hoge VALUES (3)")
    assert standby.sql("SELECT col FROM hoge ORDER BY col") == [(1,), (2,), (3,)]


@pytest.mark.failover
def test_session_open_across_promotion_can_write_afterwards(cluster):
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge AS SELECT generate_series(1, 10) AS col")
    primary.wait_for_catchup(standby)

    # A hot standby keeps its sessions when promoted (section 26.5 of the manual).
    with standby.connect() as session:
        assert session.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        before = session.execute("SELECT count(*) FROM hoge").fetchone()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            session.execute("CREATE TABLE during_recovery (col integer)")

        standby.promote()

        # The same session, never reconnected, still sees what it read, and now writes.
        assert session.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert session.execute("SELECT count(*) FROM hoge").fetchone() == before == (10,)
        session.execute("CREATE TABLE after_promotion (col integer)")
        session.execute("INSERT INTO after_promotion VALUES (1)")
        assert session.execute("SELECT count(*) FROM after_promotion").fetchone() == (1,)
