"""Bypass episodes (core/ahead.py) at their edges: a session that lost nothing to the bypass,
the byte cap, flush and session end while sessions wait, and a second episode before the first
backlog is read. The LNS must never see an Ns the bypassed packets carried, nor sessions stay
waiting for a witness long after the episode."""

from __future__ import annotations

import pytest

from l2tpreorder.core import reasons
from l2tpreorder.core.engine import EngineConfig, Sequencing
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.core.session_table import BYPASSED
from tests.engine_helpers import FLOW, TUNNEL, data, ident_of, never_steps_back, ns_of

RENUMBER = EngineConfig(reorder_timeout=0.1, sequencing=Sequencing.RENUMBER)
A, B = 1, 2


def out(p: Pipeline) -> dict[int, list[tuple[int, int | None]]]:
    """Per session (A, B): (payload id, Ns as the LNS gets it) of what the pipeline sends now."""
    got: dict[int, list[tuple[int, int | None]]] = {A: [], B: []}
    for o in p.take_output():
        got[o.data[5] | (o.data[4] << 8)].append((ident_of(o.data), ns_of(o.data)))
    return got


def two_sessions_across_an_episode(p: Pipeline) -> None:
    """A holds Ns 2 (1 lost) at the episode, its backlog 3, its witness 9 (4..8 bypassed); B
    lost nothing: 0..9 before, 10..19 after, in order (its first packet after is no gap)."""
    p.from_lac(data(0, session=A), FLOW, 0.0)
    p.from_lac(data(2, session=A), FLOW, 0.0)
    for n in range(10):
        p.from_lac(data(n, session=B), FLOW, 0.0)
    assert p.note_bypass(1.0) == 2
    p.hold_before_bypass(data(3, session=A), FLOW, 1.0)
    for n in range(10, 20):
        assert p.from_lac(data(n, session=B), FLOW, 1.01) == Outcome.FORWARDED_IN_ORDER
    assert p.from_lac(data(9, session=A), FLOW, 1.01) == Outcome.FORWARDED_IN_ORDER


def test_a_session_whose_first_packet_after_the_episode_is_in_order_stops_waiting() -> None:
    """B's first packet after the episode is its witness even on the in-order fast path: a
    swap 99 s later is an ordinary swap (held, then both in order), not a new witness that
    gives Ns 20 up as `bypass` and delivers it late."""
    p = Pipeline(RENUMBER)
    two_sessions_across_an_episode(p)
    got = out(p)
    # after the episode both go on just above their witness's Ns (BYPASS_STRADDLE)
    assert got[B] == [(n, n) for n in range(10)] + [(n, n + 2) for n in range(10, 20)]
    assert got[A] == [(0, 0), (2, 11), (3, 12), (9, 13)]
    engine = p.directions()["lac_to_lns"]
    assert all(s.restored != BYPASSED for s in engine.sessions())
    assert p.from_lac(data(21, session=B), FLOW, 100.0) == Outcome.HELD
    assert p.from_lac(data(20, session=B), FLOW, 100.0) == Outcome.FORWARDED_IN_ORDER
    assert out(p)[B] == [(20, 22), (21, 23)]
    c = engine.counters
    assert c.skipped[reasons.SKIP_BYPASS] == 1 + 5  # A's Ns 1 and 4..8; none of B's
    assert c.forwarded_late == 0


def test_a_stray_far_ahead_later_does_not_move_a_session_that_lost_nothing() -> None:
    """Issue 21 point 5 holds after an episode: a stray far ahead is dropped, the session
    stays where it is and its genuine packets go on in order."""
    p = Pipeline(RENUMBER)
    two_sessions_across_an_episode(p)
    out(p)
    assert p.from_lac(data(20 + 20000, session=B), FLOW, 100.0) == Outcome.DROPPED_FAR_AHEAD
    assert p.from_lac(data(20, session=B), FLOW, 100.0) == Outcome.FORWARDED_IN_ORDER
    assert out(p)[B] == [(20, 22)]


def test_a_silent_session_past_the_wait_takes_no_stray_as_its_witness() -> None:
    """B falls silent over the episode: it still takes its next packet within the window as
    its witness (its bypassed Ns may lie before it), but once the wait is over a stray far
    ahead is no witness: dropped as `far_ahead`, and B goes on from its genuine packets."""
    p = Pipeline(RENUMBER)
    for n in range(10):
        p.from_lac(data(n, session=B), FLOW, 0.0)
    p.note_bypass(1.0)
    out(p)
    assert p.from_lac(data(9 + 20000, session=B), FLOW, 100.0) == Outcome.DROPPED_FAR_AHEAD
    assert p.from_lac(data(15, session=B), FLOW, 100.0) == Outcome.FORWARDED_IN_ORDER
    assert out(p)[B] == [(15, 17)]  # 10..14 passed us: renumbered above them
    assert p.from_lac(data(16, session=B), FLOW, 100.0) == Outcome.FORWARDED_IN_ORDER
    c = p.directions()["lac_to_lns"].counters
    assert c.skipped[reasons.SKIP_BYPASS] == 5
    assert c.dropped_far_ahead == 1


def test_within_the_wait_far_ahead_is_still_a_witness() -> None:
    """Before the wait runs out a packet far ahead is the witness (thousands may have passed)."""
    p = Pipeline(RENUMBER)
    p.from_lac(data(0, session=B), FLOW, 0.0)
    p.note_bypass(1.0)
    out(p)
    assert p.from_lac(data(5000, session=B), FLOW, 1.5) == Outcome.FORWARDED_IN_ORDER
    assert out(p)[B] == [(5000, 5002)]
    never_steps_back([0, 5000])


def test_the_byte_cap_releases_a_waiting_session_keeping_its_offset() -> None:
    """A waits (10..12 and 15..25 of its backlog held, 13 and 14 passed us); B's swap takes
    the held bytes over the cap, and A's deadline is the earliest. What A holds goes out as
    `_no_witness` sends it: 13 and 14 skipped in our numbering too, so 15 is not sent as 13."""
    size = len(data(0, session=A, size=200))
    config = EngineConfig(
        reorder_timeout=5.0, sequencing=Sequencing.RENUMBER, max_held_bytes=5 * size
    )
    p = Pipeline(config)
    for n in range(10):
        p.from_lac(data(n, session=A, size=200), FLOW, 0.0)
    p.from_lac(data(0, session=B, size=200), FLOW, 0.0)
    p.note_bypass(1.0)
    for n in [10, 11, 12, *range(15, 26)]:
        assert p.hold_before_bypass(data(n, session=A, size=200), FLOW, 1.0) == Outcome.HELD
    out(p)
    assert p.from_lac(data(1, session=B, size=200), FLOW, 1.5) == Outcome.FORWARDED_IN_ORDER
    assert p.from_lac(data(3, session=B, size=200), FLOW, 1.5) == Outcome.HELD
    got = out(p)
    assert got[A] == [(n, n) for n in [10, 11, 12, *range(15, 26)]]
    assert got[B] == [(1, 3)]
    assert p.from_lac(data(26, session=A), FLOW, 1.6) == Outcome.FORWARDED_IN_ORDER
    assert out(p)[A] == [(26, 28)]


@pytest.mark.parametrize("end", ["flush", "cdn", "evict"])
def test_flush_and_session_end_while_waiting_keep_the_offset(end: str) -> None:
    """A waits holding 10..12 and 15, 16 (13 and 14 passed us). SIGTERM's flush, a CDN or an
    eviction sends what it holds as `_no_witness` does: 15 and 16 keep their own Ns, not the
    bypassed 13 and 14."""
    config = EngineConfig(reorder_timeout=0.1, sequencing=Sequencing.RENUMBER, max_sessions=1)
    p = Pipeline(config)
    for n in range(10):
        p.from_lac(data(n, session=A), FLOW, 0.0)
    p.note_bypass(1.0)
    for n in [10, 11, 12, 15, 16]:
        assert p.hold_before_bypass(data(n, session=A), FLOW, 1.0) == Outcome.HELD
    out(p)
    engine = p.directions()["lac_to_lns"]
    if end == "flush":
        p.flush(1.2)
    elif end == "cdn":
        assert engine.end_session(FLOW, TUNNEL, A, 1.2)
    else:
        p.from_lac(data(0, session=B), FLOW, 1.2)  # the table is full: A goes
        assert engine.counters.sessions_ended == 1
    assert out(p)[A] == [(n, n) for n in [10, 11, 12, 15, 16]]
    assert engine.counters.skipped[reasons.SKIP_BYPASS] == 2


def test_a_second_episode_before_the_backlog_is_read_moves_the_wait_on() -> None:
    """Sustained overflow: the queue fills again while the first backlog is unread. The
    sessions wait already; their wait now runs from the second episode, so what A holds is
    not sent without its witness in the middle of the backlog."""
    p = Pipeline(RENUMBER)
    p.from_lac(data(0, session=A), FLOW, 0.0)
    p.from_lac(data(2, session=A), FLOW, 0.0)
    p.note_bypass(1.0)
    p.hold_before_bypass(data(3, session=A), FLOW, 1.0)
    out(p)
    p.extend_bypass(1.9)
    p.hold_before_bypass(data(4, session=A), FLOW, 1.95)
    p.expire(2.5)
    assert out(p)[A] == []
    assert p.next_hold_deadline() == pytest.approx(2.9)
    p.expire(2.9)
    assert out(p)[A] == [(2, 2), (3, 3), (4, 4)]  # no witness: our offset kept


def test_a_later_episode_moves_no_deadline_in_preserve_mode() -> None:
    """Preserve mode waits for nothing: a held gap keeps its reorder timeout."""
    p = Pipeline(EngineConfig(reorder_timeout=0.1, sequencing=Sequencing.PRESERVE))
    p.from_lac(data(0, session=A), FLOW, 0.0)
    p.from_lac(data(2, session=A), FLOW, 0.0)
    p.extend_bypass(0.05)
    assert p.next_hold_deadline() == pytest.approx(0.1)
