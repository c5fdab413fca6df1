"""Issue 11, from the README's promises: across a session end (spoofed CDN, StopCCN, eviction,
idle expiry) the LNS's renumbered Ns never jump or go back, each LAC Ns is delivered at most once;
a new call starts afresh; the resync run and the late/duplicate window are exact."""

from __future__ import annotations

from l2tpreorder import wire
from l2tpreorder.core import reasons
from l2tpreorder.core.engine import Late, ReorderEngine
from l2tpreorder.core.reasons import Outcome
from tests.engine_helpers import (
    FLOW,
    SESSION,
    TUNNEL,
    check_invariants,
    data,
    drain,
    engine,
    ident_of,
    ns_of,
)


def cdn() -> bytes:
    """A CDN from the LAC's address naming our session (the LNS may reject it: spoofed)."""
    return wire.build_control(
        TUNNEL,
        SESSION,
        3,
        4,
        [wire.avp_message_type(wire.MessageType.CDN), wire.avp_result_code(3)],
    )


def iccn() -> bytes:
    return wire.build_control(TUNNEL, SESSION, 5, 5, [wire.avp_message_type(wire.MessageType.ICCN)])


def lns_view(e: ReorderEngine) -> list[tuple[int, int | None]]:
    """(LAC Ns carried in the payload, Ns the LNS sees) of the data sent on."""
    return [(ident_of(d), ns_of(d)) for _, d in drain(e) if not d[0] & 0x80]


def in_order(e: ReorderEngine, first: int, last: int, t: float = 0.0) -> None:
    for ns in range(first, last + 1):
        assert e.receive(data(ns), FLOW, t) == Outcome.FORWARDED_IN_ORDER


def test_1a_late_predecessor_of_a_packet_flushed_by_the_cdn_is_late_and_causes_no_jump() -> None:
    e = engine(reorder_timeout=0.1)
    in_order(e, 100, 109)
    assert e.receive(data(111), FLOW, 0.01) == Outcome.HELD
    e.receive(cdn(), FLOW, 0.02)  # flushes 111 (110 given up), ends our view of the session
    assert e.receive(data(110), FLOW, 0.03) == Outcome.FORWARDED_LATE  # delivered, next Ns
    assert e.receive(data(110), FLOW, 0.035) == Outcome.DROPPED_DUPLICATE
    assert e.receive(data(112), FLOW, 0.04) == Outcome.FORWARDED_IN_ORDER  # no wait
    view = lns_view(e)
    assert [lac for lac, _ in view] == [*range(100, 110), 111, 110, 112]
    assert [lns for _, lns in view] == list(range(100, 113))  # contiguous
    assert e.counters.sessions_continued == 1 and e.next_deadline() is None
    check_invariants(e)


def test_1b_swap_straddling_the_cdn_is_delivered_in_order() -> None:
    e = engine(reorder_timeout=0.1)
    in_order(e, 100, 109)
    e.receive(cdn(), FLOW, 0.01)
    assert e.receive(data(111), FLOW, 0.02) == Outcome.HELD  # the early half of a swap
    assert e.receive(data(110), FLOW, 0.03) == Outcome.FORWARDED_IN_ORDER
    view = lns_view(e)
    assert view == [(n, n) for n in range(100, 112)]
    assert e.counters.dropped_duplicate == 0
    check_invariants(e)


def test_1c_duplicate_in_flight_after_the_cdn_is_dropped_and_ns_never_go_back() -> None:
    e = engine(reorder_timeout=0.1)
    in_order(e, 100, 109)
    e.receive(cdn(), FLOW, 0.01)
    assert e.receive(data(105), FLOW, 0.02) == Outcome.DROPPED_DUPLICATE
    in_order(e, 110, 112, 0.03)
    assert lns_view(e) == [(n, n) for n in range(100, 113)]
    check_invariants(e)


def test_1c_also_after_a_stopccn() -> None:
    e = engine(reorder_timeout=0.1)
    in_order(e, 100, 109)
    stop = wire.build_control(TUNNEL, 0, 9, 9, [wire.avp_message_type(wire.MessageType.StopCCN)])
    e.receive(stop, FLOW, 0.01)
    assert e.session(FLOW, TUNNEL, SESSION) is None
    assert e.receive(data(108), FLOW, 0.02) == Outcome.DROPPED_DUPLICATE
    in_order(e, 110, 111, 0.03)
    assert lns_view(e) == [(n, n) for n in range(100, 112)]


def test_1d_eviction_at_the_cap_with_a_packet_in_flight() -> None:
    e = engine(reorder_timeout=0.1, max_sessions=1)
    in_order(e, 100, 109)
    e.receive(data(111), FLOW, 0.01)  # held
    e.receive(data(0, tunnel=1, session=1), "other", 0.02)  # evicts ours (flushes 111)
    assert e.receive(data(110), FLOW, 0.03) == Outcome.FORWARDED_LATE
    assert e.receive(data(111), FLOW, 0.04) == Outcome.DROPPED_DUPLICATE
    assert e.receive(data(112), FLOW, 0.05) == Outcome.FORWARDED_IN_ORDER
    view = [v for v in lns_view(e) if v[0] >= 100]
    assert [lns for _, lns in view] == list(range(100, 113))
    assert [lac for lac, _ in view] == [*range(100, 110), 111, 110, 112]
    check_invariants(e)


def test_idle_expiry_forgets_the_session_but_not_its_numbering() -> None:
    e = engine(reorder_timeout=0.1, session_idle_timeout=60.0)
    in_order(e, 100, 109)
    assert e.receive(data(111), FLOW, 0.0) == Outcome.HELD
    e.expire(0.2)  # 110 given up
    assert e.next_idle_deadline() == 60.0
    e.expire(60.0)
    assert e.session(FLOW, TUNNEL, SESSION) is None and e.counters.sessions_idle_expired == 1
    assert e.receive(data(110), FLOW, 900.0) == Outcome.FORWARDED_LATE  # 15 min: still known
    assert e.receive(data(112), FLOW, 900.0) == Outcome.FORWARDED_IN_ORDER
    assert [lns for _, lns in lns_view(e)] == list(range(100, 113))


def test_2_a_new_call_set_up_by_the_control_channel_starts_afresh() -> None:
    """The old call stopped at 65300 (0 lies within the window ahead): a new call with the same
    IDs, set up by ICRQ/ICRP/ICCN, sends Ns from 0 and the LNS must see them as they are."""
    e = engine(reorder_timeout=0.1)
    in_order(e, 65280, 65299)
    e.receive(cdn(), FLOW, 1.0)
    e.receive(iccn(), FLOW, 2.0)  # the new call
    in_order(e, 0, 19, 2.1)
    assert lns_view(e)[20:] == [(n, n) for n in range(20)]
    assert e.counters.sessions_continued == 0


def test_2_the_reverse_icrp_clears_the_memory_too() -> None:
    e = engine(reorder_timeout=0.1)
    sccrp = wire.build_control(
        40, 0, 0, 1,
        [wire.avp_message_type(wire.MessageType.SCCRP), wire.avp_assigned_tunnel_id(TUNNEL)],
    )  # fmt: skip
    e.observe_reverse(sccrp, FLOW, 0.0)
    in_order(e, 65500, 65510)
    e.receive(cdn(), FLOW, 1.0)
    icrp = wire.build_control(
        40, 7, 1, 2,
        [wire.avp_message_type(wire.MessageType.ICRP), wire.avp_assigned_session_id(SESSION)],
    )  # fmt: skip
    e.observe_reverse(icrp, FLOW, 2.0)
    in_order(e, 0, 4, 2.1)
    assert lns_view(e)[-5:] == [(n, n) for n in range(5)]


def test_3_a_timer_release_does_not_reset_the_resync_run() -> None:
    """The LAC reboots while the session holds something: the timer releases it between two
    far-behind packets. Exactly resync_after - 1 = 3 packets are dropped, as `stale`."""
    e = engine(reorder_timeout=0.1, resync_after=4)
    in_order(e, 5000, 5010)
    assert e.receive(data(5012), FLOW, 0.0) == Outcome.HELD
    outcomes = []
    for i, ns in enumerate(range(6)):
        t = 0.06 * (i + 1)
        e.expire(t)
        outcomes.append(e.receive(data(ns, 10_000 + ns), FLOW, t))
    assert outcomes == [Outcome.DROPPED_STALE] * 3 + [Outcome.FORWARDED_IN_ORDER] * 3
    assert e.counters.resyncs == 1
    view = lns_view(e)
    assert [lns for _, lns in view] == list(range(5000, 5015))
    check_invariants(e)


def test_3_restarted_packets_in_a_range_given_up_earlier_are_stale_not_late() -> None:
    e = engine(reorder_timeout=0.1, resync_after=4)
    in_order(e, 0, 9)
    e.receive(data(20), FLOW, 0.0)  # 10..19 lost
    e.expire(0.2)
    in_order(e, 21, 400, 0.3)
    outcomes = [e.receive(data(ns, 20_000 + ns), FLOW, 0.4) for ns in range(10, 14)]
    assert outcomes == [Outcome.DROPPED_STALE] * 3 + [Outcome.FORWARDED_IN_ORDER]
    assert e.counters.dropped_late == 0


def test_4_timeout_0_forwards_a_packet_overtaken_by_many_gap_openers() -> None:
    """Timeout 0: every packet goes out in arrival order, within the window W (256 Ns here)."""
    e = engine(reorder_timeout=0.0)
    e.receive(data(0), FLOW, 0.0)
    for ns in range(2, 82, 2):  # 40 gap-opening packets, each giving up one Ns
        assert e.receive(data(ns), FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER
    assert e.receive(data(1), FLOW, 0.0) == Outcome.FORWARDED_OUT_OF_ORDER
    assert e.receive(data(1), FLOW, 0.0) == Outcome.DROPPED_DUPLICATE
    assert e.receive(data(3), FLOW, 0.0) == Outcome.FORWARDED_OUT_OF_ORDER
    assert e.receive(data(4), FLOW, 0.0) == Outcome.DROPPED_DUPLICATE
    view = lns_view(e)
    assert [lns for _, lns in view] == list(range(len(view)))  # still contiguous
    # Beyond the window, not a wrong reason: `stale`.
    for ns in range(82, 300):
        e.receive(data(ns), FLOW, 0.0)
    assert e.receive(data(5), FLOW, 0.0) == Outcome.DROPPED_STALE
    check_invariants(e)


def test_4_with_a_timeout_a_packet_overtaken_by_many_gaps_is_late() -> None:
    e = engine(reorder_timeout=0.01, late=Late.DROP)
    e.receive(data(0), FLOW, 0.0)
    t = 0.0
    for ns in range(2, 82, 2):
        assert e.receive(data(ns), FLOW, t) == Outcome.HELD
        t += 0.02
        e.expire(t)
    assert e.counters.skipped[reasons.SKIP_TIMEOUT] == 40
    assert e.receive(data(1), FLOW, t) == Outcome.DROPPED_LATE
    assert e.receive(data(79), FLOW, t) == Outcome.DROPPED_LATE
    assert e.receive(data(80), FLOW, t) == Outcome.DROPPED_DUPLICATE
    assert e.counters.dropped_late == 2


def test_the_window_costs_a_bounded_bitmap_per_session() -> None:
    e = engine(reorder_timeout=0.0, max_held_per_session=256)
    e.receive(data(0), FLOW, 0.0)
    for ns in range(2, 20_000, 2):
        e.receive(data(ns & 0xFFFF), FLOW, 0.0)
    s = e.session(FLOW, TUNNEL, SESSION)
    assert s is not None and s.gaps.bit_length() <= 256
