"""The ``pgharness`` command: throwaway replication environments for reproducing bugs by hand.

    pgharness up                   # exercise 26-1's primary (127.0.0.1:5433) and standby (:5434)
    pgharness status               # role, timeline, LSNs, lag, sync state, archiver, per node
    pgharness sql standby "SELECT * FROM hoge"
    pgharness kill primary; pgharness promote standby
    pgharness down                 # remove that environment (containers, volumes, networks)

Exit codes: 0 ok, 1 the operation failed (one line on stderr says why), 2 bad
usage, an unknown node or environment among them (the line lists the valid ones).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pgharness.constants import STORAGES
from pgharness.errors import HarnessError, PortInUse, UnknownEnvironment, UnknownNode
from pgharness.versions import DEFAULT_VERSION, parse_version_arg

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table

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


def state_dir() -> Path:
    """Where the command keeps what outlives it: ``$XDG_STATE_HOME/pgharness`` (``~/.local/state/pgharness``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pgharness"


def details_file(name: str) -> Path:
    """The file that holds the whole of environment `name`'s last error: one a name, overwritten by the next
    error and removed by ``pgharness down``, so nothing piles up."""
    return state_dir() / f"{name}.error.txt"


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


def image_options(func: F) -> F:
    func = click.option(
        "--pg-image",
        "--image",
        "pg_image",
        envvar="PG_IMAGE",
        default="",
        metavar="IMAGE",
        help="Build on this image (any image with PostgreSQL server binaries, e.g. postgres:17) "
        "instead of Debian packages. [env: PG_IMAGE]",
    )(func)
    return click.option(
        "--pg-version",
        type=PgVersion(),
        envvar="PG_VERSION",
        default=str(DEFAULT_VERSION),
        show_default=True,
        metavar="N",
        help="PostgreSQL major version to build from Debian packages. [env: PG_VERSION]",
    )(func)


def spec_from(pg_version: int, pg_image: str) -> ImageSpec:
    from pgharness.image import ImageSpec

    return ImageSpec(pg_version, pg_image or None)


def describe(node: Node) -> str:
    role = "standby" if node.is_in_recovery() else "primary"
    return f"{node.name:<16} {role:<8} {node.uri()}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Narrate what the harness does.")
def main(verbose: bool) -> None:
    """A PostgreSQL replication test harness: primaries, standbys and a WAL archive in containers."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@main.command()
@image_options
@clean_errors
def image(pg_version: int, pg_image: str) -> None:
    """Build the node image (cached: nothing is rebuilt when its inputs are unchanged).

    Example: pgharness image --pg-version 17
    """
    from pgharness.image import ensure_image

    click.echo(ensure_image(spec_from(pg_version, pg_image)))


@main.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="Environment (compose project) name.")
@image_options
@click.option(
    "--primary-port",
    envvar="PRIMARY_PORT",
    default=5433,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Published port of the primary (on 127.0.0.1 for a local engine). [env: PRIMARY_PORT]",
)
@click.option(
    "--standby-port",
    envvar="STANDBY_PORT",
    default=5434,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Published port of the standby (on 127.0.0.1 for a local engine). [env: STANDBY_PORT]",
)
@click.option(
    "--standbys",
    default=1,
    show_default=True,
    type=click.IntRange(0, 9),
    help="Streaming standbys: standby, then standby2, standby3, ...",
)
@click.option("--archive-only", is_flag=True, help="A log-shipping standby (restore_command, no streaming) instead.")
@click.option(
    "--logical",
    is_flag=True,
    help="wal_level = logical everywhere, and an independent primary 'subscriber' to subscribe with.",
)
@click.option("--sync", "synchronous", is_flag=True, help="Make the standby synchronous (FIRST 1 (standby)).")
@click.option("--cascade", is_flag=True, help="Add a standby 'cascade' that streams from the standby.")
@click.option(
    "--delayed-standby",
    metavar="DELAY",
    help="Add a standby 'delayed' that applies WAL DELAY late (recovery_min_apply_delay, e.g. 30s, 5min).",
)
@click.option(
    "--set",
    "set_settings",
    multiple=True,
    type=SettingParam(),
    metavar="NAME=VALUE",
    help="A postgresql.conf setting for every node, its value quoted for the file (--set work_mem=64MB); "
    "repeatable, after PGHARNESS_EXTRA_SETTINGS's lines.",
)
@click.option(
    "--compose-file",
    "compose_files",
    multiple=True,
    envvar="PGHARNESS_COMPOSE_FILES",
    type=click.Path(exists=True, dir_okay=False),
    help="A compose override file on top of the harness's (your services); repeatable. "
    "[env: PGHARNESS_COMPOSE_FILES, ':'-separated]",
)
@click.option(
    "--tls",
    is_flag=True,
    envvar="PGHARNESS_TLS",
    help="Replication over TLS (verify-full against a CA made now). [env: PGHARNESS_TLS=1]",
)
@click.option(
    "--storage",
    envvar="PGHARNESS_STORAGE",
    type=click.Choice(STORAGES),
    default="volume",
    show_default=True,
    help="Where the nodes keep their data: volumes on disk, or memory held while the environment runs "
    "(starts twice as fast; gone when it is removed or the engine restarts). [env: PGHARNESS_STORAGE]",
)
@clean_errors
def up(
    name: str,
    pg_version: int,
    pg_image: str,
    primary_port: int,
    standby_port: int,
    standbys: int,
    archive_only: bool,
    logical: bool,
    synchronous: bool,
    cascade: bool,
    delayed_standby: str | None,
    set_settings: tuple[tuple[str, str], ...],
    compose_files: tuple[str, ...],
    tls: bool,
    storage: str,
) -> None:
    """Start a primary and a streaming standby sharing a WAL archive; print how to connect.

    Example: pgharness up --name bug123 --primary-port 6433 --standby-port 6434 --cascade
    """

    if archive_only and (standbys != 1 or synchronous or cascade or logical):
        raise click.UsageError(
            "--archive-only has one log-shipping standby: no --standbys, --sync, --cascade or --logical"
        )
    if (synchronous or cascade) and standbys == 0:
        raise click.UsageError("--sync and --cascade need a standby: --standbys 1 or more")
    if delayed_standby is not None and not re.fullmatch(r"\d+\s*(ms|s|min|h|d)?", delayed_standby.strip()):
        raise click.UsageError(f"--delayed-standby {delayed_standby!r}: a duration such as 30s, 5min or 1h")
    from psycopg import sql as pgsql

    from pgharness.cluster import Cluster
    from pgharness.image import ensure_image
    from pgharness.quoting import settings_lines

    tag = ensure_image(spec_from(pg_version, pg_image))
    cluster = Cluster(
        name,
        image=tag,
        ports={"primary": primary_port, "standby": standby_port},
        owner="harness-up",
        topology="archive-only" if archive_only else "logical" if logical else "streaming",
        standbys=standbys,
        compose_files=compose_files,
        tls=tls,
        storage=storage,
        settings=[*os.environ.get("PGHARNESS_EXTRA_SETTINGS", "").splitlines(), settings_lines(dict(set_settings))]
        if set_settings
        else None,
    )
    running = cluster.containers()
    if running and all(c.status == "running" for c in running.values()):
        click.echo(f"environment {name!r} is already up", err=True)
    else:
        try:
            cluster.preflight()
        except PortInUse as e:
            flag = {"primary": "primary_port", "standby": "standby_port"}.get(e.service)
            if flag is None:
                raise
            raise PortInUse(
                f"port {e.port} on {cluster.engine.bind} (for {e.service}) is already in use: stop what holds it "
                f"(another environment? see pgharness ls) or choose another with {given_as(flag)}",
                service=e.service,
                port=e.port,
            ) from None
        click.echo(f"starting {name!r} ...", err=True)
        cluster.start()
        if synchronous:
            cluster.primary.set_synchronous("FIRST 1 (standby)")
        if cascade:
            cluster.add_node("cascade", upstream="standby")
        if delayed_standby:
            cluster.add_node("delayed", settings={"recovery_min_apply_delay": delayed_standby})
    cluster.release()
    click.echo(f"{'node':<16} {'role':<8} connection")
    for node in cluster.nodes:
        click.echo(describe(node))
    click.echo(f"\nconnect: psql {shlex.quote(cluster.primary.uri())}")
    if logical:
        subscribe = (
            "CREATE TABLE hoge (col integer PRIMARY KEY);  -- on both, then:\n"
            f"         pgharness sql --name {name} primary 'CREATE PUBLICATION pub FOR TABLE hoge'\n"
            f"         pgharness sql --name {name} subscriber "
            + shlex.quote(
                pgsql.SQL("CREATE SUBSCRIPTION sub CONNECTION {} PUBLICATION pub")
                .format(pgsql.Literal(cluster.primary.conninfo()))
                .as_string(None)
            )
        )
        click.echo(f"logical: {subscribe}")
    click.echo(f"status:  pgharness status --name {name}")
    click.echo(f"remove:  pgharness down --name {name}   (make down for the default environment)")


@main.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="Environment (compose project) name.")
@click.option("--all", "everything", is_flag=True, help="Remove every harness environment on this engine.")
@clean_errors
def down(name: str, everything: bool) -> None:
    """Remove an environment: its containers, volumes and networks, and nothing else.

    Example: pgharness down --name bug123
    """
    from pgharness.compose import docker_client
    from pgharness.environments import list_environments, remove_environment

    client = docker_client()
    existing = [e.name for e in list_environments(client)]
    if not everything and name not in existing:
        there = f"there are: {', '.join(existing)}" if existing else "there is none"
        raise UnknownEnvironment(f"no environment {name!r} on this engine ({there}; see pgharness ls)")
    names = existing if everything else [name]
    for env in names:
        remove_environment(client, env)
        details_file(env).unlink(missing_ok=True)
        click.echo(f"environment {env!r} removed")


@main.command("ls")
@clean_errors
def list_command() -> None:
    """List the harness environments on this engine, with owner, age and nodes.

    Example: pgharness ls
    """
    from rich.table import Table

    from pgharness.compose import docker_client
    from pgharness.environments import list_environments

    table = Table("environment", "owner", "age", "nodes", "volumes", "networks", box=None)
    for e in list_environments(docker_client()):
        nodes = ", ".join(f"{n} ({state})" for n, state in sorted(e.nodes.items())) or "-"
        table.add_row(e.name, e.owner or "-", e.age, nodes, str(e.volumes), str(e.networks))
    console().print(table)


@main.command()
@clean_errors
def gc() -> None:
    """Remove environments whose owning process on this host is gone (e.g. a test run killed with SIGKILL).

    Environments started by `pgharness up` or `make up`, and those of other hosts
    sharing the engine, are kept and listed. Example: pgharness gc
    """
    from pgharness.compose import docker_client
    from pgharness.environments import gc as gc_environments

    removed, kept = gc_environments(docker_client())
    click.echo("removed: " + (", ".join(removed) if removed else "nothing"))
    for env, why in sorted(kept.items()):
        click.echo(f"kept: {env} ({why})")


def name_option(func: F) -> F:
    return click.option("--name", default=DEFAULT_NAME, show_default=True, help="Environment (compose project) name.")(
        func
    )


def print_rows(rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        click.echo("\t".join("" if v is None else str(v) for v in row))


@main.command()
@name_option
@click.argument("node")
@click.argument("query")
@clean_errors
def sql(name: str, node: str, query: str) -> None:
    """Run one SQL statement on NODE; print its rows, tab-separated.

    Example: pgharness sql standby "SELECT * FROM hoge"
    """
    print_rows(attach(name).node(node).sql(query.encode()))


@main.command()
@name_option
@click.argument("node")
@clean_errors
def promote(name: str, node: str) -> None:
    """Promote standby NODE (pg_promote); return once it accepts writes.

    Example: pgharness promote standby
    """
    target = attach(name).node(node)
    target.promote()
    click.echo(f"{node} promoted: timeline {target.timeline()}")


@main.command()
@name_option
@click.argument("backup_name")
@click.option("--from", "source", default="primary", show_default=True, help="Node to back up.")
@clean_errors
def backup(name: str, backup_name: str, source: str) -> None:
    """Take a base backup (pg_basebackup) of a node now, into the environment's backups volume.

    Example: pgharness backup nightly
    """
    attach(name).backups.take(backup_name, source=source)
    click.echo(f"backup {backup_name!r} of {source} taken")


@main.command()
@name_option
@clean_errors
def backups(name: str) -> None:
    """List the base backups (and dumps) taken in an environment.

    Example: pgharness backups
    """
    for item in attach(name).backups.names():
        click.echo(item)


@main.command("verify-backup")
@name_option
@click.argument("backup_name")
@clean_errors
def verify_backup(name: str, backup_name: str) -> None:
    """Check a base backup against its manifest (pg_verifybackup).

    Example: pgharness verify-backup nightly
    """
    click.echo(attach(name).backups.verify(backup_name).strip())


@main.command()
@name_option
@click.argument("node")
@click.option("--from-backup", "backup_name", required=True, help="Base backup to start from.")
@click.option(
    "--target",
    "target_text",
    required=True,
    metavar="TARGET",
    help="name:RESTORE_POINT, xid:N, lsn:X/Y, time:TIMESTAMP (with a time zone) or immediate.",
)
@click.option("--action", type=click.Choice(["promote", "pause", "shutdown"]), default="promote", show_default=True)
@click.option("--exclusive", is_flag=True, help="Stop just before the target instead of just after it.")
@clean_errors
def restore(name: str, node: str, backup_name: str, target_text: str, action: str, exclusive: bool) -> None:
    """Point-in-time recovery: a new NODE from a base backup plus the WAL archive, up to a target.

    Example: pgharness restore restored --from-backup nightly --target name:before-delete
    """
    from pgharness.recovery import RecoveryTarget

    target = RecoveryTarget.parse(target_text)
    cluster = attach(name)
    restored = cluster.backups.restore(node, backup_name, target, action=action, inclusive=not exclusive)  # type: ignore[arg-type]
    click.echo(describe(restored))


@main.command()
@name_option
@click.argument("node")
@clean_errors
def rebuild(name: str, node: str) -> None:
    """Wipe standby NODE and take it again from its upstream (refused for a primary).

    Example: pgharness rebuild standby
    """
    attach(name).backups.rebuild(node)
    click.echo(f"{node} rebuilt and streaming")


STATUS_HEADERS = {
    "node": "node", "role": "role", "timeline": "tli", "current_lsn": "current", "receive_lsn": "received",
    "replay_lsn": "replayed", "lag_bytes": "lag bytes", "lag_seconds": "lag s", "sync_state": "sync",
    "wal_receiver": "receiver", "last_archived": "last archived", "archive_failed": "arch. failed",
    "state": "container",
}  # fmt: skip
SPLIT_BRAIN = "primary (SPLIT BRAIN)"


def console() -> Console:
    """A console as wide as the terminal, or wide enough for the status table when piped."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 240)


SLOT_HEADERS = {
    "node": "node", "slot_name": "slot", "slot_type": "type", "plugin": "plugin", "active": "active",
    "restart_lsn": "restart", "confirmed_flush_lsn": "confirmed flush", "wal_status": "wal",
    "failover": "failover", "synced": "synced",
}  # fmt: skip
SUBSCRIPTION_HEADERS = {
    "node": "node", "subname": "subscription", "subenabled": "enabled", "received_lsn": "received",
    "latest_end_lsn": "latest end", "apply_error_count": "apply errors",
}  # fmt: skip


def status_view(rows: list[dict[str, Any]]) -> Group:
    """The status table, then tables of the slots, publications and subscriptions when there are any."""
    from rich.console import Group
    from rich.table import Table

    parts: list[Table] = [status_table(rows)]
    for key, headers in (("slots", SLOT_HEADERS), ("subscriptions", SUBSCRIPTION_HEADERS)):
        found = [{"node": row["node"], **item} for row in rows for item in row.get(key) or []]
        if found:
            table = Table(*headers.values(), box=None, title=key)
            for item in found:
                table.add_row(*("" if item.get(k) is None else str(item[k]) for k in headers))
            parts.append(table)
    publications = [f"{row['node']}: {p['pubname']}" for row in rows for p in row.get("publications") or []]
    if publications:
        table = Table("publications", box=None)
        for line in publications:
            table.add_row(line)
        parts.append(table)
    return Group(*parts)


def status_table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    from pgharness.status import split_brain

    table = Table(*STATUS_HEADERS.values(), box=None)
    for row in rows:
        shown = {**row, "role": SPLIT_BRAIN} if row.get("split_brain") else row
        table.add_row(*("" if shown[key] is None else str(shown[key]) for key in STATUS_HEADERS))
    writable = split_brain(rows)
    if writable:
        table.caption = f"split brain: {len(writable)} nodes accept writes ({', '.join(writable)})"
    return table


@main.command()
@name_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per node) for scripts.")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.1, 60))
@clean_errors
def status(name: str, as_json: bool, watch: bool, interval: float) -> None:
    """Per node: role, timeline, current/received/replayed LSN, lag, sync state, WAL receiver, archiver;
    then every replication slot, publication and subscription.

    Example: pgharness status --name bug123 --watch
    """
    from rich.live import Live

    from pgharness.status import cluster_status

    cluster = attach(name)
    if as_json:
        click.echo(json.dumps(cluster_status(cluster), indent=2, default=str))
        return
    if not watch:
        console().print(status_view(cluster_status(cluster)))
        return
    with Live(status_view(cluster_status(cluster)), console=console(), refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)  # the refresh period of a display, not a wait on a condition
                live.update(status_view(cluster_status(cluster)))
        except KeyboardInterrupt:
            pass


@main.command()
@name_option
@click.argument("node")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@clean_errors
def psql(name: str, node: str, psql_args: tuple[str, ...]) -> None:
    """Open psql inside NODE (as postgres, over its local socket).

    Example: pgharness psql standby -c "SELECT pg_is_in_recovery()"
    """
    container = attach(name).node(node).container
    tty = ["-t"] if sys.stdin.isatty() and sys.stdout.isatty() else []
    os.execvp("docker", ["docker", "exec", "-i", *tty, container.id or "", "psql", *psql_args])


@main.command()
@name_option
@click.argument("node")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option("--tail", default="200", show_default=True, help="Lines from the end ('all' for everything).")
@clean_errors
def logs(name: str, node: str, follow: bool, tail: str) -> None:
    """Print NODE's PostgreSQL log.

    Example: pgharness logs standby -f
    """
    container = attach(name).node(node).container
    os.execvp("docker", ["docker", "logs", "--tail", tail, *(["--follow"] if follow else []), container.id or ""])


def node_action(verb: str, doc: str) -> None:
    """Register `harness VERB NODE`, calling Node.VERB (or pgharness.faults)."""

    @name_option
    @click.argument("node")
    @clean_errors
    def command(name: str, node: str) -> None:
        target = attach(name).node(node)
        {
            "kill": target.kill,
            "stop": target.stop,
            "start": target.start,
            "pause": target.pause,
            "unpause": target.unpause,
            "pause-replay": target.pause_replay,
            "resume-replay": target.resume_replay,
        }[verb]()
        click.echo(f"{node}: {verb} done")

    command.__doc__ = f"{doc}\n\nExample: pgharness {verb} {'standby' if 'replay' in verb else 'primary'}"
    main.command(verb)(command)


for _verb, _doc in (
    ("kill", "SIGKILL NODE's container: a crash, no shutdown checkpoint."),
    ("stop", "Fast shutdown of NODE (SIGINT), waiting until it has stopped."),
    ("start", "Start NODE again and wait until its healthcheck passes."),
    ("pause", "Freeze NODE (a hung server: its TCP connections stay open)."),
    ("unpause", "Thaw a paused NODE."),
    ("pause-replay", "Pause WAL replay on standby NODE (pg_wal_replay_pause): a lagging standby."),
    ("resume-replay", "Resume WAL replay on standby NODE."),
):
    node_action(_verb, _doc)


@main.command()
@name_option
@click.argument("node")
@click.option("--clients", is_flag=True, help="Cut it off from the host too (its published port).")
@clean_errors
def partition(name: str, node: str, clients: bool) -> None:
    """Cut NODE off from every other node (a packet filter in the node); `pgharness heal` undoes it.

    Example: pgharness partition primary --clients
    """
    from pgharness import faults

    faults.partition(attach(name).node(node), clients=clients)
    click.echo(f"{node}: partitioned" + (" (from clients too)" if clients else ""))


@main.command()
@name_option
@clean_errors
def heal(name: str) -> None:
    """Undo every partition in the environment.

    Example: pgharness heal
    """
    from pgharness import faults

    faults.heal_all(attach(name))
    click.echo("healed")


def run() -> None:
    """The console script: bad usage is one line and exit 2, like an unknown name."""
    try:
        main(standalone_mode=False)
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else "pgharness"
        click.echo(f"pgharness: usage: {e.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("pgharness: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    run()
