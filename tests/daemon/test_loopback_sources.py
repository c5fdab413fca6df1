"""Which loopback source address each LAC gets (the allocation itself; the live effect on
xl2tpd is tests/integration/test_same_tunnel_id.py)."""

from __future__ import annotations

from l2tpreorder.daemon.relay.loopback_sources import LoopbackSources, lns_is_ipv4_loopback


def test_lac_address_maps_to_127_and_its_last_three_bytes() -> None:
    s = LoopbackSources()
    assert s.acquire("198.18.1.7") == "127.18.1.7"
    assert s.acquire("198.18.1.7") == "127.18.1.7", "peers of one LAC share its address"


def test_a_collision_takes_another_address_and_release_frees_it() -> None:
    s = LoopbackSources()
    first = s.acquire("198.18.1.7")
    second = s.acquire("10.18.1.7")  # same last three bytes
    assert second != first and second.startswith("127.")
    assert s.acquire("10.18.1.7") == second
    s.release("10.18.1.7")
    assert s.acquire("172.18.1.7") not in (first, second), "10.18.1.7 has one peer left"
    s2 = LoopbackSources()
    a = s2.acquire("198.18.1.7")
    s2.release("198.18.1.7")
    assert s2.acquire("10.18.1.7") == a, "the last peer gone: the address is free again"


def test_reserved_addresses_are_never_handed_out() -> None:
    s = LoopbackSources({"127.0.0.1", "127.0.0.0", "127.255.255.255"})
    assert s.acquire("10.0.0.1") != "127.0.0.1"
    assert s.acquire("10.255.255.255") != "127.255.255.255"
    assert s.acquire("::1").startswith("127."), "an IPv6 LAC gets one from its last bytes too"


def test_restore_keeps_a_saved_address_unless_another_lac_has_it() -> None:
    s = LoopbackSources()
    assert s.restore("10.18.1.7", "127.99.0.1")
    assert s.acquire("10.18.1.7") == "127.99.0.1"
    assert not s.restore("198.18.1.7", "127.99.0.1")


def test_loopback_lns_detection() -> None:
    assert lns_is_ipv4_loopback("127.0.0.1")
    assert lns_is_ipv4_loopback("127.1.2.3")
    assert not lns_is_ipv4_loopback("::1")
    assert not lns_is_ipv4_loopback("198.18.2.1")
