"""The nft commands of a partition: what they let through, and that only addresses reach them."""

import pytest

from pgharness.faults import PARTITION_TABLE, partition_rules


def rules(**kwargs):
    return partition_rules("172.20.0.0/16", "172.20.0.1", **kwargs).split(" ; ")


def test_from_nodes_the_gateway_passes_and_the_rest_of_the_network_is_refused_both_ways():
    text = rules(clients=False)
    assert text[0] == f"add table ip {PARTITION_TABLE}"
    for chain, direction in (("inbound", "saddr"), ("outbound", "daddr")):
        mine = [r for r in text if f" {chain} " in r]
        accepted = [r for r in mine if r.endswith(" accept")]
        refused = [r for r in mine if r.endswith((" reject", " drop", " tcp reset"))]
        assert any(f"ip {direction} 172.20.0.1 accept" in r for r in accepted)
        assert all(f"ip {direction} 172.20.0.0/16 " in r for r in refused)
        assert len(refused) == 2
        # Loopback and the gateway are accepted before anything is refused.
        assert mine.index(refused[0]) > max(mine.index(r) for r in accepted)


def test_from_clients_everything_but_loopback_is_refused():
    text = rules(clients=True)
    assert not any("172.20." in r for r in text)
    assert sum(r.endswith((" reject", " drop", " tcp reset")) for r in text) == 4
    assert sum(r.endswith('"lo" accept') for r in text) == 2


@pytest.mark.parametrize(("subnet", "gateway"), [("172.20.0.0/16 ; flush ruleset", "172.20.0.1"), ("10.0.0.0/8", "x")])
def test_only_addresses_reach_the_rules(subnet, gateway):
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        partition_rules(subnet, gateway, clients=False)
