"""The plugin's settings: command line, then environment, then ini, then default; paths relative to where each
was given; a bad value named as the user wrote it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgharness.errors import ClusterError
from pgharness.fixtures import cluster_arguments
from pgharness.option_table import OPTIONS
from pgharness.options import OptionError, Sources, resolve_settings
from pgharness.quoting import read_sql, settings_lines


def resolved(tmp_path, cli=None, env=None, ini=None):
    """The settings from a command line, an environment and an ini file (each a dict, absent when None)."""
    ini = ini or {}
    return resolve_settings(
        Sources(
            command_line=cli or {},
            env=env or {},
            ini=lambda name: ini.get(name),
            invocation_dir=tmp_path / "cwd",
            rootdir=tmp_path / "project",
            inifile=tmp_path / "project" / "pyproject.toml",
        )
    )


def test_nothing_given_gives_the_defaults_and_no_header(tmp_path):
    settings = resolved(tmp_path)
    assert settings.cluster_kwargs() == {"storage": "tmpfs", "standby_source": "template", "healthchecks": False}
    assert settings.spec.pg_version == 17
    # The default evidence folder is the rootdir's, wherever the run was started from.
    assert settings.evidence_dir == tmp_path / "project" / "test-results" / "evidence"
    assert settings.header() == []


@pytest.mark.parametrize(
    ("given", "expected", "origin"),
    [
        ({"cli"}, 18, "--pg-version"),
        ({"env"}, 15, "env PG_VERSION"),
        ({"ini"}, 13, "ini pg_version in pyproject.toml"),
        ({"cli", "env"}, 18, "--pg-version"),
        ({"cli", "ini"}, 18, "--pg-version"),
        ({"env", "ini"}, 15, "env PG_VERSION"),  # a CI job's PG_VERSION wins over the project's ini
        ({"cli", "env", "ini"}, 18, "--pg-version"),
    ],
)
def test_command_line_then_environment_then_ini_then_default(tmp_path, given, expected, origin):
    settings = resolved(
        tmp_path,
        cli={"pg_version": "18"} if "cli" in given else None,
        env={"PG_VERSION": "15"} if "env" in given else None,
        ini={"pg_version": "13"} if "ini" in given else None,
    )
    assert settings.spec.pg_version == expected
    assert settings.header() == [f"pg_version={expected} ({origin})"]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.name)
def test_every_setting_takes_the_environment_over_the_ini_and_the_flag_over_both(tmp_path, option):
    # A value of the setting's kind for each source; the resolved value says which one won.
    values = {
        "pg_version": ("18", "15", "13"),
        "pg_image": ("postgres:18", "postgres:15", "postgres:13"),
        "evidence_dir": ("flag", "env", "ini"),
        "pg_test_timeout": ("3", "2", "1"),
        "pg_storage": ("volume", "tmpfs", "volume"),
        "pg_standby_source": ("basebackup", "template", "basebackup"),
        "pg_fsync": ("on", "off", "on"),
    }
    if option.kind == "flag":
        cli, env, ini = True, "0", True  # the flag says on, the environment off, the ini on
    elif option.kind in ("paths", "lines", "words"):
        cli, env, ini = ["flag"], "env", ["ini"]
    else:
        cli, env, ini = values[option.name]
    both = resolved(tmp_path, env={option.env: env}, ini={option.name: ini})
    assert both.origins.get(option.name, f"env {option.env}") == f"env {option.env}"
    every = resolved(tmp_path, cli={option.name: cli}, env={option.env: env}, ini={option.name: ini})
    assert every.origins[option.name] == option.flag
    ini_only = resolved(tmp_path, ini={option.name: ini})
    assert ini_only.origins[option.name] == f"ini {option.name} in pyproject.toml"


def test_a_flag_the_environment_turns_off_is_off_and_not_in_the_header(tmp_path):
    settings = resolved(tmp_path, env={"PGHARNESS_TLS": "0"}, ini={"pg_tls": True})
    assert settings.tls is False
    assert settings.header() == []
    assert resolved(tmp_path, ini={"pg_tls": True}).tls is True


@pytest.mark.parametrize(
    ("cli", "env", "ini", "line"),
    [
        ({"pg_version": "12"}, None, None, "--pg-version 12: PostgreSQL 12 is not supported"),
        (None, {"PG_VERSION": "abc"}, None, "PG_VERSION=abc: not a PostgreSQL version"),
        (None, None, {"pg_version": "12"}, "pg_version = 12 (ini pg_version in pyproject.toml): PostgreSQL 12"),
        (None, {"PGHARNESS_STORAGE": "nvme"}, None, "PGHARNESS_STORAGE=nvme: use one of volume, tmpfs"),
        (None, {"PGHARNESS_TLS": "maybe"}, None, "PGHARNESS_TLS=maybe: not a boolean"),
        ({"pg_test_timeout": "soon"}, None, None, "--pg-test-timeout soon: not a number of seconds"),
    ],
)
def test_a_bad_value_is_named_as_the_user_wrote_it(tmp_path, cli, env, ini, line):
    with pytest.raises(OptionError) as raised:
        resolved(tmp_path, cli=cli, env=env, ini=ini)
    assert str(raised.value).startswith(line)


def test_the_storage_is_the_first_source_that_has_it(tmp_path):
    assert resolved(tmp_path, env={"PGHARNESS_STORAGE": "volume"}).cluster_kwargs()["storage"] == "volume"
    settings = resolved(tmp_path, cli={"pg_storage": "tmpfs"}, env={"PGHARNESS_STORAGE": "volume"})
    assert settings.cluster_kwargs()["storage"] == "tmpfs"


def test_fsync_is_a_setting_that_reaches_compose_as_its_variable(tmp_path):
    settings = resolved(tmp_path, env={"PG_FSYNC": "on"})
    assert settings.cluster_kwargs()["env"] == {"PG_FSYNC": "on"}
    assert settings.header() == ["pg_fsync=on (env PG_FSYNC)"]
    # A test's own compose variables come on top of the session's.
    kwargs = cluster_arguments(settings, "img", {"env": {"STANDBY_UPSTREAM": "standby"}})
    assert kwargs["env"] == {"PG_FSYNC": "on", "STANDBY_UPSTREAM": "standby"}
    # Off (the default) adds nothing.
    assert "env" not in resolved(tmp_path).cluster_kwargs()


def test_lines_come_one_per_line_from_the_environment(tmp_path):
    env = {"PGHARNESS_EXTRA_SETTINGS": "work_mem = '1MB'\nshared_buffers = '64MB'\n"}
    assert resolved(tmp_path, env=env).settings == ("work_mem = '1MB'", "shared_buffers = '64MB'")
    engines = resolved(tmp_path, env={"PGHARNESS_ENGINES": "tcp://a:2375  tcp://b:2375"}).engines
    assert engines == ("tcp://a:2375", "tcp://b:2375")


def test_paths_are_relative_to_where_they_were_given(tmp_path):
    # On the command line and in the environment: the current folder. In the ini file: its folder.
    flag = resolved(tmp_path, cli={"pg_compose_files": ["app.yaml"]})
    assert flag.compose_files == (tmp_path / "cwd" / "app.yaml",)

    ini = resolved(tmp_path, ini={"pg_compose_files": ["app.yaml", "db.yaml"], "evidence_dir": "out"})
    assert ini.compose_files == (tmp_path / "project" / "app.yaml", tmp_path / "project" / "db.yaml")
    assert ini.evidence_dir == tmp_path / "project" / "out"

    env = resolved(
        tmp_path,
        env={
            "PGHARNESS_COMPOSE_FILES": f"{tmp_path}/a.yaml:b.yaml",
            "PGHARNESS_INIT_SQL_FILE": f"{tmp_path}/schema.sql",
            "PGHARNESS_TLS": "1",
        },
    )
    assert env.cluster_kwargs() == {
        "compose_files": [tmp_path / "a.yaml", tmp_path / "cwd" / "b.yaml"],
        "init_sql": tmp_path / "schema.sql",
        "tls": True,
        "storage": "tmpfs",
        "standby_source": "template",
        "healthchecks": False,
    }


def test_settings_lines_quote_strings_and_spell_booleans():
    text = settings_lines({"work_mem": "64MB", "log_min_duration_statement": 250, "jit": False, "x": "it's"})
    assert text.splitlines() == ["work_mem = '64MB'", "log_min_duration_statement = 250", "jit = off", "x = 'it''s'"]
    assert settings_lines(["a = 1", "b = 2"]) == "a = 1\nb = 2"


def test_init_sql_is_a_file_or_the_sql_itself(tmp_path):
    (tmp_path / "schema.sql").write_text("CREATE TABLE t (id int);\n")
    assert read_sql(tmp_path / "schema.sql") == "CREATE TABLE t (id int);\n"
    assert read_sql(str(tmp_path / "schema.sql")) == "CREATE TABLE t (id int);\n"
    assert read_sql("CREATE TABLE t (id int);") == "CREATE TABLE t (id int);"
    with pytest.raises(ClusterError, match="not found"):
        read_sql(str(tmp_path / "missing.sql"))


def child_pytest(tmp_path, *args, env=None):
    """A pytest run of its own in a project under `tmp_path` whose ini says pg_version = "17"."""
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\npg_version = "17"\n')
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PG_", "PGHARNESS_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", *args],
        cwd=tmp_path, env={**environment, **(env or {})}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_an_unsupported_version_is_one_line_and_a_usage_error(tmp_path):
    run = child_pytest(tmp_path, "--pg-version", "12")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert run.stderr.strip().splitlines() == [
        "ERROR: pgharness: --pg-version 12: PostgreSQL 12 is not supported: the harness serves PostgreSQL 13 and later"
    ]
    assert "INTERNALERROR" not in run.stdout


def test_the_environment_wins_over_the_ini_and_the_header_says_so(tmp_path):
    run = child_pytest(tmp_path, env={"PG_VERSION": "15"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pgharness: pg_version=15 (env PG_VERSION)" in run.stdout.splitlines()
    assert "pgharness: image pgharness/postgres:15 " in run.stdout


def test_the_options_page_names_every_setting_and_the_precedence():
    # The documentation's one table (docs/guides/options.md) and pgharness.options never drift apart.
    page = (Path(__file__).resolve().parents[2] / "docs" / "guides" / "options.md").read_text()
    assert "the command line,\nthen the environment, then the ini file, then the default" in page
    for option in OPTIONS:
        row = next((line for line in page.splitlines() if line.startswith(f"| `{option.flag}")), None)
        assert row is not None, f"{option.flag} has no row"
        assert f"`{option.name}`" in row, row
        assert f"`{option.env}" in row, row


def test_the_command_and_the_plugin_read_one_table():
    # Every option of every pgharness command whose environment variable is a setting of the table is that
    # setting's: its flags are the table's cli flags, its help the table's. A new setting is added once.
    from pgharness.cli import main

    by_env = {option.env: option for option in OPTIONS}
    seen = set()
    for command in main.commands.values():
        for param in command.params:
            entry = by_env.get(getattr(param, "envvar", None) or "")
            if entry is None:
                continue
            seen.add(entry.name)
            assert set(param.opts) <= set(entry.cli), (command.name, param.opts)
            assert param.help.startswith(entry.help), (command.name, param.opts)
    assert seen == {option.name for option in OPTIONS if option.cli}
