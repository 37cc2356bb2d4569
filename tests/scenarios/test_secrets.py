"""Adversarial secrets: a password or role name with any character works everywhere it goes.

Superuser password, replication role name and its password each carry a space, ', ", \\, $, a backtick,
%, #, = and non-ASCII text. They reach libpq connection strings (primary_conninfo, pg_basebackup,
pg_rewind), postgresql.conf, pg_hba.conf and SQL; the cluster starts, streams over TLS, has a standby
rebuilt, fails over, rejoins the old primary with pg_rewind, and `pgharness sql` works from another process.
"""

import os
import random
import subprocess
import sys

import pytest

from pgharness import Cluster
from pgharness.failover import rejoin, repoint, single_primary

pytestmark = [pytest.mark.security, pytest.mark.failover]

SECRETS = {
    "password": "sü per'\"\\ $(touch /tmp/pwned) `id` %p #x =y",
    "replication_user": "re pl'i\"\\$`%#=ü",
    "replication_password": "rp ass'\"\\$HOME `id` %f #=ö",
}
#: postgresql.conf string values that must come back from the server unchanged.
TRICKY = ["a b'c\\d", "''", "\\\\", "\\n is not a newline", "#not a comment", "tab\there", "ümlaut ✓ 漢字", "$PGDATA"]


def conf_values(count=24, seed=20261126):
    """TRICKY plus `count` random strings over printable ASCII, a tab and some non-ASCII (no line breaks)."""
    alphabet = [chr(c) for c in range(32, 127)] + ["\t", "é", "ß", "✓", "漢"]
    rng = random.Random(seed)
    randoms = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(count)]
    return {f"pgharness.probe{i}": value for i, value in enumerate(TRICKY + randoms)}


def test_adversarial_secrets_work_everywhere(cluster_factory, monkeypatch):
    probes = conf_values()
    cluster = cluster_factory(tls=True, standbys=2, settings=probes, **SECRETS)
    primary, standby, standby2 = cluster.primary, cluster.standby, cluster.node("standby2")

    # Every postgresql.conf value the harness rendered comes back from the server as it was given.
    for name, value in probes.items():
        assert primary.scalar("SELECT current_setting(%s)", (name,)) == value, name

    # Both standbys stream, as the adversarial replication role, over TLS.
    primary.sql("CREATE TABLE hoge (col integer)")
    primary.sql("INSERT INTO hoge SELECT g FROM generate_series(1, 10) g")
    for node in (standby, standby2):
        primary.wait_for_catchup(node)
        assert node.scalar("SELECT count(*) FROM hoge") == 10
    walsenders = primary.sql(
        "SELECT r.usename, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) ORDER BY 1"
    )
    assert walsenders == [(SECRETS["replication_user"], True)] * 2

    # `pgharness sql` from another shell, which knows none of the secrets: it reads them from the containers.
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "REPLICATION_PASSWORD")}
    result = subprocess.run(
        [sys.executable, "-m", "pgharness", "sql", "--name", cluster.name, "standby", "SELECT count(*) FROM hoge"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "10\n"), result.stderr

    # A standby rebuilt from scratch (a fresh pg_basebackup with the same credentials) streams again.
    cluster.backups.rebuild("standby2")
    primary.sql("INSERT INTO hoge VALUES (11)")
    primary.wait_for_catchup(standby2)

    # Failover: the primary crashes, the standby is promoted, standby2 follows it ...
    primary.kill()
    standby.promote()
    repoint(standby2, standby)
    standby.sql("INSERT INTO hoge VALUES (12)")
    standby.wait_for_catchup(standby2)

    # ... and the old primary rejoins with pg_rewind (its source connection string carries the secrets).
    rejoined = rejoin(cluster, "primary", "standby")
    standby.wait_for_catchup(rejoined)
    assert rejoined.scalar("SELECT count(*) FROM hoge") == 12
    assert single_primary(cluster).name == "standby"

    # A node added by another process gets the cluster's own replication credentials, not its shell's.
    monkeypatch.delenv("REPLICATION_USER", raising=False)
    monkeypatch.delenv("REPLICATION_PASSWORD", raising=False)
    late = Cluster.attach(cluster.name).add_node("late", upstream="standby")
    standby.wait_for_catchup(late)
    assert late.scalar("SELECT count(*) FROM hoge") == 12
