"""Where a standby's first start takes its data from (docker/pgharness.sh, `standby_source`): the image's
template only for a volume's first streaming standby, a base backup otherwise."""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "pgharness.sh"
STREAMING = {"UPSTREAM_HOST": "primary", "RESTORE_COMMAND": "cp /archive/%f %p"}


def source(tmp_path, **env):
    """`standby_source`'s answer for the variables `env`, with PGDATA under `tmp_path`: (status, output)."""
    done = subprocess.run(
        ["sh", "-c", '. "$0"; standby_source', str(SCRIPT)],
        env={"PATH": "/usr/bin:/bin", "PGHARNESS_LIBRARY": "1", "PGDATA": str(tmp_path / "data"), **env},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip()


def test_a_base_backup_unless_the_template_is_asked_for(tmp_path):
    assert source(tmp_path, **STREAMING) == (0, "basebackup")
    assert source(tmp_path, **STREAMING, STANDBY_SOURCE="basebackup") == (0, "basebackup")
    assert source(tmp_path, **STREAMING, STANDBY_SOURCE="template") == (0, "template")


def test_a_volume_that_had_a_standby_takes_a_base_backup(tmp_path):
    # A rebuild wipes the data directory and starts the node again: the template's WAL may be long gone.
    (tmp_path / ".bootstrapped").touch()
    assert source(tmp_path, **STREAMING, STANDBY_SOURCE="template") == (0, "basebackup")


@pytest.mark.parametrize(
    "env",
    [
        {**STREAMING, "FROM_BACKUP": "b1"},
        {**STREAMING, "SLOT_NAME": "s1"},
        {**STREAMING, "RECOVERY_TARGET": "immediate"},
        {**STREAMING, "STREAMING": "off"},
        {"RESTORE_COMMAND": "cp /archive/%f %p"},
    ],
    ids=["from-backup", "slot", "recovery-target", "log-shipping", "no-upstream"],
)
def test_the_template_is_refused_where_only_a_base_backup_serves(tmp_path, env):
    status, said = source(tmp_path, **env, STANDBY_SOURCE="template")
    assert status == 1
    assert said.startswith("pgharness: STANDBY_SOURCE=template: ")


def test_an_unknown_source_is_refused(tmp_path):
    assert source(tmp_path, **STREAMING, STANDBY_SOURCE="rsync") == (
        1,
        "pgharness: STANDBY_SOURCE=rsync: template or basebackup",
    )
