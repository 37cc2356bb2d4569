"""A PostgreSQL replication test harness.

Real PostgreSQL primaries, standbys and a shared WAL archive in containers,
described once in ``compose.yaml``. `Cluster` (``harness.cluster``) drives a
compose project; each server is a `Node` (``harness.node``) with its waits;
``cluster.archive`` and ``cluster.backups`` hold the archive and the backups;
``harness.failover`` plays the operator and ``harness.faults`` breaks things
on purpose; the pytest plugin (``harness.pytest_plugin``) gives tests fresh or
shared clusters. Every error derives from `HarnessError` (``harness.errors``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each name of the package's API lives: imported when first used, so that a command that needs
#: little (``harness --help``) does not pay for Docker's and psycopg's imports.
_EXPORTS = {
    **dict.fromkeys(("Cluster",), "harness.cluster"),
    **dict.fromkeys(
        (
            "BackupError", "ClusterError", "DockerUnavailable", "FailoverError", "HarnessError", "ImageError",
            "PortInUse", "QueryTimeout", "QuotingError", "RecoveryTargetError", "SplitBrain",
            "UnknownEnvironment", "UnknownNode", "UnsupportedVersion", "WaitTimeout",
        ),
        "harness.errors",
    ),
    **dict.fromkeys(("Lsn", "walfile_name"), "harness.lsn"),
    **dict.fromkeys(("Node",), "harness.node"),
    **dict.fromkeys(("Lag", "RecoveryTarget"), "harness.recovery"),
    **dict.fromkeys(("Service",), "harness.service"),
    **dict.fromkeys(("TlsFiles",), "harness.tls"),
    **dict.fromkeys(("Deadline", "poll_until"), "harness.wait"),
}  # fmt: skip


#: The package's API, for ``from harness import *`` and for type checkers (mypy --strict re-exports only these).
__all__ = [
    "BackupError", "Cluster", "ClusterError", "Deadline", "DockerUnavailable", "FailoverError", "HarnessError",
    "ImageError", "Lag", "Lsn", "Node", "PortInUse", "QueryTimeout", "QuotingError", "RecoveryTarget",
    "RecoveryTargetError", "Service", "SplitBrain", "TlsFiles", "UnknownEnvironment", "UnknownNode",
    "UnsupportedVersion", "WaitTimeout", "poll_until", "walfile_name",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
