"""What a cluster is, before anything runs: its nodes and the compose variables that describe them.

`plan` turns `Cluster`'s arguments into a `Plan`: the compose services to start,
the standbys and subscribers added once they are up, each node's own settings,
and the variables compose.yaml reads. It checks every combination it is given
(an unknown topology, standbys where the topology has none, settings for a node
the cluster will not have) and raises `ClusterError` naming the argument.
Pure logic, unit-tested without Docker; `Cluster.__init__` only wires objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pgharness.constants import STANDBY_SOURCES, STORAGES
from pgharness.errors import ClusterError
from pgharness.quoting import Settings, read_sql, settings_lines

#: Named topologies: the compose services a cluster starts.
TOPOLOGIES: dict[str, tuple[str, ...]] = {
    # The manual's exercise 26-1: a primary and a streaming standby that also restores from the archive.
    "streaming": ("primary", "standby"),
    # Log shipping alone: the standby has restore_command and no primary_conninfo.
    "archive-only": ("primary", "archive-standby"),
    # A standby streaming through a physical replication slot, without the archive.
    "slot": ("primary", "slot-standby"),
    # Logical replication: the exercise's pair with wal_level = logical (a publisher and its standby), and
    # independent primaries as subscribers (subscriber, subscriber2, ...), added once it is up.
    "logical": ("primary", "standby"),
}
#: The nodes compose.yaml describes itself; their own settings go in variables named after them.
COMPOSE_NODES = ("primary", "standby", "archive-standby", "slot-standby")
#: A node's name: a DNS label, as other nodes reach it by this name.
NODE_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")


def variable(service: str, suffix: str) -> str:
    """compose.yaml's variable for a service: ``standby``, ``PORT`` -> ``STANDBY_PORT``."""
    return f"{service.upper().replace('-', '_')}_{suffix}"


@dataclass(frozen=True)
class Plan:
    """A cluster's shape and its compose variables (`plan`)."""

    #: The compose services ``compose up`` starts.
    services: tuple[str, ...]
    #: Streaming standbys beyond the first, added once the cluster is up: standby2, standby3, ...
    extra_standbys: tuple[str, ...] = ()
    #: Independent primaries added once the cluster is up (the logical topology): subscriber, subscriber2, ...
    subscribers: tuple[str, ...] = ()
    #: Settings of single nodes, by node name, as postgresql.conf text.
    node_settings: Mapping[str, str] = field(default_factory=dict)
    #: The variables compose.yaml reads.
    variables: Mapping[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node the cluster has once started, in the order they start."""
        return (*self.services, *self.extra_standbys, *self.subscribers)


def parse_size(text: str | int, what: str) -> int:
    """Bytes from ``64MB``, ``512m``, ``1GB`` or a number of bytes, at least 16MB (less starts nothing);
    `ValueError` naming `what` otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([kmg]?)b?\s*", str(text).lower())
        if not m:
            raise ValueError(f"{what} {text!r}: a size such as 64MB or 1GB")
        size = int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2)]
    if size < 16 << 20:
        raise ValueError(f"{what} {text!r}: at least 16MB")
    return size


def check_shape(*, topology: str, standbys: object, subscribers: object, compose_services: Sequence[str]) -> None:
    """Refuse a topology the harness does not have and counts it cannot start (`ClusterError` naming the
    argument), as the command line refuses its flags."""
    if not compose_services and topology not in TOPOLOGIES:
        raise ClusterError(f"unknown topology {topology!r}; the topologies: {', '.join(TOPOLOGIES)}")
    for name, count in (("standbys", standbys), ("subscribers", subscribers)):
        if isinstance(count, bool) or not isinstance(count, int):
            raise ClusterError(f"{name}={count!r}: a whole number, such as 1")
    assert isinstance(standbys, int)
    assert isinstance(subscribers, int)
    if standbys < 0 or (standbys != 1 and topology not in ("streaming", "logical")):
        raise ClusterError(f"standbys={standbys}: a streaming topology has 0 or more standbys")
    if subscribers < 0 or (subscribers != 1 and topology != "logical"):
        raise ClusterError(f"subscribers={subscribers}: only the logical topology has subscribers")


def check_choice(argument: str, value: str, choices: Sequence[str]) -> None:
    """`ClusterError` naming `argument` when `value` is none of `choices`."""
    if value not in choices:
        raise ClusterError(f"{argument} {value!r}: one of {', '.join(choices)}")


def check_ports(ports: Mapping[str, object], services: Sequence[str]) -> None:
    """Refuse fixed host ports for a node that is no compose service of the cluster (nodes added later get
    ephemeral ports), and ports outside 1-65535 (`ClusterError` naming the argument)."""
    for service, port in ports.items():
        if service not in services:
            raise ClusterError(
                f"ports for {service!r}: not a compose service of this cluster (its services: "
                f"{', '.join(services)}); nodes added later get ephemeral ports"
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ClusterError(f"ports[{service!r}]={port!r}: a port number from 1 to 65535")


def _own_settings(node_settings: Mapping[str, Settings], shaped: Plan) -> dict[str, str]:
    """Each node's own settings as postgresql.conf text; `ClusterError` for a name that is no node of `shaped`."""
    own = {node: settings_lines(lines) for node, lines in node_settings.items()}
    for node in own:
        if not NODE_NAME.fullmatch(node):
            raise ClusterError(f"node_settings for {node!r}: not a node name (lower-case letters, digits, '-')")
    unknown = sorted(set(own) - set(shaped.nodes))
    if unknown:
        raise ClusterError(
            f"node_settings for {', '.join(map(repr, unknown))}: no such node in this cluster (its nodes: "
            f"{', '.join(shaped.nodes)}); a node added later takes its own: add_node(name, settings=...)"
        )
    return own


def plan(
    *,
    topology: str = "streaming",
    standbys: int = 1,
    subscribers: int = 1,
    compose_services: Sequence[str] = (),
    ports: Mapping[str, int] | None = None,
    settings: Settings | None = None,
    node_settings: Mapping[str, Settings] | None = None,
    init_sql: str | Path | None = None,
    storage: str = "volume",
    standby_source: str = "template",
    healthchecks: bool = True,
    base: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """The `Plan` of a cluster from `Cluster`'s arguments; `base` holds the variables the caller resolved
    (image, credentials, owner, TLS files), `env` the caller's own compose variables (they win over all).
    Raises `ClusterError` for a combination the harness cannot start, naming the argument."""
    check_shape(topology=topology, standbys=standbys, subscribers=subscribers, compose_services=compose_services)
    check_choice("storage", storage, STORAGES)
    check_choice("standby_source", standby_source, STANDBY_SOURCES)
    services = ("primary",) if standbys == 0 else tuple(compose_services or TOPOLOGIES[topology])
    check_ports(ports or {}, services)
    extra = tuple(f"standby{i}" for i in range(2, standbys + 1))
    subs = tuple(("subscriber" if i == 1 else f"subscriber{i}") for i in range(1, subscribers + 1))
    shaped = Plan(services, extra, subs if topology == "logical" else ())

    own = _own_settings(node_settings or {}, shaped)
    variables = {
        **(base or {}),
        # Empty means "an ephemeral port" in compose.yaml's ${PRIMARY_PORT-5433}.
        "PRIMARY_PORT": "",
        "STANDBY_PORT": "",
        # The harness asks the nodes over SQL whether they are ready; Docker's healthchecks (each one a
        # `docker exec`) need not run ten times a second while a node starts, nor every 5 s after: the
        # status `docker ps` shows is still set at start-up, and kept up to date every 30 s.
        "PGHARNESS_HEALTH_START_INTERVAL": "1s",
        "PGHARNESS_HEALTH_INTERVAL": "30s",
        "STANDBY_SOURCE": standby_source,
        "PGHARNESS_HEALTH_DISABLE": "false" if healthchecks else "true",
    }
    variables.update({variable(service, "PORT"): str(port) for service, port in (ports or {}).items()})
    variables.update({variable(node, "SETTINGS"): own.get(node, "") for node in COMPOSE_NODES})
    everyone = [settings_lines(settings)] if settings else []
    if topology == "logical":
        everyone.insert(0, "wal_level = logical")
    if everyone:
        variables["PGHARNESS_EXTRA_SETTINGS"] = "\n".join(everyone)
    if init_sql:
        variables["PGHARNESS_INIT_SQL"] = read_sql(init_sql)
    variables.update(env or {})
    return Plan(shaped.services, shaped.extra_standbys, shaped.subscribers, own, variables)
