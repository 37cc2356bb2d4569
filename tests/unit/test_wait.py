import itertools

import psycopg
import pytest

from pgharness.errors import WaitTimeout
from pgharness.wait import poll_until


class FakeNode:
    name = "standby"

    def logs(self, tail=30):
        return "LOG:  started streaming WAL\nLOG:  last line"


def test_returns_the_first_value_that_satisfies():
    counter = itertools.count()
    assert poll_until(lambda: next(counter), lambda v: v >= 3, what="three", interval=0) == 3


def test_transient_errors_are_retried():
    attempts = iter([psycopg.OperationalError("the database system is starting up"), "ok"])

    def probe():
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    assert poll_until(probe, what="ok", interval=0) == "ok"


def test_other_errors_propagate():
    def probe():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        poll_until(probe, what="never", interval=0)


def test_timeout_says_what_was_awaited_what_was_seen_and_the_log():
    with pytest.raises(WaitTimeout) as excinfo:
        poll_until(
            lambda: "0/3000000",
            lambda v: False,
            what="replay up to 0/3000060",
            timeout=0.05,
            interval=0.01,
            nodes=[FakeNode()],
        )
    e = excinfo.value
    assert e.what == "replay up to 0/3000060"
    assert e.last_seen == "0/3000000"
    assert "last line" in e.log_tail
    assert "replay up to 0/3000060" in str(e)
    assert "'standby'" in str(e)


def test_timeout_reports_the_last_transient_error():
    def probe():
        raise psycopg.OperationalError("connection refused")

    with pytest.raises(WaitTimeout) as excinfo:
        poll_until(probe, what="a connection", timeout=0.05, interval=0.01)
    assert "OperationalError" in str(excinfo.value.last_seen)


def test_failure_lines_skip_the_refusals_of_clients_during_start_up():
    from pgharness.wait import failure_lines

    lines = [
        "2026-11-25 20:11:28.400 UTC [60] XX000 FATAL:  recovery ended before configured recovery target was reached",
        "2026-11-25 20:11:28.535 UTC [65] 57P03 [unknown] FATAL:  the database system is in recovery mode",
        "2026-11-25 20:11:28.536 UTC [1] 00000 LOG:  startup process (PID 60) exited with exit code 1",
    ]
    assert failure_lines(lines) == [lines[0]]


class FakeClock:
    """`time` for pgharness.wait: monotonic() is what sleep() has added up; each pause is kept."""

    def __init__(self):
        self.now, self.pauses = 1000.0, []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    import pgharness.wait

    fake = FakeClock()
    monkeypatch.setattr(pgharness.wait, "time", fake)
    return fake


def test_backoff_probes_every_10_ms_at_first_then_a_quarter_of_the_time_waited_up_to_100_ms(clock):
    from pgharness.wait import backoff, poll_until

    start = clock.now
    assert poll_until(lambda: clock.now - start >= 3.0, what="three seconds", timeout=10, interval=backoff) is True
    assert clock.pauses[:3] == [0.01, 0.01, 0.01]
    assert clock.pauses == sorted(clock.pauses), clock.pauses
    assert max(clock.pauses) == pytest.approx(0.1)
    # Seen at most a quarter of the time waited late (10 ms at the start), and probed a few dozen times in
    # three seconds, not 120 (a probe every 10 ms for the first second).
    waited = 0.0
    for pause in clock.pauses:
        assert pause <= max(0.01, 0.25 * waited) + 1e-9
        waited += pause
    assert len(clock.pauses) < 45, len(clock.pauses)


def test_by_default_probes_come_every_10_ms_for_a_second_then_every_100_ms(clock):
    from pgharness.wait import poll_until

    start = clock.now
    poll_until(lambda: clock.now - start >= 1.5, what="a second and a half", timeout=10)
    assert set(clock.pauses[:99]) == {0.01}
    assert set(clock.pauses[101:]) == {0.1}
    assert 100 <= len(clock.pauses) <= 107, len(clock.pauses)


def test_a_wait_paces_from_its_own_start_not_its_deadlines(clock):
    from pgharness.wait import Deadline, backoff, poll_until

    for interval in (None, backoff):
        deadline = Deadline(60)
        clock.now += 5.0  # an earlier wait spent five seconds of the shared deadline
        clock.pauses.clear()
        answers = iter([False, False, True])
        poll_until(lambda answers=answers: next(answers), what="the third probe", deadline=deadline, interval=interval)
        assert clock.pauses == [0.01, 0.01], interval
