"""The ``harness`` command: build the image, bring an environment up, take it down.

    harness up                   # the seed's primary (127.0.0.1:5433) and standby (:5434)
    harness down                 # remove that environment (containers, volumes, network)
    harness image --pg-version 17

Exit codes: 0 ok, 1 the operation failed (one line on stderr says why), 2 bad usage.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from harness.cluster import Cluster, Node
from harness.errors import HarnessError
from harness.image import ImageSpec, ensure_image
from harness.recovery import RecoveryTarget
from harness.versions import DEFAULT_VERSION, parse_version_arg

F = TypeVar("F", bound=Callable[..., Any])

#: The compose project name of `make up` / `harness up`.
DEFAULT_NAME = "pgharness"


def clean_errors(func: F) -> F:
    """Turn the harness's errors into one line on stderr and exit 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HarnessError as e:
            click.echo(f"harness: error: {e}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def image_options(func: F) -> F:
    func = click.option(
        "--pg-image",
        envvar="PG_IMAGE",
        default="",
        metavar="IMAGE",
        help="Build on this image (any image with PostgreSQL server binaries, e.g. postgres:17) "
        "instead of Debian packages. [env: PG_IMAGE]",
    )(func)
    return click.option(
        "--pg-version",
        envvar="PG_VERSION",
        default=str(DEFAULT_VERSION),
        show_default=True,
        metavar="N",
        help="PostgreSQL major version to build from Debian packages. [env: PG_VERSION]",
    )(func)


def spec_from(pg_version: str, pg_image: str) -> ImageSpec:
    return ImageSpec(parse_version_arg(pg_version), pg_image or None)


def describe(node: Node) -> str:
    role = "standby" if node.is_in_recovery() else "primary"
    url = f"postgresql://postgres:{node.cluster.password}@127.0.0.1:{node.port}/postgres"
    return f"{node.name:<10} {role:<8} {url}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Narrate what the harness does.")
def main(verbose: bool) -> None:
    """A PostgreSQL replication test harness: primaries, standbys and a WAL archive in containers."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@main.command()
@image_options
@clean_errors
def image(pg_version: str, pg_image: str) -> None:
    """Build the node image (cached: nothing is rebuilt when its inputs are unchanged).

    Example: harness image --pg-version 17
    """
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
    help="Host port on 127.0.0.1 for the primary. [env: PRIMARY_PORT]",
)
@click.option(
    "--standby-port",
    envvar="STANDBY_PORT",
    default=5434,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Host port on 127.0.0.1 for the standby. [env: STANDBY_PORT]",
)
@clean_errors
def up(name: str, pg_version: str, pg_image: str, primary_port: int, standby_port: int) -> None:
    """Start a primary and a streaming standby sharing a WAL archive; print how to connect.

    Example: harness up --primary-port 6433 --standby-port 6434
    """
    tag = ensure_image(spec_from(pg_version, pg_image))
    cluster = Cluster(name, image=tag, ports={"primary": primary_port, "standby": standby_port}, owner="harness-up")
    running = cluster.containers()
    if running and all(c.status == "running" for c in running.values()):
        click.echo(f"environment {name!r} is already up", err=True)
    else:
        cluster.start()
    cluster.release()
    click.echo(f"{'node':<10} {'role':<8} connection")
    for node in cluster.nodes:
        click.echo(describe(node))
    click.echo(f"\nconnect: psql postgresql://postgres:{cluster.password}@127.0.0.1:{primary_port}/postgres")
    click.echo(f"remove:  make down   (or: harness down --name {name})")


@main.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="Environment (compose project) name.")
@clean_errors
def down(name: str) -> None:
    """Remove an environment: its containers, volumes and network, and nothing else.

    Example: harness down --name pgharness
    """
    Cluster(name, image="unused").destroy()
    click.echo(f"environment {name!r} removed")


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

    Example: harness sql standby "SELECT * FROM hoge"
    """
    print_rows(Cluster.attach(name).node(node).sql(query.encode()))


@main.command()
@name_option
@click.argument("node")
@clean_errors
def promote(name: str, node: str) -> None:
    """Promote standby NODE (pg_promote); return once it accepts writes.

    Example: harness promote standby
    """
    target = Cluster.attach(name).node(node)
    target.promote()
    click.echo(f"{node} promoted: timeline {target.timeline()}")


@main.command()
@name_option
@click.argument("backup_name")
@click.option("--from", "source", default="primary", show_default=True, help="Node to back up.")
@clean_errors
def backup(name: str, backup_name: str, source: str) -> None:
    """Take a base backup (pg_basebackup) of a node now, into the environment's backups volume.

    Example: harness backup nightly
    """
    Cluster.attach(name).backup(backup_name, source=source)
    click.echo(f"backup {backup_name!r} of {source} taken")


@main.command()
@name_option
@clean_errors
def backups(name: str) -> None:
    """List the base backups (and dumps) taken in an environment.

    Example: harness backups
    """
    for item in Cluster.attach(name).backups():
        click.echo(item)


@main.command("verify-backup")
@name_option
@click.argument("backup_name")
@clean_errors
def verify_backup(name: str, backup_name: str) -> None:
    """Check a base backup against its manifest (pg_verifybackup).

    Example: harness verify-backup nightly
    """
    click.echo(Cluster.attach(name).verify_backup(backup_name).strip())


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

    Example: harness restore restored --from-backup nightly --target name:before-delete
    """
    target = RecoveryTarget.parse(target_text)
    cluster = Cluster.attach(name)
    restored = cluster.restore(node, backup_name, target, action=action, inclusive=not exclusive)  # type: ignore[arg-type]
    click.echo(describe(restored))


@main.command()
@name_option
@click.argument("node")
@clean_errors
def rebuild(name: str, node: str) -> None:
    """Wipe standby NODE and take it again from its upstream (refused for a primary).

    Example: harness rebuild standby
    """
    Cluster.attach(name).rebuild(node)
    click.echo(f"{node} rebuilt and streaming")


if __name__ == "__main__":
    main()
