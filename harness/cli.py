"""The ``pgharness`` command: throwaway replication environments for reproducing bugs by hand::

    pgharness up                   # exercise 26-1's primary (127.0.0.1:5433) and standby (:5434)
    pgharness status               # role, timeline, LSNs, lag, sync state, archiver, per node
    pgharness sql standby "SELECT * FROM hoge"
    pgharness kill primary; pgharness promote standby
    pgharness down                 # remove that environment (containers, volumes, networks)

Exit codes: 0 ok, 1 the operation failed (one line on stderr says why), 2 bad
usage, an unknown node or environment among them (the line lists the valid ones).
"""

from __future__ import annotations

import sys

import click

# Each module registers its commands on `main`.
from pgharness import cli_env as cli_env, cli_nodes as cli_nodes
from pgharness.cli_base import main


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
