"""`reorder.late`: a packet whose Ns was given up and never delivered goes out at once with the
session's next Ns (renumber, strip), once; preserve mode and `late: drop` drop it (issue 22)."""

from __future__ import annotations

import pytest

from l2tpreorder.core import reasons
from l2tpreorder.core.engine import EngineConfig, Late, ReorderEngine, Sequencing
from l2tpreorder.core.reasons import Outcome
from tests.engine_helpers import (
    FLOW,
    SESSION,
    TUNNEL,
    check_invariants,
    data,
    engine,
    ident_of,
    ns_of,
)


def _given_up_101(**kw: object) -> ReorderEngine:
    """Ns 100 delivered, 102 held then released when 101's gap is given up at t=1."""
    e = engine(reorder_timeout=0.01, **kw)
    e.receive(data(100), FLOW, 0.0)
    assert e.receive(data(102), FLOW, 0.0) == Outcome.HELD
    e.expire(1.0)
    e.take_output()
    return e


def test_a_late_packet_is_delivered_once_with_the_next_ns() -> None:
    e = _given_up_101()
    assert e.receive(data(101), FLOW, 1.1, "t101") == Outcome.FORWARDED_LATE
    out = e.take_output()
    assert [(ident_of(d), ns_of(d), tag) for _, d, tag in out] == [(101, 102, "t101")]
    assert e.receive(data(101), FLOW, 1.2) == Outcome.DROPPED_DUPLICATE  # never twice
    assert e.receive(data(103), FLOW, 1.3) == Outcome.FORWARDED_IN_ORDER
    assert [ns_of(d) for _, d, _ in e.take_output()] == [103]  # the LNS's Ns stay contiguous
    s = e.session(FLOW, TUNNEL, SESSION)
    assert s is not None and (s.forwarded_late, s.dropped_late) == (1, 0)
    c = e.counters
    assert (c.forwarded_late, c.dropped_late, c.dropped_duplicate) == (1, 0, 1)
    assert c.skipped[reasons.SKIP_TIMEOUT] == 1  # it was given up all the same
    check_invariants(e)


def test_strip_mode_delivers_it_without_ns() -> None:
    e = _given_up_101(sequencing=Sequencing.STRIP)
    assert e.receive(data(101), FLOW, 1.1) == Outcome.FORWARDED_LATE
    [(_, d, _)] = e.take_output()
    assert ident_of(d) == 101 and ns_of(d) is None
    s = e.session(FLOW, TUNNEL, SESSION)
    assert s is not None and s.out_ns == s.expected == 103  # in step with expected, not 102
    check_invariants(e)


@pytest.mark.parametrize(
    "kw",
    [
        {"sequencing": Sequencing.PRESERVE},  # auto: the LNS judges the LAC's Ns there
        {"sequencing": Sequencing.PRESERVE, "late": Late.DELIVER},  # config refuses; drop here
        {"late": Late.DROP},
        {"sequencing": Sequencing.STRIP, "late": Late.DROP},
    ],
)
def test_preserve_mode_and_late_drop_drop_it(kw: dict[str, object]) -> None:
    e = _given_up_101(**kw)
    assert e.receive(data(101), FLOW, 1.1) == Outcome.DROPPED_LATE
    assert e.take_output() == []
    assert e.receive(data(101), FLOW, 1.2) == Outcome.DROPPED_DUPLICATE
    assert e.counters.forwarded_late == 0 and e.counters.dropped_late == 1
    check_invariants(e)


def test_a_late_packet_never_waits_behind_a_gap() -> None:
    """Sessions holding packets behind a new gap: the late one still goes out at once, ahead of
    them, with the next Ns; the held ones follow in Ns order when their gap fills."""
    e = _given_up_101()
    assert e.receive(data(105), FLOW, 1.1) == Outcome.HELD  # 103, 104 missing
    assert e.receive(data(101), FLOW, 1.101) == Outcome.FORWARDED_LATE
    assert [(ident_of(d), ns_of(d)) for _, d, _ in e.take_output()] == [(101, 102)]
    assert e.next_deadline() == pytest.approx(1.11)  # the held packet's deadline is unchanged
    e.receive(data(103), FLOW, 1.102)
    e.receive(data(104), FLOW, 1.103)
    out = [(ident_of(d), ns_of(d)) for _, d, _ in e.take_output()]
    assert out == [(103, 103), (104, 104), (105, 105)]
    check_invariants(e)


def test_timeout_zero_keeps_its_out_of_order_outcome() -> None:
    """With no holding every gap is given up at once: a late packet is merely out of order."""
    e = engine(reorder_timeout=0.0)
    e.receive(data(1), FLOW, 0.0)
    e.receive(data(3), FLOW, 0.0)
    assert e.receive(data(2), FLOW, 0.0) == Outcome.FORWARDED_OUT_OF_ORDER
    assert e.counters.forwarded_late == 0


def test_switching_late_by_reload() -> None:
    e = _given_up_101(late=Late.DROP)
    e.reconfigure(EngineConfig(reorder_timeout=0.01), 1.0)
    assert e.receive(data(101), FLOW, 1.1) == Outcome.FORWARDED_LATE
