"""A degraded link's values and packet filter (`pgharness.faults`), without Docker."""

import pytest

from pgharness.faults import Degradation, degrade_rules, format_rate, parse_loss, parse_ms, parse_rate


@pytest.mark.parametrize(("text", "value"), [("10%", 10.0), ("0.5%", 0.5), ("100", 100.0), (20, 20.0)])
def test_loss_is_a_percentage(text, value):
    assert parse_loss(text) == value


@pytest.mark.parametrize("text", ["150%", "-1%", "lots", ""])
def test_a_loss_out_of_range_is_refused(text):
    with pytest.raises(ValueError, match="loss"):
        parse_loss(text)


@pytest.mark.parametrize(("text", "bits"), [("1mbit", 10**6), ("512kbit", 512_000), ("2.5mbit", 2_500_000)])
def test_rate_is_bits_per_second(text, bits):
    assert parse_rate(text) == bits
    assert parse_rate(format_rate(bits)) == bits


@pytest.mark.parametrize("text", ["1mb", "fast", "4kbit", "0bit"])
def test_a_rate_that_is_no_rate_or_too_slow_is_refused(text):
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_durations_are_milliseconds():
    assert parse_ms("50ms", "delay") == 50
    assert parse_ms("0.2s", "delay") == 200
    with pytest.raises(ValueError, match="jitter"):
        parse_ms("soon", "jitter")


def test_the_rules_drop_and_police_only_the_replication_links_and_never_refuse():
    rules = degrade_rules("172.30.0.0/16", "172.30.0.1", Degradation(loss=20, rate=10**6))
    assert 'comment "loss 20%, rate 1mbit"' in rules
    # Both directions: the other nodes' traffic is dropped at random (20.00%) and policed to 125 kB/s ...
    for direction in ("saddr", "daddr"):
        assert f"ip {direction} 172.30.0.0/16 numgen random mod 10000 < 2000 drop" in rules
        assert f"ip {direction} 172.30.0.0/16 limit rate over 125000 bytes/second" in rules
        # ... the host's side (its published port) and loopback untouched.
        assert f"ip {direction} 172.30.0.1 accept" in rules
    assert '"lo" accept' in rules
    # A black hole, not a refusal: nothing is rejected, so only a timeout notices.
    assert "reject" not in rules


def test_with_clients_every_link_but_loopback_is_degraded():
    rules = degrade_rules("172.30.0.0/16", "172.30.0.1", Degradation(loss=100, clients=True))
    assert "172.30.0.1 accept" not in rules
    # All lost: a plain drop (a black hole), in both directions.
    assert "add rule ip pgharness_degrade inbound drop" in rules
    assert "add rule ip pgharness_degrade outbound drop" in rules
    assert "numgen" not in rules
