"""Major upgrades of a replicated cluster with pg_upgrade, by the manual's procedure (`pgharness.upgrade`).

Each scenario goes from this run's major to a later one whose image the harness can build (13, 15, 17,
18): from 13, to 15, 17 and 18; from 18, none (skipped, and the matrix shows it).
"""

import contextlib
import threading

import docker.errors
import pytest

from pgharness.constants import DATA_MOUNT, PROJECT_LABEL
from pgharness.convergence import assert_converged
from pgharness.errors import ToolError, UpgradeError
from pgharness.load import WriteLoad, pgbench_init
from pgharness.logical import create_logical_slot, slot_changes
from pgharness.upgrade import upgrade
from pgharness.versions import SUITES
from pgharness.wait import poll_until

pytestmark = pytest.mark.upgrade

TARGETS = sorted(SUITES)
TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgharness_load", "hoge")
#: Pairs the Debian packages the harness builds from cannot upgrade between, and why. Expected to fail
#: (strictly: once the packages change, the scenario passes, the run says so, and the pair comes off).
BLOCKED = {
    (old, 18): f"Debian's {old} package (15.20, 17.12) records a pg_attver option on every column, which 18.6 "
    'does not know: pg_upgrade\'s schema restore fails (ERROR: unrecognized parameter "pg_attver")'
    for old in (15, 17)
}


def next_major(pg_major):
    """The next major the harness builds after this run's, or a skip."""
    later_ones = [v for v in TARGETS if v > pg_major]
    if not later_ones:
        pytest.skip(f"no major the harness builds comes after PostgreSQL {pg_major}")
    return later_ones[0]


def with_tables(request, pg_major, to):
    """`to`, for a scenario whose cluster has tables of its own: a pair that does not go up is skipped, a
    blocked one (`BLOCKED`) expected to fail."""
    if to <= pg_major:
        pytest.skip(f"pg_upgrade goes up only: PostgreSQL {pg_major} to {to}")
    if (pg_major, to) in BLOCKED:
        request.applymarker(pytest.mark.xfail(raises=UpgradeError, strict=True, reason=BLOCKED[pg_major, to]))
    return to


def contents(node):
    """Each table's checksum and the sequence's position: what must come through the upgrade unchanged."""
    sums = {table: node.table_checksum(table) for table in TABLES}
    return sums, node.scalar("SELECT last_value FROM hoge_id_seq")


def write_before(primary):
    """pgbench's tables, a sequence that has handed out values, and rows of a write load stopped cleanly."""
    pgbench_init(primary, scale=1)
    primary.sql("CREATE TABLE hoge (id bigserial PRIMARY KEY, note text)")
    primary.sql("INSERT INTO hoge (note) SELECT 'before ' || g FROM generate_series(1, 500) g")
    WriteLoad.create_table(primary)
    with WriteLoad(primary.dsn(), workers=2) as load:
        load.wait_for_commits(300)
    return load


@pytest.mark.parametrize("to", TARGETS, ids=lambda v: f"to{v}")
def test_link_upgrade_keeps_every_row_and_the_rsynced_standby_streams(request, cluster_factory, pg_major, to):
    with_tables(request, pg_major, to)
    cluster = cluster_factory()
    primary, standby = cluster.primary, cluster.standby
    load = write_before(primary)
    primary.wait_for_catchup(standby)
    before = contents(primary)

    upgrade(cluster, to=to, mode="link", standbys="rsync")

    # Both nodes run the new major, the standby streams from the primary again ...
    assert primary.major == standby.major == to
    assert standby.is_in_recovery()
    standby.poll_query_until("SELECT status FROM pg_stat_wal_receiver", "streaming")
    # ... every row written before is there, on both, the sequence where it was ...
    assert contents(primary) == before
    assert load.log.lost_commits(primary) == set()
    # ... a row written now reaches the standby, and the standby holds exactly what the primary holds.
    primary.sql("INSERT INTO hoge (note) VALUES ('after')")
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT note FROM hoge ORDER BY id DESC LIMIT 1") == "after"
    assert_converged(cluster)
    # The archive goes on: the new cluster's WAL continues after the old one's, under new names.
    primary.wait_for_archived(primary.switch_wal())


def test_copy_upgrade_and_a_standby_rebuilt_by_base_backup(request, cluster_factory, pg_major):
    to = with_tables(request, pg_major, next_major(pg_major))
    cluster = cluster_factory()
    primary, standby = cluster.primary, cluster.standby
    write_before(primary)
    primary.wait_for_catchup(standby)
    before = contents(primary)
    old_system = primary.scalar("SELECT system_identifier FROM pg_control_system()")

    upgrade(cluster, to=to, mode="copy", standbys="basebackup", keep_old=True)

    # A new system (pg_upgrade makes a new cluster); the standby is a fresh copy of it, and streams.
    assert primary.scalar("SELECT system_identifier FROM pg_control_system()") != old_system
    assert standby.major == to
    standby.poll_query_until("SELECT status FROM pg_stat_wal_receiver", "streaming")
    assert contents(standby) == before
    assert_converged(cluster)
    # Copy mode kept the old data whole beside the new (keep_old), in the primary's volume.
    assert "data.old" in primary.exec("ls", DATA_MOUNT).split()


def test_check_refuses_a_cluster_it_cannot_upgrade_and_nothing_changes(cluster_factory, pg_major):
    to = next_major(pg_major)  # the check refuses before the step that fails on a blocked pair
    cluster = cluster_factory()
    primary, standby = cluster.primary, cluster.standby
    # A column of a reg* type that holds OIDs, which pg_upgrade cannot carry (they change in a new cluster).
    primary.sql("CREATE TABLE refused (f regproc)")
    primary.sql("INSERT INTO refused VALUES ('now')")

    with pytest.raises(UpgradeError) as refused:
        upgrade(cluster, to=to)
    assert "nothing was changed" in str(refused.value)

    # The cluster runs on its own major again, as before, the standby streaming.
    assert primary.major == pg_major
    standby.poll_query_until("SELECT status FROM pg_stat_wal_receiver", "streaming")
    primary.sql("INSERT INTO refused VALUES ('now')")
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT count(*) FROM refused") == 2


def test_after_link_mode_the_old_cluster_cannot_start(cluster_factory, pg_major):
    to = next_major(pg_major)
    cluster = cluster_factory()  # no table of its own: it upgrades on a blocked pair too
    primary = cluster.primary
    old_image = cluster.image
    upgrade(cluster, to=to, mode="link", standbys="basebackup", keep_old=True)

    # pg_upgrade --link renamed the old cluster's control file: its old server refuses to start on it (it
    # would write into files the new cluster uses).
    tools = cluster.tools
    listing = tools.run(["ls", f"{DATA_MOUNT}/data.old/global"], mounts=tools.data(primary))
    assert "pg_control.old" in listing.split()
    assert "pg_control" not in listing.split()
    with pytest.raises(ToolError):
        tools.run(["postgres", "-D", f"{DATA_MOUNT}/data.old"], image=old_image, mounts=tools.data(primary), timeout=60)


def upgrading_server(cluster):
    """The container running pg_upgrade for `cluster` once the new server runs in it, else None."""
    for container in cluster.docker.containers.list(filters={"label": f"{PROJECT_LABEL}={cluster.name}"}):
        if not any(tag.startswith("pgharness/upgrade:") for tag in container.image.tags):
            continue
        with contextlib.suppress(docker.errors.APIError):  # it may be ending
            if container.exec_run(["test", "-e", f"{DATA_MOUNT}/data.new/postmaster.pid"]).exit_code == 0:
                return container
    return None


def test_an_upgrade_killed_half_way_in_copy_mode_leaves_the_old_cluster_startable(cluster_factory, pg_major):
    to = next_major(pg_major)
    cluster = cluster_factory()
    primary, standby = cluster.primary, cluster.standby
    primary.sql("CREATE TABLE hoge AS SELECT generate_series(1, 1000) AS col")
    # Schema enough that the new server's restore takes seconds, not milliseconds: the kill below lands
    # while it runs, not after the container has finished.
    primary.sql("DO $$ BEGIN FOR i IN 1..300 LOOP EXECUTE format('CREATE TABLE pad_%s (a int)', i); END LOOP; END $$")
    before = primary.table_checksum("hoge")

    # pg_upgrade runs in a container of its own; it is killed once pg_upgrade has started the new server.
    failed = []

    def run():
        try:
            upgrade(cluster, to=to, mode="copy")
        except UpgradeError as e:
            failed.append(e)

    upgrading = threading.Thread(target=run)
    upgrading.start()
    try:
        tool = poll_until(lambda: upgrading_server(cluster), what="pg_upgrade to start the new server")
        tool.kill()
    finally:
        upgrading.join(timeout=300)
    assert failed, "the upgrade went through: nothing was killed"

    # The old cluster was left as it was (copy mode touches no old file): it starts on its own major,
    # with its rows, and the standby streams again. The half-made new cluster stays beside it as evidence.
    primary.start()
    standby.start()
    assert primary.major == pg_major
    assert primary.table_checksum("hoge") == before
    standby.poll_query_until("SELECT status FROM pg_stat_wal_receiver", "streaming")
    assert "data.new" in primary.exec("ls", DATA_MOUNT).split()


@pytest.mark.slots
@pytest.mark.pg(">=17")
def test_check_refuses_unconsumed_logical_slots_and_too_few_slots_then_a_slot_survives_the_upgrade(
    cluster_factory, pg_major
):
    """After ``003_logical_slots.pl`` (src/bin/pg_upgrade/t/): pg_upgrade carries logical slots from 17 on,
    once they have confirmed all the old WAL and the new cluster has room for them. (A subscription as well;
    with tables that needs a pair not blocked, see BLOCKED: this cluster has none.)"""
    to = next_major(pg_major)
    # The new cluster gets the node's own max_replication_slots (2); ALTER SYSTEM gives the old one more.
    cluster = cluster_factory(topology="logical", subscribers=0, settings={"max_replication_slots": 2})
    primary = cluster.primary
    primary.set_config(max_replication_slots=5)
    primary.restart()
    create_logical_slot(primary, "kept")
    primary.sql("SELECT pg_logical_emit_message(true, 'test', 'before the upgrade')")

    # Each refusal's cause is the one thing that changes before the next attempt. A slot that has not
    # consumed all the WAL (one slot: room enough): refused, nothing changed.
    with pytest.raises(UpgradeError, match="nothing was changed"):
        upgrade(cluster, to=to)
    assert any("before the upgrade" in change for change in slot_changes(primary, "kept"))  # consumed now

    # Three consumed slots for a new cluster that has room for two: refused.
    for extra in ("extra1", "extra2"):
        create_logical_slot(primary, extra)
    for extra in ("extra1", "extra2"):
        slot_changes(primary, extra)  # consumed too: the count is all that is wrong
    with pytest.raises(UpgradeError, match="nothing was changed"):
        upgrade(cluster, to=to)
    for extra in ("extra1", "extra2"):
        primary.sql(f"SELECT pg_drop_replication_slot('{extra}')")

    upgrade(cluster, to=to)  # one consumed slot: it goes through

    # The slot is there on the new major, and goes on from where it was: nothing old again, the new change.
    assert primary.major == to
    assert primary.scalar("SELECT plugin FROM pg_replication_slots WHERE slot_name = 'kept'") == "test_decoding"
    primary.sql("SELECT pg_logical_emit_message(true, 'test', 'after the upgrade')")
    changes = [change for change in slot_changes(primary, "kept") if "message" in change]
    assert len(changes) == 1
    assert "after the upgrade" in changes[0]
