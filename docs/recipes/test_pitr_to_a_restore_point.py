"""Replication is not backup: a mistaken DELETE reaches the standby too; a base backup plus the archive,
recovered to a restore point, brings the rows back."""

from pgharness import RecoveryTarget


def test_a_restore_point_brings_back_what_a_mistaken_delete_removed(shared_cluster):
    primary, standby = shared_cluster.primary, shared_cluster.standby
    shared_cluster.backups.take("nightly")  # pg_basebackup, into the cluster's backups volume
    primary.sql("CREATE TABLE accounts AS SELECT g AS id FROM generate_series(1, 100) g")
    primary.sql("SELECT pg_create_restore_point('before-delete')")

    # The mistake replicates at once.
    primary.sql("DELETE FROM accounts")
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT count(*) FROM accounts") == 0

    # The restore point's WAL must be in the archive: switch to a new segment, wait until it is archived.
    primary.wait_for_archived(primary.switch_wal())

    # A new node from the backup, recovered up to the restore point, then promoted.
    restored = shared_cluster.backups.restore("restored", "nightly", RecoveryTarget.name("before-delete"))
    assert restored.scalar("SELECT count(*) FROM accounts") == 100
    assert not restored.is_in_recovery()
