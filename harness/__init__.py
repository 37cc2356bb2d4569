"""A PostgreSQL replication test harness.

Real PostgreSQL primaries, standbys and a shared WAL archive in containers,
described once in ``compose.yaml``. `Cluster` (``harness.cluster``) drives a
compose project; each server is a `Node` (``harness.node``) with its waits;
``cluster.archive`` and ``cluster.backups`` hold the archive and the backups;
``harness.failover`` plays the operator and ``harness.faults`` breaks things
on purpose; the pytest plugin (``harness.pytest_plugin``) gives tests fresh or
shared clusters. Every error derives from `HarnessError` (``harness.errors``).
"""

from harness.cluster import Cluster
from harness.errors import (
    BackupError,
    ClusterError,
    DockerUnavailable,
    FailoverError,
    HarnessError,
    ImageError,
    PortInUse,
    QueryTimeout,
    QuotingError,
    RecoveryTargetError,
    SplitBrain,
    UnknownEnvironment,
    UnknownNode,
    UnsupportedVersion,
    WaitTimeout,
)
from harness.lsn import Lsn, walfile_name
from harness.node import Node
from harness.recovery import Lag, RecoveryTarget
from harness.service import Service
from harness.tls import TlsFiles
from harness.wait import Deadline, poll_until

__all__ = [
    "BackupError",
    "Cluster",
    "ClusterError",
    "Deadline",
    "DockerUnavailable",
    "FailoverError",
    "HarnessError",
    "ImageError",
    "Lag",
    "Lsn",
    "Node",
    "PortInUse",
    "QueryTimeout",
    "QuotingError",
    "RecoveryTarget",
    "RecoveryTargetError",
    "Service",
    "SplitBrain",
    "TlsFiles",
    "UnknownEnvironment",
    "UnknownNode",
    "UnsupportedVersion",
    "WaitTimeout",
    "poll_until",
    "walfile_name",
]
