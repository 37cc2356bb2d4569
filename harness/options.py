"""The pytest plugin's settings: one table, one precedence.

Every setting can come from four places, and the first that has it wins:

1. the command line (``--pg-version 15``),
2. the environment (``PG_VERSION=15``),
3. the ini file (``pg_version = "15"`` under ``[tool.pytest.ini_options]``),
4. the default.

This is the order pytest plugins use (pytest-django's, among others): a CI job's environment
overrides the project's file, and a person's command line overrides both. `resolve_settings` applies it to
every setting in `OPTIONS` (`pgharness.option_table`, which the command line reads too) and records where
each value came from, so that the report header can say it (``pg_version=15 (env PG_VERSION)``). Pure
logic: unit-tested without pytest or Docker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgharness.errors import HarnessError
from pgharness.image import ImageSpec
from pgharness.option_table import DEFAULT_EVIDENCE_DIR, DEFAULT_TEST_TIMEOUT, OPTIONS, Option
from pgharness.versions import DEFAULT_VERSION, parse_version_arg

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class OptionError(HarnessError):
    """A setting's value is not one the harness takes; the message names where it came from."""


@dataclass(frozen=True)
class Sources:
    """What `resolve_settings` reads: the command line's values (None or empty when not given), the environment,
    the ini file's values (None when unset), and the folders relative paths are taken from."""

    command_line: Mapping[str, Any]
    env: Mapping[str, str]
    ini: Callable[[str], Any]
    invocation_dir: Path
    rootdir: Path
    inifile: Path | None = None


@dataclass(frozen=True)
class Settings:
    """The session's harness settings (`resolve_settings`); `origins` says where each non-default came from."""

    spec: ImageSpec = field(default_factory=lambda: ImageSpec(DEFAULT_VERSION))
    keep_on_failure: bool = False
    evidence_dir: Path = DEFAULT_EVIDENCE_DIR
    compose_files: tuple[Path, ...] = ()
    settings: tuple[str, ...] = ()
    init_sql: Path | None = None
    tls: bool = False
    fsync: str = "off"
    test_timeout: float = DEFAULT_TEST_TIMEOUT
    storage: str = "tmpfs"
    standby_source: str = "template"
    background_teardown: bool = True
    engines: tuple[str, ...] = ()
    origins: Mapping[str, str] = field(default_factory=dict)

    def cluster_kwargs(self) -> dict[str, Any]:
        """The `Cluster` arguments these settings give every cluster of the session (a test's own win)."""
        # Docker's healthchecks off: the harness asks the nodes over SQL, and each check is a `docker exec`.
        kwargs: dict[str, Any] = {"storage": self.storage, "standby_source": self.standby_source, "healthchecks": False}
        if self.compose_files:
            kwargs["compose_files"] = list(self.compose_files)
        if self.settings:
            kwargs["settings"] = list(self.settings)
        if self.init_sql:
            kwargs["init_sql"] = self.init_sql
        if self.tls:
            kwargs["tls"] = True
        if self.fsync != "off":
            kwargs["env"] = {"PG_FSYNC": self.fsync}
        return kwargs

    def header(self) -> list[str]:
        """The report header's lines: each value that differs from its default, with where it came from."""
        values = {
            "pg_version": str(self.spec.pg_version),
            "pg_image": self.spec.base_image or "",
            "keep_on_failure": "on",
            "evidence_dir": str(self.evidence_dir),
            "pg_compose_files": " ".join(str(p) for p in self.compose_files),
            "pg_settings": "; ".join(self.settings),
            "pg_init_sql": str(self.init_sql),
            "pg_tls": "on",
            "pg_fsync": self.fsync,
            "pg_test_timeout": f"{self.test_timeout:g}",
            "pg_storage": self.storage,
            "pg_standby_source": self.standby_source,
            "pg_sync_teardown": "on",
            "pg_engines": " ".join(self.engines),
        }
        return [f"{name}={values[name]} ({origin})" for name, origin in self.origins.items()]


def raw_value(option: Option, sources: Sources) -> tuple[Any, str] | None:
    """The first value `option` has, by the precedence above, and where it came from; None for the default."""
    given = sources.command_line.get(option.name)
    if given not in (None, False, [], ()):
        return given, option.flag
    if option.env in sources.env:
        return sources.env[option.env], f"env {option.env}"
    ini = sources.ini(option.name)
    if ini not in (None, [], ()):
        where = f" in {sources.inifile.name}" if sources.inifile else ""
        return ini, f"ini {option.name}{where}"
    return None


def shown(option: Option, value: Any, origin: str) -> str:
    """How the user wrote `value`, for an error line: ``--pg-version 12``, ``PG_VERSION=12``, ``pg_version = 12``."""
    text = " ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
    if origin == option.flag:
        return option.flag if option.kind == "flag" else f"{option.flag} {text}"
    if origin.startswith("env "):
        return f"{option.env}={text}"
    return f"{option.name} = {text} ({origin})"


def to_bool(option: Option, value: Any, origin: str) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise OptionError(f"{shown(option, value, origin)}: not a boolean (use 1, true, 0 or false)")


def to_paths(value: Any, origin: str, sources: Sources) -> list[Path]:
    """Paths from the command line (relative to the current folder), the environment (os.pathsep-separated,
    relative to the current folder) or the ini file (relative to its folder)."""
    if origin.startswith("env "):
        return [sources.invocation_dir / p for p in str(value).split(os.pathsep) if p.strip()]
    items = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
    return [base_dir(origin, sources) / p for p in items]


def base_dir(origin: str, sources: Sources) -> Path:
    """The folder a relative path is taken from: the ini file's for an ini value, else the current folder."""
    if origin.startswith("ini "):
        return sources.inifile.parent if sources.inifile else sources.rootdir
    return sources.invocation_dir


def to_lines(value: Any) -> list[str]:
    """Lines from a repeated flag or an ini line list, or one per line from the environment."""
    items = [str(v) for v in value] if isinstance(value, list | tuple) else str(value).splitlines()
    return [line for line in items if line.strip()]


def resolve_settings(sources: Sources) -> Settings:
    """The settings from `sources`, by the precedence above; `OptionError` names the first bad value as the
    user wrote it (the flag, the variable or the ini line) and what it takes instead."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for option in OPTIONS:
        found = raw_value(option, sources)
        if found is None:
            continue
        value, origin = found
        origins[option.name] = origin
        values[option.name] = convert(option, value, origin, sources)
    return Settings(
        spec=ImageSpec(values.get("pg_version", DEFAULT_VERSION), values.get("pg_image") or None),
        keep_on_failure=values.get("keep_on_failure", False),
        evidence_dir=values.get("evidence_dir", sources.rootdir / DEFAULT_EVIDENCE_DIR),
        compose_files=tuple(values.get("pg_compose_files", ())),
        settings=tuple(values.get("pg_settings", ())),
        init_sql=values["pg_init_sql"][-1] if values.get("pg_init_sql") else None,
        tls=values.get("pg_tls", False),
        fsync=values.get("pg_fsync", "off"),
        test_timeout=values.get("pg_test_timeout", DEFAULT_TEST_TIMEOUT),
        storage=values.get("pg_storage", "tmpfs"),
        standby_source=values.get("pg_standby_source", "template"),
        background_teardown=not values.get("pg_sync_teardown", False),
        engines=tuple(values.get("pg_engines", ())),
        origins={name: origin for name, origin in origins.items() if values[name] not in (False, "", (), [])},
    )


def convert(option: Option, value: Any, origin: str, sources: Sources) -> Any:
    """`value` as the setting's type; `OptionError` naming it as written when it is not one the harness takes."""
    if option.kind == "flag":
        return to_bool(option, value, origin)
    if option.kind == "paths":
        return to_paths(value, origin, sources)
    if option.kind == "lines":
        return to_lines(value)
    if option.kind == "words":
        items = str(value).split() if isinstance(value, str) else [str(v) for v in value]
        return [item for item in items if item.strip()]
    text = str(value[-1] if isinstance(value, list | tuple) else value).strip()
    if option.choices and text not in option.choices:
        raise OptionError(f"{shown(option, text, origin)}: use one of {', '.join(option.choices)}")
    if option.name == "pg_version":
        try:
            return parse_version_arg(text)
        except HarnessError as e:
            raise OptionError(f"{shown(option, text, origin)}: {e}") from None
    if option.name == "pg_test_timeout":
        try:
            return float(text)
        except ValueError:
            raise OptionError(f"{shown(option, text, origin)}: not a number of seconds") from None
    if option.name == "evidence_dir":
        return base_dir(origin, sources) / text
    return text
