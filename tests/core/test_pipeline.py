"""The pipeline: both directions, one deadline, one output, the session-lifecycle rules.

Virtual time (`now` is just a number); no sockets. The adapters (relay, replay) are tested with the
real thing in tests/daemon and tests/tools; here, what they rely on the pipeline for.
"""

from __future__ import annotations

import pytest

from l2tpreorder import wire
from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.core.pipeline import LAC_TO_LNS, LNS_TO_LAC, Output, Pipeline
from l2tpreorder.core.reasons import Outcome
from tests.engine_helpers import FLOW, SESSION, TUNNEL, check_invariants, data, ident_of

LAC_TUNNEL, LAC_SESSION = 7, 70  # the LAC's own IDs: what the LNS's messages carry in headers


def sccrp() -> bytes:
    """LNS -> LAC: pairs the LAC's tunnel ID (header) with ours (Assigned Tunnel ID)."""
    avps = [wire.avp_message_type(wire.MessageType.SCCRP), wire.avp_assigned_tunnel_id(TUNNEL)]
    return wire.build_control(LAC_TUNNEL, 0, 0, 1, avps)


def cdn_from_lns() -> bytes:
    avps = [
        wire.avp_message_type(wire.MessageType.CDN),
        wire.avp_result_code(3),
        wire.avp_assigned_session_id(SESSION),
    ]
    return wire.build_control(LAC_TUNNEL, LAC_SESSION, 1, 1, avps)


def cdn_from_lac() -> bytes:
    avps = [
        wire.avp_message_type(wire.MessageType.CDN),
        wire.avp_result_code(3),
        wire.avp_assigned_session_id(LAC_SESSION),
    ]
    return wire.build_control(TUNNEL, SESSION, 1, 1, avps)


def lns_data(ns: int) -> bytes:
    """LNS -> LAC data: the LAC's IDs in the header."""
    return data(ns, tunnel=LAC_TUNNEL, session=LAC_SESSION)


def pipeline(timeout: float = 1.0, *, reorder_from_lns: bool = False) -> Pipeline:
    return Pipeline(EngineConfig(reorder_timeout=timeout), reorder_from_lns=reorder_from_lns)


def test_from_lac_reorders_and_the_tag_travels_with_each_datagram() -> None:
    p = pipeline()
    assert p.from_lac(data(0), FLOW, 0.0, "t0") == Outcome.FORWARDED_IN_ORDER
    assert p.from_lac(data(2), FLOW, 0.1, "t2") == Outcome.HELD
    out = p.take_output()
    assert [(o.to_lns, o.flow, o.tag) for o in out] == [(True, FLOW, "t0")]
    assert p.take_output() == []  # taking clears it
    assert p.from_lac(data(1), FLOW, 0.2, "t1") == Outcome.FORWARDED_IN_ORDER
    out = p.take_output()
    assert [o.tag for o in out] == ["t1", "t2"]  # the held one leaves with its own tag
    assert [ident_of(o.data) for o in out] == [1, 2]
    check_invariants(p.engine)


def test_dropped_datagrams_never_appear_in_the_output() -> None:
    p = pipeline()
    p.from_lac(data(0), FLOW, 0.0, 0)
    assert p.from_lac(data(0), FLOW, 0.1, 1) == Outcome.DROPPED_DUPLICATE
    assert p.from_lac(b"\x00", FLOW, 0.2, 2) == Outcome.DROPPED_MALFORMED
    assert [o.tag for o in p.take_output()] == [0]


def test_lns_datagrams_pass_untouched_in_order_with_their_outcome() -> None:
    p = pipeline()
    hello = wire.build_control(LAC_TUNNEL, 0, 0, 0, [wire.avp_message_type(wire.MessageType.HELLO)])
    assert p.from_lns(lns_data(5), FLOW, 0.0, "a") == Outcome.FORWARDED_UNSEQUENCED
    assert p.from_lns(hello, FLOW, 0.0, "b") == Outcome.FORWARDED_CONTROL
    assert p.from_lns(lns_data(3), FLOW, 0.0, "c") == Outcome.FORWARDED_UNSEQUENCED
    assert p.take_output() == [
        Output(False, FLOW, lns_data(5), "a"),
        Output(False, FLOW, hello, "b"),
        Output(False, FLOW, lns_data(3), "c"),
    ]
    assert p.engine.counters.received == 0  # nothing of it touched the LAC-to-LNS engine


def test_a_cdn_from_the_lns_ends_our_session_and_flushes_it_first() -> None:
    """The rule the relay and replay used to wire by hand: CDN from the far side ends ours."""
    p = pipeline()
    p.from_lns(sccrp(), FLOW, 0.0)
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(2), FLOW, 0.1)
    p.take_output()
    assert p.from_lns(cdn_from_lns(), FLOW, 0.5, "cdn") == Outcome.FORWARDED_CONTROL
    assert p.engine.session(FLOW, TUNNEL, SESSION) is None
    out = p.take_output()
    assert [(o.to_lns, o.tag) for o in out] == [(True, None), (False, "cdn")]
    assert ident_of(out[0].data) == 2  # flushed towards the LNS, not lost
    assert p.next_deadline() is None


def test_a_stopccn_from_the_lns_ends_the_tunnel() -> None:
    p = pipeline()
    p.from_lns(sccrp(), FLOW, 0.0)
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(0, session=SESSION + 1), FLOW, 0.0)
    avps = [
        wire.avp_message_type(wire.MessageType.StopCCN),
        wire.avp_assigned_tunnel_id(TUNNEL),
        wire.avp_result_code(1),
    ]
    p.from_lns(wire.build_control(LAC_TUNNEL, 0, 2, 2, avps), FLOW, 1.0)
    assert list(p.sessions()) == []


def test_with_lns_reordering_both_directions_share_one_deadline() -> None:
    p = pipeline(reorder_from_lns=True)
    assert set(p.directions()) == {LAC_TO_LNS, LNS_TO_LAC}
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(2), FLOW, 0.0)  # held until 1.0
    p.from_lns(lns_data(0), FLOW, 0.2)
    assert p.from_lns(lns_data(2), FLOW, 0.3, "down") == Outcome.HELD  # held until 1.3
    p.take_output()
    assert p.next_deadline() == p.next_hold_deadline() == pytest.approx(1.0)
    p.expire(1.0)
    assert [(o.to_lns, ident_of(o.data)) for o in p.take_output()] == [(True, 2)]
    assert p.next_deadline() == p.next_hold_deadline() == pytest.approx(1.3)
    p.expire(1.3)
    out = p.take_output()
    assert [(o.to_lns, ident_of(o.data), o.tag) for o in out] == [(False, 2, "down")]
    assert p.next_hold_deadline() is None
    # Nothing held; what is left is the LAC-to-LNS session's idle expiry (silent since 0.0).
    assert p.next_deadline() == pytest.approx(0.0 + EngineConfig().session_idle_timeout)


def test_a_cdn_from_the_lac_ends_the_lns_to_lac_session_too() -> None:
    """Both engines learn the session's end, whichever side sends the CDN."""
    p = pipeline(reorder_from_lns=True)
    sccrq = wire.build_control(
        0,
        0,
        0,
        0,
        [wire.avp_message_type(wire.MessageType.SCCRQ), wire.avp_assigned_tunnel_id(LAC_TUNNEL)],
    )
    p.from_lac(sccrq, FLOW, 0.0)
    p.from_lns(sccrp(), FLOW, 0.0)
    p.from_lns(lns_data(0), FLOW, 0.1)
    p.from_lns(lns_data(2), FLOW, 0.1)  # held
    assert p.engine_to_lac is not None
    assert p.engine_to_lac.counters.held_packets == 1
    p.take_output()
    p.from_lac(cdn_from_lac(), FLOW, 0.5)
    assert p.engine_to_lac.session(FLOW, LAC_TUNNEL, LAC_SESSION) is None
    out = p.take_output()
    assert [(o.to_lns, o.data[0] & 0x80 != 0) for o in out] == [(True, True), (False, False)]


def test_flush_releases_both_directions_in_order() -> None:
    p = pipeline(reorder_from_lns=True)
    for ns in (0, 3, 2):
        p.from_lac(data(ns), FLOW, 0.0)
        p.from_lns(lns_data(ns), FLOW, 0.0)
    p.take_output()
    p.flush(0.1)
    out = p.take_output()
    assert [(o.to_lns, ident_of(o.data)) for o in out] == [
        (True, 2),
        (True, 3),
        (False, 2),
        (False, 3),
    ]
    assert p.next_hold_deadline() is None


def test_switching_lns_reordering_off_releases_what_it_held() -> None:
    p = pipeline(reorder_from_lns=True)
    p.from_lns(lns_data(0), FLOW, 0.0)
    p.from_lns(lns_data(2), FLOW, 0.0)
    p.take_output()
    p.reconfigure(EngineConfig(reorder_timeout=1.0), 0.1, reorder_from_lns=False)
    assert p.engine_to_lac is None and set(p.directions()) == {LAC_TO_LNS}
    p.from_lns(lns_data(3), FLOW, 0.2, "after")
    out = p.take_output()
    assert [(o.to_lns, ident_of(o.data), o.tag) for o in out] == [
        (False, 2, None),
        (False, 3, "after"),
    ]
    p.reconfigure(EngineConfig(reorder_timeout=1.0), 0.3, reorder_from_lns=True)
    assert p.from_lns(lns_data(5), FLOW, 0.4) == Outcome.FORWARDED_IN_ORDER


def test_end_flow_ends_the_peer_in_both_directions() -> None:
    p = pipeline(reorder_from_lns=True)
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lns(lns_data(0), FLOW, 0.0)
    p.from_lac(data(0), "other", 0.0)
    assert p.end_flow(FLOW, 1.0) == 2
    assert [s.flow for s in p.sessions()] == ["other"]


@pytest.mark.parametrize("reorder_from_lns", [False, True])
def test_idle_expiry_is_part_of_the_one_deadline(reorder_from_lns: bool) -> None:
    """An adapter keeping one timer on next_deadline() forgets silent sessions, in both
    directions, with no housekeeping call of its own; what they hold goes out first."""
    config = EngineConfig(reorder_timeout=1.0, session_idle_timeout=5.0)
    p = Pipeline(config, reorder_from_lns=reorder_from_lns)
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(2), FLOW, 0.5)  # held until 1.5
    p.from_lns(lns_data(0), FLOW, 2.0)
    p.take_output()
    assert p.next_deadline() == pytest.approx(1.5)
    p.expire(1.5)
    assert [ident_of(o.data) for o in p.take_output()] == [2]
    assert p.next_deadline() == pytest.approx(0.5 + 5.0)  # LAC side silent since 0.5
    p.expire(5.5)
    assert list(p.sessions()) == []
    assert p.engine.counters.sessions_idle_expired == 1
    if reorder_from_lns:
        assert p.engine_to_lac is not None
        assert p.next_deadline() == pytest.approx(2.0 + 5.0)
        p.expire(7.0)
        assert p.engine_to_lac.counters.sessions_idle_expired == 1
    assert p.next_deadline() is None


def test_a_cdn_from_the_lns_is_authoritative_one_from_the_lac_side_is_remembered() -> None:
    """The LNS ended the session itself: its IDs start afresh. A CDN from the LAC's side may be
    spoofed: if the data carries on, the numbering does too (sessions_continued)."""
    p = pipeline()
    p.from_lns(sccrp(), FLOW, 0.0)
    for ns in range(3):
        p.from_lac(data(ns), FLOW, 0.1)
    p.from_lns(cdn_from_lns(), FLOW, 0.2)
    assert p.engine.session(FLOW, TUNNEL, SESSION) is None
    p.from_lac(data(3), FLOW, 0.3)
    assert p.engine.counters.sessions_continued == 0  # not remembered
    p.from_lac(cdn_from_lac(), FLOW, 0.4)
    assert p.engine.session(FLOW, TUNNEL, SESSION) is None
    p.from_lac(data(4), FLOW, 0.5)
    assert p.engine.counters.sessions_continued == 1  # remembered: the stream went on
    check_invariants(p.engine)


def test_with_lns_reordering_a_cdn_from_the_lac_is_not_authoritative_for_that_engine() -> None:
    """The LNS-to-LAC engine learns a session's end from the LAC's side, which may be spoofed:
    it remembers the numbering, so LNS data carrying on continues it."""
    p = pipeline(reorder_from_lns=True)
    sccrq = wire.build_control(
        0,
        0,
        0,
        0,
        [wire.avp_message_type(wire.MessageType.SCCRQ), wire.avp_assigned_tunnel_id(LAC_TUNNEL)],
    )
    p.from_lac(sccrq, FLOW, 0.0)
    p.from_lns(sccrp(), FLOW, 0.0)
    p.from_lns(lns_data(0), FLOW, 0.1)
    p.from_lac(cdn_from_lac(), FLOW, 0.2)
    assert p.engine_to_lac is not None
    assert p.engine_to_lac.session(FLOW, LAC_TUNNEL, LAC_SESSION) is None
    assert p.from_lns(lns_data(1), FLOW, 0.3) == Outcome.FORWARDED_IN_ORDER
    assert p.engine_to_lac.counters.sessions_continued == 1
    check_invariants(p.engine_to_lac)
