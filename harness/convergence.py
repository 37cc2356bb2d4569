"""Proof that the standbys hold exactly what the primary holds: `assert_converged`.

At the end of any workload, a replication suite must be able to say that every
standby holds the primary's data. `assert_converged` waits until each standby
has replayed the primary's current position, then compares a logical dump of
every node (``pg_dumpall``, run inside each node with the server's own
binaries) with the primary's, and fails with a short unified diff of the first
differences and the tables they are in.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgharness.errors import NotConverged
from pgharness.failover import single_primary
from pgharness.node import FLUSH_WAL_SQL
from pgharness.wait import Deadline

if TYPE_CHECKING:
    from pgharness.cluster import Cluster
    from pgharness.node import Node

log = logging.getLogger("pgharness")

#: How far ahead of the primary's a standby's sequence may be: the primary WAL-logs a sequence 32
#: values ahead of what it hands out (SEQ_LOG_VALS), and a standby sees only the WAL-logged value.
SEQUENCE_LOG_AHEAD = 32
#: Lines of diff shown when nodes differ.
DIFF_LINES = 40

_SETVAL = re.compile(r"^SELECT pg_catalog\.setval\('(?P<name>[^']+)', (?P<value>-?\d+), (?P<called>true|false)\);$")
_DATA_HEADER = re.compile(r"^(?:COPY|INSERT INTO) (?P<table>\S+)")
_DATABASE = re.compile(r"^\\connect (?P<db>.+)$")


@dataclass(frozen=True)
class Dump:
    """A node's logical dump, its sequence positions taken out (compared apart, see `compare`)."""

    node: str
    lines: list[str]
    sequences: dict[str, tuple[int, bool]]


def logical_dump(node: Node) -> Dump:
    """``pg_dumpall --no-role-passwords`` of `node`, run inside it; sequence positions set apart, and the
    random ``\\restrict`` keys of recent pg_dump versions masked."""
    text = node.exec("pg_dumpall", "--no-role-passwords", "--no-sync")
    lines, sequences = [], {}
    database = ""
    for line in text.splitlines():
        # Most lines are rows of data: the patterns below are for the few that start so.
        if not line.startswith(("\\", "SELECT")):
            lines.append(line)
            continue
        if m := _DATABASE.match(line):
            database = m.group("db")
        if line.startswith(("\\restrict ", "\\unrestrict ")):
            # A random key per dump (pg_dump 17.6, 16.10, ... and later): not data.
            line = line.split(" ", 1)[0] + " <key>"
        elif m := _SETVAL.match(line):
            sequences[f"{database}.{m.group('name')}"] = (int(m.group("value")), m.group("called") == "true")
            line = f"SELECT pg_catalog.setval('{m.group('name')}', <position>, <called>);"
        lines.append(line)
    return Dump(node.name, lines, sequences)


def compare(primary: Dump, other: Dump) -> str:
    """How `other` differs from `primary`: empty when it holds the same data.

    Sequence positions are compared on purpose, not as text: a standby's may be
    ahead of the primary's by up to `SEQUENCE_LOG_AHEAD` (it sees the WAL-logged
    value, the primary hands out values below it), never behind; a node
    promoted from a standby keeps that lead.
    """
    problems = []
    if primary.lines != other.lines:
        diff = list(difflib.unified_diff(primary.lines, other.lines, primary.node, other.node, n=1, lineterm=""))
        tables = sorted(_tables_in(primary.lines, diff))
        where = f" in {', '.join(tables)}" if tables else ""
        shown = "\n".join(diff[:DIFF_LINES]) + ("\n..." if len(diff) > DIFF_LINES else "")
        problems.append(f"node {other.node!r} differs from {primary.node!r}{where}:\n{shown}")
    for name, (value, called) in sorted(primary.sequences.items()):
        seen = other.sequences.get(name)
        if seen is None:
            continue  # the sequence itself differs: the diff above says so
        other_value, other_called = seen
        if other_called != called or not value <= other_value <= value + SEQUENCE_LOG_AHEAD:
            problems.append(
                f"sequence {name} is at {other_value} (is_called {other_called}) on {other.node!r}, "
                f"at {value} (is_called {called}) on {primary.node!r}: more than {SEQUENCE_LOG_AHEAD} apart"
            )
    return "\n".join(problems)


def _tables_in(lines: list[str], diff: list[str]) -> set[str]:
    """The tables whose data the diff's changed lines are in (the COPY or INSERT header above each)."""
    changed = {line[1:] for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))}
    tables, current = set(), ""
    for line in lines:
        if m := _DATA_HEADER.match(line):
            current = m.group("table")
        elif line == "\\.":
            current = ""
        if line in changed and current:
            tables.add(current)
    # Lines only the other node has are found under the header of the hunk they are in.
    for line in diff:
        if m := _DATA_HEADER.match(line[1:]):
            tables.add(m.group("table"))
    return tables


def assert_converged(cluster: Cluster, *, nodes: Iterable[Node | str] = (), timeout: float | None = None) -> Node:
    """Wait until every standby has replayed the primary's current position, then check that each holds
    exactly the primary's data; return the primary.

    The primary is the one writable node but `nodes`
    (`pgharness.failover.single_primary`). Compared with it: every
    running standby of the cluster (cascading ones too), and `nodes` (for
    example a node restored from a backup, which is not waited for unless it
    is in recovery). Waits within `timeout` seconds
    (default ``PGHARNESS_TIMEOUT``, else 60). Raises `NotConverged` with a
    unified diff of the first differences and the tables they are in, or
    `WaitTimeout` when a standby does not catch up.
    """
    deadline = Deadline(timeout)
    chosen = [cluster.node(n) for n in nodes]
    primary = single_primary(cluster, ignore=chosen)
    # A standby receives flushed WAL only, and the full-page images a read sets hint bits with
    # (wal_log_hints; a dump of fresh rows writes hundreds of kB) may not be: flush it, then take the target.
    primary.sql(FLUSH_WAL_SQL)
    target = primary.lsn("write")
    assert target is not None
    standbys = [n for n in cluster.nodes if n is not primary and n.container.status == "running" and n.is_in_recovery()]
    others = [*standbys, *(n for n in chosen if n not in standbys)]
    for node in others:
        if node.is_in_recovery():
            node.wait_for_replay(target, timeout=deadline.remaining)
    log.info("### Comparing %s with %r", ", ".join(repr(n.name) for n in others), primary.name)
    reference = logical_dump(primary)
    problems = [problem for node in others if (problem := compare(reference, logical_dump(node)))]
    if problems:
        raise NotConverged("\n".join(problems))
    return primary
