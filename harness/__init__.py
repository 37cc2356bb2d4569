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
    # `import X as X`: each name is this package's API, re-exported for type checkers (mypy --strict).
    from harness.cluster import Cluster as Cluster
    from harness.errors import (
        BackupError as BackupError,
        ClusterError as ClusterError,
        DockerUnavailable as DockerUnavailable,
        FailoverError as FailoverError,
        HarnessError as HarnessError,
        ImageError as ImageError,
        PortInUse as PortInUse,
        QueryTimeout as QueryTimeout,
        QuotingError as QuotingError,
        RecoveryTargetError as RecoveryTargetError,
        SplitBrain as SplitBrain,
        UnknownEnvironment as UnknownEnvironment,
        UnknownNode as UnknownNode,
        UnsupportedVersion as UnsupportedVersion,
        WaitTimeout as WaitTimeout,
    )
    from harness.lsn import Lsn as Lsn, walfile_name as walfile_name
    from harness.node import Node as Node
    from harness.recovery import Lag as Lag, RecoveryTarget as RecoveryTarget
    from harness.service import Service as Service
    from harness.tls import TlsFiles as TlsFiles
    from harness.wait import Deadline as Deadline, poll_until as poll_until

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
