"""The given-up window (core/continuation.py's first promise) against two ways it was broken:
in-order traffic never aged the bitmap, so after one full turn of Ns old given-up entries lined
up with the window again; and a reload raising W treated the Ns it had never tracked as
delivered. Both are issue 22's reproducers."""

from __future__ import annotations

import pytest

from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.core.reasons import Outcome
from tests.engine_helpers import FLOW, data, drain, engine, ident_of


def _full_turn(e: ReorderEngine, first: int, count: int) -> None:
    """`count` packets in order from Ns `first` (mod 2**16), no new gap."""
    for i in range(count):
        assert e.receive(data((first + i) & 0xFFFF), FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER
    drain(e)


@pytest.mark.parametrize("timeout", [0.0, 0.1])
def test_a_full_turn_in_order_ages_the_given_up_record(timeout: float) -> None:
    """Session started at Ns 1000 (so 744..999 count as given up), 65,546 packets in order: Ns
    995 was delivered 15 packets ago (its second turn), so a copy of it is a duplicate."""
    e = engine(reorder_timeout=timeout)
    _full_turn(e, 1000, 65_546)
    assert e.receive(data(995), FLOW, 0.0) == Outcome.DROPPED_DUPLICATE
    assert drain(e) == []
    assert e.counters.dropped_late == 0


def test_a_full_turn_then_a_new_gap_keeps_only_the_new_record() -> None:
    """_skip after a full turn must not shift the stale bits in behind the new gap."""
    e = engine(reorder_timeout=0.0)
    _full_turn(e, 1000, 65_546)  # expected 1010; the start record (744..999) is stale
    assert e.receive(data(1012), FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER  # 1010, 1011 given up
    drain(e)
    assert e.receive(data(1011), FLOW, 0.0) == Outcome.FORWARDED_OUT_OF_ORDER
    assert e.receive(data(998), FLOW, 0.0) == Outcome.DROPPED_DUPLICATE
    assert [ident_of(d) for _, d in drain(e)] == [1011]


def test_raising_the_window_by_reload_forgets_no_given_up_ns() -> None:
    """W 64 (max_held 16): Ns 1 and, 100 later, Ns 101 given up; reload to max_held 256 (W 256).
    Ns 1 was never delivered: it must not be called a duplicate. What the old window no longer
    tracked is unknown, so it is `stale` (as it was before the reload), never a duplicate."""
    e = engine(reorder_timeout=0.0, max_held_per_session=16)
    assert e.receive(data(0), FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER
    for ns in [*range(2, 101), *range(102, 140)]:  # 1 and 101 given up (timeout 0)
        e.receive(data(ns), FLOW, 0.0)
    drain(e)
    e.reconfigure(EngineConfig(reorder_timeout=0.0, max_held_per_session=256), 1.0)
    outcome = e.receive(data(1), FLOW, 1.0)
    assert outcome != Outcome.DROPPED_DUPLICATE
    assert outcome == Outcome.DROPPED_STALE
    # What the old window did know is still exact: 101 was given up, 100 delivered.
    assert e.receive(data(101), FLOW, 1.0) == Outcome.FORWARDED_OUT_OF_ORDER
    assert e.receive(data(100), FLOW, 1.0) == Outcome.DROPPED_DUPLICATE


def test_after_a_raise_the_new_window_fills_as_the_session_moves_on() -> None:
    """Once the session has advanced by the new W, the whole new window is exact again."""
    e = engine(reorder_timeout=0.0, max_held_per_session=16)
    e.receive(data(0), FLOW, 0.0)
    e.reconfigure(EngineConfig(reorder_timeout=0.0, max_held_per_session=256), 0.0)
    for ns in range(2, 200):  # Ns 1 given up after the reload: tracked in the new window
        e.receive(data(ns), FLOW, 0.0)
    drain(e)
    assert e.receive(data(1), FLOW, 0.0) == Outcome.FORWARDED_OUT_OF_ORDER  # 199 back < W 256
    assert e.receive(data(150), FLOW, 0.0) == Outcome.DROPPED_DUPLICATE
