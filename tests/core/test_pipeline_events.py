"""`Pipeline.take_events()`: drops, malformed datagrams, session ends and hold samples as typed
events, recorded only while switched on, bounded, for both directions (issue 20)."""

from __future__ import annotations

import pytest

from l2tpreorder import wire
from l2tpreorder.core import engine as engine_module
from l2tpreorder.core import events, reasons
from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC
from l2tpreorder.core.engine import EngineConfig, Late
from l2tpreorder.core.events import Dropped, HoldSample, Malformed, Missed, SessionEnded
from l2tpreorder.core.pipeline import MalformedPolicy, Pipeline
from l2tpreorder.core.reasons import Outcome
from tests.engine_helpers import FLOW, SESSION, TUNNEL, data

CDN = wire.build_control(TUNNEL, SESSION, 1, 1, [wire.avp_message_type(wire.MessageType.CDN)])
TOO_LONG = bytes([0x40, 0x02, 0x00, 0xFF]) + bytes(8)  # Length 255 in a 12-byte datagram


def test_nothing_is_recorded_and_nothing_is_wrapped_while_off() -> None:
    p = Pipeline(EngineConfig(reorder_timeout=1.0))
    assert p.from_lac == p.engine.receive  # the hot path is the engine's own method
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(0), FLOW, 0.1)  # duplicate
    p.from_lac(data(2), FLOW, 0.2)  # held
    p.from_lac(data(1), FLOW, 0.3)  # releases 2 after 0.1 s
    p.from_lac(TOO_LONG, FLOW, 0.4)
    p.from_lac(CDN, FLOW, 0.5)
    assert p.counters.dropped == 2 and p.counters.sessions_ended == 1
    assert p.take_events() == []


def test_debug_events_name_each_drop_end_and_malformed_datagram() -> None:
    # late: drop, so that a late packet is a drop event (delivered, it is no drop: see below)
    p = Pipeline(EngineConfig(reorder_timeout=1.0, max_held_per_session=64, late=Late.DROP))
    p.record_events(debug=True)
    assert p.from_lac != p.engine.receive
    p.from_lac(data(100), FLOW, 0.0)
    assert p.from_lac(data(100), FLOW, 0.1) == Outcome.DROPPED_DUPLICATE
    p.from_lac(data(103), FLOW, 0.2)  # held: 101, 102 missing
    p.expire(1.2)  # given up
    assert p.from_lac(data(101), FLOW, 1.3) == Outcome.DROPPED_LATE
    assert p.from_lac(data(100 - 65 - 1), FLOW, 1.4) == Outcome.DROPPED_STALE
    assert p.from_lac(TOO_LONG, FLOW, 1.5) == Outcome.DROPPED_MALFORMED
    p.from_lac(CDN, FLOW, 1.6)
    assert p.take_events() == [
        Dropped(LAC_TO_LNS, FLOW, Outcome.DROPPED_DUPLICATE, TUNNEL, SESSION, 100),
        Dropped(LAC_TO_LNS, FLOW, Outcome.DROPPED_LATE, TUNNEL, SESSION, 101),
        Dropped(LAC_TO_LNS, FLOW, Outcome.DROPPED_STALE, TUNNEL, SESSION, 34),
        Malformed(LAC_TO_LNS, FLOW, reasons.LENGTH_EXCEEDS_DATAGRAM, False),
        SessionEnded(LAC_TO_LNS, FLOW, TUNNEL, SESSION, reasons.END_CDN),
    ]
    assert p.take_events() == []  # taken


def test_events_of_the_lns_to_lac_direction_say_so_and_survive_reconfigure() -> None:
    config = EngineConfig(reorder_timeout=1.0)
    p = Pipeline(config, reorder_from_lns=True, malformed=MalformedPolicy.PASS)
    p.record_events(debug=True)
    p.reconfigure(EngineConfig(reorder_timeout=0.5), 0.0)  # rewires: still recorded
    p.from_lns(data(7, tunnel=9, session=8), FLOW, 0.0)
    p.from_lns(data(7, tunnel=9, session=8), FLOW, 0.1)
    assert p.from_lns(TOO_LONG, FLOW, 0.2) == Outcome.FORWARDED_MALFORMED
    assert [o.data for o in p.take_output()][-1] is TOO_LONG  # passed untouched
    assert p.take_events() == [
        Dropped(LNS_TO_LAC, FLOW, Outcome.DROPPED_DUPLICATE, 9, 8, 7),
        Malformed(LNS_TO_LAC, FLOW, reasons.LENGTH_EXCEEDS_DATAGRAM, True),
    ]
    # Switching the direction off hands over what its engine recorded (its session ends).
    p.reconfigure(config, 1.0, reorder_from_lns=False)
    assert p.take_events() == []  # flushed, not ended: sessions stay until they end
    p.record_events(debug=False)
    p.from_lac(data(0), FLOW, 2.0)
    p.from_lac(data(0), FLOW, 2.1)
    assert p.take_events() == []


def test_hold_samples_are_the_times_held() -> None:
    p = Pipeline(EngineConfig(reorder_timeout=1.0))
    p.record_events(hold_samples=True)
    assert p.from_lac == p.engine.receive  # hold samples cost no wrapper either
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(2), FLOW, 0.25)
    p.from_lac(data(3), FLOW, 0.5)
    p.from_lac(data(1), FLOW, 0.75)  # releases 2 and 3
    p.from_lac(data(5), FLOW, 1.0)
    p.expire(2.0)  # gives up 4, releases 5
    key = (FLOW, TUNNEL, SESSION)
    assert p.take_events() == [
        HoldSample(LAC_TO_LNS, key, 0.5),
        HoldSample(LAC_TO_LNS, key, 0.25),
        HoldSample(LAC_TO_LNS, key, 1.0),
    ]
    p.from_lac(CDN, FLOW, 3.0)
    assert p.take_events() == []  # debug events are off


def test_drop_events_are_bounded_and_what_did_not_fit_is_said() -> None:
    p = Pipeline(EngineConfig())
    p.record_events(debug=True)
    p.from_lac(data(0), FLOW, 0.0)
    extra = 3
    for _ in range(events.EVENTS_KEPT + extra):
        p.from_lac(data(0), FLOW, 0.1)
    got = p.take_events()
    assert len(got) == events.EVENTS_KEPT + 1
    assert got[-1] == Missed(LAC_TO_LNS, "dropped", extra)
    assert p.counters.dropped_duplicate == events.EVENTS_KEPT + extra  # counted all the same


def test_hold_samples_are_bounded_and_what_did_not_fit_is_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "HOLD_SAMPLES_KEPT", 2)  # instead of a million packets
    p = Pipeline(EngineConfig(reorder_timeout=1.0))
    p.record_events(hold_samples=True)
    p.from_lac(data(0), FLOW, 0.0)
    for ns in range(2, 7):
        p.from_lac(data(ns), FLOW, 0.1)
    p.from_lac(data(1), FLOW, 0.2)  # releases 2..6: five samples, two kept
    key = (FLOW, TUNNEL, SESSION)
    assert p.take_events() == [
        HoldSample(LAC_TO_LNS, key, 0.1),
        HoldSample(LAC_TO_LNS, key, 0.1),
        Missed(LAC_TO_LNS, "hold", 3),
    ]
    assert p.counters.released == 5


def test_a_late_packet_delivered_is_no_drop_event() -> None:
    """reorder.late: deliver (the default in renumber mode): the late packet goes on, so the
    debug lines must not call it dropped."""
    p = Pipeline(EngineConfig(reorder_timeout=1.0))
    p.record_events(debug=True)
    p.from_lac(data(100), FLOW, 0.0)
    p.from_lac(data(103), FLOW, 0.2)  # held: 101, 102 missing
    p.expire(1.2)  # given up
    assert p.from_lac(data(101), FLOW, 1.3) == Outcome.FORWARDED_LATE
    assert p.take_events() == []
