"""Recovery targets and replication lag: the pure logic of point-in-time recovery and lag reports.

A `RecoveryTarget` is validated here, before any container starts, so that a
malformed LSN or timestamp is one clear error rather than a server that will
not start.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Literal

from pgharness.errors import RecoveryTargetError
from pgharness.lsn import Lsn

TargetKind = Literal["name", "xid", "lsn", "time", "immediate"]
Timeline = int | Literal["latest", "current"]
TargetAction = Literal["promote", "pause", "shutdown"]
ACTIONS: tuple[TargetAction, ...] = ("promote", "pause", "shutdown")


def _integer(text: int | str, minimum: int, not_integer: str, too_small: str) -> int:
    """`text` as an integer of at least `minimum`; else `RecoveryTargetError` with the message that fits."""
    try:
        value = int(text)
    except ValueError:
        raise RecoveryTargetError(not_integer) from None
    if value < minimum:
        raise RecoveryTargetError(too_small)
    return value


@dataclass(frozen=True)
class RecoveryTarget:
    """Where a point-in-time recovery stops: ``recovery_target_name``/``_xid``/``_lsn``/``_time``, or ``immediate``."""

    kind: TargetKind
    value: str = ""
    #: ``recovery_target_timeline``: the timeline recovery follows to the target; None leaves the server's
    #: default (``latest`` since PostgreSQL 12). `on_timeline` sets it.
    timeline: Timeline | None = None

    @classmethod
    def name(cls, name: str) -> RecoveryTarget:
        """A restore point made with ``pg_create_restore_point(name)``."""
        if not name or len(name) > 63:
            raise RecoveryTargetError(f"restore point name {name!r}: 1 to 63 characters")
        return cls("name", name)

    @classmethod
    def xid(cls, xid: int | str) -> RecoveryTarget:
        """A transaction id (``txid_current()``); recovery stops after (or, not inclusive, before) its commit."""
        not_one = f"not a transaction id: {xid!r}"
        value = _integer(xid, 3, f"{not_one} (a positive integer, e.g. 750)", f"{not_one} (normal xids start at 3)")
        return cls("xid", str(value))

    @classmethod
    def lsn(cls, lsn: Lsn | str) -> RecoveryTarget:
        """A WAL position, ``X/Y``."""
        try:
            value = lsn if isinstance(lsn, Lsn) else Lsn.parse(lsn)
        except ValueError as e:
            raise RecoveryTargetError(str(e)) from None
        return cls("lsn", str(value))

    @classmethod
    def time(cls, when: dt.datetime | str) -> RecoveryTarget:
        """A commit timestamp; it must carry its time zone (the server's may differ from yours)."""
        if isinstance(when, str):
            try:
                when = dt.datetime.fromisoformat(when)
            except ValueError:
                raise RecoveryTargetError(
                    f"not a timestamp: {when!r} (ISO 8601 with a time zone, e.g. 2026-11-25T17:00:00+00:00)"
                ) from None
        if when.tzinfo is None:
            raise RecoveryTargetError(f"timestamp {when.isoformat()} has no time zone: add one, e.g. +00:00")
        return cls("time", when.isoformat())

    @classmethod
    def immediate(cls) -> RecoveryTarget:
        """Stop as soon as the backup is consistent."""
        return cls("immediate")

    @classmethod
    def parse(cls, text: str) -> RecoveryTarget:
        """Parse ``name:N``, ``xid:N``, ``lsn:X/Y``, ``time:TIMESTAMP`` or ``immediate`` (the CLI's form)."""
        if text == "immediate":
            return cls.immediate()
        kind, sep, value = text.partition(":")
        makers = {"name": cls.name, "xid": cls.xid, "lsn": cls.lsn, "time": cls.time}
        if not sep or kind not in makers:
            raise RecoveryTargetError(
                f"recovery target {text!r}: use name:N, xid:N, lsn:X/Y, time:TIMESTAMP or immediate"
            )
        return makers[kind](value)

    def on_timeline(self, timeline: Timeline | str) -> RecoveryTarget:
        """This target, reached along `timeline` (``recovery_target_timeline``): a timeline id, ``"latest"``
        (follow the newest timeline whose history the archive holds) or ``"current"`` (the backup's own).
        A target on an old timeline after a failover may lie in WAL that only the new timeline's segment
        holds (the old one ends in ``.partial``): that needs the history of the timeline that has it.
        `RecoveryTargetError` for anything else."""
        if timeline in ("latest", "current"):
            return replace(self, timeline=timeline)
        refusal = f"timeline {timeline!r}: a timeline id (1 or more), latest or current"
        return replace(self, timeline=_integer(timeline, 1, refusal, refusal))

    def settings(self) -> dict[str, str]:
        """The postgresql.conf settings that come with the target besides `setting` (its timeline)."""
        return {} if self.timeline is None else {"recovery_target_timeline": str(self.timeline)}

    def env(self) -> str:
        """The form the node image takes in RECOVERY_TARGET."""
        return "immediate" if self.kind == "immediate" else f"{self.kind}:{self.value}"

    def setting(self) -> tuple[str, str]:
        """The postgresql.conf setting and value this target becomes."""
        if self.kind == "immediate":
            return "recovery_target", "immediate"
        return f"recovery_target_{self.kind}", self.value


@dataclass(frozen=True)
class Lag:
    """How far a standby is behind its primary."""

    standby: str
    #: primary's current write LSN minus the standby's replay LSN; None when unknown (the standby has
    #: replayed nothing yet, or reports no position): unknown is never "caught up"
    bytes: int | None
    replay_delay: float | None  #: seconds since the last transaction the standby replayed was committed
    write_lag: float | None  #: pg_stat_replication.write_lag, in seconds (None when idle)
    flush_lag: float | None
    replay_lag: float | None

    def within(self, max_bytes: int, max_seconds: float | None = None) -> bool:
        """Whether the standby is known to be at most `max_bytes` (and `max_seconds`) behind.

        An unknown byte count is never within a bound: a standby that has
        replayed nothing yet is not "0 bytes behind".
        """
        if self.bytes is None or self.bytes > max_bytes:
            return False
        return max_seconds is None or self.replay_delay is None or self.replay_delay <= max_seconds

    def __str__(self) -> str:
        def secs(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f} s"

        behind = "an unknown number of bytes" if self.bytes is None else f"{self.bytes} bytes"
        return (
            f"{self.standby}: {behind} behind, last replayed commit {secs(self.replay_delay)} old "
            f"(write_lag {secs(self.write_lag)}, flush_lag {secs(self.flush_lag)}, replay_lag {secs(self.replay_lag)})"
        )
