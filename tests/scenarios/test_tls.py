"""Replication over TLS: sslmode=verify-full against a CA made at run time."""

import pytest

from pgharness import Cluster, ClusterError
from pgharness.tls import TlsFiles
from tests.scenarios.helpers import connect_kwargs, refused

pytestmark = [pytest.mark.security, pytest.mark.streaming]


def test_streaming_runs_over_tls_verified_against_the_run_time_ca(cluster_factory):
    cluster = cluster_factory(tls=True)
    primary, standby = cluster.primary, cluster.standby

    # The walsender's connection is encrypted, and the standby checks the primary's name against its CA.
    encrypted = primary.poll_query_until(
        "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = 'standby'"
    )
    assert encrypted is True
    conninfo = standby.scalar("SELECT conninfo FROM pg_stat_wal_receiver")
    assert "sslmode=verify-full" in conninfo

    # It replicates.
    primary.sql("CREATE TABLE over_tls AS SELECT 1 AS id")
    primary.wait_for_catchup(standby)
    assert standby.scalar("SELECT count(*) FROM over_tls") == 1

    # A node added later by another process (pgharness rebuild, restore) attaches and streams over TLS too.
    late = Cluster.attach(cluster.name).add_node("late")
    assert "sslmode=verify-full" in late.scalar("SELECT conninfo FROM pg_stat_wal_receiver")

    # Without TLS, the replication role is turned away (pg_hba.conf: hostssl replication):
    # invalid_authorization_specification (28000) in the server's log.
    refused(
        primary,
        "28000",
        **connect_kwargs(primary, user=cluster.replication_user, replication="true", sslmode="disable"),
        password=cluster.replication_password,
    )


def test_a_standby_that_trusts_another_ca_is_refused(cluster_factory):
    cluster = cluster_factory(tls=True, standbys=0)

    # A node with the same credentials, whose CA did not sign the primary's certificate.
    rogue_ca = TlsFiles.make().variables()
    with pytest.raises(ClusterError):
        cluster.add_node("rogue", env={"PGHARNESS_TLS_CA": rogue_ca["PGHARNESS_TLS_CA"], "BASEBACKUP_TIMEOUT": "5"})

    # Its base backup failed on the certificate, and the primary streamed to no one.
    rogue = cluster.node("rogue")
    assert "certificate verify failed" in rogue.logs()
    assert cluster.primary.scalar("SELECT count(*) FROM pg_stat_replication") == 0
