"""Property tests: the engine computes the given-up bitmap inline (in `_skip` and `_behind`)
for speed; both compute exactly what the reference definitions in tests/engine_helpers compute,
for any bitmap, position, count and window (also a bitmap wider than the window, as one left by a
reconfigure that shrank W)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from l2tpreorder.core import reasons
from l2tpreorder.core.engine import Late, ReorderEngine
from l2tpreorder.core.reasons import Outcome
from tests.engine_helpers import (
    FLOW,
    SESSION,
    TUNNEL,
    data,
    engine,
    given_up_bit,
    mark_given_up,
)

u16 = st.integers(0, 0xFFFF)
bitmaps = st.one_of(
    st.just(0), st.just((1 << 1100) - 1), st.integers(0, (1 << 300) - 1), st.integers(1, 0xFF)
)
edges = st.sampled_from([0, 1, 63, 64, 65, 99, 100, 101, 255, 256, 257, 999, 1000, 1001])
counts = st.one_of(st.integers(0, 1100), st.integers(0, 0xFFFF))
held_caps = st.sampled_from([1, 64, 100, 256, 1000])  # W = max(cap, 64)


def session_engine(cap: int, gaps: int, gaps_end: int, expected: int) -> ReorderEngine:
    e = engine(max_held_per_session=cap, late=Late.DROP)  # late: the outcome names the bit
    e.receive(data(expected), FLOW, 0.0)
    s = e.session(FLOW, TUNNEL, SESSION)
    assert s is not None
    s.gaps, s.gaps_end, s.expected = gaps, gaps_end, expected
    return e


@settings(max_examples=500, deadline=None)
@given(
    cap=held_caps,
    gaps=bitmaps,
    gaps_end=u16,
    shift=st.one_of(edges, u16),  # start - gaps_end: how far the old bits move
    at_w=st.one_of(st.none(), st.integers(-2, 2)),  # or W + this
    count=st.one_of(edges, counts),
)
def test_skip_marks_the_bitmap_as_mark_given_up_does(
    cap: int, gaps: int, gaps_end: int, shift: int, at_w: int | None, count: int
) -> None:
    if at_w is not None:
        shift = max(cap, 64) + at_w
    start = (gaps_end + shift) & 0xFFFF
    e = session_engine(cap, gaps, gaps_end, start)
    s = e.session(FLOW, TUNNEL, SESSION)
    assert s is not None
    e._skip(s, count, reasons.SKIP_TIMEOUT)
    assert s.gaps == mark_given_up(gaps, gaps_end, start, count, e.window)
    assert s.gaps_end == s.expected == (start + count) & 0xFFFF


@settings(max_examples=500, deadline=None)
@given(
    cap=held_caps,
    gaps=bitmaps,
    ns=u16,
    bit=st.one_of(edges, st.integers(0, 1100)),  # the bit naming ns (beyond W: none)
    at_w=st.one_of(st.none(), st.integers(-2, 2)),  # or the bit at W + this
    back=st.one_of(edges.filter(bool), st.integers(1, 1100)),  # ns this far behind `expected`
)
def test_behind_reads_the_bit_given_up_bit_names(
    cap: int, gaps: int, ns: int, bit: int, at_w: int | None, back: int
) -> None:
    if at_w is not None:
        bit = max(cap, 64) + at_w
    gaps_end = (ns + 1 + bit) & 0xFFFF
    e = session_engine(cap, gaps, gaps_end, (ns + back) & 0xFFFF)
    outcome = e.receive(data(ns), FLOW, 1.0)
    # A record W or more behind `expected` has aged out (core/behind.py: age_gaps): here the
    # session has delivered one packet since, so the distance mod 2**16 is the true one.
    aged = ((ns + back - gaps_end) & 0xFFFF) >= e.window
    if back > e.window:
        assert outcome == Outcome.DROPPED_STALE
    elif not aged and gaps & given_up_bit(gaps_end, ns, e.window):
        assert outcome == Outcome.DROPPED_LATE
    else:
        assert outcome == Outcome.DROPPED_DUPLICATE
