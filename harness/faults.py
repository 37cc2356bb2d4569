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
``with degraded(node, loss=, rate=, delay=)``     ``heal(node)``, the block       ``degrade NODE --loss/--rate``
``with starved(node, cpus=, memory=)``            ``feed(node)``, the block       ``starve NODE --cpus/--memory``
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
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from docker.models.networks import Network
from psycopg.conninfo import conninfo_to_dict

from pgharness.errors import ClusterError
from pgharness.lsn import Lsn
from pgharness.topology import parse_size
from pgharness.wait import Deadline

if TYPE_CHECKING:
    from pgharness.cluster import Cluster
    from pgharness.node import Node

log = logging.getLogger("pgharness")


#: The nftables table of a partition, in the node's own network namespace.
PARTITION_TABLE = "pgharness_partition"


def replication_network(node: Node) -> Network:
    """The cluster's network (``<project>_replication``); `ClusterError` when it is gone."""
    name = node.cluster.network_name
    networks = node.cluster.docker.networks.list(names=[name])
    if not networks:
        raise ClusterError(f"cluster {node.cluster.name!r} has no network {name!r}: is it up?")
    return networks[0]


def _filter_table(
    name: str, priority: int, subnet: str, gateway: str, *, clients: bool, header: str
) -> tuple[list[str], list[tuple[str, str]]]:
    """The start of a node's packet filter `name` (nft commands: the table, with `header` as its comment,
    and an inbound and an outbound chain at `priority` that let loopback through and, unless `clients`, the
    host's side `gateway`), and each chain with the match its rules take: the other addresses of `subnet`,
    or everything with `clients`. `ValueError` for a subnet or gateway that is no address."""
    ipaddress.ip_network(subnet)  # ValueError on anything but an address range
    ipaddress.ip_address(gateway)
    table = f"ip {name}"
    commands = [f'add table {table} {{ comment "{header}" ; }}' if header else f"add table {table}"]
    chains = []
    for chain, hook, direction, interface in (
        ("inbound", "input", "saddr", "iifname"),
        ("outbound", "output", "daddr", "oifname"),
    ):
        commands += [
            f"add chain {table} {chain} {{ type filter hook {hook} priority {priority} ; policy accept ; }}",
            f'add rule {table} {chain} {interface} "lo" accept',
        ]
        if not clients:
            commands.append(f"add rule {table} {chain} ip {direction} {gateway} accept")
        chains.append((chain, "" if clients else f"ip {direction} {subnet} "))
    return commands, chains


def partition_rules(subnet: str, gateway: str, *, clients: bool) -> str:
    """The nft commands that cut a node off from every other address of its network `subnet` (`gateway`, the
    host's side, excepted: published ports keep working) or, with `clients`, from everything but loopback.

    Refused rather than silently dropped: a TCP segment that arrives gets a reset (the one kind of packet
    let out), so a peer that sends on an old connection loses it at once, and the node's own attempts fail
    at once; other traffic in is dropped. One nft call is one transaction.
    """
    commands, chains = _filter_table(PARTITION_TABLE, -10, subnet, gateway, clients=clients, header="")
    for chain, match in chains:
        if chain == "outbound":
            # The resets the rules below send, to the peer or to the node's own socket.
            commands.append(f"add rule ip {PARTITION_TABLE} {chain} tcp flags & rst == rst accept")
        commands.append(f"add rule ip {PARTITION_TABLE} {chain} {match}meta l4proto tcp reject with tcp reset")
        commands.append(f"add rule ip {PARTITION_TABLE} {chain} {match}" + ("drop" if chain == "inbound" else "reject"))
    return " ; ".join(commands)


#: The nftables table of a degraded link (loss, rate), in the node's own network namespace.
DEGRADE_TABLE = "pgharness_degrade"
#: The kernel module that delay and jitter need (tc's netem queueing discipline).
NETEM_MODULE = "sch_netem"


@dataclass(frozen=True)
class Degradation:
    """How a node's links are degraded: `loss` (a percentage of packets dropped, each direction), `rate` (bits
    per second, each direction: the excess is dropped, as a policer does), `delay` and `jitter` (milliseconds
    added to each packet the node sends; they need the kernel's sch_netem). `clients` widens it from the
    replication links (the other nodes) to every link but loopback (the host's clients too)."""

    loss: float = 0.0
    rate: int | None = None
    delay: float = 0.0
    jitter: float = 0.0
    clients: bool = False

    def __str__(self) -> str:
        parts = []
        if self.loss:
            parts.append(f"loss {self.loss:g}%")
        if self.rate:
            parts.append(f"rate {format_rate(self.rate)}")
        if self.delay:
            parts.append(f"delay {self.delay:g}ms" + (f" ±{self.jitter:g}ms" if self.jitter else ""))
        if self.clients:
            parts.append("clients too")
        return ", ".join(parts) or "nothing"


_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}


def parse_loss(text: str | float) -> float:
    """A loss percentage: ``10%``, ``10``, ``0.5%`` (0 to 100); `ValueError` otherwise."""
    try:
        value = float(str(text).strip().removesuffix("%"))
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise ValueError(f"loss {text!r}: a percentage from 0 to 100, such as 10%")
    return value


def parse_rate(text: str | int) -> int:
    """A link rate in bits per second: ``1mbit``, ``512kbit``, ``2gbit``, or a number of bits; `ValueError`
    otherwise (and for less than 8 kbit: nothing replicates below that)."""
    if isinstance(text, int):
        bits = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)\s*", text.lower())
        if not m:
            raise ValueError(f"rate {text!r}: bits per second such as 1mbit, 512kbit or 10mbit")
        bits = int(float(m.group(1)) * _RATE_UNITS[m.group(2)])
    if bits < 8000:
        raise ValueError(f"rate {text!r}: at least 8kbit")
    return bits


def parse_ms(text: str | float, what: str) -> float:
    """Milliseconds from ``50ms``, ``0.2s`` or a number of milliseconds; `ValueError` otherwise."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", text)
        if not m:
            raise ValueError(f"{what} {text!r}: a duration such as 50ms or 0.2s")
        value = float(m.group(1)) * (1000 if m.group(2) == "s" else 1)
    if value < 0 or value > 60_000:
        raise ValueError(f"{what} {text!r}: from 0 to 60s")
    return value


def format_rate(bits: int) -> str:
    for unit in ("gbit", "mbit", "kbit"):
        if bits >= _RATE_UNITS[unit] and bits % _RATE_UNITS[unit] == 0:
            return f"{bits // _RATE_UNITS[unit]}{unit}"
    return f"{bits}bit"


def degrade_rules(subnet: str, gateway: str, how: Degradation) -> str:
    """The nft commands that degrade a node's links: drop `how.loss` percent of the packets (``numgen
    random``) and police each direction to `how.rate` (``limit rate over``: the excess is dropped, so TCP
    slows to the rate). On the replication links (the other nodes of `subnet`; the host's side, `gateway`,
    untouched) or, with `how.clients`, on every link but loopback. Silently: nothing is refused, so a
    connection that loses everything stays open until a timeout notices. One nft call is one transaction.
    """
    table = f"ip {DEGRADE_TABLE}"
    commands, chains = _filter_table(DEGRADE_TABLE, -5, subnet, gateway, clients=how.clients, header=f"{how}")
    for chain, match in chains:
        if how.loss >= 100:
            commands.append(f"add rule {table} {chain} {match}drop")  # a black hole
        elif how.loss:
            # Per ten thousand: 0.01% steps.
            commands.append(f"add rule {table} {chain} {match}numgen random mod 10000 < {round(how.loss * 100)} drop")
        if how.rate:
            per_second = max(how.rate // 8, 1)
            burst = max(per_second // 10, 1514)
            commands.append(
                f"add rule {table} {chain} {match}limit rate over {per_second} bytes/second burst {burst} bytes drop"
            )
    return " ; ".join(commands)


def _nft(node: Node, *argv: str) -> str:
    """Run ``nft`` as root in `node` (its network namespace); a clear `ClusterError` when the image has none."""
    if node.container.status != "running":
        raise ClusterError(f"node {node.name!r} is {node.container.status}: a packet filter needs it running")
    try:
        return node.exec("nft", *argv, user="root")
    except ClusterError as e:
        # Docker's own words for a missing binary (exit 126); nothing else tells it from nft's errors.
        if "executable file not found" in str(e):
            raise ClusterError(
                f"node {node.name!r} has no nft: partitions and degraded links need nftables in the node image "
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
    subnet, gateway = _network_range(node)
    log.info("### Cutting node %r off from the other nodes%s", node.name, " and its clients" if clients else "")
    _nft(node, partition_rules(subnet, gateway, clients=clients))
    _ACTIVE[(node.cluster.name, node.name)] = "partitioned" + (" (clients too)" if clients else "")


#: The faults this process has switched on and not undone: (cluster, node) -> what (a shared cluster's reset
#: reports one a test left behind without asking the node).
_ACTIVE: dict[tuple[str, str], str] = {}


def active(cluster: Cluster, *, forget: bool = False) -> dict[str, str]:
    """The link faults this process switched on in `cluster` and has not undone: node name -> what. With
    `forget`, they are forgotten too (the cluster's containers are about to be made afresh)."""
    found = {node: what for (name, node), what in _ACTIVE.items() if name == cluster.name}
    if forget:
        for node in found:
            _ACTIVE.pop((cluster.name, node), None)
    return found


def _interface_of(node: Node) -> str:
    """The node's interface on the replication network (``eth0`` for a compose service)."""
    return node.exec("sh", "-c", "ip -o -4 route show default | awk '{print $5; exit}'", user="root").strip() or "eth0"


def _netem(node: Node, subnet: str, gateway: str, how: Degradation) -> None:
    """tc's netem on the node's interface: `how.delay` (± `how.jitter`) on what it sends to the other nodes
    (a prio queue whose third band is netem, chosen by destination; the host's side, `gateway`, is left out)
    or, with `how.clients`, on everything it sends. One line naming what is missing when the kernel has no
    sch_netem or the image no tc."""
    jitter = [f"{how.jitter:g}ms"] if how.jitter else []
    device = "eth0"
    try:
        device = _interface_of(node)
        node.exec("tc", "qdisc", "add", "dev", device, "root", "handle", "1:", "prio", user="root")
        node.exec("tc", "qdisc", "add", "dev", device, "parent", "1:3", "handle", "30:", "netem",
                  "delay", f"{how.delay:g}ms", *jitter, user="root")  # fmt: skip
        rules = [("0.0.0.0/0", "1:3")] if how.clients else [(f"{gateway}/32", "1:2"), (subnet, "1:3")]
        for priority, (destination, flow) in enumerate(rules, start=1):
            node.exec("tc", "filter", "add", "dev", device, "parent", "1:", "protocol", "ip", "prio", str(priority),
                      "u32", "match", "ip", "dst", destination, "flowid", flow, user="root")  # fmt: skip
    except ClusterError as e:
        with suppress(ClusterError):
            node.exec("tc", "qdisc", "del", "dev", device, "root", user="root")
        text = str(e)
        if "executable file not found" in text:
            raise ClusterError(
                f"node {node.name!r} has no tc: delay and jitter need iproute2 in the node image (the harness's "
                "own images carry it)"
            ) from None
        if "qdisc kind is unknown" in text or "No such file or directory" in text:
            raise ClusterError(
                f"delay and jitter need the kernel's {NETEM_MODULE} module, which this kernel lacks: "
                "degrade with loss= and rate= here"
            ) from None
        raise


def _network_range(node: Node) -> tuple[str, str]:
    """The replication network's IPv4 subnet and gateway (the host's side)."""
    network = replication_network(node)
    config = (network.attrs.get("IPAM", {}).get("Config") or [{}])[0]
    subnet, gateway = config.get("Subnet"), config.get("Gateway")
    if not subnet or not gateway:
        raise ClusterError(f"network {network.name!r} shows no IPv4 subnet and gateway: {config!r}")
    return str(subnet), str(gateway)


def degrade(node: Node, how: Degradation) -> None:
    """Degrade `node`'s links as `how` says (loss, rate, delay and jitter; its replication links, or every
    link with ``how.clients``): packets are dropped or held, never refused, so a connection that loses
    everything stays open until a timeout ends it. `heal` (or a restart of its container) undoes it. One
    degradation at a time: heal before another."""
    if _ACTIVE.get((node.cluster.name, node.name), "").startswith("degraded"):
        raise ClusterError(
            f"node {node.name!r} is degraded already ({_ACTIVE[(node.cluster.name, node.name)]}): heal it first"
        )
    subnet, gateway = _network_range(node)
    log.info("### Degrading node %r's links: %s", node.name, how)
    if how.delay or how.jitter:
        _netem(node, subnet, gateway, how)
    if how.loss or how.rate:
        _nft(node, degrade_rules(subnet, gateway, how))
    _ACTIVE[(node.cluster.name, node.name)] = f"degraded ({how})"


def degradation_of(node: Node) -> str | None:
    """What degrades `node`'s links now, as the node itself holds it (its nft table's comment, its netem
    queue); None when nothing does or the node is not running. Works from another process."""
    if node.container.status != "running":
        return None
    found = []
    listed = node.container.exec_run(["nft", "list", "table", "ip", DEGRADE_TABLE], user="root")
    if listed.exit_code == 0:
        assert isinstance(listed.output, bytes)
        m = re.search(r'comment "([^"]*)"', listed.output.decode(errors="replace"))
        found.append(m.group(1) if m else "loss or rate")
    queues = node.container.exec_run(["tc", "qdisc", "show"], user="root")
    if queues.exit_code == 0 and b"netem" in (queues.output or b""):
        assert isinstance(queues.output, bytes)
        m = re.search(r"delay (\S+)(?:\s+(\S+))?", queues.output.decode(errors="replace"))
        found.append(f"delay {m.group(1)}" + (f" ±{m.group(2)}" if m and m.group(2) else "") if m else "netem")
    return "; ".join(found) or None


def heal(node: Node, *, wait: bool = True, timeout: float | None = None) -> None:
    """Undo `partition`, `degrade` and `starve` for `node` (nothing to do when none applies, or it is not
    running); with `wait`, return only once the cluster replicates again (`wait_replicating`, within
    `timeout` seconds).

    The filters live in the node itself, so a heal works from another process
    (``pgharness heal`` after ``pgharness partition`` or ``pgharness degrade``).
    """
    undone = False
    if is_partitioned(node):
        log.info("### Reconnecting node %r to the other nodes and its clients", node.name)
        _nft(node, "delete", "table", "ip", PARTITION_TABLE)
        undone = True
    if node.container.status == "running":
        if node.container.exec_run(["nft", "list", "table", "ip", DEGRADE_TABLE], user="root").exit_code == 0:
            log.info("### Restoring node %r's links", node.name)
            _nft(node, "delete", "table", "ip", DEGRADE_TABLE)
            undone = True
        queues = node.container.exec_run(["tc", "qdisc", "show"], user="root")
        if queues.exit_code == 0 and b"netem" in (queues.output or b""):
            node.exec("tc", "qdisc", "del", "dev", _interface_of(node), "root", user="root")
            undone = True
    if node.container.status in ("running", "paused") and starvation_of(node):
        feed(node)
    _ACTIVE.pop((node.cluster.name, node.name), None)
    if undone and wait:
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
def degraded(
    node: Node,
    *,
    loss: str | float = 0,
    rate: str | int | None = None,
    delay: str | float = 0,
    jitter: str | float = 0,
    clients: bool = False,
    wait: bool = True,
) -> Iterator[Node]:
    """`degrade` for the block: `loss` (``"10%"`` or 10), `rate` (``"1mbit"``), `delay` and `jitter`
    (``"50ms"``; they need the kernel's sch_netem); healed afterwards, whatever happens, and (with `wait`)
    the cluster replicating again. `ValueError` for a value out of range."""
    how = Degradation(
        loss=parse_loss(loss),
        rate=parse_rate(rate) if rate is not None else None,
        delay=parse_ms(delay, "delay"),
        jitter=parse_ms(jitter, "jitter"),
        clients=clients,
    )
    degrade(node, how)
    try:
        yield node
    finally:
        heal(node, wait=wait)


def parse_memory(text: str | int) -> int:
    """Bytes from ``64MB``, ``512m``, ``1GB`` or a number of bytes; at least 16MB; `ValueError` otherwise."""
    return parse_size(text, "memory")


def parse_cpus(text: str | float) -> float:
    """A share of CPUs: ``0.1`` (a tenth of one), ``2``; from 0.01 on; `ValueError` otherwise."""
    try:
        cpus = float(text)
    except ValueError:
        cpus = -1.0
    if cpus < 0.01:
        raise ValueError(f"cpus {text!r}: a share of CPUs such as 0.1 (at least 0.01)")
    return cpus


def starve(node: Node, *, cpus: float | None = None, memory: int | None = None) -> None:
    """Limit `node`'s container to `cpus` CPUs (a CFS quota: a loop gets that share of one CPU per
    CPU) and `memory` bytes (swap included: past it the kernel's OOM killer ends the biggest process,
    usually a backend), through the engine's update of the running container: nothing restarts. `heal`
    (or `feed`) undoes it."""
    if cpus is None and memory is None:
        raise ClusterError("starve needs cpus= or memory=")
    what = ", ".join(part for part in (
        f"{cpus:g} CPUs" if cpus is not None else "", f"{memory >> 20}MB" if memory is not None else ""
    ) if part)  # fmt: skip
    log.info("### Starving node %r: %s", node.name, what)
    container = node.container
    if cpus is not None:
        container.update(cpu_period=100_000, cpu_quota=max(1000, round(cpus * 100_000)))
    if memory is not None:
        container.update(mem_limit=memory, memswap_limit=memory)
    _ACTIVE[(node.cluster.name, node.name)] = f"starved ({what})"


def starvation_of(node: Node) -> str | None:
    """The CPU and memory limits on `node`'s container that `starve` set, as the engine holds them; None."""
    container = node.container
    container.reload()
    host = container.attrs.get("HostConfig") or {}
    quota, period, memory = host.get("CpuQuota") or 0, host.get("CpuPeriod") or 0, host.get("Memory") or 0
    parts = []
    if quota > 0 and period > 0:
        parts.append(f"{quota / period:g} CPUs")
    if 0 < memory < _engine_memory(node):
        parts.append(f"{memory >> 20}MB")
    return ", ".join(parts) or None


def _engine_memory(node: Node) -> int:
    return int(node.cluster.docker.info().get("MemTotal") or 1 << 40)


def feed(node: Node) -> None:
    """Undo `starve`: no CPU quota; the memory limit raised to the engine's whole memory (a limit, once set,
    can be raised but not removed on every engine)."""
    container = node.container
    container.reload()
    host = container.attrs.get("HostConfig") or {}
    if (host.get("CpuQuota") or 0) > 0:
        container.update(cpu_quota=-1)
    total = _engine_memory(node)
    if 0 < (host.get("Memory") or 0) < total:
        container.update(mem_limit=total, memswap_limit=2 * total)  # swap first: the kernel wants swap >= memory
    if _ACTIVE.get((node.cluster.name, node.name), "").startswith("starved"):
        _ACTIVE.pop((node.cluster.name, node.name), None)


def oom_killed(node: Node) -> bool:
    """Whether the kernel's OOM killer has ended a process of `node`'s container since it started (the
    engine's ``OOMKilled``: a backend killed past `starve`'s memory limit counts, not only the postmaster)."""
    container = node.container
    container.reload()
    return bool((container.attrs.get("State") or {}).get("OOMKilled"))


@contextmanager
def starved(node: Node, *, cpus: str | float | None = None, memory: str | int | None = None) -> Iterator[Node]:
    """`starve` for the block (``cpus=0.1``, ``memory="64MB"``); fed afterwards, whatever happens.
    `ValueError` for a value out of range."""
    starve(
        node,
        cpus=parse_cpus(cpus) if cpus is not None else None,
        memory=parse_memory(memory) if memory is not None else None,
    )
    try:
        yield node
    finally:
        feed(node)


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
