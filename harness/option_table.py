"""The harness's settings, declared once: each one's name, flags, environment variable, kind and help.

The pytest plugin (`pgharness.options`) and the ``pgharness`` command (`pgharness.cli_base.table_option`)
both read this table, so a setting is added once and has the same environment variable and precedence
(command line, then environment, then, for the plugin, the ini file, then the default) on both faces. A
leaf for the command line: it imports no Docker SDK and no psycopg.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pgharness.constants import STANDBY_SOURCES, STORAGES
from pgharness.versions import DEFAULT_VERSION

#: Where a default evidence folder goes, relative to the run's rootdir.
DEFAULT_EVIDENCE_DIR = Path("test-results/evidence")
#: A test that uses a cluster ends within this many seconds unless a pytest-timeout timeout says otherwise.
DEFAULT_TEST_TIMEOUT = 300.0


@dataclass(frozen=True)
class Option:
    """One setting: its name (the option's dest and its ini name), flag, environment variable and kind.

    Kinds: ``text``; ``flag`` (a switch on the command line, a boolean elsewhere); ``paths`` (repeatable
    flag; ``os.pathsep``-separated in the environment); ``lines`` (repeatable flag; one per line in the
    environment); ``words`` (repeatable flag; space-separated in the environment).
    """

    name: str
    flag: str
    env: str
    kind: str
    help: str
    metavar: str = ""
    choices: tuple[str, ...] = ()
    #: The ``pgharness`` command's flags for the same setting (empty: the command line has none).
    cli: tuple[str, ...] = ()


OPTIONS: tuple[Option, ...] = (
    Option(
        "pg_version",
        "--pg-version",
        "PG_VERSION",
        "text",
        f"PostgreSQL major version (default {DEFAULT_VERSION})",
        "N",
        cli=("--pg-version",),
    ),
    Option(
        "pg_image",
        "--pg-image",
        "PG_IMAGE",
        "text",
        "build the node image on this image (any image with PostgreSQL server binaries, e.g. postgres:17) "
        "instead of Debian packages",
        "IMAGE",
        cli=("--pg-image", "--image"),
    ),
    Option("keep_on_failure", "--keep-on-failure", "PGHARNESS_KEEP", "flag", "leave a failed test's cluster running"),
    Option(
        "evidence_dir",
        "--evidence-dir",
        "PGHARNESS_EVIDENCE_DIR",
        "text",
        f"where failed tests' node logs and status go (default {DEFAULT_EVIDENCE_DIR} under the rootdir)",
        "DIR",
    ),
    Option(
        "pg_compose_files",
        "--pg-compose-file",
        "PGHARNESS_COMPOSE_FILES",
        "paths",
        f"a compose override file on top of the harness's (your services); repeatable (env: '{os.pathsep}'-separated)",
        "FILE",
        cli=("--compose-file",),
    ),
    Option(
        "pg_settings",
        "--pg-setting",
        "PGHARNESS_EXTRA_SETTINGS",
        "lines",
        "a postgresql.conf line for every node; repeatable (env: one per line)",
        "'NAME = VALUE'",
    ),
    Option(
        "pg_init_sql", "--pg-init-sql", "PGHARNESS_INIT_SQL_FILE", "paths", "SQL file run on each new primary", "FILE"
    ),
    Option(
        "pg_tls",
        "--pg-tls",
        "PGHARNESS_TLS",
        "flag",
        "replication over TLS (verify-full against a CA made at run time)",
        cli=("--tls",),
    ),
    Option(
        "pg_fsync",
        "--pg-fsync",
        "PG_FSYNC",
        "text",
        "fsync on every node: off (the default: fast, and loses data only when the machine crashes) or on",
        "off|on",
        ("off", "on"),
        cli=("--fsync",),
    ),
    Option(
        "pg_test_timeout",
        "--pg-test-timeout",
        "PGHARNESS_TEST_TIMEOUT",
        "text",
        "deadline of a test that uses a cluster when no pytest-timeout timeout is set; 0 for none "
        f"(default {DEFAULT_TEST_TIMEOUT:g})",
        "SECONDS",
    ),
    Option(
        "pg_storage",
        "--pg-storage",
        "PGHARNESS_STORAGE",
        "text",
        "where the compose nodes keep their data: tmpfs (memory, held while the cluster runs; the plugin's "
        "default) or volume (disk; the command's default)",
        "WHERE",
        STORAGES,
        cli=("--storage",),
    ),
    Option(
        "pg_standby_source",
        "--pg-standby-source",
        "PGHARNESS_STANDBY_SOURCE",
        "text",
        "where a new cluster's standby starts from: template (the default: the data directory the primary "
        "is made from, the rest replayed from the primary's WAL, started beside the primary) or basebackup "
        "(exercise 26-1's pg_basebackup, once the primary answers)",
        "FROM",
        STANDBY_SOURCES,
        cli=("--standby-from",),
    ),
    Option(
        "pg_sync_teardown",
        "--pg-sync-teardown",
        "PGHARNESS_SYNC_TEARDOWN",
        "flag",
        "remove each test's clusters before the next test starts, and start none ahead",
    ),
    Option(
        "pg_engines",
        "--pg-engine",
        "PGHARNESS_ENGINES",
        "words",
        "a Docker engine URL to run clusters on; repeatable: pytest-xdist workers are spread over them "
        "(env: space-separated)",
        "URL",
    ),
)


def option(name: str) -> Option:
    """The setting `name` of `OPTIONS` (a `KeyError` for a name the table does not have)."""
    return {entry.name: entry for entry in OPTIONS}[name]


__all__ = ["DEFAULT_EVIDENCE_DIR", "DEFAULT_TEST_TIMEOUT", "OPTIONS", "Option", "option"]
