"""The ``pgharness`` commands that act on a running environment's nodes: SQL and psql, status and logs,
promotion and node faults, backups and restores (registered on `pgharness.cli_base.main`).

What a command needs is imported when it runs (``pgharness --help`` pays for no Docker, psycopg or rich).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pgharness.cli_base import DEFAULT_NAME, F, attach, clean_errors, console, describe, main

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table


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
@click.option(
    "--timeline", metavar="TLI", help="recovery_target_timeline: a timeline id, latest or current (default: latest)."
)
@clean_errors
def restore(
    name: str, node: str, backup_name: str, target_text: str, action: str, exclusive: bool, timeline: str | None
) -> None:
    """Point-in-time recovery: a new NODE from a base backup plus the WAL archive, up to a target.

    Example: pgharness restore restored --from-backup nightly --target name:before-delete
    """
    from pgharness.errors import RecoveryTargetError
    from pgharness.recovery import RecoveryTarget

    try:
        target = RecoveryTarget.parse(target_text)
    except RecoveryTargetError as e:
        raise click.BadParameter(str(e), param_hint="--target") from None
    if timeline is not None:
        try:
            target = target.on_timeline(timeline)
        except RecoveryTargetError as e:
            raise click.BadParameter(str(e), param_hint="--timeline") from None
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
    "node": "node", "role": "role", "timeline": "tli", "upstream": "upstream", "current_lsn": "current",
    "receive_lsn": "received", "replay_lsn": "replayed", "lag_bytes": "lag bytes", "lag_seconds": "replay_lag s",
    "sync_state": "sync",
    "wal_receiver": "receiver", "last_archived": "last archived", "archive_failed": "arch. failed",
    "faults": "faults", "state": "container",
}  # fmt: skip
SPLIT_BRAIN = "primary (SPLIT BRAIN)"


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
@click.argument("node")
@click.option("--loss", metavar="PERCENT", help="Drop this share of the packets each way, e.g. 10%.")
@click.option("--rate", metavar="RATE", help="Police each direction to this rate, e.g. 1mbit, 512kbit.")
@click.option("--delay", metavar="DURATION", help="Hold each packet the node sends, e.g. 50ms (needs sch_netem).")
@click.option("--jitter", metavar="DURATION", help="Vary --delay by up to this much, e.g. 10ms (needs sch_netem).")
@click.option("--clients", is_flag=True, help="Degrade its links to the host too (its published port).")
@clean_errors
def degrade(
    name: str, node: str, loss: str | None, rate: str | None, delay: str | None, jitter: str | None, clients: bool
) -> None:
    """Degrade NODE's links to the other nodes: packets lost, a slow link, delay; `pgharness heal` undoes it.

    Packets are dropped or held, never refused: a connection that loses them all stays open until
    wal_sender_timeout or wal_receiver_timeout ends it. Example: pgharness degrade standby --loss 10% --rate 1mbit
    """
    from pgharness import faults

    def parsed(flag: str, parse: Callable[[str], Any], text: str | None, default: Any) -> Any:
        if text is None:
            return default
        try:
            return parse(text)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=flag) from None

    if loss is None and rate is None and delay is None:
        raise click.UsageError("give what degrades the links: --loss, --rate or --delay")
    how = faults.Degradation(
        loss=parsed("--loss", faults.parse_loss, loss, 0.0),
        rate=parsed("--rate", faults.parse_rate, rate, None),
        delay=parsed("--delay", lambda t: faults.parse_ms(t, "delay"), delay, 0.0),
        jitter=parsed("--jitter", lambda t: faults.parse_ms(t, "jitter"), jitter, 0.0),
        clients=clients,
    )
    faults.degrade(attach(name).node(node), how)
    click.echo(f"{node}: degraded ({how})")


@main.command()
@name_option
@click.argument("node")
@click.option("--cpus", metavar="SHARE", help="Limit NODE to this share of CPUs, e.g. 0.1 (a tenth of one).")
@click.option("--memory", metavar="SIZE", help="Limit NODE's memory, swap included, e.g. 256MB (past it: OOM kills).")
@clean_errors
def starve(name: str, node: str, cpus: str | None, memory: str | None) -> None:
    """Starve NODE of CPU or memory through the engine's update of its running container (nothing
    restarts); `pgharness heal` undoes it.

    Example: pgharness starve standby --cpus 0.1
    """
    from pgharness import faults

    if cpus is None and memory is None:
        raise click.UsageError("give what to limit: --cpus or --memory")
    try:
        share = faults.parse_cpus(cpus) if cpus is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--cpus") from None
    try:
        size = faults.parse_memory(memory) if memory is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--memory") from None
    target = attach(name).node(node)
    faults.starve(target, cpus=share, memory=size)
    click.echo(f"{node}: starved ({faults.starvation_of(target)})")


@main.command()
@name_option
@clean_errors
def heal(name: str) -> None:
    """Undo every partition, degraded link and starvation in the environment.

    Example: pgharness heal
    """
    from pgharness import faults

    faults.heal_all(attach(name))
    click.echo("healed")


@main.command()
@name_option
@click.argument("node")
@click.option("--lsn", metavar="LSN", help="Wait until standby NODE has replayed up to LSN (e.g. 0/3000060).")
@click.option(
    "--archived",
    metavar="SEGMENT|LSN",
    help="Wait until NODE's archiver has archived SEGMENT (a WAL file name, or the file that holds LSN).",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds to wait before failing with what was seen last.",
)
@clean_errors
def wait(name: str, node: str, lsn: str | None, archived: str | None, timeout: float) -> None:
    """Wait until NODE is caught up with its upstream (it replayed all the upstream has now), or with
    --lsn / --archived; exit 1, saying what it saw last, after --timeout seconds.

    A shell reproduction needs no polling loop of its own. Example: pgharness wait standby --timeout 30
    """
    from psycopg.conninfo import conninfo_to_dict

    from pgharness.lsn import Lsn

    if lsn and archived:
        raise click.UsageError("--lsn and --archived: give one")
    target = attach(name).node(node)
    try:
        position = Lsn.parse(lsn) if lsn else None
        walfile: str | Lsn | None = archived
        if archived and "/" in archived:
            walfile = Lsn.parse(archived)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--lsn" if lsn else "--archived") from None
    if walfile is not None:
        done = target.wait_for_archived(walfile, timeout=timeout)
        click.echo(f"{node}: {done} archived")
        return
    if position is not None:
        reached = target.wait_for_replay(position, timeout=timeout)
        click.echo(f"{node}: replayed up to {reached}")
        return
    upstream = conninfo_to_dict(str(target.scalar("SHOW primary_conninfo")) or "").get("host")
    if not target.is_in_recovery() or not upstream:
        raise click.UsageError(f"{node} streams from no upstream: give --lsn or --archived")
    reached = target.cluster.node(str(upstream)).wait_for_catchup(target, timeout=timeout)
    click.echo(f"{node}: caught up with {upstream} at {reached}")
