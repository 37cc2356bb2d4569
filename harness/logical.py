"""Logical replication and logical decoding: publications, subscriptions and slots, with their waits.

In the spirit of PostgreSQL's own ``src/test/subscription`` suite::

    publication = publisher.publish("pub", tables=["accounts"])
    subscription = subscriber.subscribe(publication, "sub")
    subscription.wait_for_sync()              # every table copied, then caught up
    publisher.sql("INSERT INTO accounts ...")
    subscription.wait_for_catchup()

A subscription's waits fail with why its workers stopped: the subscriber's
log tail and ``pg_stat_subscription_stats`` (15+), not only "timed out".
Logical decoding: `create_logical_slot`, `slot_changes` (``pg_logical_slot_peek/get_changes``),
`pg_recvlogical` (run inside a node), and `wait_for_slot_catchup`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, LiteralString

from psycopg import sql as pgsql

from pgharness.errors import ClusterError, WaitTimeout
from pgharness.lsn import Lsn
from pgharness.wait import Deadline, poll_until

if TYPE_CHECKING:
    from pgharness.node import Node

log = logging.getLogger("pgharness")

SlotPosition = Literal["restart", "confirmed_flush"]


def _option_value(value: object) -> pgsql.Composable:
    if isinstance(value, bool):
        return pgsql.SQL("true" if value else "false")
    return pgsql.Literal(str(value))


def _with_options(options: Mapping[str, object]) -> pgsql.Composable:
    if not options:
        return pgsql.SQL("")
    pairs = [pgsql.SQL("{} = {}").format(pgsql.Identifier(key), _option_value(v)) for key, v in options.items()]
    return pgsql.SQL(" WITH ({})").format(pgsql.SQL(", ").join(pairs))


@dataclass(frozen=True)
class Publication:
    """A publication on a node (``CREATE PUBLICATION``): `Node.publish` makes one."""

    node: Node
    name: str
    dbname: str = "postgres"

    def drop(self) -> None:
        """``DROP PUBLICATION``."""
        self.node.sql(pgsql.SQL("DROP PUBLICATION {}").format(pgsql.Identifier(self.name)), dbname=self.dbname)


def publish(
    node: Node,
    name: str,
    *,
    tables: Sequence[str] = (),
    schemas: Sequence[str] = (),
    all_tables: bool = False,
    columns: Mapping[str, Sequence[str]] | None = None,
    where: Mapping[str, str] | None = None,
    options: Mapping[str, object] | None = None,
    dbname: str = "postgres",
) -> Publication:
    """``CREATE PUBLICATION name FOR TABLE ...`` (or ``FOR ALL TABLES``) on `node`; return it.

    `schemas` publishes every table of each schema, present and future
    (``TABLES IN SCHEMA``, PostgreSQL 15+), with `tables` or alone.

    `columns` gives a table's column list and `where` its row filter (SQL, as
    you would write it; both PostgreSQL 15+), by table name. `options` are the
    publication's (``publish``, ``publish_via_partition_root``, ...).
    """
    target: pgsql.Composable
    if all_tables:
        target = pgsql.SQL("FOR ALL TABLES")
    elif tables or schemas:
        parts: list[pgsql.Composable] = []
        for table in tables:
            part: pgsql.Composable = pgsql.Identifier(*table.split("."))
            if columns and table in columns:
                part = pgsql.SQL("{} ({})").format(part, pgsql.SQL(", ").join(map(pgsql.Identifier, columns[table])))
            if where and table in where:
                # The row filter is SQL the test writes, as with Node.sql.
                part = pgsql.SQL("{} WHERE ({})").format(part, pgsql.SQL(where[table]))
            parts.append(part)
        objects = [pgsql.SQL("TABLE {}").format(pgsql.SQL(", ").join(parts))] if parts else []
        if schemas:
            names = pgsql.SQL(", ").join(map(pgsql.Identifier, schemas))
            objects.append(pgsql.SQL("TABLES IN SCHEMA {}").format(names))
        target = pgsql.SQL("FOR {}").format(pgsql.SQL(", ").join(objects))
    else:
        target = pgsql.SQL("")
    statement = pgsql.SQL("CREATE PUBLICATION {} {}{}").format(
        pgsql.Identifier(name), target, _with_options(options or {})
    )
    log.info("### Publishing %r on node %r", name, node.name)
    node.sql(statement, dbname=dbname)
    return Publication(node, name, dbname)


@dataclass(frozen=True)
class Subscription:
    """A subscription on a node to a publication (``CREATE SUBSCRIPTION``): `Node.subscribe` makes one."""

    node: Node
    name: str
    publication: Publication
    dbname: str = "postgres"

    def _alter(self, action: LiteralString) -> None:
        self.node.sql(
            pgsql.SQL("ALTER SUBSCRIPTION {} " + action).format(pgsql.Identifier(self.name)), dbname=self.dbname
        )

    def enable(self) -> None:
        """``ALTER SUBSCRIPTION ... ENABLE``."""
        self._alter("ENABLE")

    def disable(self) -> None:
        """``ALTER SUBSCRIPTION ... DISABLE``."""
        self._alter("DISABLE")

    def refresh(self) -> None:
        """``ALTER SUBSCRIPTION ... REFRESH PUBLICATION`` (tables added to the publication since)."""
        self._alter("REFRESH PUBLICATION")

    def skip(self, lsn: Lsn | str) -> None:
        """``ALTER SUBSCRIPTION ... SKIP (lsn = ...)`` (15+): skip the remote transaction that finished at `lsn`."""
        self.node.sql(
            pgsql.SQL("ALTER SUBSCRIPTION {} SKIP (lsn = {})").format(
                pgsql.Identifier(self.name), pgsql.Literal(str(lsn))
            ),
            dbname=self.dbname,
        )

    def repoint(self, publisher: Node) -> Subscription:
        """Point the subscription at `publisher` (after a failover of the old one): disable it, end its
        workers, ``ALTER SUBSCRIPTION ... CONNECTION`` (the new publisher as the nodes see it), enable it;
        return the subscription, whose publication now lives there (same name).

        A disabled subscription's apply worker leaves only once it reads the change, and one that is
        connecting to a publisher killed a moment ago waits out TCP's retries first (minutes: the old
        address still has its link-layer entry, and nothing answers); ended here, the worker the enabled
        subscription starts connects to the new publisher."""
        log.info("### Re-pointing subscription %r to %r", self.name, publisher.name)
        self.disable()
        workers = pgsql.SQL(
            "SELECT w.pid FROM pg_stat_subscription w JOIN pg_subscription s ON s.oid = w.subid"
            " JOIN pg_database d ON d.oid = s.subdbid WHERE s.subname = {} AND d.datname = {} AND w.pid IS NOT NULL"
        ).format(pgsql.Literal(self.name), pgsql.Literal(self.dbname))
        self.node.sql(pgsql.SQL("SELECT pg_terminate_backend(pid) FROM ({}) AS w").format(workers))
        self.node.poll_query_until(pgsql.SQL("SELECT NOT EXISTS ({})").format(workers))
        self.node.sql(
            pgsql.SQL("ALTER SUBSCRIPTION {} CONNECTION {}").format(
                pgsql.Identifier(self.name), pgsql.Literal(publisher.conninfo(self.publication.dbname))
            ),
            dbname=self.dbname,
        )
        self.enable()
        return Subscription(
            self.node, self.name, Publication(publisher, self.publication.name, self.publication.dbname), self.dbname
        )

    def drop(self) -> None:
        """``DROP SUBSCRIPTION`` (and its slot on the publisher)."""
        self.node.sql(pgsql.SQL("DROP SUBSCRIPTION {}").format(pgsql.Identifier(self.name)), dbname=self.dbname)

    def enabled(self) -> bool:
        """Whether the subscription is enabled (``pg_subscription.subenabled``); false once
        ``disable_on_error`` disabled it."""
        return bool(
            self.node.scalar(
                "SELECT subenabled FROM pg_subscription WHERE subname = %s", (self.name,), dbname=self.dbname
            )
        )

    def stats(self) -> dict[str, Any]:
        """``pg_stat_subscription_stats`` of this subscription (PostgreSQL 15+; empty before): apply and
        sync error counts."""
        if self.node.major < 15:
            return {}
        with self.node.connect(self.dbname) as conn:
            cur = conn.execute("SELECT * FROM pg_stat_subscription_stats WHERE subname = %s", (self.name,))
            row = cur.fetchone()
            names = [d.name for d in cur.description or []]
        return dict(zip(names, row, strict=True)) if row else {}

    def status(self) -> list[dict[str, Any]]:
        """``pg_stat_subscription`` rows of this subscription (its apply and sync workers)."""
        with self.node.connect(self.dbname) as conn:
            cur = conn.execute("SELECT * FROM pg_stat_subscription WHERE subname = %s", (self.name,))
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def errors(self) -> list[str]:
        """The subscriber's log lines about this subscription's failed workers (the reason a wait gives)."""
        return [
            line
            for line in self.node.logs(tail=500).splitlines()
            if " ERROR: " in line or "logical replication" in line or "processing remote data" in line
        ][-6:]

    def failed_transaction(self) -> Lsn | None:
        """The finish LSN of the remote transaction this subscription's apply worker last failed on, as
        ``skip`` takes it (PostgreSQL 15+); None when the subscriber's recent log has none.

        No view holds it: the subscriber logs it in the failed apply's context,
        ``processing remote data for replication origin "pg_<oid>" ... finished at X/Y``,
        under the subscription's own origin, which this reads.
        """
        oid = self.node.scalar("SELECT oid FROM pg_subscription WHERE subname = %s", (self.name,), dbname=self.dbname)
        if oid is None:
            raise ClusterError(f"no subscription {self.name!r} in database {self.dbname!r} on {self.node.name!r}")
        origin = re.compile(rf'replication origin "pg_{oid}" .*finished at ([0-9A-F]+/[0-9A-F]+)')
        found = [m.group(1) for line in self.node.logs(tail=1000).splitlines() if (m := origin.search(line))]
        return Lsn.parse(found[-1]) if found else None

    def _why(self, e: WaitTimeout) -> WaitTimeout:
        """`e`, told why the subscription does not progress: its stats and error lines."""
        stats = {k: v for k, v in self.stats().items() if k.endswith("error_count")}
        said = "\n".join(self.errors()) or "(no error in the subscriber's log)"
        return WaitTimeout(
            f"{e.what}; subscription stats {stats}; the subscriber says:\n{said}", e.timeout, e.last_seen, e.log_tail
        )

    def wait_for_sync(self, *, timeout: float | None = None) -> Lsn:
        """Wait until every table of the subscription is synchronised (``pg_subscription_rel`` all ready),
        then until it has caught up with the publisher (`wait_for_catchup`); return the position reached.

        Within `timeout` seconds in all (default ``PGHARNESS_TIMEOUT``, else
        60); on timeout, `WaitTimeout` says why the workers stopped.
        """
        deadline = Deadline(timeout)
        query = """SELECT count(*) FILTER (WHERE srsubstate <> 'r'), count(*)
                     FROM pg_subscription_rel JOIN pg_subscription s ON s.oid = srsubid WHERE s.subname = %s"""
        try:
            poll_until(
                lambda: self.node.sql(query, (self.name,), dbname=self.dbname)[0],
                lambda row: row[0] == 0,
                what=f"every table of subscription {self.name!r} on {self.node.name!r} ready (pg_subscription_rel)",
                deadline=deadline,
                nodes=(self.node,),
            )
        except WaitTimeout as e:
            raise self._why(e) from None
        return self.wait_for_catchup(timeout=deadline.remaining)

    def wait_for_catchup(self, *, timeout: float | None = None) -> Lsn:
        """Wait until the subscription has applied the publisher's current position (its walsender's
        ``replay_lsn`` in the publisher's ``pg_stat_replication``); return the position reached. On timeout,
        `WaitTimeout` says why the apply worker stopped."""
        try:
            return self.publication.node.wait_for_catchup(self.name, timeout=timeout)
        except WaitTimeout as e:
            raise self._why(e) from None


def subscribe(
    node: Node,
    publication: Publication,
    name: str,
    *,
    dbname: str = "postgres",
    **options: object,
) -> Subscription:
    """``CREATE SUBSCRIPTION name CONNECTION ... PUBLICATION ...`` on `node`; return it.

    The connection string is the publisher's as the nodes see it
    (`Node.conninfo`: its name on the cluster's network, the superuser's real
    password, quoted). `options` are the subscription's: ``copy_data``,
    ``streaming`` (``on``, ``parallel`` 16+), ``two_phase`` (15+),
    ``disable_on_error`` (15+), ``failover`` (17+), ...
    """
    statement = pgsql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}{}").format(
        pgsql.Identifier(name),
        pgsql.Literal(publication.node.conninfo(publication.dbname)),
        pgsql.Identifier(publication.name),
        _with_options(options),
    )
    log.info("### Subscribing %r on node %r to %r on %r", name, node.name, publication.name, publication.node.name)
    node.sql(statement, dbname=dbname)
    return Subscription(node, name, publication, dbname)


# --- logical decoding -----------------------------------------------------------


def create_logical_slot(
    node: Node,
    slot: str,
    plugin: str = "test_decoding",
    *,
    two_phase: bool = False,
    dbname: str = "postgres",
    upstream: Node | None = None,
    timeout: float | None = None,
) -> Lsn:
    """``pg_create_logical_replication_slot(slot, plugin)`` on `node` (a primary, or a standby on 16+);
    return its consistent point.

    On a standby the slot waits for a running-transactions record from the
    primary: give the standby's `upstream` and it is asked for one
    (``pg_log_standby_snapshot()``) until the slot is made, within `timeout`
    seconds (default ``PGHARNESS_TIMEOUT``, else 60).
    """
    args: list[Any] = [slot, plugin, False]
    if two_phase:
        args.append(True)
        query = "SELECT lsn FROM pg_create_logical_replication_slot(%s, %s, %s, %s)"
    else:
        query = "SELECT lsn FROM pg_create_logical_replication_slot(%s, %s, %s)"
    log.info("### Creating logical slot %r (%s) on node %r", slot, plugin, node.name)
    if upstream is None:
        return Lsn.parse(str(node.scalar(query, args, dbname=dbname)))
    with node.background_session(dbname) as session:
        creating = session.send(query, args)

        def made() -> bool:
            upstream.sql("SELECT pg_log_standby_snapshot()")
            return creating.done()

        poll_until(made, what=f"logical slot {slot!r} on standby {node.name!r} to be made", timeout=timeout,
                   nodes=(node, upstream))  # fmt: skip
        return Lsn.parse(str(creating.result()[0][0]))


def slot_changes(
    node: Node,
    slot: str,
    *,
    upto_lsn: Lsn | None = None,
    peek: bool = False,
    options: Mapping[str, str] | None = None,
    dbname: str = "postgres",
) -> list[str]:
    """The changes a logical slot decodes up to `upto_lsn` (default: all there are), as text
    (``pg_logical_slot_get_changes``, which consumes them; ``..._peek_changes`` with `peek`)."""
    function = "pg_logical_slot_peek_changes" if peek else "pg_logical_slot_get_changes"
    flat: list[Any] = [item for pair in (options or {}).items() for item in pair]
    placeholders = pgsql.SQL("").join(pgsql.SQL(", %s") for _ in flat)
    query = pgsql.SQL("SELECT data FROM {}(%s, %s, NULL{})").format(pgsql.Identifier(function), placeholders)
    rows = node.sql(query, [slot, None if upto_lsn is None else str(upto_lsn), *flat], dbname=dbname)
    return [str(row[0]) for row in rows]


def pg_recvlogical(node: Node, slot: str, *, endpos: Lsn, dbname: str = "postgres") -> str:
    """Run ``pg_recvlogical --start`` inside `node` on `slot` until `endpos`; return what it wrote (its
    stdout). Its own account of how it ended (``--verbose``: "end position ... reached by keepalive", or "by
    WAL record at ...") goes to the harness's log, which a failed test's report shows: a run that ends on a
    keepalive confirms the keepalive's position, written or not. `ClusterError` when it fails."""
    argv = ["pg_recvlogical", "--verbose", f"--dbname={dbname}", f"--slot={slot}", "--start",
            f"--endpos={endpos}", "--no-loop", "-f", "-"]  # fmt: skip
    result = node.container.exec_run(argv, user="postgres", demux=True)
    out, err = result.output  # demuxed: (stdout, stderr), each bytes or None
    stdout, stderr = (bytes(part or b"").decode(errors="replace") for part in (out, err))
    log.info("pg_recvlogical on %r up to %s said: %s", node.name, endpos, " / ".join(stderr.strip().splitlines()))
    if result.exit_code != 0:
        raise ClusterError(f"pg_recvlogical on {node.name!r} failed (exit {result.exit_code}): {stderr.strip()}")
    return stdout


def slot(node: Node, name: str) -> dict[str, Any]:
    """The row of slot `name` in `node`'s ``pg_replication_slots`` (empty when there is none)."""
    with node.connect() as conn:
        cur = conn.execute("SELECT * FROM pg_replication_slots WHERE slot_name = %s", (name,))
        row = cur.fetchone()
        names = [d.name for d in cur.description or []]
    return dict(zip(names, row, strict=True)) if row else {}


def wait_for_slot_catchup(
    node: Node, slot_name: str, position: SlotPosition, target: Lsn, *, timeout: float | None = None
) -> Lsn:
    """Wait until slot `slot_name` on `node` has its ``restart_lsn`` or ``confirmed_flush_lsn`` at `target`
    or beyond; return the position reached (Cluster.pm's ``wait_for_slot_catchup``)."""
    column = pgsql.Identifier(f"{position}_lsn")
    query = pgsql.SQL("SELECT {} FROM pg_replication_slots WHERE slot_name = %s").format(column)

    def probe() -> Lsn | str:
        value = node.scalar(query, (slot_name,))
        return f"no {position}_lsn for slot {slot_name!r}" if value is None else Lsn.parse(str(value))

    reached = poll_until(
        probe,
        lambda seen: isinstance(seen, Lsn) and seen >= target,
        what=f"slot {slot_name!r} on {node.name!r} to have its {position}_lsn at {target}",
        timeout=timeout,
        nodes=(node,),
    )
    assert isinstance(reached, Lsn)
    return reached
