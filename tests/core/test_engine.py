"""The reorder engine's semantics, one behaviour per test (fake clock: `now` is just a number)."""

from __future__ import annotations

import pytest

from l2tpreorder import wire
from l2tpreorder.core import fastpath, reasons
from l2tpreorder.core.engine import EngineConfig, Late, ReorderEngine, Sequencing
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


def test_seed_trace_swap_is_put_back_in_order() -> None:
    """The trace that started the project: Ns 31 (1412 B) is overtaken by 32 (41 B)."""
    e = engine(reorder_timeout=0.1)
    p30 = wire.build_data(TUNNEL, SESSION, bytes(1416 - 6 - 4), ns=30, nr=65535)
    p32 = wire.build_data(TUNNEL, SESSION, bytes(41 - 6 - 4), ns=32, nr=65535)
    p31 = wire.build_data(TUNNEL, SESSION, bytes(1412 - 6 - 4), ns=31, nr=65535)
    assert [len(p30), len(p32), len(p31)] == [1416, 41, 1412]
    assert e.receive(p30, FLOW, 0.000) == Outcome.FORWARDED_IN_ORDER
    assert e.receive(p32, FLOW, 0.001) == Outcome.HELD
    assert e.receive(p31, FLOW, 0.002) == Outcome.FORWARDED_IN_ORDER
    out = [d for _, d in drain(e)]
    assert out == [p30, p31, p32]  # byte for byte: contiguous, so renumbering changed nothing
    assert out[0] is p30  # in-order packets are passed on without a copy
    c = e.counters
    assert (c.forwarded_in_order, c.released, c.skipped[reasons.SKIP_TIMEOUT]) == (2, 1, 0)
    assert e.next_deadline() is None
    check_invariants(e)


def test_held_packet_leaves_at_its_deadline_without_further_arrivals() -> None:
    e = engine(reorder_timeout=0.05)
    e.receive(data(10), FLOW, 1.0)
    assert e.receive(data(12), FLOW, 1.01) == Outcome.HELD
    drain(e)
    assert e.next_deadline() == pytest.approx(1.06)
    e.expire(1.059)
    assert drain(e) == []  # not yet
    e.expire(1.06)
    out = drain(e)
    assert [ident_of(d) for _, d in out] == [12]
    assert [ns_of(d) for _, d in out] == [11]  # renumbered: the LNS sees no gap
    assert e.counters.skipped[reasons.SKIP_TIMEOUT] == 1
    assert e.next_deadline() is None
    check_invariants(e)


def test_expiry_releases_up_to_the_expired_packet_and_keeps_waiting_for_the_rest() -> None:
    e = engine(reorder_timeout=0.1)
    e.receive(data(0), FLOW, 0.0)
    e.receive(data(2), FLOW, 0.00)  # waits for 1
    e.receive(data(5), FLOW, 0.05)  # waits for 3, 4
    drain(e)
    e.expire(0.1)  # 2's deadline: give up 1, deliver 2; 5 is younger and keeps waiting
    assert [ident_of(d) for _, d in drain(e)] == [2]
    assert e.next_deadline() == pytest.approx(0.15)
    e.receive(data(3), FLOW, 0.12)
    e.receive(data(4), FLOW, 0.13)  # fills the gap: 3, 4, 5 go at once
    assert [ident_of(d) for _, d in drain(e)] == [3, 4, 5]
    assert e.next_deadline() is None
    check_invariants(e)


def test_late_packet_after_timeout_is_dropped_as_late_then_duplicate() -> None:
    e = engine(reorder_timeout=0.01, late=Late.DROP)
    e.receive(data(100), FLOW, 0.0)
    e.receive(data(102), FLOW, 0.0)
    e.expire(1.0)  # 101 given up
    assert e.receive(data(101), FLOW, 1.1) == Outcome.DROPPED_LATE
    assert e.receive(data(101), FLOW, 1.2) == Outcome.DROPPED_DUPLICATE
    assert e.receive(data(100), FLOW, 1.3) == Outcome.DROPPED_DUPLICATE
    c = e.counters
    assert (c.dropped_late, c.dropped_duplicate) == (1, 2)
    check_invariants(e)


def test_duplicate_of_a_held_packet_never_stalls() -> None:
    e = engine(reorder_timeout=0.1)
    e.receive(data(1), FLOW, 0.0)
    e.receive(data(3), FLOW, 0.0)
    assert e.receive(data(3), FLOW, 0.01) == Outcome.DROPPED_DUPLICATE
    assert e.receive(data(2), FLOW, 0.02) == Outcome.FORWARDED_IN_ORDER
    assert [ident_of(d) for _, d in drain(e)] == [1, 2, 3]
    assert e.receive(data(4), FLOW, 0.03) == Outcome.FORWARDED_IN_ORDER
    check_invariants(e)


@pytest.mark.parametrize("start", [65530, 65535, 0, 32767, 32768])
def test_reordering_across_the_wrap(start: int) -> None:
    e = engine(reorder_timeout=0.1)
    order = [0, 2, 1, 3, 5, 4, 7, 6, 8, 9, 11, 10]  # offsets from start: adjacent swaps
    for i, k in enumerate(order):
        e.receive(data((start + k) & 0xFFFF, k), FLOW, i * 0.001)
    out = drain(e)
    assert [ident_of(d) for _, d in out] == sorted(order)
    assert [ns_of(d) for _, d in out] == [(start + k) & 0xFFFF for k in sorted(order)]
    assert e.counters.skipped[reasons.SKIP_TIMEOUT] == 0
    check_invariants(e)


@pytest.mark.parametrize("start", [65534, 65535, 0])
def test_timeout_gap_across_the_wrap_is_renumbered_contiguously(start: int) -> None:
    e = engine(reorder_timeout=0.01)
    sent = [0, 1, 3, 4, 6]  # 2 and 5 lost
    for i, k in enumerate(sent):
        e.receive(data((start + k) & 0xFFFF, k), FLOW, i * 0.001)
        e.expire(i * 0.001)
    e.expire(10.0)
    out = drain(e)
    assert [ident_of(d) for _, d in out] == sent
    assert [ns_of(d) for _, d in out] == [(start + i) & 0xFFFF for i in range(len(sent))]
    assert e.counters.skipped[reasons.SKIP_TIMEOUT] == 2


def test_preserve_keeps_the_lacs_ns() -> None:
    e = engine(reorder_timeout=0.01, sequencing=Sequencing.PRESERVE)
    sent = [data(7), data(9), data(10)]
    for i, d in enumerate(sent):
        e.receive(d, FLOW, i * 0.001)
    e.expire(1.0)
    out = [d for _, d in drain(e)]
    assert out == sent  # untouched bytes, the gap at 8 stays visible


def test_strip_removes_ns_nr_and_fixes_length() -> None:
    e = engine(reorder_timeout=0.01, sequencing=Sequencing.STRIP)
    e.receive(data(5, length=True, size=20), FLOW, 0.0)
    e.receive(data(7, length=True, size=20), FLOW, 0.0)
    e.receive(data(6, length=True, size=20), FLOW, 0.0)
    out = [d for _, d in drain(e)]
    for ident, d in zip([5, 6, 7], out, strict=True):
        header = fastpath.parse_header(d)
        assert isinstance(header, fastpath.Header)
        assert not header.has_sequence and header.ns is None
        assert header.length == len(d) == 6 + 2 + 20
        assert ident_of(d) == ident


def test_timeout_zero_never_holds_and_passes_late_packets_in_arrival_order() -> None:
    e = engine(reorder_timeout=0.0)
    outcomes = [e.receive(data(ns), FLOW, 0.0) for ns in [1, 3, 2, 4, 4]]
    assert outcomes == [
        Outcome.FORWARDED_IN_ORDER,
        Outcome.FORWARDED_IN_ORDER,  # 2 given up at once
        Outcome.FORWARDED_OUT_OF_ORDER,  # 2 arrives late: still delivered, in arrival order
        Outcome.FORWARDED_IN_ORDER,
        Outcome.DROPPED_DUPLICATE,
    ]
    out = drain(e)
    assert [ident_of(d) for _, d in out] == [1, 3, 2, 4]
    assert [ns_of(d) for _, d in out] == [1, 2, 3, 4]  # renumbered: contiguous for the LNS
    assert e.next_deadline() is None
    check_invariants(e)


def test_control_and_unsequenced_data_pass_at_once_untouched() -> None:
    e = engine(reorder_timeout=1.0)
    e.receive(data(1), FLOW, 0.0)
    e.receive(data(3), FLOW, 0.0)  # held
    drain(e)
    hello = wire.build_control(TUNNEL, 0, 5, 6, [wire.avp_message_type(wire.MessageType.HELLO)])
    plain = wire.build_data(TUNNEL, SESSION, b"\xff\x03\x00\x21")
    assert e.receive(hello, FLOW, 0.1) == Outcome.FORWARDED_CONTROL
    assert e.receive(plain, FLOW, 0.2) == Outcome.FORWARDED_UNSEQUENCED
    assert [d for _, d in drain(e)] == [hello, plain]
    assert e.counters.held_packets == 1  # the held data packet did not block either
    check_invariants(e)


def test_malformed_input_is_counted_by_reason() -> None:
    e = engine()
    broken_avp = wire.build_control(TUNNEL, 0, 0, 0, [wire.avp_message_type(6)])[:-1]
    broken_avp = broken_avp[:2] + len(broken_avp).to_bytes(2, "big") + broken_avp[4:]
    for datagram in [b"", b"\x00\x03" + bytes(10), b"\x00\x05" + bytes(10), broken_avp]:
        assert e.receive(datagram, FLOW, 0.0) == Outcome.DROPPED_MALFORMED
    c = e.counters
    assert c.malformed[reasons.TOO_SHORT] == 1
    assert c.malformed[reasons.L2TPV3] == 1
    assert c.malformed[reasons.BAD_VERSION] == 1
    assert c.malformed[reasons.BAD_AVP] == 1
    assert e.take_output() == []
    check_invariants(e)


def test_sessions_are_independent_per_flow_and_ids() -> None:
    e = engine(reorder_timeout=0.1)
    other_flow = ("192.0.2.11", 1701)
    for flow, session in [(FLOW, 1), (FLOW, 2), (other_flow, 1)]:
        e.receive(data(50, session=session), flow, 0.0)
        e.receive(data(52, session=session), flow, 0.0)
    assert e.session_count == 3
    assert e.counters.held_packets == 3
    e.receive(data(51, session=2), FLOW, 0.01)
    released = [(f, ident_of(d)) for f, d in drain(e)[6 - 3 :]]
    assert released == [(FLOW, 51), (FLOW, 52)]
    check_invariants(e)


def test_per_session_cap_skips_the_oldest_gap_early() -> None:
    e = engine(reorder_timeout=10.0, max_held_per_session=3)
    e.receive(data(0), FLOW, 0.0)
    for ns in [2, 3, 4]:
        assert e.receive(data(ns), FLOW, 0.0) == Outcome.HELD
    drain(e)
    e.receive(data(6), FLOW, 0.0)  # a 4th held packet: close gap at 1 now, deliver 2, 3, 4
    assert [ident_of(d) for _, d in drain(e)] == [2, 3, 4]
    assert e.counters.skipped[reasons.SKIP_CAP] == 1
    assert e.counters.held_packets == 1
    check_invariants(e)


def test_global_byte_cap_closes_the_longest_waiting_gap() -> None:
    e = engine(reorder_timeout=10.0, max_held_bytes=250)
    for session, t in [(1, 0.0), (2, 0.1)]:
        e.receive(data(0, session=session, size=100), FLOW, t)
        e.receive(data(2, session=session, size=100), FLOW, t)
    drain(e)
    # Held: one 110-byte packet per session = 220 B. A third pushes past 250 B: the session
    # that has waited longest (session 1) gives up its gap first.
    e.receive(data(4, session=2, size=100), FLOW, 0.2)
    out = drain(e)
    assert [(ident_of(d)) for _, d in out] == [2]
    assert e.session(FLOW, 25085, 1) is not None
    s1 = e.session(FLOW, 25085, 1)
    assert s1 is not None and not s1.held
    assert e.counters.skipped[reasons.SKIP_CAP] == 1
    assert e.counters.held_bytes <= 250
    check_invariants(e)


def test_resync_when_the_peer_restarts_its_numbering() -> None:
    e = engine(reorder_timeout=0.1, resync_after=4)
    for i, ns in enumerate(range(5000, 5010)):
        e.receive(data(ns), FLOW, i * 0.001)
    drain(e)
    outcomes = [e.receive(data(ns, 1000 + ns), FLOW, 0.1) for ns in range(6)]
    assert outcomes[:3] == [Outcome.DROPPED_STALE] * 3  # beyond the window: unknown, named so
    assert outcomes[3:] == [Outcome.FORWARDED_IN_ORDER] * 3
    out = drain(e)
    assert [ident_of(d) for _, d in out] == [1003, 1004, 1005]
    assert [ns_of(d) for _, d in out] == [5010, 5011, 5012]  # the LNS sees no jump
    assert e.counters.resyncs == 1


def test_duplicates_just_behind_never_trigger_a_resync() -> None:
    e = engine(reorder_timeout=0.1, resync_after=2)
    for ns in range(100):
        e.receive(data(ns), FLOW, 0.0)
    for ns in range(90, 100):  # a replayed burst close behind: duplicates, not a restart
        assert e.receive(data(ns), FLOW, 0.0) == Outcome.DROPPED_DUPLICATE
    assert e.counters.resyncs == 0


def test_packet_behind_the_session_start_is_late_not_a_duplicate() -> None:
    """The session's first packet overtook its predecessor: the predecessor was never
    delivered, so it is `late`, not a duplicate: dropped (late: drop), or delivered now with the
    next Ns (renumber's default); with timeout 0 it goes out in arrival order. A second copy is a
    duplicate."""
    e = engine(reorder_timeout=0.1, late=Late.DROP)
    e.receive(data(32), FLOW, 0.0)  # the session starts here
    assert e.receive(data(31), FLOW, 0.001) == Outcome.DROPPED_LATE
    assert e.receive(data(31), FLOW, 0.002) == Outcome.DROPPED_DUPLICATE
    assert [ident_of(d) for _, d in drain(e)] == [32]
    ed = engine(reorder_timeout=0.1)
    ed.receive(data(32), FLOW, 0.0)
    assert ed.receive(data(31), FLOW, 0.001) == Outcome.FORWARDED_LATE
    assert ed.receive(data(31), FLOW, 0.002) == Outcome.DROPPED_DUPLICATE
    assert [(ident_of(d), ns_of(d)) for _, d in drain(ed)] == [(32, 32), (31, 33)]
    check_invariants(ed)
    e0 = engine(reorder_timeout=0.0)
    e0.receive(data(32), FLOW, 0.0)
    assert e0.receive(data(31), FLOW, 0.001) == Outcome.FORWARDED_OUT_OF_ORDER
    assert [(ident_of(d), ns_of(d)) for _, d in drain(e0)] == [(32, 32), (31, 33)]
    check_invariants(e0)


def test_cdn_flushes_held_data_before_itself_and_a_reused_id_starts_fresh() -> None:
    e = engine(reorder_timeout=1.0)
    e.receive(data(10), FLOW, 0.0)
    e.receive(data(12), FLOW, 0.0)
    drain(e)
    cdn = wire.build_control(
        TUNNEL,
        SESSION,
        3,
        4,
        [wire.avp_message_type(wire.MessageType.CDN), wire.avp_result_code(3)],
    )
    assert e.receive(cdn, FLOW, 0.1) == Outcome.FORWARDED_CONTROL
    out = [d for _, d in drain(e)]
    assert [ident_of(d) for d in out[:-1]] == [12] and out[-1] == cdn
    assert e.session(FLOW, TUNNEL, SESSION) is None
    assert e.counters.skipped[reasons.SKIP_END] == 1
    # A new call: the control channel sets it up (ICCN), then its Ns start from 0.
    iccn = wire.build_control(TUNNEL, SESSION, 4, 4, [wire.avp_message_type(wire.MessageType.ICCN)])
    e.receive(iccn, FLOW, 0.15)
    assert e.receive(data(0), FLOW, 0.2) == Outcome.FORWARDED_IN_ORDER  # fresh: Ns from 0
    assert [ns_of(d) for _, d in drain(e)][-1] == 0
    assert e.counters.sessions_started == 2
    check_invariants(e)


def test_stopccn_ends_every_session_of_its_tunnel_only() -> None:
    e = engine(reorder_timeout=1.0)
    for tunnel, session in [(TUNNEL, 1), (TUNNEL, 2), (TUNNEL + 1, 1)]:
        e.receive(data(0, tunnel=tunnel, session=session), FLOW, 0.0)
    stop = wire.build_control(
        TUNNEL, 0, 9, 9, [wire.avp_message_type(wire.MessageType.StopCCN), wire.avp_result_code(1)]
    )
    e.receive(stop, FLOW, 0.1)
    assert sorted((s.tunnel_id, s.session_id) for s in e.sessions()) == [(TUNNEL + 1, 1)]


def test_cdn_from_the_lns_side_ends_the_session_named_by_its_avps() -> None:
    """LNS->LAC control names our session by Assigned Session ID, our tunnel via SCCRP."""
    e = engine(reorder_timeout=1.0)
    lac_tunnel, lac_session = 7, 70
    sccrp = wire.build_control(
        lac_tunnel,
        0,
        0,
        1,
        [wire.avp_message_type(wire.MessageType.SCCRP), wire.avp_assigned_tunnel_id(TUNNEL)],
    )
    assert e.observe_reverse(sccrp, FLOW, 0.0) == "SCCRP"
    e.receive(data(0), FLOW, 0.0)
    e.receive(data(2), FLOW, 0.0)
    drain(e)
    cdn = wire.build_control(
        lac_tunnel,
        lac_session,
        1,
        1,
        [
            wire.avp_message_type(wire.MessageType.CDN),
            wire.avp_result_code(3),
            wire.avp_assigned_session_id(SESSION),
        ],
    )
    assert e.observe_reverse(cdn, FLOW, 0.5) == "CDN"
    assert e.session(FLOW, TUNNEL, SESSION) is None
    assert [ident_of(d) for _, d in drain(e)] == [2]  # flushed, not lost
    assert e.observe_reverse(data(5), FLOW, 0.6) is None  # data is not looked at


def test_reconfigure_keeps_held_packets_and_moves_deadlines() -> None:
    e = engine(reorder_timeout=1.0)
    e.receive(data(0), FLOW, 0.0)
    e.receive(data(2), FLOW, 0.0)
    drain(e)
    assert e.next_deadline() == pytest.approx(1.0)
    e.reconfigure(EngineConfig(reorder_timeout=0.2), now=0.1)
    assert e.counters.held_packets == 1
    assert e.next_deadline() == pytest.approx(0.2)
    e.expire(0.2)
    assert [ident_of(d) for _, d in drain(e)] == [2]


def test_flush_delivers_everything_held_in_order() -> None:
    e = engine(reorder_timeout=5.0)
    e.receive(data(0), FLOW, 0.0)
    for ns in [4, 2, 6]:
        e.receive(data(ns), FLOW, 0.0)
    drain(e)
    e.flush(0.1)
    out = drain(e)
    assert [ident_of(d) for _, d in out] == [2, 4, 6]
    assert [ns_of(d) for _, d in out] == [1, 2, 3]
    assert e.counters.held_packets == 0
    check_invariants(e)


def test_capture_clock_stepping_back_does_not_reorder_deadlines() -> None:
    e = engine(reorder_timeout=0.1)
    e.receive(data(0), FLOW, 5.0)
    e.receive(data(2), FLOW, 5.0)
    e.receive(data(4), FLOW, 4.0)  # timestamp steps back: treated as 5.0
    assert e.next_deadline() == pytest.approx(5.1)
    e.expire(5.1)
    assert [ident_of(d) for _, d in drain(e)][1:] == [2, 4]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reorder_timeout", -1.0),
        ("max_held_per_session", 0),
        ("max_held_bytes", 0),
        ("resync_after", 1),
    ],
)
def test_config_rejects_out_of_range_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        EngineConfig(**{field: value})  # type: ignore[arg-type]


def _cdn(session: int = SESSION) -> bytes:
    return wire.build_control(
        TUNNEL,
        session,
        7,
        7,
        [wire.avp_message_type(wire.MessageType.CDN), wire.avp_result_code(3)],
    )


def _session_ended_by_cdn_after_a_gap() -> ReorderEngine:
    """Ns 5000 delivered, 5001 lost (the renumbered stream now runs one behind: the LNS has
    seen 5000, 5001), then a CDN ends the session at t=1.1."""
    e = engine(reorder_timeout=0.01)
    e.receive(data(5000), FLOW, 0.0)
    e.receive(data(5002), FLOW, 0.0)
    e.expire(1.0)
    assert [ns_of(d) for _, d in drain(e)] == [5000, 5001]
    e.receive(_cdn(), FLOW, 1.1)
    assert e.session(FLOW, TUNNEL, SESSION) is None
    drain(e)
    return e


def test_data_carrying_on_after_a_cdn_keeps_the_renumbered_stream_contiguous() -> None:
    """A spoofed CDN (the LNS rejects it: wrong control Ns) ends our session; the LAC's data
    goes on. Restarting the renumbering would show the LNS a jump (xl2tpd then stalls)."""
    e = _session_ended_by_cdn_after_a_gap()
    for i, ns in enumerate([5003, 5005, 5004]):
        e.receive(data(ns), FLOW, 1.2 + i * 0.001)
    out = drain(e)
    assert [ident_of(d) for _, d in out] == [5003, 5004, 5005]
    assert [ns_of(d) for _, d in out] == [5002, 5003, 5004]  # no jump for the LNS
    assert e.counters.sessions_continued == 1
    check_invariants(e)


def test_a_new_call_reusing_the_session_id_starts_afresh() -> None:
    e = _session_ended_by_cdn_after_a_gap()
    e.receive(data(0), FLOW, 1.2)
    assert [ns_of(d) for _, d in drain(e)] == [0]
    assert e.counters.sessions_continued == 0


def test_numbering_is_not_carried_over_after_the_memory_expires() -> None:
    e = _session_ended_by_cdn_after_a_gap()
    e.receive(data(5003), FLOW, 1.1 + 121.0)
    assert [ns_of(d) for _, d in drain(e)] == [5003]
    assert e.counters.sessions_continued == 0


def test_an_evicted_established_session_that_resumes_keeps_its_numbering() -> None:
    e = engine(reorder_timeout=0.01, max_sessions=1)
    iccn = wire.build_control(TUNNEL, 1, 0, 0, [wire.avp_message_type(wire.MessageType.ICCN)])
    e.receive(iccn, FLOW, 0.0)  # the control channel established session 1
    e.receive(data(100, session=1), FLOW, 0.0)
    e.receive(data(102, session=1), FLOW, 0.0)
    e.expire(1.0)  # session 1's stream now runs one behind: out 100, 101
    e.receive(data(7, session=2), FLOW, 1.1)  # evicts session 1
    assert e.counters.sessions_evicted == 1
    drain(e)
    e.receive(data(103, session=1), FLOW, 1.2)  # evicts session 2, session 1 resumes
    assert [ns_of(d) for _, d in drain(e)] == [102]
    assert e.counters.sessions_continued == 1
    check_invariants(e)


def test_evicted_sessions_are_remembered_within_a_bounded_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even a session seen once may be real (a live session whose setup we missed): evicted, it
    continues without a jump; a flood's entries only push each other out of a bounded memory."""
    from l2tpreorder.core import continuation

    monkeypatch.setattr(continuation, "ENDED_KEPT", 16)
    e = engine(max_sessions=2)
    for session in range(1, 50):
        e.receive(data(0, session=session), FLOW, session * 0.001)
    assert e.counters.sessions_evicted == 47
    assert len(e._memory) == 16
    e.receive(data(1, session=47), FLOW, 1.0)  # among the remembered: carries on
    assert e.counters.sessions_continued == 1
    assert [ns_of(d) for _, d in drain(e)][-1] == 1


def test_in_order_packets_between_far_behind_ones_break_the_resync_run() -> None:
    """A resync needs consecutive far-behind packets: in-order traffic in between (here a
    stale replay of old Ns interleaved with the live stream) must not re-base the session."""
    e = engine(reorder_timeout=0.1, resync_after=4)
    for i, ns in enumerate(range(1000, 1010)):
        e.receive(data(ns), FLOW, i * 0.001)
    drain(e)
    outcomes = []
    for i in range(6):
        outcomes.append(e.receive(data(1010 + i), FLOW, 0.1 + i * 0.001))
        outcomes.append(e.receive(data(10 + i), FLOW, 0.1 + i * 0.001))
    assert outcomes[0::2] == [Outcome.FORWARDED_IN_ORDER] * 6
    assert outcomes[1::2] == [Outcome.DROPPED_STALE] * 6
    assert e.counters.resyncs == 0
    assert [ident_of(d) for _, d in drain(e)] == list(range(1010, 1016))
