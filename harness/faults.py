"""Faults on nodes that a test switches on and off: each is reversible, each context manager undoes its
fault in ``finally``.

One word per fault: a node is *partitioned* (from the other nodes, and with
``clients=True`` from the host too) and *healed*; *paused* (frozen: TCP stays
open, nothing answers) and unpaused; its replay is *paused* and resumed::

    with partitioned(cluster.standby):      # no traffic between the standby and any other node
        ...                                 # the host still reaches it on its published port

This docstring is the index of every fault the harness causes, wherever it
lives, with its command-line twin (``pgharness VERB --name ENV ...``):

================================================  ==============================  ====================================
fault (Python)                                    undone by                       command line
================================================  ==============================  ====================================
``node.kill()`` (SIGKILL: a crash)                ``node.start()``                ``kill NODE`` / ``start NODE``
``node.stop("fast" | "immediate")``               ``node.start()``                ``stop NODE`` / ``start NODE``
``node.pause()``, ``with paused(node)``           ``node.unpause()``, the block   ``pause NODE`` / ``unpause NODE``
``with partitioned(node)``, ``partition(node)``   ``heal(node)``, the block       ``partition NODE`` / ``heal``
``partitioned(node, clients=True)``               ``heal(node)``, the block       ``partition NODE --clients``
``node.pause_replay()``, ``replay_paused(node)``  ``resume_replay()``, the block  ``pause-replay`` / ``resume-replay``
``with cluster.archive.read_only()``              the block                       (none)
``with cluster.archive.missing(walfile)``         the block                       (none)
``with cluster.archive.corrupted(walfile)``       the block                       (none)
``backups.rebuild(node)`` (wipes a standby)       (a new base backup)             ``rebuild NODE``
================================================  ==============================  ====================================

``Node`` holds the process faults (`pgharness.node`), ``cluster.archive``
the archive's (`pgharness.archive`); the failover and faults guide has the
same table.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from docker.models.networks import Network
from psycopg.conninfo import conninfo_to_dict

from pgharness.constants import REPLICATION_NETWORK
from pgharness.errors import ClusterError
from pgharness.lsn import Lsn
from pgharness.tools import resource_name
from pgharness.wait import Deadline

if TYPE_CHECKING:
    from pgharness.cluster import Cluster
    from pgharness.node import Node

log = logging.getLogger("pgharness")


#: The nftables table of a partition, in the node's own network namespace.
PARTITION_TABLE = "pgharness_partition"


def replication_network(node: Node) -> Network:
    """The cluster's network (``<project>_replication``); `ClusterError` when it is gone."""
    name = resource_name(node.cluster.name, REPLICATION_NETWORK)
    networks = node.cluster.docker.networks.list(names=[name])
    if not networks:
        raise ClusterError(f"cluster {node.cluster.name!r} has no network {name!r}: is it up?")
    return networks[0]


def partition_rules(subnet: str, gateway: str, *, clients: bool) -> str:
    """The nft commands that cut a node off from every other address of its network `subnet` (`gateway`, the
    host's side, excepted: published ports keep working) or, with `clients`, from everything but loopback.

    Refused rather than silently dropped: a TCP segment that arrives gets a reset (the one kind of packet
    let out), so a peer that sends on an old connection loses it at once, and the node's own attempts fail
    at once; other traffic in is dropped. One nft call is one transaction.
    """
    ipaddress.ip_network(subnet)  # ValueError on anything but an address range
    ipaddress.ip_address(gateway)
    table = f"ip {PARTITION_TABLE}"
    commands = [f"add table {table}"]
    for chain, hook, direction, interface in (
        ("inbound", "input", "saddr", "iifname"),
        ("outbound", "output", "daddr", "oifname"),
    ):
        commands += [
            f"add chain {table} {chain} {{ type filter hook {hook} priority -10 ; policy accept ; }}",
            f'add rule {table} {chain} {interface} "lo" accept',
        ]
        if not clients:
            commands.append(f"add rule {table} {chain} ip {direction} {gateway} accept")
        if chain == "outbound":
            # The resets the rules below send, to the peer or to the node's own socket.
            commands.append(f"add rule {table} {chain} tcp flags & rst == rst accept")
        match = "" if clients else f"ip {direction} {subnet} "
        commands.append(f"add rule {table} {chain} {match}meta l4proto tcp reject with tcp reset")
        commands.append(f"add rule {table} {chain} {match}" + ("drop" if chain == "inbound" else "reject"))
    return " ; ".join(commands)


def _nft(node: Node, *argv: str) -> str:
    """Run ``nft`` as root in `node` (its network namespace); a clear `ClusterError` when the image has none."""
    if node.container.status != "running":
        raise ClusterError(f"node {node.name!r} is {node.container.status}: a partition needs it running")
    try:
        return node.exec("nft", *argv, user="root")
    except ClusterError as e:
        # Docker's own words for a missing binary (exit 126); nothing else tells it from nft's errors.
        if "executable file not found" in str(e):
            raise ClusterError(
                f"node {node.name!r} has no nft: partitions need nftables in the node image "
                "(the harness's own images carry it; add the nftables package to yours)"
            ) from None
        raise


def is_partitioned(node: Node) -> bool:
    """Whether `node` is cut off (its partition table exists); False for a node that has stopped (a
    container's network namespace, and the filter in it, does not outlive a stop). A paused node cannot
    be asked: `ClusterError`."""
    status = node.container.status
    if status == "paused":
        raise ClusterError(f"node {node.name!r} is paused: unpause it to ask whether it is partitioned")
    if status != "running":
        return False
    result = node.container.exec_run(["nft", "list", "table", "ip", PARTITION_TABLE], user="root")
    return result.exit_code == 0


def partition(node: Node, *, clients: bool = False) -> None:
    """Cut `node` off from every other node and, with `clients`, from the host too (its published port):
    a packet filter in the node's network namespace. The node keeps its address and name; `heal` (or a
    restart of its container) undoes it."""
    network = replication_network(node)
    config = (network.attrs.get("IPAM", {}).get("Config") or [{}])[0]
    subnet, gateway = config.get("Subnet"), config.get("Gateway")
    if not subnet or not gateway:
        raise ClusterError(f"network {network.name!r} shows no IPv4 subnet and gateway: {config!r}")
    log.info("### Cutting node %r off from the other nodes%s", node.name, " and its clients" if clients else "")
    _nft(node, partition_rules(subnet, gateway, clients=clients))


def heal(node: Node, *, wait: bool = True, timeout: float | None = None) -> None:
    """Undo `partition` for `node` (nothing to do when it is not partitioned, or not running); with `wait`,
    return only once the cluster replicates again (`wait_replicating`, within `timeout` seconds).

    The filter lives in the node itself, so a heal works from another process
    (``pgharness heal`` after ``pgharness partition``).
    """
    if is_partitioned(node):
        log.info("### Reconnecting node %r to the other nodes and its clients", node.name)
        _nft(node, "delete", "table", "ip", PARTITION_TABLE)
        if wait:
            wait_replicating(node.cluster, timeout=timeout)


def wait_replicating(cluster: Cluster, *, timeout: float | None = None) -> None:
    """Return once every running standby that streams has flushed WAL written after this call, as its
    upstream reports it: a round trip on each replication connection.

    After a fault is undone, a replication connection can look alive on one side
    and be dead on the other (a reset the other side has not met yet). Sending
    WAL down it and waiting for the standby's flush report to come back makes
    both sides find out, and a broken one connect again, before the test goes
    on. Each writer (a running node not in recovery) writes a WAL record that
    changes no data (``pg_logical_emit_message``, not transactional: it waits
    for no synchronous standby); each streaming standby is waited for through
    the node its ``primary_conninfo`` names, first those of a primary, then
    cascades. Raises `WaitTimeout` after `timeout` seconds (default
    ``PGHARNESS_TIMEOUT``, else 60), with what it saw last.
    """
    deadline = Deadline(timeout)
    running = {node.name: node for node in cluster.nodes if node.container.status == "running"}
    links: list[tuple[bool, str, Node, Node]] = []
    targets: dict[str, Lsn] = {}
    for node in running.values():
        if not node.is_in_recovery():
            # The target is past the record just written, not the write position: that may not have moved
            # yet, and a connection that is already dead could still show a flush position beyond it.
            targets[node.name] = Lsn.parse(
                node.scalar(
                    "SELECT pg_current_wal_insert_lsn() FROM "
                    "(SELECT pg_logical_emit_message(false, 'pgharness', 'replication check')) AS written"
                )
            )
            continue
        conninfo = str(node.scalar("SHOW primary_conninfo") or "")
        host = str(conninfo_to_dict(conninfo).get("host") or "") if conninfo else ""
        upstream = running.get(host)
        if upstream is not None and upstream is not node:
            links.append((upstream.is_in_recovery(), node.name, node, upstream))
    for _, _, standby, upstream in sorted(links, key=lambda link: link[:2]):
        target = targets.get(upstream.name)  # a cascade's upstream: its own replay position
        upstream.wait_for_catchup(standby, "flush", target, timeout=max(deadline.remaining, 0.001))


def heal_all(cluster: Cluster) -> None:
    """Heal every node of `cluster` that is running (a partition may cover several)."""
    for node in cluster.nodes:
        if node.container.status == "running":
            heal(node)
        elif node.container.status == "paused":
            log.warning("node %r is paused: not healed (unpause it, then heal it)", node.name)


@contextmanager
def partitioned(node: Node, *, clients: bool = False, wait: bool = True) -> Iterator[Node]:
    """`partition` for the block; healed afterwards, whatever happens, and (with `wait`) the cluster
    replicating again. A scenario whose standby cannot stream again (the WAL it needs is gone) passes
    ``wait=False`` and says what it expects instead."""
    partition(node, clients=clients)
    try:
        yield node
    finally:
        heal(node, wait=wait)


@contextmanager
def paused(node: Node) -> Iterator[Node]:
    """Freeze `node`'s container for the block (a hung server: TCP stays open, nothing answers); thawed
    afterwards, and the cluster replicating again (`wait_replicating`)."""
    node.pause()
    try:
        yield node
    finally:
        if node.container.status == "paused":
            node.unpause()
            wait_replicating(node.cluster)


@contextmanager
def replay_paused(node: Node) -> Iterator[Node]:
    """Pause WAL replay on a standby for the block (``pg_wal_replay_pause()``); resume it afterwards."""
    node.pause_replay()
    try:
        yield node
    finally:
        node.resume_replay()
