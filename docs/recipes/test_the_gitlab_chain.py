"""The GitLab.com outage of 2017, as the notes on the manual's chapter 26 tell it: load, a standby lagging
on a slow link, WAL gone on the primary, and a resync, where the wrong data directory was removed.

Two standbys fall behind; the one with restore_command recovers from the archive by itself, the one without
needs a rebuild, whose guard refuses to wipe the primary.
"""

import pytest

from pgharness import BackupError, WaitTimeout
from pgharness.faults import degraded


def test_a_lagging_standby_loses_its_wal_and_the_archive_or_a_rebuild_brings_it_back(cluster_factory):
    # The GitLab.com outage of 2017, as the notes on the manual's chapter 26 tell it: load, a standby
    # lagging, WAL gone on the primary, a resync. No replication slot, and little WAL kept.
    cluster = cluster_factory(node_settings={"primary": {"wal_keep_size": "0", "max_wal_size": "64MB"}})
    primary, standby = cluster.primary, cluster.standby
    # A second standby without the archive: streaming is all it has.
    lonely = cluster.add_node("lonely", restore=False)
    primary.sql("CREATE TABLE pad (filler text)")
    for node in (standby, lonely):
        primary.wait_for_catchup(node)
    behind = primary.lsn("write")

    # Both fall behind on slow links while the primary writes ~100 MB of WAL and checkpoints: the segments
    # they still need are archived, and recycled from pg_wal.
    with degraded(standby, rate="1mbit", wait=False), degraded(lonely, rate="1mbit", wait=False):
        for _ in range(6):
            primary.sql("INSERT INTO pad SELECT repeat('x', 1000) FROM generate_series(1, 16000)")
            primary.sql("CHECKPOINT")
        primary.wait_for_archived(primary.switch_wal())
        oldest = primary.scalar("SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'")
        assert oldest > primary.walfile(behind), "the primary still has the WAL the standbys need"

    # Healed, the primary cannot send what they need ("requested WAL segment ... has already been
    # removed", its walsenders say). The standby with restore_command fetches the removed segments from
    # the archive, the only place that still has them, and catches up ...
    target = primary.lsn("write")
    standby.wait_for_replay(target, timeout=120)
    assert standby.scalar("SELECT count(*) FROM pad") == 6 * 16000

    # ... the one without cannot: it stays behind. The way back is a rebuild, whose guard refuses the
    # primary (the GitLab.com mistake: the wrong data directory wiped) ...
    with pytest.raises(WaitTimeout):
        lonely.wait_for_replay(target, timeout=5)
    with pytest.raises(BackupError, match="not in recovery"):
        cluster.backups.rebuild(primary)
    # ... and rebuilds the standby from a fresh base backup.
    cluster.backups.rebuild(lonely)
    primary.wait_for_catchup(lonely, timeout=120)
    assert lonely.scalar("SELECT count(*) FROM pad") == 6 * 16000
