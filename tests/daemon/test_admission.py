"""Which sources may become LAC peers (the relay's ACL), without sockets."""

from __future__ import annotations

import ipaddress

from l2tpreorder.config import Address
from l2tpreorder.daemon.relay.admission import DENIED_CACHE, Admission

LNS = ("127.0.0.1", 1702)


def admission(*nets: str, bound: list[Address] | None = None) -> Admission:
    allow = tuple(ipaddress.ip_network(n) for n in nets)
    return Admission(allow, LNS, lambda: bound or [])


def test_only_sources_inside_allow_are_admitted() -> None:
    a = admission("192.0.2.0/24", "2001:db8::/32")
    assert not a.refuses(("192.0.2.7", 1701))
    assert not a.refuses(("2001:db8::1", 1701))
    assert a.refuses(("198.51.100.1", 1701))
    assert not a.allowed("not an address")


def test_the_lns_and_our_own_sockets_are_never_peers() -> None:
    a = admission("0.0.0.0/0", bound=[("127.0.0.1", 1701)])
    assert a.refuses(LNS)
    assert a.refuses(("127.0.0.1", 1701))  # our own listen address: relaying it could loop
    assert a.refuses(("127.0.0.2", 0))  # port 0 cannot be a real sender
    assert not a.refuses(("127.0.0.2", 1701))


def test_a_new_allow_list_judges_refused_sources_afresh() -> None:
    a = admission("192.0.2.0/24")
    assert a.refuses(("198.51.100.1", 1701))
    a.reconfigure((ipaddress.ip_network("198.51.100.0/24"),))
    assert not a.refuses(("198.51.100.1", 1701))
    assert a.refuses(("192.0.2.7", 1701))


def test_the_refused_cache_stays_bounded() -> None:
    a = admission("192.0.2.0/24")
    for port in range(1, DENIED_CACHE + 10):
        assert a.refuses(("198.51.100.1", port))
    assert len(a._denied) <= DENIED_CACHE
