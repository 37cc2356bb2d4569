import datetime as dt

import pytest

from pgharness.errors import RecoveryTargetError
from pgharness.lsn import Lsn
from pgharness.recovery import Lag, RecoveryTarget


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("name:before-delete", ("recovery_target_name", "before-delete")),
        ("xid:750", ("recovery_target_xid", "750")),
        ("lsn:0/3000060", ("recovery_target_lsn", "0/3000060")),
        ("time:2026-11-25T17:00:00+00:00", ("recovery_target_time", "2026-11-25T17:00:00+00:00")),
        ("immediate", ("recovery_target", "immediate")),
    ],
)
def test_parse_and_render(text, setting):
    target = RecoveryTarget.parse(text)
    assert target.setting() == setting
    assert RecoveryTarget.parse(target.env()) == target


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("lsn:0/zz", "not an LSN"),
        ("lsn:3000060", "not an LSN"),
        ("time:yesterday", "not a timestamp"),
        ("time:2026-11-25T17:00:00", "has no time zone"),
        ("xid:-4", "normal xids start at 3"),
        ("xid:abc", "not a transaction id"),
        ("name:", "1 to 63 characters"),
        ("when:now", "use name:N, xid:N"),
        ("0/3000060", "use name:N, xid:N"),
    ],
)
def test_malformed_targets_are_refused_with_a_hint(text, hint):
    with pytest.raises(RecoveryTargetError, match=hint):
        RecoveryTarget.parse(text)


def test_typed_constructors():
    assert RecoveryTarget.lsn(Lsn.parse("1/0")).value == "1/0"
    when = dt.datetime(2026, 11, 25, 17, 0, tzinfo=dt.UTC)
    assert RecoveryTarget.time(when).value == "2026-11-25T17:00:00+00:00"


def test_lag_reads_well():
    lag = Lag("standby", 16384, 1.5, None, 0.002, 1.25)
    assert str(lag) == (
        "standby: 16384 bytes behind, last replayed commit 1.500 s old "
        "(write_lag n/a, flush_lag 0.002 s, replay_lag 1.250 s)"
    )


def test_unknown_lag_is_never_within_a_bound():
    # No replay position yet (NULL replay_lsn) is unknown, not "0 bytes behind".
    unknown = Lag("standby", None, None, None, None, None)
    assert not unknown.within(0)
    assert not unknown.within(10**12)
    assert "unknown number of bytes" in str(unknown)


def test_known_lag_is_within_its_bounds():
    lag = Lag("standby", 100, 2.0, None, None, None)
    assert lag.within(100)
    assert not lag.within(99)
    assert lag.within(100, max_seconds=2.0)
    assert not lag.within(100, max_seconds=1.0)


@pytest.mark.parametrize(("given", "value"), [(1, "1"), ("3", "3"), ("latest", "latest"), ("current", "current")])
def test_a_target_on_a_timeline_carries_recovery_target_timeline(given, value):
    target = RecoveryTarget.name("rp").on_timeline(given)
    assert target.settings() == {"recovery_target_timeline": value}
    assert target.setting() == ("recovery_target_name", "rp")
    assert RecoveryTarget.name("rp").settings() == {}  # the server's default, unchanged


@pytest.mark.parametrize("given", [0, "-1", "newest", "1.5"])
def test_a_timeline_that_is_no_timeline_is_refused(given):
    with pytest.raises(RecoveryTargetError, match="a timeline id"):
        RecoveryTarget.lsn("0/3000060").on_timeline(given)
