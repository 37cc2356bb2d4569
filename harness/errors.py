"""The harness's exceptions: one base class, one line that says what to do.

Every error the harness raises on purpose derives from `HarnessError`. Its
message is a single line naming what is wrong and what the user can do; the
command line prints it as it is, without a traceback.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class DockerUnavailable(HarnessError):
    """No Docker engine answers, or Compose v2 is missing."""


class ImageError(HarnessError):
    """The node image cannot be built or does not carry PostgreSQL."""


class UnsupportedVersion(HarnessError):
    """A PostgreSQL version outside the range the harness serves."""


class PortInUse(HarnessError):
    """A host port the environment should publish is already taken: `port` on `bind`, asked for `service`;
    the message ends with `remedy`, the way to choose another one in the caller's words."""

    def __init__(self, port: int, bind: str, service: str, remedy: str) -> None:
        super().__init__(
            f"port {port} on {bind} (for {service}) is already in use: stop what holds it "
            f"(another environment? see pgharness ls) or choose another {remedy}"
        )
        self.port, self.bind, self.service = port, bind, service

    def with_remedy(self, remedy: str) -> PortInUse:
        """The same error, its remedy in other words (the command line's flag, say)."""
        return PortInUse(self.port, self.bind, self.service, remedy)


class ClusterError(HarnessError):
    """A cluster could not be started, found or operated on."""


class StartFailed(ClusterError):
    """A cluster did not start (it was removed): the first line says why, in the failing node's or compose's
    own words; the nodes' states and log tails follow. In a test, the plugin reports it in that one line."""

    #: The harness's error that ended the start: a `WaitTimeout` when a node never became ready, a
    #: `ClusterError` when one exited, compose's failure... (None when it was not the harness's).
    stopped_by: HarnessError | None = None


class UnknownNode(ClusterError, KeyError):
    """A node name that the cluster does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackupError(HarnessError):
    """A backup, restore, dump or rebuild failed, or was refused (the rebuild guard rail)."""

    #: The whole output of the tool that failed (`Backups.run_tool`), when one did.
    output: str = ""


class ToolError(HarnessError):
    """A one-off container (`pgharness.tools`) failed: its tool exited non-zero, ran past its deadline, or
    could not start. ``output`` holds what it printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class UpgradeError(ClusterError):
    """A major upgrade refused or failed (pgharness.upgrade): pg_upgrade's own reason, and the cluster's state."""


class FailoverError(ClusterError):
    """A failover step failed: a rejoin that does not stream, a standby that cannot be re-pointed."""


class SplitBrain(HarnessError, AssertionError):
    """More than one node accepts writes."""


class QuotingError(HarnessError, ValueError):
    """A value that cannot be carried safely to where it must go (a NUL byte or a line break in a secret,
    a backup name that is not a plain file name)."""


class RecoveryTargetError(HarnessError, ValueError):
    """A recovery target that PostgreSQL would not accept."""


class NotConverged(HarnessError, AssertionError):
    """A node's data differs from the primary's once it has replayed everything (`pgharness.convergence`)."""


class EnvironmentBusy(ClusterError):
    """Another process is making or removing an environment of that name right now."""


class UnknownEnvironment(ClusterError):
    """An environment (compose project) name that the engine does not have."""


class WaitTimeout(HarnessError, TimeoutError):
    """A wait ran out of time.

    `what` is the condition that was awaited, `last_seen` the last value
    observed, and `log_tail` the recent log of the nodes involved.
    """

    def __init__(self, what: str, timeout: float, last_seen: object, log_tail: str = "") -> None:
        self.what = what
        self.timeout = timeout
        self.last_seen = last_seen
        self.log_tail = log_tail
        seen = repr(last_seen)
        if len(seen) > 500:
            seen = seen[:240] + " ... " + seen[-240:]
        message = f"timed out after {timeout:.1f} s waiting for {what}; last seen: {seen}"
        if log_tail:
            message += "\n" + log_tail
        super().__init__(message)


class QueryTimeout(WaitTimeout):
    """A statement (or a connection attempt) got no answer within its deadline: a frozen or hung node."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(what, timeout, "no answer")
