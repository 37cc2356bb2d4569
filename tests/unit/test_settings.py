"""The plugin's options: flag over ini over environment; paths relative to where each was given."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from pgharness.errors import ClusterError
from pgharness.pytest_plugin import Settings
from pgharness.quoting import read_sql, settings_lines


class FakeConfig:
    """The part of pytest.Config that Settings reads."""

    def __init__(self, tmp_path, options=None, ini=None):
        self.options = options or {}
        self.ini = ini or {}
        self.inipath = tmp_path / "project" / "pyproject.toml"
        self.rootpath = tmp_path / "project"
        self.invocation_params = SimpleNamespace(dir=tmp_path / "cwd")

    def getoption(self, name):
        return self.options.get(name)

    def getini(self, name):
        return self.ini.get(name, [] if name in ("pg_compose_files", "pg_settings", "pg_init_sql") else "")


@pytest.fixture(autouse=True)
def _no_harness_environment(monkeypatch):
    for name in ("PG_VERSION", "PG_IMAGE", "PGHARNESS_COMPOSE_FILES", "PGHARNESS_EXTRA_SETTINGS",
                 "PGHARNESS_INIT_SQL_FILE", "PGHARNESS_TLS", "PGHARNESS_KEEP", "PGHARNESS_STORAGE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_nothing_given_gives_only_the_default_storage(tmp_path):
    settings = Settings.from_config(FakeConfig(tmp_path))
    assert settings.cluster_kwargs() == {"storage": "tmpfs"}
    assert settings.spec.pg_version == 17


def test_storage_on_disk_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("PGHARNESS_STORAGE", "volume")
    assert Settings.from_config(FakeConfig(tmp_path)).cluster_kwargs() == {"storage": "volume"}
    settings = Settings.from_config(FakeConfig(tmp_path, options={"pg_storage": "tmpfs"}))
    assert settings.cluster_kwargs()["storage"] == "tmpfs"


def test_the_flag_wins_over_the_ini_key_which_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PGHARNESS_EXTRA_SETTINGS", "work_mem = '1MB'\nshared_buffers = '64MB'")
    monkeypatch.setenv("PG_VERSION", "13")
    assert Settings.from_config(FakeConfig(tmp_path)).settings == ("work_mem = '1MB'", "shared_buffers = '64MB'")

    ini = {"pg_settings": ["work_mem = '2MB'"], "pg_version": "15"}
    settings = Settings.from_config(FakeConfig(tmp_path, ini=ini))
    assert settings.settings == ("work_mem = '2MB'",)
    assert settings.spec.pg_version == 15

    options = {"pg_settings": ["work_mem = '3MB'"], "pg_version": "18"}
    settings = Settings.from_config(FakeConfig(tmp_path, options=options, ini=ini))
    assert settings.settings == ("work_mem = '3MB'",)
    assert settings.spec.pg_version == 18


def test_paths_are_relative_to_where_they_were_given(tmp_path, monkeypatch):
    # On the command line: the current folder. In the ini file: its folder. In the environment: resolved, ':'-split.
    flag = Settings.from_config(FakeConfig(tmp_path, options={"pg_compose_files": ["app.yaml"]}))
    assert flag.compose_files == (tmp_path / "cwd" / "app.yaml",)

    ini = Settings.from_config(FakeConfig(tmp_path, ini={"pg_compose_files": [Path("app.yaml"), Path("db.yaml")]}))
    assert ini.compose_files == (tmp_path / "project" / "app.yaml", tmp_path / "project" / "db.yaml")

    monkeypatch.setenv("PGHARNESS_COMPOSE_FILES", f"{tmp_path}/a.yaml:{tmp_path}/b.yaml")
    monkeypatch.setenv("PGHARNESS_INIT_SQL_FILE", f"{tmp_path}/schema.sql")
    monkeypatch.setenv("PGHARNESS_TLS", "1")
    env = Settings.from_config(FakeConfig(tmp_path))
    assert env.cluster_kwargs() == {
        "compose_files": [tmp_path / "a.yaml", tmp_path / "b.yaml"],
        "init_sql": tmp_path / "schema.sql",
        "tls": True,
        "storage": "tmpfs",
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
