"""The shared cluster between tests: what a test made is removed after it; a cluster it changed otherwise
is not shared again (`pgharness.shared`, and the plugin's reset after each test on `shared_cluster`)."""

import pytest

from pgharness.recovery import RecoveryTarget
from pgharness.shared import reset, take_baseline
from pgharness.wait import poll_until
from tests.scenarios.helpers import finish, run_pytest

pytestmark = pytest.mark.lifecycle


def restore_point_restored(cluster, backup, node, **restore):
    """A base backup `backup`, a restore point after it, and node `node` recovered to it (and promoted)."""
    cluster.backups.take(backup)
    cluster.primary.sql("SELECT pg_create_restore_point('here')")
    cluster.primary.wait_for_archived(cluster.primary.switch_wal())
    return cluster.backups.restore(node, backup, RecoveryTarget.name("here"), **restore)


def test_the_reset_removes_what_a_test_made_and_keeps_the_rest(shared_cluster):
    cluster = shared_cluster
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE kept AS SELECT 1 AS col")
    work_mem = primary.scalar("SHOW work_mem")
    before = take_baseline(cluster)

    # A test: a table, a view, a sequence, a publication, a slot, a database, ALTER SYSTEM on both nodes, an
    # added standby, a backup, and a node restored from it and promoted (it archives its new timeline).
    primary.sql("CREATE TABLE made (col integer)")
    primary.sql("CREATE VIEW made_view AS SELECT col FROM made")
    primary.sql("CREATE SEQUENCE made_seq")
    primary.sql("CREATE PUBLICATION made_pub FOR TABLE made")
    primary.sql("SELECT pg_create_physical_replication_slot('made_slot')")
    primary.sql("CREATE DATABASE made_db")
    for node in (primary, standby):
        node.set_config({"work_mem": "7MB"})
    cluster.add_node("extra")
    restored = restore_point_restored(cluster, "nightly", "restored", archive=True)
    assert restored.timeline() == 2
    poll_until(cluster.archive.history_files, lambda files: "00000002.history" in files, what="timeline 2's history")

    assert reset(cluster, before) is None

    # Gone: the nodes, the backups, the new timeline's files, the relations, the database, the settings.
    assert {node.name for node in cluster.nodes} == {"primary", "standby"}
    assert cluster.backups.names() == []
    assert cluster.archive.history_files() == []
    for node in (primary, standby):
        assert node.scalar("SHOW work_mem") == work_mem
        for relation in ("made", "made_view", "made_seq"):
            assert node.scalar("SELECT to_regclass(%s) IS NULL", (relation,)), relation
        assert node.scalar("SELECT count(*) FROM pg_database WHERE datname = 'made_db'") == 0
        assert node.scalar("SELECT count(*) FROM pg_publication") == 0
        assert node.scalar("SELECT count(*) FROM kept") == 1
    assert primary.scalar("SELECT count(*) FROM pg_replication_slots") == 0

    # The next test can do the same again: the names are free, and a restore finds no stray timeline.
    again = restore_point_restored(cluster, "nightly", "restored")
    assert again.timeline() == 2
    assert again.scalar("SELECT count(*) FROM kept") == 1


#: Changes the reset does not undo: (node, the change, its undoing, what the reset says).
CHANGES = [
    (
        "primary",
        "ALTER ROLE postgres SET work_mem = '7MB'",
        "ALTER ROLE postgres RESET work_mem",
        "primary's per-database and per-role settings changed",
    ),
    ("primary", "CREATE SCHEMA left_behind", "DROP SCHEMA left_behind", "primary's schemas changed (new: left_behind)"),
    ("primary", "CREATE ROLE left_behind", "DROP ROLE left_behind", "primary's roles changed (new: left_behind)"),
    ("standby", "SELECT pg_wal_replay_pause()", "SELECT pg_wal_replay_resume()", "standby's replay is paused"),
]


def test_the_reset_names_each_change_it_does_not_undo(shared_cluster):
    cluster = shared_cluster
    before = take_baseline(cluster)
    for node, change, undo, reason in CHANGES:
        cluster.node(node).sql(change)

        problem = reset(cluster, before)
        assert problem is not None, change
        assert reason in problem

        # Undone by hand, the cluster is as the baseline found it again.
        cluster.node(node).sql(undo)
        assert reset(cluster, before) is None, undo

    # An edited pg_hba.conf is named too (its rules as the server would read the file now).
    primary = cluster.primary
    hba = primary.scalar("SHOW hba_file")
    primary.exec("sh", "-c", 'cp "$1" "$1.saved" && echo "host all left_behind all reject" >> "$1"', "edit", hba)
    assert "primary's client authentication (pg_hba.conf) rules changed (new: host" in reset(cluster, before)
    primary.exec("sh", "-c", 'mv "$1.saved" "$1"', "undo", hba)
    assert reset(cluster, before) is None


PLUGIN_RUN = """
import pytest

@pytest.fixture(scope="module")
def seeded(shared_cluster):
    shared_cluster.primary.sql("CREATE TABLE seed AS SELECT 1 AS col")
    return shared_cluster

def test_makes_a_table(seeded, shared_cluster):
    shared_cluster.primary.sql("CREATE TABLE mine AS SELECT 1 AS col")

def test_the_table_is_gone_the_seed_kept_and_the_standby_promoted(seeded, shared_cluster):
    primary = shared_cluster.primary
    assert primary.scalar("SELECT to_regclass('mine') IS NULL")
    assert primary.scalar("SELECT count(*) FROM seed") == 1
    shared_cluster.standby.promote()

def test_a_fresh_cluster_after_the_change(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    assert standby.is_in_recovery()
    assert primary.scalar("SELECT to_regclass('seed') IS NULL")
    primary.sql("CREATE TABLE after AS SELECT 1 AS col")
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT count(*) FROM after") == 1
"""


@pytest.mark.parametrize(("warnings", "outcome"), [("always", "3 passed, 1 warning"), ("error", "3 passed, 1 error")])
def test_a_test_that_changed_the_shared_cluster_is_named_and_the_next_gets_a_fresh_one(
    tmp_path, harness_image, warnings, outcome
):
    # As a warning, or (with warnings as errors, as this suite runs) as the changing test's own error at its
    # teardown: either way the next test's setup is untouched and it gets a fresh cluster.
    child = run_pytest(tmp_path, PLUGIN_RUN, "-W", warnings)
    output = finish(child, 300)

    assert child.returncode == (0 if warnings == "always" else 1), output
    assert outcome in output.splitlines()[-1], output
    assert "AssertionError: previous item was not torn down properly" not in output
    warning = next(line for line in output.splitlines() if "SharedClusterChanged: " in line)
    assert "test_the_table_is_gone_the_seed_kept_and_the_standby_promoted changed the shared cluster" in warning
    assert "standby is a primary now" in warning
