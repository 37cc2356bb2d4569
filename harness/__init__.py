"""A PostgreSQL replication test harness.

Real PostgreSQL primaries, standbys and a shared WAL archive in containers,
described once in ``compose.yaml``. `Cluster` (``pgharness.cluster``) drives a
compose project; each server is a `Node` (``pgharness.node``) with its waits;
``cluster.archive`` and ``cluster.backups`` hold the archive and the backups,
``cluster.tools`` runs one-off containers beside the nodes (``pgharness.tools``);
``pgharness.failover`` plays the operator and ``pgharness.faults`` breaks things
on purpose; the pytest plugin (``pgharness.pytest_plugin``) gives tests fresh or
shared clusters. Every error derives from `HarnessError` (``pgharness.errors``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # `import X as X`: each name is this package's API, re-exported for type checkers (mypy --strict).
    from pgharness.cluster import Cluster as Cluster
    from pgharness.errors import (
        BackupError as BackupError,
        ClusterError as ClusterError,
        DockerUnavailable as DockerUnavailable,
        EnvironmentBusy as EnvironmentBusy,
        FailoverError as FailoverError,
        HarnessError as HarnessError,
        ImageError as ImageError,
        NotConverged as NotConverged,
        PortInUse as PortInUse,
        QueryTimeout as QueryTimeout,
        QuotingError as QuotingError,
        RecoveryTargetError as RecoveryTargetError,
        SplitBrain as SplitBrain,
        StartFailed as StartFailed,
        ToolError as ToolError,
        UnknownEnvironment as UnknownEnvironment,
        UnknownNode as UnknownNode,
        UnsupportedVersion as UnsupportedVersion,
        UpgradeError as UpgradeError,
        WaitTimeout as WaitTimeout,
    )
    from pgharness.lsn import Lsn as Lsn, walfile_name as walfile_name
    from pgharness.node import Node as Node
    from pgharness.recovery import Lag as Lag, RecoveryTarget as RecoveryTarget
    from pgharness.service import Service as Service
    from pgharness.tls import TlsFiles as TlsFiles
    from pgharness.wait import Deadline as Deadline, poll_until as poll_until

#: Where each name of the package's API lives: imported when first used, so that a command that needs
#: little (``pgharness --help``) does not pay for Docker's and psycopg's imports.
_EXPORTS = {
    **dict.fromkeys(("Cluster",), "pgharness.cluster"),
    **dict.fromkeys(
        (
            "BackupError", "ClusterError", "DockerUnavailable", "EnvironmentBusy", "FailoverError", "HarnessError",
            "ImageError", "NotConverged", "PortInUse", "QueryTimeout", "QuotingError", "RecoveryTargetError",
            "SplitBrain", "StartFailed", "ToolError", "UnknownEnvironment", "UnknownNode", "UnsupportedVersion",
            "UpgradeError", "WaitTimeout",
        ),
        "pgharness.errors",
    ),
    **dict.fromkeys(("Lsn", "walfile_name"), "pgharness.lsn"),
    **dict.fromkeys(("Node",), "pgharness.node"),
    **dict.fromkeys(("Lag", "RecoveryTarget"), "pgharness.recovery"),
    **dict.fromkeys(("Service",), "pgharness.service"),
    **dict.fromkeys(("TlsFiles",), "pgharness.tls"),
    **dict.fromkeys(("Deadline", "poll_until"), "pgharness.wait"),
}  # fmt: skip


#: The package's API: every name it exports (each lives in the module `_EXPORTS` names).
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pgharness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
