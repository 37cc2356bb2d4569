"""What a failed start or a failed test leaves behind: reasons, descriptions and evidence files, secrets masked.

`failure_reason` says in one line why a container stopped; `describe_failure`
gives container states and log tails for an error message; `save_evidence`
writes a failed test's logs, control data and status as files. `mask` keeps
passwords and private keys out of all of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg

from pgharness.errors import ClusterError, HarnessError
from pgharness.node import Node
from pgharness.wait import failure_lines, log_tails

if TYPE_CHECKING:
    from pgharness.cluster import Cluster


def failure_reason(cluster: Cluster) -> str:
    """Why a container stopped, in one line: the last thing its entrypoint said (``pgharness: ...``)
    or the last FATAL of its server; empty when no container says."""
    try:
        containers = {**cluster.containers(), **{s.name: s.container for s in cluster.services}}
    except Exception:  # noqa: BLE001 -- evidence gathering must never mask the failure it explains
        return ""
    for name, container in sorted(containers.items()):
        if container.status == "running":
            continue
        lines = container.logs(tail=50).decode(errors="replace").splitlines()
        reason = last_words(lines)
        if reason:
            return f"{name}: {reason}"
    return ""


def last_words(lines: list[str]) -> str:
    """The last thing a container said of its failure: its entrypoint's last line (``pgharness: ...``) or its
    server's last FATAL, whichever came later; a FATAL with the parameters the server refused before it."""
    fatal = set(failure_lines(lines))
    reason = ""
    refused: list[str] = []
    for line in lines:
        if m := re.match(r"pgharness: (.*)", line):
            reason, refused = m.group(1), []
        elif line in fatal:
            reason = line.split("FATAL:", 1)[1].strip()
        elif m := REFUSED_PARAMETER.search(line):
            refused.append(m.group(1))
    if refused and "contains errors" in reason:
        reason += ": " + "; ".join(refused)
    return reason


#: A server's log line about a parameter it refused (``invalid value for parameter "shared_buffers": "lots"``,
#: ``unrecognized configuration parameter "x" in file ...``), before its FATAL "contains errors".
REFUSED_PARAMETER = re.compile(r"\b(?:LOG|WARNING|ERROR):\s+(.*parameter \".*)$")


def describe_failure(cluster: Cluster) -> str:
    """Container states and the recent log of every node, for an error message."""
    try:
        nodes = cluster.nodes
        services = cluster.services
        states = ", ".join(f"{n.name}: {n.status()}" for n in [*nodes, *services]) or "no containers"
        return f"nodes: {states}\n{log_tails([*nodes, *services])}"
    except Exception as e:  # noqa: BLE001 -- evidence gathering must never mask the failure it explains
        return f"(could not describe the cluster: {e})"


def save_evidence(cluster: Cluster, directory: Path) -> Path:
    """Write what a failed test leaves behind, as files; return the folder.

    Per node: its log (``NODE.log``) and ``pg_controldata`` output; for the
    cluster: ``status.json`` (container states, pg_stat_replication,
    pg_stat_wal_receiver, pg_stat_archiver, pg_replication_slots per node),
    ``archive.txt`` (the shared archive, .history files included),
    ``compose.yaml`` (the resolved compose configuration) and
    ``summary.txt`` (which names the Docker engine, as ``status.json`` does).
    Passwords are masked.
    """
    directory.mkdir(parents=True, exist_ok=True)
    engine = cluster.engine
    status: dict[str, Any] = {
        "cluster": cluster.name,
        "image": cluster.image,
        "engine": {"url": engine.url, "context": engine.context, "host": engine.host, "bind": engine.bind},
        "nodes": {},
    }
    summary = [f"cluster {cluster.name} (image {cluster.image}) on engine {engine}; evidence in {directory}"]
    for name, container in sorted(cluster.containers().items()):
        (directory / f"{name}.log").write_text(mask_secrets(cluster, container.logs().decode(errors="replace")))
        node_status: dict[str, Any] = {"state": container.attrs["State"]}
        line = f"  {name}: {container.status}"
        if container.attrs["State"].get("OOMKilled"):
            line += ", a process OOM-killed (the container's memory limit)"
        if container.status == "running":
            node = cluster.node(name)
            node_status["sql"] = _sql_snapshot(node)
            try:
                controldata = node.exec("sh", "-c", 'pg_controldata -D "$PGDATA"')
            except ClusterError as e:
                controldata = str(e)
            (directory / f"{name}.controldata.txt").write_text(controldata)
            recovery = node_status["sql"].get("in_recovery")
            if recovery:
                line += ", " + ("standby" if recovery[0].get("pg_is_in_recovery") else "primary")
        status["nodes"][name] = node_status
        summary.append(line)
    for service in cluster.services:  # a user's added services: their logs and states
        name = service.name
        (directory / f"{name}.log").write_text(mask_secrets(cluster, service.logs(tail=1000)))
        status.setdefault("services", {})[name] = {"state": service.container.attrs["State"]}
        summary.append(f"  {name}: {service.status()} (service)")
    (directory / "status.json").write_text(mask_secrets(cluster, json.dumps(status, indent=2, default=str)))
    try:
        listing = "\n".join(cluster.archive.files())
    except HarnessError as e:
        listing = f"(archive not readable: {e})"
    (directory / "archive.txt").write_text(listing + "\n")
    try:
        config = cluster.compose.config_text()
    except HarnessError as e:
        config = f"# compose config failed: {e}\n"
    (directory / "compose.yaml").write_text(mask_secrets(cluster, config))
    (directory / "summary.txt").write_text("\n".join(summary) + "\n")
    return directory


def mask_secrets(cluster: Cluster, text: str) -> str:
    """`text` with the cluster's passwords masked (see `mask`)."""
    return mask(text, (cluster.password, cluster.replication_password))


#: The documented default passwords: public, and words that appear everywhere ("postgres").
DEFAULT_PASSWORDS = frozenset({"postgres", "repli"})


def mask(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with every password value (``password=...``, ``PASSWORD: ...``) replaced by ********,
    each of `secrets` wherever it appears (but the public defaults, and values under 6 characters),
    and PEM private keys."""
    text = _PASSWORD_RE.sub(r"\1********", text)
    text = _PRIVATE_KEY_RE.sub("(private key masked)", text)
    for secret in secrets:
        if len(secret) >= 6 and secret not in DEFAULT_PASSWORDS:
            text = text.replace(secret, "********")
    return text


_PRIVATE_KEY_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL)
_PASSWORD_RE = re.compile(r"""(password\s*[=:]\s*['"]?)[^\s'"]+""", re.IGNORECASE)
_SNAPSHOT_QUERIES: dict[str, LiteralString] = {
    "in_recovery": "SELECT pg_is_in_recovery()",
    "pg_replication_slots": "SELECT * FROM pg_replication_slots",
    "pg_stat_replication": "SELECT * FROM pg_stat_replication",
    "pg_stat_wal_receiver": "SELECT * FROM pg_stat_wal_receiver",
    "pg_stat_archiver": "SELECT * FROM pg_stat_archiver",
}


def _sql_snapshot(node: Node) -> dict[str, Any]:
    snapshot: dict[str, Any] = {}
    try:
        with node.connect(connect_timeout=3) as conn:
            for key, query in _SNAPSHOT_QUERIES.items():
                cur = conn.execute(query)
                cols = [d.name for d in cur.description or []]
                snapshot[key] = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    except psycopg.Error as e:
        snapshot["error"] = f"{type(e).__name__}: {e}"
    return snapshot
