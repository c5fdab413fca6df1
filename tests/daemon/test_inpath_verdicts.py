"""Verdict batching: NFQNL_MSG_VERDICT_BATCH covers every queued id up to the one given, so it
may only be used for a run that is exactly the head of what is still queued."""

from __future__ import annotations

import struct

import pytest

from l2tpreorder import wire
from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC
from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.core.pipeline import MalformedPolicy, Pipeline
from l2tpreorder.daemon.inpath.adapter import InPath, InPathCounters, Verdicts
from l2tpreorder.daemon.inpath.nfqueue import (
    NF_ACCEPT,
    NF_DROP,
    NF_INET_LOCAL_IN,
    NF_INET_LOCAL_OUT,
)
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


def test_in_order_run_is_one_batch() -> None:
    v = Verdicts(0, InPathCounters())
    for i in range(1, 6):
        v.add(i)
    for i in range(1, 6):
        v.accept(i)
    assert decode(v.take()) == [("batch", NF_ACCEPT, 5, False)]
    assert not v.pending


def test_a_held_packet_in_front_forces_single_verdicts() -> None:
    v = Verdicts(0, InPathCounters())
    for i in (1, 2, 3, 4):
        v.add(i)
    v.accept(1)  # head: may start a run
    v.accept(3)  # 2 is still held: a batch up to 3 would accept 2 too
    v.accept(4)
    assert decode(v.take()) == [
        ("single", NF_ACCEPT, 1, False),
        ("single", NF_ACCEPT, 3, False),
        ("single", NF_ACCEPT, 4, False),
    ]
    assert list(v.pending) == [2]
    v.add(5)
    v.accept(2)  # the gap fills: 2 is the head again, then 5 follows it
    v.accept(5)
    assert decode(v.take()) == [("batch", NF_ACCEPT, 5, False)]


def test_rewritten_and_dropped_packets_end_a_run() -> None:
    v = Verdicts(0, InPathCounters())
    for i in (1, 2, 3, 4):
        v.add(i)
    v.accept(1)
    v.accept(2)
    v.drop(3)
    v.accept(4, b"E" + bytes(27))
    assert decode(v.take()) == [
        ("batch", NF_ACCEPT, 2, False),
        ("single", NF_DROP, 3, False),
        ("single", NF_ACCEPT, 4, True),
    ]


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
    assert decode(inpath.handle(in_order, 0.0)) == [("batch", NF_ACCEPT, 3, False)]
    duplicate = (4, NF_INET_LOCAL_IN, packet(first + 1), False)
    stale = (5, NF_INET_LOCAL_IN, packet(first - window - 10), False)
    early = (6, NF_INET_LOCAL_IN, packet(first + 4), False)  # held: Ns first+3 missing
    assert decode(inpath.handle([duplicate, stale, early], 0.1)) == [
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
    """L2TPv2 version bits but a malformed header (Length beyond the datagram): accepted
    untouched, counted once by the engine of its direction as malformed and forwarded (the
    pipeline's MalformedPolicy.PASS), never as a drop: exactly one counted outcome per
    datagram, and no adapter count of its own."""
    inpath = InPath(inpath_pipeline(EngineConfig(), reorder_from_lns=True), 0)
    good = wire.build_data(7, 9, b"xyz", ns=5)
    bad = bytearray(good)
    bad[0] |= 0x40  # L bit: a Length field now lies where the tunnel id was
    packets = [
        (1, NF_INET_LOCAL_IN, udp_ip("192.0.2.1", "192.0.2.2", bytes(bad)), False),
        (2, NF_INET_LOCAL_IN, udp_ip("192.0.2.1", "192.0.2.2", good), False),
        (3, NF_INET_LOCAL_IN, udp_ip("192.0.2.1", "192.0.2.2", b"\x02\x02"), False),  # too short
        (4, NF_INET_LOCAL_OUT, udp_ip("192.0.2.2", "192.0.2.1", bytes(bad)), False),
    ]
    verdicts = decode(inpath.handle(packets, 0.0))
    assert {(v, has_payload) for _, v, _, has_payload in verdicts} == {(NF_ACCEPT, False)}
    assert not inpath.verdicts.pending and inpath.held == 0
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
    assert decode(inpath.handle([(1, NF_INET_LOCAL_IN, packet(10), False)], 0.0)) == [
        ("single", NF_ACCEPT, 1, False)
    ]
    # Not through the adapter: an early datagram with a tag no queued packet has.
    inpath.pipeline.from_lac(wire.build_data(7, 9, b"x", ns=12), flow, 0.1, 999)
    early = (2, NF_INET_LOCAL_IN, packet(13), False)  # held behind the same gap
    assert inpath.handle([early], 0.2) == []
    assert decode(inpath.expire(1.2)) == [("single", NF_ACCEPT, 2, True)]
    c = inpath.counters
    assert inpath.pipeline.counters.released == 2  # ours and the stranger, both
    assert c.packets == 2 and c.accepted + c.dropped == c.packets, c.as_dict()
    assert not inpath.verdicts.pending
