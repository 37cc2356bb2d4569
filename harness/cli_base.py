"""What the ``pgharness`` commands share: the command group, one-line errors and their exit codes, parameter
types that name what the user gave, and the handles on an environment (`pgharness.cli` is the entry point).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pgharness.errors import HarnessError, UnknownEnvironment, UnknownNode
from pgharness.versions import DEFAULT_VERSION, parse_version_arg

if TYPE_CHECKING:
    from rich.console import Console

    from pgharness.cluster import Cluster
    from pgharness.image import ImageSpec
    from pgharness.node import Node

# What a command needs is imported when it runs (`pgharness --help` pays for no Docker, psycopg or rich).

F = TypeVar("F", bound=Callable[..., Any])

#: The compose project name of `make up` / `pgharness up`.
DEFAULT_NAME = "pgharness"


def attach(name: str) -> Cluster:
    """The environment `name` on this engine (`Cluster.attach`)."""
    from pgharness.cluster import Cluster

    return Cluster.attach(name)


def details_file(name: str) -> Path:
    """The file that holds the whole of environment `name`'s last error: one a name, overwritten by the next
    error and removed by ``pgharness down``, so nothing piles up."""
    from pgharness.environments import state_dir

    return state_dir() / f"{name}.error.txt"


def forget_errors_of_gone_environments(existing: set[str]) -> None:
    """Remove the error files (`details_file`) of environments that are not in `existing` any more: they
    explained a failure of something that is gone."""
    from pgharness.environments import state_dir

    for path in state_dir().glob("*.error.txt"):
        if path.name.removesuffix(".error.txt") not in existing:
            path.unlink(missing_ok=True)


def one_line(message: str) -> str:
    """The first line of `message`; the whole of a longer one goes to the environment's details file (the
    command's ``--name``), which the line names."""
    first, _, rest = message.partition("\n")
    if not rest.strip():
        return first
    ctx = click.get_current_context(silent=True)
    path = details_file(str((ctx.params.get("name") if ctx else None) or DEFAULT_NAME))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(message + "\n")
    except OSError as e:
        return f"{first} (details could not be written to {path}: {e.strerror})"
    return f"{first} (details: {path})"


def clean_errors(func: F) -> F:
    """Turn the harness's errors into one line on stderr and exit 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg

        try:
            return func(*args, **kwargs)
        except (UnknownNode, UnknownEnvironment) as e:
            click.echo(f"pgharness: error: {e}", err=True)
            sys.exit(2)
        except psycopg.Error as e:
            sqlstate = f"SQLSTATE {e.sqlstate}: " if e.sqlstate else ""
            message = e.diag.message_primary or str(e).strip().splitlines()[0]
            click.echo(f"pgharness: error: {sqlstate}{message}", err=True)
            sys.exit(1)
        except HarnessError as e:
            click.echo(f"pgharness: error: {one_line(str(e))}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


if TYPE_CHECKING:
    # Generic in click's annotations; not subscriptable at run time before click 8.2.
    _IntParam = click.ParamType[int]
    _StrPairParam = click.ParamType[tuple[str, str]]
else:
    _IntParam = _StrPairParam = click.ParamType


class PgVersion(_IntParam):
    """A PostgreSQL major version the harness serves (``17``, ``17.2``): a bad one is a usage error (exit 2)."""

    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_version_arg(str(value))
        except HarnessError as e:
            # Named as the user gave it: the flag, or the environment variable it came from.
            source = ctx.get_parameter_source(param.name) if ctx and param and param.name else None
            if source is click.core.ParameterSource.ENVIRONMENT and isinstance(param, click.Option) and param.envvar:
                raise click.BadParameter(str(e), ctx, param_hint=f"{param.envvar}={value}") from None
            self.fail(str(e), param, ctx)


class SettingParam(_StrPairParam):
    """``NAME=VALUE``, a postgresql.conf setting: a name PostgreSQL could have, else a usage error (exit 2)."""

    name = "NAME=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, str]:
        from pgharness.quoting import settings_lines

        if isinstance(value, tuple):
            return value
        setting, sep, text = str(value).partition("=")
        setting = setting.strip()
        try:
            settings_lines({setting: text})
        except HarnessError as e:
            self.fail(str(e), param, ctx)
        if not sep:
            self.fail(f"{value!r}: NAME=VALUE, e.g. work_mem=64MB", param, ctx)
        return setting, text.strip()


def given_as(parameter: str) -> str:
    """How the user gives the current command's `parameter`: ``PRIMARY_PORT=...`` when it came from the
    environment (``make up PRIMARY_PORT=6433``), else its flag (``--primary-port``)."""
    ctx = click.get_current_context()
    option = next(p for p in ctx.command.params if p.name == parameter)
    if ctx.get_parameter_source(parameter) is click.core.ParameterSource.ENVIRONMENT and isinstance(
        option, click.Option
    ):
        return f"{option.envvar}=..."
    return max(option.opts, key=len)


def table_option(name: str, dest: str | None = None, **click_kwargs: Any) -> Callable[[F], F]:
    """The command's option for setting `name` of `pgharness.option_table.OPTIONS`: its flags (the table's
    ``cli``), environment variable, help, kind and choices come from the table, so the command and the
    pytest plugin read the same variable with the same precedence (flag, then environment, then default).
    `click_kwargs` add what only the command has (its default, a parameter type)."""
    from pgharness.option_table import option

    entry = option(name)
    kwargs: dict[str, Any] = {
        "envvar": entry.env,
        "help": f"{entry.help}. [env: {entry.env}]",
    }
    if entry.kind == "flag":
        kwargs["is_flag"] = True
    elif entry.kind == "paths":
        kwargs.update(multiple=True, type=click.Path(exists=True, dir_okay=False), metavar=entry.metavar)
    else:
        kwargs["metavar"] = entry.metavar or None
        if entry.choices:
            kwargs.update(type=click.Choice(entry.choices), metavar=None)
    return click.option(*entry.cli, *([dest] if dest else []), **{**kwargs, **click_kwargs})


def image_options(func: F) -> F:
    func = table_option("pg_image", "pg_image", default="")(func)
    return table_option("pg_version", type=PgVersion(), default=str(DEFAULT_VERSION), show_default=True)(func)


def spec_from(pg_version: int, pg_image: str) -> ImageSpec:
    """The image the flags ask for; a version no Debian suite here ships, with no --pg-image, is a usage error
    (exit 2), as a version the harness does not serve is: either way it cannot be had here."""
    from pgharness.image import ImageSpec
    from pgharness.versions import unbuildable

    why = None if pg_image else unbuildable(pg_version, f"bring an image with --pg-image postgres:{pg_version}")
    if why:
        raise click.BadParameter(why, param_hint=_flag_or_env("pg_version", str(pg_version)))
    return ImageSpec(pg_version, pg_image or None)


def _flag_or_env(parameter: str, value: str) -> str:
    """How the user gave `parameter` of the current command, with its value: ``PG_VERSION=14`` or
    ``--pg-version``."""
    given = given_as(parameter)
    return given.replace("...", value) if given.endswith("=...") else given


def describe(node: Node) -> str:
    role = "standby" if node.is_in_recovery() else "primary"
    return f"{node.name:<16} {role:<8} {node.uri()}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Narrate what the harness does.")
def main(verbose: bool) -> None:
    """A PostgreSQL replication test harness: primaries, standbys and a WAL archive in containers."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


def console() -> Console:
    """A console as wide as the terminal, or wide enough for the status table when piped."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 240)
