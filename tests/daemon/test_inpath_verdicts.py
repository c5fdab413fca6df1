"""Verdict batching: NFQNL_MSG_VERDICT_BATCH covers every queued id up to the one given, so it
may only be used for a run that is exactly the head of what is still queued."""

from __future__ import annotations

import ipaddress
import logging
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2tpreorder import wire
from l2tpreorder.core.checksum import ipv4_header_checksum, parse_ip_udp, udp4_checksum_ok
from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC
from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.core.pipeline import MalformedPolicy, Pipeline
from l2tpreorder.daemon.inpath.adapter import InPath, Queued
from l2tpreorder.daemon.inpath.nfqueue import (
    NF_ACCEPT,
    NF_DROP,
    NF_INET_FORWARD,
    NF_INET_LOCAL_IN,
    NF_INET_LOCAL_OUT,
    PACKET_CSUM_NOT_VERIFIED,
)
from l2tpreorder.daemon.inpath.verdicts import InPathCounters, Verdicts
from tests.inpath_packets import handle, pending
from tests.pcapgen import udp_ip


def inpath_pipeline(config: EngineConfig, *, reorder_from_lns: bool = False) -> Pipeline:
    """A pipeline as in-path mode makes it: malformed L2TPv2 passes untouched."""
    return Pipeline(config, reorder_from_lns=reorder_from_lns, malformed=MalformedPolicy.PASS)


def decode(messages: list[bytes]) -> list[tuple[str, int, int, bool]]:
    """(kind, verdict, id, has payload) of each netlink verdict message."""
    out = []
    for m in messages:
        length, kind = struct.unpack_from("=IH", m)
        assert length == len(m)
        verdict, packet_id = struct.unpack_from("!II", m, 20 + 4)
        name = {0x301: "single", 0x303: "batch"}[kind]
        out.append((name, verdict, packet_id, length > 20 + 4 + 8))
    return out


def queued(v: Verdicts, *ids: int) -> dict[int, Queued]:
    """Packets read with these ids, in this order (as the adapter adds them)."""
    qs = {i: Queued(i, b"") for i in ids}
    for q in qs.values():
        v.add(q)
    return qs


def test_in_order_run_is_one_batch() -> None:
    v = Verdicts(0, InPathCounters())
    q = queued(v, 1, 2, 3, 4, 5)
    for i in range(1, 6):
        v.accept(q[i])
    assert decode(v.take()) == [("batch", NF_ACCEPT, 5, False)]
    assert not pending(v) and v.held == 0 and not v.order


def test_a_held_packet_in_front_forces_single_verdicts() -> None:
    v = Verdicts(0, InPathCounters())
    q = queued(v, 1, 2, 3, 4)
    v.accept(q[1])  # head: may start a run
    v.accept(q[3])  # 2 is still held: a batch up to 3 would accept 2 too
    v.accept(q[4])
    assert decode(v.take()) == [
        ("single", NF_ACCEPT, 1, False),
        ("single", NF_ACCEPT, 3, False),
        ("single", NF_ACCEPT, 4, False),
    ]
    assert pending(v) == [2] and v.held == 1
    q.update(queued(v, 5))
    v.accept(q[2])  # the gap fills: 2 is the head again, then 5 follows it
    v.accept(q[5])
    assert decode(v.take()) == [("batch", NF_ACCEPT, 5, False)]
    assert not pending(v) and v.held == 0


def test_rewritten_and_dropped_packets_end_a_run() -> None:
    v = Verdicts(0, InPathCounters())
    q = queued(v, 1, 2, 3, 4)
    v.accept(q[1])
    v.accept(q[2])
    v.drop(q[3])
    v.accept(q[4], b"E" + bytes(27))
    assert decode(v.take()) == [
        ("batch", NF_ACCEPT, 2, False),
        ("single", NF_DROP, 3, False),
        ("single", NF_ACCEPT, 4, True),
    ]
    with pytest.raises(KeyError):  # a second verdict for one packet is refused
        v.accept(q[4])


def test_the_head_skips_what_was_answered_out_of_order() -> None:
    """Answered packets behind the head stay in `order` until the head passes them; a run then
    starts at the first one still waiting, and the list is let go once nothing waits (or cut
    when the answered part is long), so it does not grow with the traffic."""
    v = Verdicts(0, InPathCounters())
    q = queued(v, *range(1, 3001))
    for i in range(2, 3001):  # 1 is held: every other one gets its own verdict
        v.accept(q[i])
    assert pending(v) == [1] and v.held == 1 and v.head == 0
    assert len(v.take()) == 2999
    # Behind the held head the answered ones are let go as they pile up, not when it moves.
    assert len(v.order) <= 2 * v.held + 1024 + 1 and v.order[0] is q[1]
    v.accept(q[1])
    assert v.held == 0 and not v.order
    q = queued(v, *range(3001, 6001))
    for i in range(3001, 5001):  # in order: one run, the answered head part is cut off
        v.accept(q[i])
    assert len(v.order) <= 2000 and pending(v) == list(range(5001, 6001))
    v.accept(q[5002])
    v.accept(q[5001])  # the head, then 5002 (answered already) is passed: the run is 5001 alone
    v.accept(q[5003])
    messages = decode(v.take())
    assert messages == [
        ("batch", NF_ACCEPT, 5000, False),
        ("single", NF_ACCEPT, 5002, False),
        ("batch", NF_ACCEPT, 5003, False),
    ]
    assert pending(v) == list(range(5004, 6001))


def test_answered_packets_before_and_behind_a_waiting_head_are_let_go() -> None:
    """The head stops early in a long list (the first 2,000 of 5,000 answered in order, then a
    gap): what was answered before it and behind it is let go as it piles up, not kept with
    its bytes until the head moves."""
    v = Verdicts(0, InPathCounters())
    q = queued(v, *range(5000))
    for i in range(2000):
        v.accept(q[i])
    assert v.order[v.head] is q[2000]
    for i in range(2001, 5000):  # 2000 waits: each of these gets its own verdict
        v.accept(q[i])
    assert v.held == 1 and pending(v) == [2000]
    assert len(v.order) <= 2 * v.held + 1024 + 1 and v.order[v.head] is q[2000]
    messages = decode(v.take())
    assert messages[0] == ("batch", NF_ACCEPT, 1999, False) and len(messages) == 3000
    v.accept(q[2000])
    assert v.held == 0 and not v.order and decode(v.take()) == [("single", NF_ACCEPT, 2000, False)]


def test_stale_packets_get_nf_drop_and_are_counted_like_duplicates() -> None:
    """The adapter drives the real Pipeline: a packet further behind than the session's window
    is `stale` (issue 11) and gets NF_DROP, counted in `dropped` as a duplicate is; an idle
    session's expiry comes through the pipeline's deadline and releases what it held."""
    config = EngineConfig(reorder_timeout=1.0, max_held_per_session=64, session_idle_timeout=5.0)
    inpath = InPath(inpath_pipeline(config), 0)
    window = 64  # W = max(max_held_per_session, 64)

    def packet(ns: int) -> bytes:
        return udp_ip("192.0.2.1", "192.0.2.2", wire.build_data(7, 9, b"x", ns=ns))

    first = 1000
    in_order = [(i + 1, NF_INET_LOCAL_IN, packet(first + i), False) for i in range(3)]
    assert decode(handle(inpath, in_order, 0.0)) == [("batch", NF_ACCEPT, 3, False)]
    duplicate = (4, NF_INET_LOCAL_IN, packet(first + 1), False)
    stale = (5, NF_INET_LOCAL_IN, packet(first - window - 10), False)
    early = (6, NF_INET_LOCAL_IN, packet(first + 4), False)  # held: Ns first+3 missing
    assert decode(handle(inpath, [duplicate, stale, early], 0.1)) == [
        ("single", NF_DROP, 4, False),
        ("single", NF_DROP, 5, False),
    ]
    assert inpath.counters.dropped == 2
    engine = inpath.pipeline.directions()[LAC_TO_LNS]
    assert engine.counters.dropped_duplicate == 1 and engine.counters.dropped_stale == 1
    assert inpath.pipeline.next_deadline() == pytest.approx(1.1)
    # The gap is given up; renumbered to close it, so the accept carries the rewritten packet.
    assert decode(inpath.expire(1.1)) == [("single", NF_ACCEPT, 6, True)]
    assert inpath.pipeline.next_deadline() == pytest.approx(0.1 + 5.0)  # idle expiry
    inpath.expire(5.1)
    assert engine.session_count == 0 and engine.counters.sessions_idle_expired == 1
    assert inpath.held == 0


def test_malformed_l2tpv2_is_accepted_and_counted_once() -> None:
    """L2TPv2 version bits but a malformed header (Length below its header): accepted
    untouched, counted once by the engine of its direction as malformed and forwarded (the
    pipeline's MalformedPolicy.PASS), never as a drop: exactly one counted outcome per
    datagram, and no adapter count of its own. (With a readable Ns in renumber mode it is
    dropped instead: tests/core/test_length_rule.py, and the last test here.)"""
    inpath = InPath(inpath_pipeline(EngineConfig(), reorder_from_lns=True), 0)
    good = wire.build_data(7, 9, b"xyz", ns=5)
    bad = bytearray(wire.build_data(7, 9, b"xyz"))  # no Ns
    bad[0] |= 0x40  # L bit: a Length field now lies where the tunnel id was
    packets = [
        (1, NF_INET_LOCAL_IN, udp_ip("192.0.2.1", "192.0.2.2", bytes(bad)), False),
        (2, NF_INET_LOCAL_IN, udp_ip("192.0.2.1", "192.0.2.2", good), False),
        (3, NF_INET_LOCAL_IN, udp_ip("192.0.2.1", "192.0.2.2", b"\x02\x02"), False),  # too short
        (4, NF_INET_LOCAL_OUT, udp_ip("192.0.2.2", "192.0.2.1", bytes(bad)), False),
    ]
    verdicts = decode(handle(inpath, packets, 0.0))
    assert {(v, has_payload) for _, v, _, has_payload in verdicts} == {(NF_ACCEPT, False)}
    assert not pending(inpath.verdicts) and inpath.held == 0
    c = inpath.counters
    assert (c.not_l2tpv2, c.dropped, c.accepted) == (0, 0, 4)
    views = inpath.pipeline.directions()
    for direction, malformed in ((LAC_TO_LNS, 2), (LNS_TO_LAC, 1)):
        ec = views[direction].counters
        assert ec.rx_malformed == ec.forwarded_malformed == malformed, direction
        assert ec.dropped == 0 and sum(ec.malformed.values()) == malformed
        assert ec.received == ec.accounted
    assert views[LAC_TO_LNS].counters.received == 3  # two malformed, one good
    assert c.packets == c.accepted + c.dropped


def test_in_path_refuses_a_pipeline_that_drops_malformed_datagrams() -> None:
    """The policy is declared when the pipeline is made; in-path mode must not drop what is
    not its own to judge."""
    with pytest.raises(ValueError, match=r"MalformedPolicy\.PASS"):
        InPath(Pipeline(EngineConfig()), 0)


def test_output_without_a_packet_of_ours_is_not_counted_as_accepted() -> None:
    """What the pipeline releases for a tag the adapter never read gets no verdict, so it is
    no outcome of the adapter's: accepted + dropped stays equal to the packets read."""
    inpath = InPath(inpath_pipeline(EngineConfig(reorder_timeout=1.0)), 0)

    def packet(ns: int) -> bytes:
        return udp_ip("192.0.2.1", "192.0.2.2", wire.build_data(7, 9, b"x", ns=ns))

    flow = ("192.0.2.1", 1701)
    assert decode(handle(inpath, [(1, NF_INET_LOCAL_IN, packet(10), False)], 0.0)) == [
        ("single", NF_ACCEPT, 1, False)
    ]
    # Not through the adapter: an early datagram with a tag no queued packet has.
    inpath.pipeline.from_lac(wire.build_data(7, 9, b"x", ns=12), flow, 0.1, 999)
    early = (2, NF_INET_LOCAL_IN, packet(13), False)  # held behind the same gap
    assert handle(inpath, [early], 0.2) == []
    assert decode(inpath.expire(1.2)) == [("single", NF_ACCEPT, 2, True)]
    c = inpath.counters
    assert inpath.pipeline.counters.released == 2  # ours and the stranger, both
    assert c.packets == 2 and c.accepted + c.dropped == c.packets, c.as_dict()
    assert not pending(inpath.verdicts)


def corrupt(ip: bytes) -> bytes:
    """`ip` with one bit of its L2TP payload flipped (the UDP checksum now wrong)."""
    out = bytearray(ip)
    out[-1] ^= 0x01
    return bytes(out)


def test_bad_checksum_is_passed_untouched_never_ordered_nor_rewritten() -> None:
    """Issue 21 (2): the kernel flags what it has not verified (NFQA_SKB_CSUM_NOTVERIFIED);
    such a datagram with a wrong checksum (or IPv6's illegal zero, flagged or not) gets NF_ACCEPT
    untouched at once and is counted as bad_checksum; the engine never sees its Ns. A flagged
    datagram that verifies, and an unflagged one (the kernel verified it), are ordered."""
    inpath = InPath(inpath_pipeline(EngineConfig(reorder_timeout=1.0)), 0)

    def packet(ns: int, src: str = "192.0.2.1", dst: str = "192.0.2.2") -> bytes:
        return udp_ip(src, dst, wire.build_data(7, 9, b"payload", ns=ns))

    nv = PACKET_CSUM_NOT_VERIFIED
    six = packet(3, "2001:db8::1", "2001:db8::2")
    where = parse_ip_udp(six)
    assert where is not None
    six_zero = six[: where.udp_at + 6] + b"\0\0" + six[where.udp_at + 8 :]
    options = bytearray(packet(3))  # IPv4 with a 4-byte option: the slow path's verification
    options = bytearray(options[:20] + b"\x01\x01\x01\x01" + options[20:])
    options[0] = 0x46
    struct.pack_into("!H", options, 2, len(options))
    struct.pack_into("!H", options, 10, 0)
    struct.pack_into("!H", options, 10, ipv4_header_checksum(bytes(options[:24])))
    batch = [
        (1, NF_INET_LOCAL_IN, packet(1), nv),  # verified here: good, in order
        (2, NF_INET_LOCAL_IN, corrupt(packet(5)), nv),  # fast path: bad, never held
        (3, NF_INET_LOCAL_IN, corrupt(bytes(options)), nv),  # slow path: bad
        (4, NF_INET_LOCAL_IN, six_zero, 0),  # IPv6 zero: bad whatever the kernel says
        (5, NF_INET_LOCAL_IN, corrupt(six), nv),
        (6, NF_INET_LOCAL_IN, packet(2), 0),  # the kernel verified it: in order
    ]
    got = decode(handle(inpath, batch, 0.0))
    assert {(v, rewritten) for _, v, _, rewritten in got} == {(NF_ACCEPT, False)}, got
    assert not pending(inpath.verdicts)  # every one answered at once: nothing held
    c = inpath.counters
    assert c.bad_checksum == 4 and c.accepted == 6 and c.accepted_rewritten == 0
    engine = inpath.pipeline.engine
    assert engine.counters.received == 2 and inpath.held == 0
    # The session still expects Ns 3: the corrupt datagrams' Ns 3 and 5 moved nothing.
    assert decode(handle(inpath, [(7, NF_INET_LOCAL_IN, packet(3), nv)], 0.1)) == [
        ("single", NF_ACCEPT, 7, False)
    ]
    assert engine.counters.received == 3 and inpath.held == 0


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 64), flip=st.integers(-1, 200), seed=st.integers(0, 255))
def test_fast_path_checksum_equals_udp4_checksum_ok(size: int, flip: int, seed: int) -> None:
    """The fast path's inlined sum decides as `udp4_checksum_ok` does (odd and even lengths,
    any one bit flipped or none): a bad datagram is counted and never reaches the engine."""
    payload = bytes((seed + i) & 0xFF for i in range(size))
    pkt = bytearray(udp_ip("192.0.2.1", "192.0.2.2", wire.build_data(7, 9, payload, ns=0)))
    at = 20 + flip // 8
    if flip >= 0 and at < len(pkt) and at not in (24, 25, 28, 29):  # UDP length, L2TP flags: slow
        pkt[at] ^= 1 << (flip % 8)  # a bit of the ports, the checksum or the payload
    if flip == 200:
        pkt[26:28] = b"\0\0"  # IPv4 zero checksum: not computed, nothing to verify
    inpath = InPath(inpath_pipeline(EngineConfig(reorder_timeout=1.0)), 0)
    handle(inpath, [(1, NF_INET_LOCAL_IN, bytes(pkt), PACKET_CSUM_NOT_VERIFIED)], 0.0)
    good = udp4_checksum_ok(bytes(pkt))
    assert inpath.counters.bad_checksum == (0 if good else 1)


def test_a_fragment_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    inpath = InPath(inpath_pipeline(EngineConfig()), 4)
    first = bytearray(udp_ip("192.0.2.1", "192.0.2.2", wire.build_data(7, 9, b"x" * 40, ns=1)))
    first[6] = 0x20  # MF: the first fragment (the rest of the datagram never comes here)
    later = bytearray(first)
    later[6:8] = b"\x00\xb9"  # a later fragment (offset 1480): no UDP header at all
    packets = [(1, NF_INET_FORWARD, bytes(first), 0), (2, NF_INET_FORWARD, bytes(later), 0)]
    with caplog.at_level(logging.WARNING, logger="l2tpreorder"):
        assert decode(handle(inpath, packets, 0.0)) == [("batch", NF_ACCEPT, 2, False)]
    c = inpath.counters
    assert (c.fragments_seen, c.not_udp, c.accepted) == (2, 0, 2)
    assert inpath.pipeline.engine.counters.received == 0
    warnings = [r.getMessage() for r in caplog.records if "fragment" in r.getMessage()]
    assert len(warnings) == 1 and "NFQUEUE 4" in warnings[0] and "l2tpreorder rules" in warnings[0]


def test_sources_outside_allow_pass_untouched_and_make_no_session() -> None:
    """Issue 21 (6): with `inpath.allow`, a packet whose LAC address is outside it (source on
    the LAC side, IPv4 fast path and IPv6 slow path; destination at the OUTPUT hook) gets
    NF_ACCEPT untouched at once, counted as not_allowed, and the engine never sees it: no
    session. An allowed LAC is ordered as before; a new allow (reload) applies at once."""
    allow = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8:1::/48"))
    inpath = InPath(inpath_pipeline(EngineConfig(reorder_timeout=1.0), reorder_from_lns=True), 0,
                    allow)  # fmt: skip

    def packet(ns: int, src: str, dst: str = "198.51.100.9") -> bytes:
        return udp_ip(src, dst, wire.build_data(7, 9, b"x", ns=ns))

    strangers = [
        (1, NF_INET_LOCAL_IN, packet(5, "203.0.113.7"), 0),  # far ahead: would be held
        (2, NF_INET_FORWARD, packet(0, "203.0.113.8"), 0),
        (3, NF_INET_LOCAL_IN, packet(5, "2001:db8:2::1", "2001:db8:9::1"), 0),
        (4, NF_INET_LOCAL_OUT, packet(5, "198.51.100.9", "203.0.113.7"), 0),  # LNS -> stranger
        (5, NF_INET_LOCAL_IN, udp_ip("203.0.113.7", "198.51.100.9", b"\x00\x03 v3"), 0),  # any
    ]
    assert decode(handle(inpath, strangers, 0.0)) == [("batch", NF_ACCEPT, 5, False)]
    c = inpath.counters
    assert (c.not_allowed, c.accepted, c.from_lac, c.from_lns) == (5, 5, 0, 0)
    views = inpath.pipeline.directions()
    assert views[LAC_TO_LNS].counters.received == views[LNS_TO_LAC].counters.received == 0
    assert views[LAC_TO_LNS].session_count == 0
    ours = [
        (6, NF_INET_LOCAL_IN, packet(1, "192.0.2.1"), 0),
        (7, NF_INET_LOCAL_IN, packet(3, "192.0.2.1"), 0),  # held: Ns 2 missing
        (8, NF_INET_LOCAL_IN, packet(1, "2001:db8:1::5", "2001:db8:9::1"), 0),
        (9, NF_INET_LOCAL_OUT, packet(4, "198.51.100.9", "192.0.2.1"), 0),  # LNS -> our LAC
    ]
    assert decode(handle(inpath, ours, 0.1)) == [
        ("single", NF_ACCEPT, 6, False),
        ("single", NF_ACCEPT, 8, False),
        ("single", NF_ACCEPT, 9, False),
    ]
    assert (c.not_allowed, c.from_lac, c.from_lns, inpath.held) == (5, 3, 1, 1)
    assert views[LAC_TO_LNS].session_count == 2
    inpath.set_allow((ipaddress.ip_network("203.0.113.0/24"),))  # a reload: strangers now ours
    assert decode(handle(inpath, [(10, NF_INET_LOCAL_IN, packet(0, "203.0.113.7"), 0)], 0.2)) == [
        ("single", NF_ACCEPT, 10, False)
    ]
    assert decode(handle(inpath, [(11, NF_INET_LOCAL_IN, packet(9, "192.0.2.1"), 0)], 0.2)) == [
        ("single", NF_ACCEPT, 11, False)
    ]  # 192.0.2.1 is no longer allowed: passed at once, its held packet waits its timeout
    assert (c.not_allowed, c.from_lac) == (6, 4) and views[LAC_TO_LNS].session_count == 3
    inpath.set_allow(None)
    handle(inpath, [(12, NF_INET_LOCAL_IN, packet(0, "198.18.0.1"), 0)], 0.3)
    assert c.not_allowed == 6 and inpath.allow is None


def test_a_malformed_message_with_a_raw_ns_is_dropped_while_renumbering() -> None:
    """Issue 21 (7): Length beyond the datagram (a truncated message) with a readable Ns: in
    renumber mode passing it untouched would show the LNS the LAC's raw Ns among ours (a
    repeat), so it gets NF_DROP, counted as dropped{reason="malformed"}; nothing waits."""
    inpath = InPath(inpath_pipeline(EngineConfig(reorder_timeout=1.0)), 0)
    good = wire.build_data(7, 9, b"xyz", ns=1, length=True)
    truncated = good[:2] + struct.pack("!H", len(good) + 9) + good[4:]
    first = udp_ip("192.0.2.1", "192.0.2.2", wire.build_data(7, 9, b"x", ns=0, length=True))
    packets = [
        (1, NF_INET_LOCAL_IN, first, 0),
        (2, NF_INET_LOCAL_IN, udp_ip("192.0.2.1", "192.0.2.2", truncated), 0),
    ]
    assert sorted(decode(handle(inpath, packets, 0.0)), key=lambda v: v[2]) == [
        ("single", NF_ACCEPT, 1, False),
        ("single", NF_DROP, 2, False),
    ]
    ec = inpath.pipeline.engine.counters
    assert (ec.dropped_malformed, ec.forwarded_malformed, inpath.counters.dropped) == (1, 0, 1)
    assert not pending(inpath.verdicts)
