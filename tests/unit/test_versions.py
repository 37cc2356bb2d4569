import pytest

from pgharness.errors import UnsupportedVersion
from pgharness.versions import (
    BASEBACKUP_OPTIONS,
    MIN_SUPPORTED,
    major_from_version_num,
    modernize,
    parse_postgres_v,
    parse_version_arg,
    suite_for,
    supports,
    version_matches,
)


@pytest.mark.parametrize(("major", "suite"), [(13, "bullseye"), (15, "bookworm"), (17, "trixie"), (18, "forky")])
def test_each_built_version_has_its_debian_suite(major, suite):
    assert suite_for(major).name == suite
    assert suite_for(major).packages == (f"postgresql-{major}", "nftables", "iproute2", "rsync")


def test_forky_ignores_valid_until():
    assert any("Check-Valid-Until" in o for o in suite_for(18).apt_options)
    assert suite_for(17).apt_options == ()


def test_version_without_suite_points_to_pg_image():
    with pytest.raises(UnsupportedVersion, match="PG_IMAGE=postgres:16"):
        suite_for(16)


@pytest.mark.parametrize("text", ["12", "9.6", "11.22"])
def test_versions_below_13_are_refused_naming_the_range(text):
    with pytest.raises(UnsupportedVersion, match=f"PostgreSQL {MIN_SUPPORTED} and later"):
        parse_version_arg(text)


@pytest.mark.parametrize("text", ["", "latest", "17beta", "seventeen"])
def test_malformed_versions_are_refused(text):
    with pytest.raises(UnsupportedVersion, match="not a PostgreSQL version"):
        parse_version_arg(text)


def test_version_arg_accepts_major_and_minor():
    assert parse_version_arg("17") == 17
    assert parse_version_arg(" 15.8 ") == 15


@pytest.mark.parametrize(("num", "major"), [(130016, 13), (170002, 17), (180000, 18)])
def test_server_version_num(num, major):
    assert major_from_version_num(num) == major


def test_server_version_num_before_10_is_refused():
    with pytest.raises(UnsupportedVersion):
        major_from_version_num(90624)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ("postgres (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)", 17),
        ("postgres (PostgreSQL) 13.22 (Debian 13.22-0+deb11u1)\n", 13),
        ("postgres (PostgreSQL) 18.1", 18),
    ],
)
def test_postgres_v_output(output, major):
    assert parse_postgres_v(output) == major


def test_seed_wal_keep_segments_becomes_wal_keep_size():
    m = modernize("wal_keep_segments", "5", 17)
    assert (m.setting, m.value) == ("wal_keep_size", "80MB")


def test_seed_standby_mode_becomes_standby_signal():
    assert modernize("standby_mode", "on", 13).setting is None
    assert "standby.signal" in modernize("standby_mode", "on", 13).where


@pytest.mark.parametrize("setting", ["restore_command", "primary_conninfo"])
def test_recovery_conf_settings_move_to_postgresql_conf(setting):
    m = modernize(setting, "x", 15)
    assert (m.setting, m.value, m.where) == (setting, "x", "postgresql.conf")


def test_trigger_file_is_gone_from_16():
    assert modernize("trigger_file", "/tmp/t", 15).setting == "promote_trigger_file"
    assert modernize("trigger_file", "/tmp/t", 16).setting is None


def test_modernize_refuses_unsupported_versions_and_unknown_settings():
    with pytest.raises(UnsupportedVersion):
        modernize("standby_mode", "on", 11)
    with pytest.raises(KeyError):
        modernize("shared_buffers", "1GB", 17)


def test_seed_xlog_option():
    assert BASEBACKUP_OPTIONS["--xlog"] == "--wal-method=stream"


@pytest.mark.parametrize(
    ("spec", "major", "expected"),
    [
        (">=17", 17, True),
        (">=17", 15, False),
        ("<16", 15, True),
        (">=13,<17", 17, False),
        (">=13,<17", 13, True),
        ("15", 15, True),
        ("!=15", 15, False),
        (" > 17 ", 18, True),
    ],
)
def test_version_specs(spec, major, expected):
    assert version_matches(spec, major) is expected


@pytest.mark.parametrize("spec", ["", ">=", "~17", ">=17.2", "latest"])
def test_malformed_version_specs(spec):
    with pytest.raises(ValueError, match="version spec"):
        version_matches(spec, 17)


def test_features_by_version():
    assert supports("incremental_backup", 17)
    assert not supports("incremental_backup", 16)
    assert supports("idle_replication_slot_timeout", 18)
    assert not supports("replay_pause_state", 13)
    with pytest.raises(KeyError, match="unknown feature"):
        supports("time_travel", 18)
