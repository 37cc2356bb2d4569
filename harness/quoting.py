"""Configuration rendering and quoting: every value goes out by the rules of the place it lands in.

One module owns these rules on the Python side (the entrypoint,
``docker/pgharness.sh``, has one shell function per rule):

- libpq connection strings: `conninfo` (psycopg's ``make_conninfo``: single
  quotes, a backslash before ``'`` and ``\\``), read back with
  ``psycopg.conninfo.conninfo_to_dict``;
- postgresql.conf values: `conf_value` / `conf_string` (single quotes,
  ``''`` for a quote and ``\\\\`` for a backslash, since the configuration
  file's scanner reads backslash escapes);
- SQL: never by hand, always ``psycopg.sql.Identifier`` / ``Literal``;
- URIs: `uri_component` (percent-encoding);
- file names (backups, dumps): `check_file_name` lets plain names through only;
- argv: a list, never a string for a shell; a fixed script (``sh -c``) gets
  every value as a positional argument, never in its text.

`check_secret` refuses, in one line, a password or role name that no quoting
can carry to every one of those places (a NUL byte, a line break).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from psycopg.conninfo import make_conninfo

from pgharness.errors import ClusterError, QuotingError

#: postgresql.conf settings as the harness takes them: a mapping (values quoted by `conf_value`),
#: lines, or a text (lines and text taken as written).
Settings = Mapping[str, object] | Sequence[str] | str


def check_secret(what: str, value: str) -> str:
    """`value`, when it can go into conninfo strings, postgresql.conf and SQL alike; else `QuotingError`.

    Any character is fine but NUL (C strings end there) and line breaks (a
    postgresql.conf value and a single-user-mode statement end there).
    """
    if not value:
        raise QuotingError(f"{what} is empty")
    for bad, name in (("\0", "a NUL byte"), ("\n", "a line break"), ("\r", "a carriage return")):
        if bad in value:
            raise QuotingError(f"{what} contains {name}, which no connection string or postgresql.conf value carries")
    return value


def conninfo(**params: str | int | None) -> str:
    """A libpq ``key=value`` connection string; every value quoted and escaped (None values left out)."""
    return make_conninfo("", **{key: value for key, value in params.items() if value is not None})


def conf_string(text: str) -> str:
    """`text` as a quoted postgresql.conf string value: ``'it''s'``, backslashes doubled."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def conf_value(value: object) -> str:
    """A postgresql.conf value: booleans as on/off, numbers as they are, anything else a quoted string."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return conf_string(str(value))


def settings_lines(settings: Settings) -> str:
    """postgresql.conf lines from a mapping (``{"work_mem": "64MB"}``, values quoted by `conf_value`),
    a list of lines, or a text (lines and text are taken as written)."""
    if isinstance(settings, str):
        return settings
    if isinstance(settings, Mapping):
        for key in settings:
            if not _SETTING_NAME.fullmatch(key):
                raise QuotingError(f"{key!r} is not a setting name (letters, digits, '_' and '.')")
        return "\n".join(f"{key} = {conf_value(value)}" for key, value in settings.items())
    return "\n".join(settings)


_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def check_file_name(what: str, name: str) -> str:
    """`name`, when it is a plain file name (letters, digits, ``.``, ``_``, ``-``; not first ``.`` or ``-``);
    else `QuotingError`. Backup and dump names become paths: no ``/``, no ``..``, nothing a shell reads."""
    if not _FILE_NAME.fullmatch(name):
        raise QuotingError(f"{what} {name!r}: use letters, digits, '.', '_' and '-' (not first '.' or '-')")
    return name


def read_sql(init_sql: str | Path) -> str:
    """The SQL text of `init_sql`: a path to a .sql file, or the SQL itself (`ClusterError`: no such file)."""
    if isinstance(init_sql, Path) or (init_sql.endswith(".sql") and "\n" not in init_sql):
        path = Path(init_sql)
        if not path.is_file():
            raise ClusterError(f"init SQL file {str(path)!r} not found")
        return path.read_text()
    return init_sql


def uri_component(text: str) -> str:
    """`text` percent-encoded for a ``postgresql://`` URI's user, password or database part."""
    return quote(text, safe="")


def uri_host(host: str) -> str:
    """`host` as the host part of a URI: an IPv6 address in brackets, anything else as it is."""
    return f"[{host}]" if ":" in host else host
