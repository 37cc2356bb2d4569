"""A PostgreSQL replication test harness.

Real PostgreSQL primaries, standbys and a shared WAL archive in containers,
described once in ``compose.yaml``; `Cluster` and `Node` drive them, `wait`
holds the deadline-bound waits, and the pytest plugin (``harness.pytest_plugin``)
gives tests fresh or shared clusters.
"""

from harness.cluster import Cluster
from harness.errors import (
    ClusterError,
    DockerUnavailable,
    HarnessError,
    ImageError,
    PortInUse,
    QueryTimeout,
    UnknownNode,
    UnsupportedVersion,
    WaitTimeout,
)
from harness.lsn import Lsn, walfile_name
from harness.node import Node
from harness.service import Service
from harness.tls import TlsFiles
from harness.wait import poll_until

__all__ = [
    "Cluster",
    "ClusterError",
    "DockerUnavailable",
    "HarnessError",
    "ImageError",
    "Lsn",
    "Node",
    "PortInUse",
    "QueryTimeout",
    "Service",
    "TlsFiles",
    "UnknownNode",
    "UnsupportedVersion",
    "WaitTimeout",
    "poll_until",
    "walfile_name",
]
