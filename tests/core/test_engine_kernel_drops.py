"""Kernel receive-queue drops (SO_RXQ_OVFL): gaps that may be drops are given up after a grace.

Virtual time; the socket side (that the relay learns of real kernel drops and tells the engine)
is tested in tests/daemon/test_relay_io.py.
"""

from __future__ import annotations

from l2tpreorder.core import reasons
from l2tpreorder.core.engine import KERNEL_DROP_GRACE, EngineConfig, ReorderEngine
from l2tpreorder.core.reasons import Outcome
from tests.engine_helpers import FLOW, check_invariants, data, drain, ident_of, ns_of

TIMEOUT = 1.0


def engine() -> ReorderEngine:
    return ReorderEngine(EngineConfig(reorder_timeout=TIMEOUT))


def test_gap_after_reported_drops_is_given_up_at_once() -> None:
    e = engine()
    e.receive(data(1), FLOW, 10.0)
    e.note_kernel_drops(10.5)  # drops between Ns 1 (10.0) and Ns 3 (11.0): Ns 2 may be one
    e.receive(data(3), FLOW, 11.0)
    e.receive(data(4), FLOW, 11.0)
    assert [ident_of(d) for _, d in drain(e)] == [1, 3, 4]
    assert e.next_deadline() is None
    assert e.counters.skipped[reasons.SKIP_SOCKET_DROP] == 1
    assert e.counters.skipped[reasons.SKIP_TIMEOUT] == 0
    # Had Ns 2 only been swapped, it now comes late: delivered with the next Ns (renumber's
    # reorder.late default), the price a reordering, not a loss.
    assert e.receive(data(2), FLOW, 11.0) == Outcome.FORWARDED_LATE
    assert [(ident_of(d), ns_of(d)) for _, d in drain(e)] == [(2, 4)]  # LNS: 1 2 3 4
    assert e.counters.forwarded_late == 1 and e.counters.dropped_late == 0
    check_invariants(e)


def test_gap_while_holding_is_given_up_after_the_grace() -> None:
    e = engine()
    e.receive(data(1), FLOW, 10.0)
    e.receive(data(3), FLOW, 10.1)  # an ordinary gap: held for the timeout
    e.note_kernel_drops(10.5)
    e.receive(data(5), FLOW, 11.0)  # another gap, opened after the drops
    assert drain(e) == [(FLOW, data(1))]
    deadline = e.next_deadline()
    assert deadline == 11.0 + KERNEL_DROP_GRACE
    e.expire(deadline - 1e-6)
    assert drain(e) == []
    e.expire(deadline)
    assert [ident_of(d) for _, d in drain(e)] == [3, 5]
    assert e.counters.skipped[reasons.SKIP_SOCKET_DROP] == 2
    assert e.counters.skipped[reasons.SKIP_TIMEOUT] == 0
    assert e.next_deadline() is None
    check_invariants(e)


def test_a_swap_filled_inside_the_grace_loses_nothing() -> None:
    e = engine()
    e.receive(data(1), FLOW, 10.0)
    e.receive(data(3), FLOW, 10.1)
    e.note_kernel_drops(10.5)
    e.receive(data(5), FLOW, 11.0)
    e.receive(data(4), FLOW, 11.0 + KERNEL_DROP_GRACE / 2)
    e.receive(data(2), FLOW, 11.0 + KERNEL_DROP_GRACE / 2)
    assert [ident_of(d) for _, d in drain(e)] == [1, 2, 3, 4, 5]
    assert e.next_deadline() is None
    e.expire(20.0)
    assert sum(e.counters.skipped.values()) == 0
    check_invariants(e)


def test_sessions_quiet_since_before_the_drops_only() -> None:
    """A session whose previous packet came after the drops cannot have lost one to them."""
    e = engine()
    e.receive(data(1, session=7), FLOW, 10.0)
    e.receive(data(1, session=8), FLOW, 10.0)
    e.note_kernel_drops(10.5)
    e.receive(data(2, session=8), FLOW, 10.6)  # in order, after the drops
    e.receive(data(4, session=8), FLOW, 10.7)  # a gap, but not one the drops can explain
    e.receive(data(3, session=7), FLOW, 10.7)  # a gap spanning the drops: given up at once
    assert [ident_of(d) for _, d in drain(e)] == [1, 1, 2, 3]
    s8 = e.session(FLOW, 25085, 8)
    assert s8 is not None and len(s8.held) == 1
    assert e.next_deadline() == 10.7 + TIMEOUT
    e.expire(10.7 + TIMEOUT)
    assert [ident_of(d) for _, d in drain(e)] == [4]
    assert e.counters.skipped[reasons.SKIP_SOCKET_DROP] == 1
    assert e.counters.skipped[reasons.SKIP_TIMEOUT] == 1
    check_invariants(e)


def test_without_reported_drops_the_timeout_holds() -> None:
    e = engine()
    e.receive(data(1), FLOW, 10.0)
    e.receive(data(3), FLOW, 11.0)
    assert e.next_deadline() == 11.0 + TIMEOUT
    e.expire(11.0 + TIMEOUT / 2)
    assert drain(e) == [(FLOW, data(1))]
    assert e.counters.skipped[reasons.SKIP_SOCKET_DROP] == 0


def test_grace_never_exceeds_a_shorter_timeout() -> None:
    e = ReorderEngine(EngineConfig(reorder_timeout=KERNEL_DROP_GRACE / 4))
    e.receive(data(1), FLOW, 10.0)
    e.receive(data(3), FLOW, 10.0)
    e.note_kernel_drops(10.0)
    e.receive(data(5), FLOW, 10.0)
    assert e.next_deadline() == 10.0 + KERNEL_DROP_GRACE / 4


def test_a_burst_of_drops_wider_than_the_window_is_given_up_not_taken_for_a_stray() -> None:
    """Review finding: a socket-overflow burst lost more than W packets of one session; the
    next genuine ones are far ahead, but after reported drops that is the burst (given up at
    once as socket_overflow), not a stray far_ahead packet to drop."""
    e = engine()
    e.receive(data(1), FLOW, 10.0)
    e.note_kernel_drops(10.5)
    gap = e.window + 50  # W = max(max_held_per_session, 64)
    for k in range(3):
        assert e.receive(data(2 + gap + k), FLOW, 11.0) == Outcome.FORWARDED_IN_ORDER
    assert [ident_of(d) for _, d in drain(e)] == [1, 2 + gap, 3 + gap, 4 + gap]
    assert e.counters.skipped[reasons.SKIP_SOCKET_DROP] == gap
    assert e.counters.dropped_far_ahead == 0
    check_invariants(e)
