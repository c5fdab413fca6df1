"""Why each session ended (`end_log`, read by the debug lines): every way of ending names itself,
nothing is recorded unless asked, and the record is bounded."""

from __future__ import annotations

from l2tpreorder import wire
from l2tpreorder.core import reasons, session_table
from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from tests.engine_helpers import FLOW, TUNNEL, data

OTHER = ("192.0.2.11", 1701)


def control(msg: wire.MessageType, tunnel: int, session: int, *avps: wire.AvpValue) -> bytes:
    return wire.build_control(tunnel, session, 1, 1, [wire.avp_message_type(msg), *avps])


def recording(**kw: object) -> ReorderEngine:
    e = ReorderEngine(EngineConfig(**kw))  # type: ignore[arg-type]
    e.end_log = []
    return e


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
    assert e.end_log == [
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
    assert e.counters.sessions_ended == len(e.end_log)


def test_a_restored_session_replacing_a_live_one_is_named() -> None:
    e = recording()
    e.receive(data(0), FLOW, 0.0)
    e.restore_session(FLOW, TUNNEL, 42025, 10, 10, 1.0)
    assert e.end_log == [(FLOW, TUNNEL, 42025, reasons.END_REPLACED)]


def test_nothing_is_recorded_unless_asked() -> None:
    e = ReorderEngine(EngineConfig())
    e.receive(data(0), FLOW, 0.0)
    e.receive(control(wire.MessageType.CDN, TUNNEL, 42025), FLOW, 1.0)
    assert e.counters.sessions_ended == 1
    assert e.end_log is None and e.end_log_missed == 0


def test_the_record_is_bounded_and_counts_what_it_left_out() -> None:
    e = recording()
    extra = 5
    for sid in range(1, session_table.END_LOG_KEPT + extra + 1):
        e.receive(data(0, session=sid), FLOW, 0.0)
    e.end_flow(FLOW, 1.0)
    assert e.end_log is not None and len(e.end_log) == session_table.END_LOG_KEPT
    assert e.end_log_missed == extra
