"""A stray packet does not move a session (issue 21, point 5): a packet further than the window
W ahead of the expected Ns is dropped as `far_ahead` unless `resync_after` in a row confirm the
jump (core/ahead.py), the mirror of the far-behind rule."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from l2tpreorder.core import reasons
from l2tpreorder.core.engine import EngineConfig, ReorderEngine, Sequencing
from l2tpreorder.core.reasons import Outcome
from tests.engine_helpers import FLOW, check_invariants, data, drain, engine, ident_of, ns_of

MASK = 0xFFFF
STRAY = 1_000_000  # the stray datagram's payload id (genuine ones carry their index)


def test_one_stray_far_ahead_costs_no_genuine_packet() -> None:
    """The issue's reproducer: 40 genuine packets, one datagram at Ns expected+20000 among them.
    On the old engine it was held, ~20,000 Ns were given up, it went out, and the genuine
    packets after it were `stale` until the resync: 37 of 40 delivered."""
    e = engine(reorder_timeout=0.1)
    start = 1000
    outcomes = []
    for k in range(40):
        now = k * 0.001
        if k == 10:
            stray = data((start + k + 20000) & MASK, STRAY)
            outcomes.append(e.receive(stray, FLOW, now))
            e.expire(now)
        outcomes.append(e.receive(data(start + k, k), FLOW, now))
        e.expire(now)
    e.expire(1.0)
    out = drain(e)
    assert [ident_of(d) for _, d in out] == list(range(40))
    assert [ns_of(d) for _, d in out] == list(range(start, start + 40))
    assert outcomes[10] == Outcome.DROPPED_FAR_AHEAD
    assert outcomes.count(Outcome.FORWARDED_IN_ORDER) == 40
    c = e.counters
    assert c.dropped_far_ahead == 1 and c.dropped_stale == 0 and c.resyncs == 0
    assert sum(c.skipped.values()) == 0
    check_invariants(e)


@st.composite
def stray_streams(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(start Ns, packets, where the stray goes, its Ns): the stray is further than W from every
    genuine Ns (closer, it is indistinguishable from a genuine early packet or a duplicate)."""
    n = draw(st.integers(1, 120))
    start = draw(st.one_of(st.sampled_from([0, 65535 - 60, 32768]), st.integers(0, MASK)))
    window = 64
    offset = draw(
        st.one_of(
            st.sampled_from([n + window + 1, 0x8000, 0x8000 + 1, 0x10000 - window - 1]),
            st.integers(n + window + 1, 0x10000 - window - 1),
        )
    )
    # Not before the first genuine packet: a session's first packet starts it wherever it is,
    # and the genuine stream is then a jump to confirm (a stray cannot be told from a start).
    return start, n, draw(st.integers(1, n)), (start + offset) & MASK


@settings(max_examples=400, deadline=None)
@given(
    stream=stray_streams(),
    mode=st.sampled_from(list(Sequencing)),
    timeout=st.sampled_from([0.0, 0.01, 0.1]),
    resync_after=st.sampled_from([2, 4]),
)
def test_a_stray_never_costs_a_genuine_packet(
    stream: tuple[int, int, int, int], mode: Sequencing, timeout: float, resync_after: int
) -> None:
    """A single stray value anywhere in an in-order stream: every genuine packet is delivered,
    in order, with contiguous Ns (renumber), and the stray is dropped."""
    start, n, at, stray_ns = stream
    e = engine(
        reorder_timeout=timeout,
        sequencing=mode,
        max_held_per_session=64,
        resync_after=resync_after,
    )
    stray_outcome = None
    for k in range(n + 1):
        now = k * 0.001
        if k == at:
            stray_outcome = e.receive(data(stray_ns, STRAY), FLOW, now)
        if k < n:
            assert e.receive(data((start + k) & MASK, k), FLOW, now) == Outcome.FORWARDED_IN_ORDER
        e.expire(now)
        check_invariants(e)
    e.expire(n * 0.001 + 1.0)
    out = drain(e)
    assert [ident_of(d) for _, d in out] == list(range(n))
    if mode is Sequencing.RENUMBER or mode is Sequencing.PRESERVE:
        assert [ns_of(d) for _, d in out] == [(start + k) & MASK for k in range(n)]
    assert stray_outcome in (Outcome.DROPPED_FAR_AHEAD, Outcome.DROPPED_STALE)
    assert sum(e.counters.skipped.values()) == 0


def test_a_real_jump_is_followed_after_resync_after_packets() -> None:
    """The LAC restarted its numbering far ahead: the first resync_after - 1 packets are
    dropped (as far-behind ones are `stale`), then the session follows; what it held goes out
    first, and the LNS's renumbered Ns stay contiguous."""
    e = engine(reorder_timeout=0.1, resync_after=4)
    for ns in range(5000, 5010):
        e.receive(data(ns), FLOW, 0.0)
    assert e.receive(data(5011), FLOW, 0.001) == Outcome.HELD  # 5010 lost: 5011 waits
    drain(e)
    outcomes = [e.receive(data(ns, 100 + ns - 30000), FLOW, 0.002) for ns in range(30000, 30006)]
    assert outcomes == [Outcome.DROPPED_FAR_AHEAD] * 3 + [Outcome.FORWARDED_IN_ORDER] * 3
    out = drain(e)
    assert [ident_of(d) for _, d in out] == [5011, 103, 104, 105]
    assert [ns_of(d) for _, d in out] == [5010, 5011, 5012, 5013]  # the LNS sees no jump
    c = e.counters
    assert c.resyncs == 1 and c.dropped_far_ahead == 3
    s = e.session(FLOW, 25085, 42025)
    assert s is not None and s.expected == 30006 and not s.held
    # 5010 (the gap) and 5012..30002 given up on the jump
    assert c.skipped[reasons.SKIP_RESYNC] == 1 + (30003 - 5012)
    # a genuine packet of the old numbering now is far behind: stale
    assert e.receive(data(5012), FLOW, 0.003) == Outcome.DROPPED_STALE
    check_invariants(e)


def test_a_jump_is_not_confirmed_when_another_packet_comes_between() -> None:
    e = engine(reorder_timeout=0.1, resync_after=2)
    for ns in range(10):
        e.receive(data(ns), FLOW, 0.0)
    assert e.receive(data(9000), FLOW, 0.0) == Outcome.DROPPED_FAR_AHEAD
    assert e.receive(data(10), FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER
    assert e.receive(data(9001), FLOW, 0.0) == Outcome.DROPPED_FAR_AHEAD  # a new run
    assert e.receive(data(9003), FLOW, 0.0) == Outcome.DROPPED_FAR_AHEAD  # not the next Ns
    assert e.receive(data(9004), FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER  # confirmed
    assert e.counters.resyncs == 1
    check_invariants(e)


def test_within_the_window_ahead_is_held_as_before() -> None:
    """W = max(max_held_per_session, 64): a packet up to W ahead is an early one, held."""
    e = engine(reorder_timeout=0.1, max_held_per_session=16)
    e.receive(data(0), FLOW, 0.0)
    assert e.receive(data(1 + 64), FLOW, 0.0) == Outcome.HELD  # distance 64 = W
    assert e.receive(data(1 + 65), FLOW, 0.0) == Outcome.DROPPED_FAR_AHEAD
    check_invariants(e)


def test_a_jump_after_a_reload_shrank_the_window_past_a_held_packet() -> None:
    """Held up to the old W ahead, then W shrinks by reload: a confirmed jump to an Ns before
    that held packet releases it first; the jump's own Ns was given up on the way (late)."""
    config = EngineConfig(reorder_timeout=0.1, max_held_per_session=256, resync_after=2)
    e = ReorderEngine(config)
    e.receive(data(0), FLOW, 0.0)
    assert e.receive(data(120), FLOW, 0.0) == Outcome.HELD
    e.reconfigure(replace(config, max_held_per_session=8), 0.0)  # W = 64 now
    assert e.receive(data(99), FLOW, 0.0) == Outcome.DROPPED_FAR_AHEAD
    assert e.receive(data(100), FLOW, 0.0) == Outcome.FORWARDED_LATE
    out = drain(e)
    assert [ident_of(d) for _, d in out] == [0, 120, 100]
    assert [ns_of(d) for _, d in out] == [0, 1, 2]
    assert e.receive(data(121), FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER
    check_invariants(e)
