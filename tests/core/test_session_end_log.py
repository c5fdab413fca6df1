"""Why each session ended (`SessionEnded` events, read by the debug lines): every way of ending
names itself, nothing is recorded unless asked, and the record is bounded."""

from __future__ import annotations

from l2tpreorder import wire
from l2tpreorder.core import reasons, session_table
from l2tpreorder.core.counters import LAC_TO_LNS
from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.core.events import Missed, SessionEnded
from l2tpreorder.core.pipeline import Pipeline
from tests.engine_helpers import FLOW, TUNNEL, data

OTHER = ("192.0.2.11", 1701)


def control(msg: wire.MessageType, tunnel: int, session: int, *avps: wire.AvpValue) -> bytes:
    return wire.build_control(tunnel, session, 1, 1, [wire.avp_message_type(msg), *avps])


def recording(**kw: object) -> ReorderEngine:
    """The LAC-to-LNS engine of a pipeline recording debug events (driven directly: the
    reverse-direction calls are the engine's own)."""
    p = Pipeline(EngineConfig(**kw))  # type: ignore[arg-type]
    p.record_events(debug=True)
    return p.engine


def ends(e: ReorderEngine) -> list[tuple[object, int, int, str]]:
    got, missed, _, _ = e.take_records()
    assert missed == 0
    return got


def test_each_way_of_ending_is_named() -> None:
    e = recording(max_sessions=4, session_idle_timeout=50.0)
    for sid in (1, 2, 3, 4):
        e.receive(data(0, session=sid), FLOW, 0.0)
    e.receive(control(wire.MessageType.CDN, TUNNEL, 1), FLOW, 1.0)  # from the LAC side
    lns_cdn = control(wire.MessageType.CDN, 9, 0, wire.avp_assigned_session_id(2))
    e.observe_reverse(lns_cdn, FLOW, 2.0)  # from the LNS: session 2 is the only one with ID 2
    e.receive(data(0, session=5), FLOW, 3.0)
    e.receive(data(0, session=6), FLOW, 4.0)  # 3, 4, 5, 6: the table is full
    e.receive(data(0, session=11), FLOW, 4.5)  # so 3, the longest silent, goes
    e.receive(control(wire.MessageType.StopCCN, TUNNEL, 0), FLOW, 5.0)  # 4, 5, 6, 11
    e.receive(data(0, tunnel=2, session=7), FLOW, 6.0)
    stop = control(wire.MessageType.StopCCN, 9, 0, wire.avp_assigned_tunnel_id(2))
    e.observe_reverse(stop, FLOW, 7.0)
    e.receive(data(0, tunnel=3, session=8), FLOW, 8.0)
    e.receive(data(0, tunnel=3, session=9), OTHER, 8.0)
    e.expire(8.0 + 50.0)  # both silent past the idle timeout...
    e.receive(data(0, tunnel=4, session=10), OTHER, 60.0)
    e.end_flow(OTHER, 61.0)  # ...and the peer forgotten
    logged = ends(e)
    assert logged == [
        (FLOW, TUNNEL, 1, reasons.END_CDN),
        (FLOW, TUNNEL, 2, reasons.END_CDN_REVERSE),
        (FLOW, TUNNEL, 3, reasons.END_EVICTED),
        (FLOW, TUNNEL, 4, reasons.END_STOPCCN),
        (FLOW, TUNNEL, 5, reasons.END_STOPCCN),
        (FLOW, TUNNEL, 6, reasons.END_STOPCCN),
        (FLOW, TUNNEL, 11, reasons.END_STOPCCN),
        (FLOW, 2, 7, reasons.END_STOPCCN_REVERSE),
        (FLOW, 3, 8, reasons.END_IDLE),
        (OTHER, 3, 9, reasons.END_IDLE),
        (OTHER, 4, 10, reasons.END_PEER),
    ]
    assert e.counters.sessions_ended == len(logged)


def test_a_restored_session_replacing_a_live_one_is_named() -> None:
    e = recording()
    e.receive(data(0), FLOW, 0.0)
    e.restore_session(FLOW, TUNNEL, 42025, 10, 10, 1.0)
    assert ends(e) == [(FLOW, TUNNEL, 42025, reasons.END_REPLACED)]


def test_nothing_is_recorded_unless_asked() -> None:
    p = Pipeline(EngineConfig())
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(0), FLOW, 0.1)  # a duplicate
    p.from_lac(control(wire.MessageType.CDN, TUNNEL, 42025), FLOW, 1.0)
    assert p.counters.sessions_ended == 1 and p.counters.dropped_duplicate == 1
    assert p.take_events() == []
    p.record_events(debug=True)
    p.from_lac(data(0, session=1), FLOW, 2.0)
    p.from_lac(control(wire.MessageType.CDN, TUNNEL, 1), FLOW, 3.0)
    assert p.take_events() == [SessionEnded(LAC_TO_LNS, FLOW, TUNNEL, 1, reasons.END_CDN)]
    p.record_events(debug=False)
    p.from_lac(data(0, session=2), FLOW, 4.0)
    p.from_lac(data(0, session=2), FLOW, 4.1)
    p.from_lac(control(wire.MessageType.CDN, TUNNEL, 2), FLOW, 5.0)
    assert p.counters.sessions_ended == 3 and p.counters.dropped_duplicate == 2
    assert p.take_events() == []


def test_the_record_is_bounded_and_counts_what_it_left_out() -> None:
    p = Pipeline(EngineConfig())
    p.record_events(debug=True)
    extra = 5
    for sid in range(1, session_table.END_LOG_KEPT + extra + 1):
        p.from_lac(data(0, session=sid), FLOW, 0.0)
    p.end_flow(FLOW, 1.0)
    events = p.take_events()
    assert len(events) == session_table.END_LOG_KEPT + 1
    assert all(isinstance(e, SessionEnded) for e in events[:-1])
    assert events[-1] == Missed(LAC_TO_LNS, "ended", extra)
    assert p.take_events() == []  # taken: the next read starts afresh
