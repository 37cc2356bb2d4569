"""The ``pgharness`` commands that make, list and remove environments: image, up, down, ls, gc
(registered on `pgharness.cli_base.main`).
"""

from __future__ import annotations

import os
import re
import shlex
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from pgharness.cli_base import (
    DEFAULT_NAME,
    SettingParam,
    clean_errors,
    console,
    describe,
    details_file,
    forget_errors_of_gone_environments,
    given_as,
    image_options,
    main,
    spec_from,
    table_option,
)
from pgharness.constants import UPGRADE_MODES, UPGRADE_STANDBY_METHODS

if TYPE_CHECKING:
    from pgharness.cluster import Cluster

from pgharness.errors import ClusterError, PortInUse, StartFailed, UnknownEnvironment, UnsupportedVersion


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
    "--ports",
    "port_choice",
    envvar="PGHARNESS_PORTS",
    type=click.Choice(["fixed", "ephemeral"]),
    default="fixed",
    show_default=True,
    help="fixed: --primary-port and --standby-port; ephemeral: free ports the engine picks (shared hosts), "
    "printed with the connection strings. [env: PGHARNESS_PORTS]",
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
    "repeatable, after the lines of PGHARNESS_EXTRA_SETTINGS (the pytest plugin's --pg-setting).",
)
@click.option(
    "--disk",
    "disks",
    multiple=True,
    metavar="NAME=SIZE",
    help="A size-limited volume (a tmpfs of SIZE) for node NAME's data, or for archive or backups "
    "(--disk primary=64MB --disk archive=256MB): a disk that can fill; repeatable.",
)
@table_option("pg_compose_files", "compose_files")
@table_option("pg_tls", "tls")
@table_option("pg_fsync", "fsync", default="off", show_default=True)
@table_option("pg_storage", "storage", default="volume", show_default=True)
@table_option("pg_standby_source", "standby_source", default="template", show_default=True)
@clean_errors
def up(
    name: str,
    pg_version: int,
    pg_image: str,
    primary_port: int,
    standby_port: int,
    port_choice: str,
    disks: tuple[str, ...],
    standbys: int,
    archive_only: bool,
    logical: bool,
    synchronous: bool,
    cascade: bool,
    delayed_standby: str | None,
    set_settings: tuple[tuple[str, str], ...],
    compose_files: tuple[str, ...],
    tls: bool,
    fsync: str,
    storage: str,
    standby_source: str,
) -> None:
    """Start a primary and a streaming standby sharing a WAL archive; print how to connect.

    Example: pgharness up --name bug123 --primary-port 6433 --standby-port 6434 --cascade
    """
    _check_up_flags(standbys, archive_only, logical, synchronous, cascade, delayed_standby, port_choice)
    from pgharness.cluster import Cluster
    from pgharness.environments import claimed, owner_labels
    from pgharness.image import ensure_image

    tag = ensure_image(spec_from(pg_version, pg_image))
    # The standby's port goes to the streaming standby, when there is one.
    fixed_ports = {"primary": primary_port, **({"standby": standby_port} if standbys and not archive_only else {})}
    try:
        cluster = Cluster(
            name,
            image=tag,
            ports={} if port_choice == "ephemeral" else fixed_ports,
            owner="harness-up",
            topology="archive-only" if archive_only else "logical" if logical else "streaming",
            standbys=standbys,
            compose_files=compose_files,
            tls=tls,
            storage=storage,
            standby_source=standby_source,
            settings=_everyones_settings(set_settings),
            env={"PG_FSYNC": fsync},
            disk=_disk_sizes(disks),
        )
    except ClusterError as e:
        if str(e).startswith("disk for"):  # a --disk NAME that is no node of the topology, or a bad SIZE
            raise click.BadParameter(str(e), param_hint="--disk") from None
        raise
    with claimed(cluster.docker, name, tag, owner_labels(f"pid-{os.getpid()}")):
        running = cluster.containers()
        if running and all(c.status == "running" for c in running.values()):
            click.echo(f"environment {name!r} is already up", err=True)
        else:
            _start(cluster, set_settings)
            if synchronous:
                cluster.primary.set_synchronous("FIRST 1 (standby)")
            if cascade:
                cluster.add_node("cascade", upstream="standby")
            if delayed_standby:
                cluster.add_node("delayed", settings={"recovery_min_apply_delay": delayed_standby})
    cluster.release()
    _print_connections(cluster, logical=logical)


def _check_up_flags(
    standbys: int,
    archive_only: bool,
    logical: bool,
    synchronous: bool,
    cascade: bool,
    delayed_standby: str | None,
    port_choice: str,
) -> None:
    """Refuse flags of `up` that contradict each other, naming them (a usage error, before anything runs)."""
    if archive_only and (standbys != 1 or synchronous or cascade or logical):
        raise click.UsageError(
            "--archive-only has one log-shipping standby: no --standbys, --sync, --cascade or --logical"
        )
    if (synchronous or cascade) and standbys == 0:
        raise click.UsageError("--sync and --cascade need a standby: --standbys 1 or more")
    ctx = click.get_current_context()
    # Ports from the environment (make exports PRIMARY_PORT) give way; flags on the same line contradict it.
    given = [f for f in ("primary_port", "standby_port") if ctx.get_parameter_source(f) is ParameterSource.COMMANDLINE]
    if port_choice == "ephemeral" and given:
        raise click.UsageError(f"--ports ephemeral picks every port: drop {' and '.join(given_as(f) for f in given)}")
    if delayed_standby is not None and not re.fullmatch(r"\d+\s*(ms|s|min|h|d)?", delayed_standby.strip()):
        raise click.UsageError(f"--delayed-standby {delayed_standby!r}: a duration such as 30s, 5min or 1h")


def _disk_sizes(disks: tuple[str, ...]) -> dict[str, str]:
    """--disk NAME=SIZE pairs as a mapping; a pair that is none is a usage error naming --disk. (The names
    and sizes are checked by the cluster, whose refusal names --disk too.)"""
    sizes = {}
    for pair in disks:
        name, sep, size = pair.partition("=")
        if not sep or not name.strip() or not size.strip():
            raise click.BadParameter(f"{pair!r}: NAME=SIZE, e.g. primary=64MB", param_hint="--disk")
        sizes[name.strip()] = size.strip()
    return sizes


def _everyones_settings(set_settings: tuple[tuple[str, str], ...]) -> list[str] | None:
    """The postgresql.conf lines for every node: those of the environment variable of the plugin's
    --pg-setting (PGHARNESS_EXTRA_SETTINGS), then the --set ones; None when there are none."""
    from pgharness.option_table import option
    from pgharness.quoting import settings_lines

    lines = [*os.environ.get(option("pg_settings").env, "").splitlines(), settings_lines(dict(set_settings))]
    lines = [line for line in lines if line.strip()]
    return lines or None


def _start(cluster: Cluster, set_settings: tuple[tuple[str, str], ...]) -> None:
    """Check the ports and start `cluster`; a port in use or a --set value PostgreSQL refuses is named in the
    words the user gave it."""
    try:
        cluster.preflight()
    except PortInUse as e:
        flag = {"primary": "primary_port", "standby": "standby_port"}.get(e.service)
        if flag is None:
            raise
        raise e.with_remedy(f"with {given_as(flag)}") from None
    click.echo(f"starting {cluster.name!r} ...", err=True)
    try:
        cluster.start()
    except StartFailed as e:
        refused = refused_setting(str(e), set_settings)
        if refused:
            raise click.BadParameter(refused, param_hint="--set") from None
        raise


def _print_connections(cluster: Cluster, *, logical: bool) -> None:
    """What `up` prints: one connection string per node, then how to connect, subscribe, look, remove."""
    from psycopg import sql as pgsql

    name = cluster.name
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


def refused_setting(failure: str, given: tuple[tuple[str, str], ...]) -> str | None:
    """The one --set NAME=VALUE a start `failure` shows PostgreSQL refused, with its reason, or None."""
    for setting, value in given:
        quoted = re.escape(f'"{setting}"')
        m = re.search(
            rf"(invalid value for parameter {quoted}[^;\n]*|unrecognized configuration parameter {quoted})", failure
        )
        if m:
            return f"{setting}={value}: PostgreSQL refused it ({m.group(1)})"
    return None


@main.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="Environment (compose project) name.")
@click.option(
    "--to",
    "to",
    required=True,
    metavar="VERSION|IMAGE",
    help="The major version to upgrade to (built from Debian packages), or a node image.",
)
@click.option("--mode", type=click.Choice(UPGRADE_MODES), default="link", show_default=True, help="pg_upgrade's mode.")
@click.option(
    "--standbys",
    type=click.Choice(UPGRADE_STANDBY_METHODS),
    default="rsync",
    show_default=True,
    help="How each standby comes over: the manual's rsync, or a fresh base backup.",
)
@click.option("--keep-old", is_flag=True, help="Keep each old data folder as data.old (never start it after link).")
@clean_errors
def upgrade(name: str, to: str, mode: str, standbys: str, keep_old: bool) -> None:
    """Upgrade an environment's primary and standbys to a later major version with pg_upgrade, by the
    manual's steps; print what it did and how to connect.

    Example: pgharness upgrade --name bug123 --to 18
    """
    from typing import cast

    from pgharness.cluster import Cluster
    from pgharness.image import image_exists
    from pgharness.upgrade import Mode, StandbyMethod, upgrade as run_upgrade
    from pgharness.versions import parse_version_arg, unbuildable

    try:
        target: int | str = parse_version_arg(to) if to.strip()[:1].isdigit() else to
    except UnsupportedVersion as e:
        raise click.BadParameter(str(e), param_hint="--to") from None
    # Refused from the words alone, before anything is built: a version this machine cannot build, a name
    # that is no image here.
    why = unbuildable(target, "give a node image of it instead (--to IMAGE)") if isinstance(target, int) else None
    if why:
        raise click.BadParameter(why, param_hint="--to")
    if isinstance(target, str) and not image_exists(target):
        raise click.BadParameter(
            f"{to!r} is neither a major version (such as 18) nor an image on this engine", param_hint="--to"
        )
    cluster = Cluster.attach(name)
    click.echo(f"upgrading {name!r} to {to} ...", err=True)
    report = run_upgrade(
        cluster, target, mode=cast(Mode, mode), standbys=cast(StandbyMethod, standbys), keep_old=keep_old
    )
    cluster.release()
    click.echo(str(report))
    click.echo(f"{'node':<16} {'role':<8} connection")
    for node in cluster.nodes:
        click.echo(describe(node))
    click.echo(f"\nconnect: psql {shlex.quote(cluster.primary.uri())}")


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
    forget_errors_of_gone_environments(set(existing) - set(names))


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
    sharing the engine, are kept and listed. Images named by their inputs go too
    when no container uses them, no plain tag (pgharness/postgres:17) names them,
    and they are not among the two newest of their version. Example: pgharness gc
    """
    from pgharness.compose import docker_client
    from pgharness.environments import gc as gc_environments
    from pgharness.image import collect_images

    client = docker_client()
    removed, kept = gc_environments(client)
    forget_errors_of_gone_environments(set(kept))
    click.echo("removed: " + (", ".join(removed) if removed else "nothing"))
    for env, why in sorted(kept.items()):
        click.echo(f"kept: {env} ({why})")
    images = collect_images(client)
    click.echo("images removed: " + (", ".join(images) if images else "none"))
