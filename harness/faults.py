"""Faults on nodes that a test switches on and off: each is reversible, each context manager undoes its
fault in ``finally``.

One word per fault: a node is *partitioned* (from the other nodes, and with
``clients=True`` from the host too) and *healed*; *paused* (frozen: TCP stays
open, nothing answers) and unpaused; its replay is *paused* and resumed.

    with partitioned(cluster.standby):      # no traffic between the standby and any other node
        ...                                 # the host still reaches it on its published port
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from docker.models.networks import Network

from harness.constants import REPLICATION_NETWORK, SERVICE_LABEL
from harness.errors import ClusterError

if TYPE_CHECKING:
    from harness.cluster import Cluster
    from harness.node import Node

log = logging.getLogger("harness")


def access_network_name(node: Node) -> str:
    """The network that carries `node`'s published port: ``<project>_<service>-access`` in compose.yaml."""
    return f"{node.cluster.name}_{node.container.labels[SERVICE_LABEL]}-access"


def replication_network(node: Node) -> Network:
    """The cluster's node-to-node network (``<project>_replication``); `ClusterError` when it is gone."""
    name = f"{node.cluster.name}_{REPLICATION_NETWORK}"
    networks = node.cluster.docker.networks.list(names=[name])
    if not networks:
        raise ClusterError(f"cluster {node.cluster.name!r} has no network {name!r}: is it up?")
    return networks[0]


def is_partitioned(node: Node) -> bool:
    """Whether `node` is cut off from the other nodes (not on the replication network)."""
    networks = node.container.attrs["NetworkSettings"]["Networks"] or {}
    return f"{node.cluster.name}_{REPLICATION_NETWORK}" not in networks


def partition(node: Node, *, clients: bool = False) -> None:
    """Cut `node` off from every other node (Docker network disconnect) and, with `clients`, from the host
    too (its published port). `heal` undoes it."""
    log.info("### Cutting node %r off from the other nodes", node.name)
    replication_network(node).disconnect(node.container)
    if clients:
        log.info("### Cutting node %r off from its clients", node.name)
        node.cluster.docker.networks.get(access_network_name(node)).disconnect(node.container)


def heal(node: Node) -> None:
    """Undo `partition` for `node`: back on the replication network (under its node name) and its own port.

    What to restore is read from the container itself, so a heal works from
    another process (``harness heal`` after ``harness partition``).
    """
    if is_partitioned(node):
        log.info("### Reconnecting node %r to the other nodes", node.name)
        replication_network(node).connect(node.container, aliases=[node.name])
    name = access_network_name(node)
    if name not in (node.container.attrs["NetworkSettings"]["Networks"] or {}):
        log.info("### Reconnecting node %r to its clients", node.name)
        node.cluster.docker.networks.get(name).connect(node.container)


def heal_all(cluster: Cluster) -> None:
    """Heal every node of `cluster` that is running (a partition may cover several)."""
    for node in cluster.nodes:
        if node.container.status in ("running", "paused"):
            heal(node)


@contextmanager
def partitioned(node: Node, *, clients: bool = False) -> Iterator[Node]:
    """`partition` for the block; healed afterwards, whatever happens."""
    partition(node, clients=clients)
    try:
        yield node
    finally:
        heal(node)


@contextmanager
def paused(node: Node) -> Iterator[Node]:
    """Freeze `node`'s container for the block (a hung server: TCP stays open, nothing answers)."""
    node.pause()
    try:
        yield node
    finally:
        if node.container.status == "paused":
            node.unpause()


@contextmanager
def replay_paused(node: Node) -> Iterator[Node]:
    """Pause WAL replay on a standby for the block (``pg_wal_replay_pause()``); resume it afterwards."""
    node.pause_replay()
    try:
        yield node
    finally:
        node.resume_replay()
