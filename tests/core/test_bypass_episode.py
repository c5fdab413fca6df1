"""A queue overflow under traffic (issue 21, point 4): in-path fail-open passes packets untouched
with the LAC's Ns, ahead of the queued ones, and the engine must never then hand the LNS an Ns
the bypassed ones carried, nor one below them (core/ahead.py `note_bypass`, the witness rule).

Driven through the Pipeline as the in-path adapter drives it: `note_bypass` when the episode is
seen, `hold_before_bypass` for the backlog read after it, `from_lac` from the first packet queued
after it on."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2tpreorder.core import reasons
from l2tpreorder.core.engine import EngineConfig, Sequencing
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.core.session_table import BYPASSED
from tests.core.test_restore_ahead import lns_ns
from tests.engine_helpers import FLOW, data, never_steps_back

MASK = 0xFFFF
RENUMBER = EngineConfig(reorder_timeout=0.1, sequencing=Sequencing.RENUMBER)


def test_the_issues_overflow_the_held_go_out_above_the_bypassed() -> None:
    """The lab case: Ns 2 held (1 lost), 3..33 queued behind it while 34..40 bypass the full
    queue. Today's rule released 2..33 as 1..32 (a step back, then 33..37 twice); now they wait
    for the first packet queued after the episode (41) and go out from its Ns."""
    p = Pipeline(RENUMBER)
    seen: list[tuple[int, int | None]] = []
    p.from_lac(data(0), FLOW, 0.0)
    assert p.from_lac(data(2), FLOW, 0.001) == Outcome.HELD
    seen += lns_ns(p)
    assert p.note_bypass(0.01) == 1
    for n in range(3, 34):  # the backlog: read after the episode, queued before it
        assert p.hold_before_bypass(data(n), FLOW, 0.01) == Outcome.HELD
    p.expire(0.1)  # Ns 2's own timeout is up: it waits for the witness, not for Ns 1
    assert lns_ns(p) == []
    seen += [(n, n) for n in range(34, 41)]  # the bypass: the LAC's own Ns, at the LNS first
    for n in range(41, 46):
        assert p.from_lac(data(n), FLOW, 0.1) == Outcome.FORWARDED_IN_ORDER
    after = lns_ns(p)
    # from just above the witness's Ns (BYPASS_STRADDLE: a swap straddling the episode's end)
    assert after == [(n, 41 + n) for n in range(2, 34)] + [(n, 34 + n) for n in range(41, 46)]
    seen += after
    never_steps_back([ns for _, ns in seen])
    assert sorted(frame for frame, _ in seen) == [0, *range(2, 46)]  # each frame once
    c = p.directions()["lac_to_lns"].counters
    assert c.skipped[reasons.SKIP_BYPASS] == 1 + 7  # Ns 1, and 34..40 (they passed us)
    assert c.received == c.accounted


def test_a_session_holding_nothing_jumps_at_its_first_packet_after_the_episode() -> None:
    """Our Ns lag the LAC's by 10 (lost, given up). A bypass passed 200 of its packets (more
    than the window: a far-ahead packet is not a stray here). The first packet after the
    episode is not held: renumbering goes on from its Ns, above every bypassed one."""
    p = Pipeline(RENUMBER)
    for n in range(100):
        if not 40 <= n < 50:
            p.from_lac(data(n), FLOW, n * 0.001)
    p.expire(1.0)
    seen = [ns for _, ns in lns_ns(p)]
    assert seen[-1] == 89
    p.note_bypass(1.0)
    seen += list(range(100, 300))  # bypassed
    assert p.from_lac(data(300), FLOW, 1.1) == Outcome.FORWARDED_IN_ORDER
    assert p.from_lac(data(301), FLOW, 1.1) == Outcome.FORWARDED_IN_ORDER
    after = lns_ns(p)
    assert after == [(300, 302), (301, 303)]  # just above the LAC's numbering from here
    never_steps_back(seen + [ns for _, ns in after])


def test_a_gap_filled_after_the_episode_is_no_witness() -> None:
    """The missing Ns 1 arrives after the episode: the bypassed ones may lie beyond what is
    held, so it waits with the rest; the next packet beyond all held releases them."""
    p = Pipeline(RENUMBER)
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(2), FLOW, 0.0)
    p.note_bypass(0.0)
    p.hold_before_bypass(data(3), FLOW, 0.0)
    lns_ns(p)
    assert p.from_lac(data(1), FLOW, 0.01) == Outcome.HELD
    assert lns_ns(p) == []
    assert p.from_lac(data(9), FLOW, 0.02) == Outcome.FORWARDED_IN_ORDER  # 4..8 bypassed
    assert lns_ns(p) == [(1, 11), (2, 12), (3, 13), (9, 14)]


def test_no_witness_within_the_timeout_ours_go_on_and_the_next_packet_is_the_witness() -> None:
    """A session that falls silent after the episode: what it holds goes out a second after
    the episode (BYPASS_WITNESS_WAIT; the reorder timeout is shorter), keeping our offset to
    the LAC's Ns: Ns 1 is skipped in ours too, so the held frames keep their own Ns (below
    the bypassed ones: a step back, but none of theirs twice), and its next packet, whenever
    it comes, still moves the numbering above them."""
    p = Pipeline(RENUMBER)
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(2), FLOW, 0.0)
    p.note_bypass(1.0)
    p.hold_before_bypass(data(3), FLOW, 1.0)
    lns_ns(p)
    assert p.next_hold_deadline() == pytest.approx(2.0)
    p.expire(1.99)
    assert lns_ns(p) == []
    p.expire(2.0)
    assert lns_ns(p) == [(2, 2), (3, 3)]  # bypassed: 4..9
    assert p.from_lac(data(10), FLOW, 5.0) == Outcome.FORWARDED_IN_ORDER
    assert lns_ns(p) == [(10, 12)]
    c = p.directions()["lac_to_lns"].counters
    assert c.skipped[reasons.SKIP_BYPASS] == 1 + 6


def test_a_late_packet_waits_for_the_witness_too() -> None:
    """A late packet (its Ns given up before the episode) is not delivered while the session
    waits: with our next Ns it could fall among the bypassed ones. It is dropped, counted."""
    p = Pipeline(RENUMBER)
    p.from_lac(data(0), FLOW, 0.0)
    p.from_lac(data(2), FLOW, 0.0)
    p.expire(1.0)  # Ns 1 given up
    lns_ns(p)
    p.note_bypass(1.0)
    assert p.hold_before_bypass(data(1), FLOW, 1.0) == Outcome.DROPPED_LATE
    assert p.from_lac(data(6), FLOW, 1.0) == Outcome.FORWARDED_IN_ORDER
    assert p.from_lac(data(1), FLOW, 1.0) == Outcome.DROPPED_DUPLICATE  # the Ns came (late)
    assert lns_ns(p) == [(6, 8)]


@pytest.mark.parametrize("mode", [Sequencing.PRESERVE, Sequencing.STRIP])
def test_preserve_and_strip_change_nothing(mode: Sequencing) -> None:
    """The LNS judges the LAC's Ns (or none): nothing to protect, nothing waits."""
    p = Pipeline(EngineConfig(reorder_timeout=0.1, sequencing=mode))
    p.from_lac(data(0), FLOW, 0.0)
    assert p.note_bypass(0.0) == 0
    assert p.hold_before_bypass(data(1), FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER
    assert p.hold_before_bypass(data(3), FLOW, 0.0) == Outcome.HELD
    p.expire(1.0)
    assert len(p.take_output()) == 3


def with_swaps(ns: list[int], rng: random.Random) -> list[int]:
    """Neighbours swapped now and then, within this list only."""
    ns = list(ns)
    i = 0
    while i < len(ns) - 1:
        if rng.random() < 0.15:
            ns[i], ns[i + 1] = ns[i + 1], ns[i]
            i += 2
        else:
            i += 1
    return ns


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(0, MASK),
    before=st.integers(1, 120),
    lost=st.lists(st.integers(0, 119), max_size=15),
    open_gap=st.booleans(),
    backlog=st.integers(0, 80),
    bypassed=st.integers(0, 400),  # 0: the session lost nothing to the bypass
    after=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_whatever_the_episode_the_lns_never_sees_an_ns_twice_or_step_back(
    start: int,
    before: int,
    lost: list[int],
    open_gap: bool,
    backlog: int,
    bypassed: int,
    after: int,
    seed: int,
) -> None:
    """Our Ns lag the LAC's by whatever was given up; the session may hold packets behind an
    open gap; a backlog (swapped) is read after the episode, `bypassed` Ns (maybe none) passed
    us; then the traffic goes on (swapped). The LNS's Ns never step back or repeat, no frame
    twice, and every frame read comes out but a late one."""
    rng = random.Random(seed)
    p = Pipeline(RENUMBER)
    frames: list[int] = []  # LAC Ns in send order (the frame id is the LAC's Ns)
    seen: list[tuple[int, int | None]] = []
    k = 0
    # The first packet is never swapped: the one after it would be late, delivered with our
    # next Ns, and our numbering would lead the LAC's (then the bypass itself shows the LNS a
    # repeat or a step back: the kernel passing the LAC's Ns, docs/inpath.md).
    for i in [0, *with_swaps(list(range(1, before)), rng)]:
        if i not in lost:
            p.from_lac(data((start + i) & MASK), FLOW, k * 0.001)
            frames.append((start + i) & MASK)
        k += 1
    p.expire(k * 0.001 + 1.0)  # the lost ones given up: our Ns lag
    if open_gap:  # a gap still open at the episode: what is behind it is held
        p.from_lac(data((start + before + 1) & MASK), FLOW, 2.0)
        frames.append((start + before + 1) & MASK)
        base = before + 2
    else:
        base = before
    seen += lns_ns(p)
    p.note_bypass(2.0)
    for i in with_swaps(list(range(base, base + backlog)), rng):
        outcome = p.hold_before_bypass(data((start + i) & MASK), FLOW, 2.0)
        assert outcome in (Outcome.HELD, Outcome.FORWARDED_IN_ORDER), outcome
        frames.append((start + i) & MASK)
    assert lns_ns(p) == []  # nothing numbered before the bypassed ones are known
    first_after = base + backlog + bypassed
    seen += [((start + i) & MASK, (start + i) & MASK) for i in range(base + backlog, first_after)]
    for i in with_swaps(list(range(first_after, first_after + after)), rng):
        p.from_lac(data((start + i) & MASK), FLOW, 2.05)
        frames.append((start + i) & MASK)
    engine = p.directions()["lac_to_lns"]
    # Its first packet after the episode ended the wait, even one in order (the fast path).
    assert all(s.restored != BYPASSED for s in engine.sessions())
    p.expire(10.0)
    seen += lns_ns(p)
    never_steps_back([ns for _, ns in seen])
    ours = [frame for frame, _ in seen]
    assert len(ours) == len(set(ours))
    c = p.directions()["lac_to_lns"].counters
    assert c.received == c.accounted
    assert len(frames) == c.forwarded + c.released + c.dropped_late + c.dropped_duplicate


@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(0, MASK),
    before=st.integers(1, 60),
    gaps=st.lists(st.integers(0, 79), max_size=10),
    backlog=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_witness_at_offset_0_the_lns_never_sees_an_ns_twice(
    start: int, before: int, gaps: list[int], backlog: int, seed: int
) -> None:
    """The session falls silent after the episode (a burst, then nothing): what it held goes
    out keeping its own Ns (our numbering equals the LAC's: nothing given up before), so
    whatever of the backlog passed instead (`gaps`: those Ns bypassed, not read) the LNS sees
    no Ns twice; it may see a step back, the limit docs/inpath.md states."""
    rng = random.Random(seed)
    p = Pipeline(RENUMBER)
    seen: list[tuple[int, int | None]] = []
    for i in [0, *with_swaps(list(range(1, before)), rng)]:
        p.from_lac(data((start + i) & MASK), FLOW, 0.0)
    seen += lns_ns(p)
    p.note_bypass(0.01)
    tail = [i for i in range(before, before + backlog) if i - before not in gaps]
    for i in with_swaps(tail, rng):
        p.hold_before_bypass(data((start + i) & MASK), FLOW, 0.01)
    bypassed = [i for i in range(before, before + backlog) if i - before in gaps]
    seen += [((start + i) & MASK, (start + i) & MASK) for i in bypassed]
    p.expire(5.0)
    seen += lns_ns(p)
    ns_seen = [ns for _, ns in seen]
    assert len(ns_seen) == len(set(ns_seen)), seen
    assert sorted(frame for frame, _ in seen) == sorted(
        (start + i) & MASK for i in range(before + backlog)
    )


def test_far_ahead_in_the_backlog_is_no_stray() -> None:
    """The bypass may take thousands of Ns, and the backlog read after it can reach past them
    (the maxlen was raised before it was read): held, not dropped as `far_ahead`."""
    p = Pipeline(RENUMBER)
    p.from_lac(data(0), FLOW, 0.0)
    lns_ns(p)
    p.note_bypass(0.0)
    assert p.hold_before_bypass(data(2000), FLOW, 0.0) == Outcome.HELD
    assert p.from_lac(data(2001), FLOW, 0.01) == Outcome.FORWARDED_IN_ORDER
    assert lns_ns(p) == [(2000, 2003), (2001, 2004)]
    assert p.directions()["lac_to_lns"].counters.dropped_far_ahead == 0
