"""A node's configuration, as Cluster.pm's ``append_conf``/``reload``/``restart`` and testgres's do it: every
change validated by the server, then applied by a reload or, for a setting read only at start, a restart::

    node.set_config(work_mem="64MB", wal_sender_timeout="2s")    # "reload": ALTER SYSTEM, reloaded
    node.set_config(max_connections=50)                          # "restart": a postmaster setting
    node.reset_config("work_mem")                                 # ALTER SYSTEM RESET, reloaded
    node.add_hba("host", "postgres", "repli", "all", "scram-sha-256")   # first in pg_hba.conf, checked

Settings go through ``ALTER SYSTEM`` (postgresql.auto.conf, which wins over
every other file): the server refuses an unknown name or a bad value with its
own SQLSTATE (42704, 22023) before anything changes. A reload returns once
new connections run with the new settings (``pg_conf_load_time`` has moved).
The `Node` methods of the same names call these functions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal

from psycopg import sql as pgsql

from pgharness.errors import ClusterError, QuotingError
from pgharness.wait import Deadline, poll_until

if TYPE_CHECKING:
    from pgharness.node import Node
    from pgharness.session import Session

log = logging.getLogger("pgharness")

Applied = Literal["reload", "restart"]

#: A field of pg_hba.conf that needs no quotes (a keyword such as ``all`` must stay unquoted to mean it).
_PLAIN_HBA_FIELD = re.compile(r"[A-Za-z0-9_.:/@+*=-]+")


def setting_text(value: object) -> str:
    """A setting's value as ALTER SYSTEM takes it: booleans as ``on``/``off``, the rest as text."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def set_config(
    node: Node, settings: Mapping[str, object], *, apply: bool = True, timeout: float | None = None
) -> Applied | None:
    """``ALTER SYSTEM SET`` each of `settings` on `node`, then a reload, or a restart when one of them is read
    only at server start (context ``postmaster``); return which was done (None with ``apply=False``: written
    only, for a caller that restarts the node its own way). The server refuses an unknown setting or a bad
    value (psycopg's error for its SQLSTATE) before any is set. Within `timeout` seconds."""
    if not settings:
        raise ClusterError("set_config: no setting given")
    deadline = Deadline(timeout)
    contexts = _contexts(node, list(settings), deadline)
    shown = ", ".join(f"{name} = {setting_text(value)!r}" for name, value in settings.items())
    log.info("### Setting %s on node %r", shown, node.name)
    with node.session(deadline=deadline) as session:
        alter_system(session, settings)
    return _apply(node, contexts, deadline) if apply else None


def alter_system(session: Session, settings: Mapping[str, object] = {}, reset: Iterable[str] = ()) -> None:
    """The statements alone, on `session`'s node: ``ALTER SYSTEM RESET`` each of `reset`, then ``ALTER SYSTEM
    SET`` each of `settings` (values as SQL literals). Nothing is reloaded: `reload`, or `set_config`."""
    for name in reset:
        session.rows(pgsql.SQL("ALTER SYSTEM RESET {}").format(pgsql.Identifier(name)))
    for name, value in settings.items():
        session.rows(
            pgsql.SQL("ALTER SYSTEM SET {} = {}").format(pgsql.Identifier(name), pgsql.Literal(setting_text(value)))
        )


def reset_config(node: Node, names: Iterable[str], *, timeout: float | None = None) -> Applied:
    """``ALTER SYSTEM RESET`` each of `names` on `node` (all of them when `names` is empty), then a reload or a
    restart as `set_config` does; return which was done."""
    deadline = Deadline(timeout)
    wanted = list(names)
    if not wanted:
        wanted = [str(n) for (n,) in node.sql(_ALTERED, timeout=deadline.remaining)]
    contexts = _contexts(node, wanted, deadline)
    log.info("### Resetting %s on node %r", ", ".join(wanted) or "nothing", node.name)
    with node.session(deadline=deadline) as session:
        alter_system(session, reset=wanted)
    return _apply(node, contexts, deadline)


def reload(node: Node, *, timeout: float | None = None) -> None:
    """``pg_reload_conf()``, returning once the postmaster has read the files again: from then on, new
    connections run with what they say (``pg_conf_load_time()`` of a new session has moved)."""
    deadline = Deadline(timeout)
    before = node.scalar("SELECT pg_conf_load_time()", timeout=deadline.remaining)
    signal_reload(node, timeout=deadline.remaining)
    poll_until(
        lambda: node.scalar("SELECT pg_conf_load_time()", timeout=deadline.remaining),
        lambda loaded: loaded > before,
        what=f"node {node.name!r} to reload its configuration (pg_conf_load_time() past {before})",
        deadline=deadline,
        nodes=(node,),
    )


def signal_reload(node: Node, *, timeout: float | None = None) -> None:
    """``pg_reload_conf()`` alone: the server is told, and this returns at once (`reload` waits)."""
    node.sql("SELECT pg_reload_conf()", timeout=timeout)


def hba_field(field: str) -> str:
    """`field` as pg_hba.conf reads it: as written when plain (keywords such as ``all`` stay keywords),
    else in double quotes with ``"`` doubled; `QuotingError` for a line break or NUL, which no quoting carries."""
    if any(c in field for c in "\n\r\0"):
        raise QuotingError(f"pg_hba.conf field {field!r}: a line break or NUL cannot be quoted")
    if _PLAIN_HBA_FIELD.fullmatch(field):
        return field
    return '"' + field.replace('"', '""') + '"'


def hba_line(*fields: str) -> str:
    """One pg_hba.conf line from its fields (type, database, user, [address,] method, [options...])."""
    if len(fields) < 3:
        raise ClusterError(f"a pg_hba.conf line has a type, a database, a user and a method: {fields!r}")
    return " ".join(hba_field(f) for f in fields)


def add_hba(node: Node, *fields: str, first: bool = True, timeout: float | None = None) -> str:
    """Add the pg_hba.conf line of `fields` to `node`, first (it wins over the rest) or last; check that the
    server reads every line of the file (``pg_hba_file_rules``), then reload; return the line.

    A line the server would not read is taken out again and raises `ClusterError` with the server's words.
    """
    deadline = Deadline(timeout)
    line = hba_line(*fields)
    path = str(node.scalar("SHOW hba_file", timeout=deadline.remaining))
    # The script is fixed; the path and the line reach it as arguments, never as shell text.
    script = (
        'cp "$1" "$1.pgharness-saved" && { if [ "$3" = first ]; then printf "%s\\n" "$2" | cat - "$1.pgharness-saved"; '
        'else cat "$1.pgharness-saved" && printf "%s\\n" "$2"; fi; } > "$1"'
    )
    log.info("### Adding %r %s in node %r's pg_hba.conf", line, "first" if first else "last", node.name)
    node.exec("sh", "-c", script, "add_hba", path, line, "first" if first else "last")
    errors = node.sql(
        "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL", timeout=deadline.remaining
    )
    if errors:
        node.exec("sh", "-c", 'mv "$1.pgharness-saved" "$1"', "add_hba", path)
        said = "; ".join(f"line {number}: {error}" for number, error in errors)
        raise ClusterError(f"pg_hba.conf line {line!r} refused by node {node.name!r}: {said}")
    node.exec("rm", "-f", f"{path}.pgharness-saved")
    reload(node, timeout=deadline.remaining)
    return line


#: The settings ALTER SYSTEM has set on a node (postgresql.auto.conf), by name.
_ALTERED = """
SELECT DISTINCT name FROM pg_file_settings WHERE sourcefile ~ '/postgresql[.]auto[.]conf$' ORDER BY 1
"""


def _contexts(node: Node, names: list[str], deadline: Deadline) -> dict[str, str]:
    """Each setting's context (``postmaster``, ``sighup``, ...) from pg_settings; a name the server does not
    know is left to ALTER SYSTEM to refuse (a custom ``ext.name`` is known once its library is loaded)."""
    rows = node.sql("SELECT name, context FROM pg_settings WHERE name = ANY(%s)", (names,), timeout=deadline.remaining)
    return {str(name): str(context) for name, context in rows}


def _apply(node: Node, contexts: Mapping[str, str], deadline: Deadline) -> Applied:
    if "postmaster" in contexts.values():
        node.restart(timeout=deadline.remaining)
        return "restart"
    reload(node, timeout=deadline.remaining)
    return "reload"
