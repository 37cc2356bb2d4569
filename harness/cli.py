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


if __name__ == "__main__":
    main()
