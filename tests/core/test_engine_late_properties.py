"""Property tests of late delivery (issue 22): in renumber and strip mode, with `reorder.late`
deliver (their default), whatever arrives, loss, duplicates and delays far beyond the timeout
included, every packet that is not a duplicate reaches the LNS exactly once, the LNS's Ns are
contiguous and never repeat, what was held still goes out in Ns order, and a late packet never
waits."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2tpreorder.core.engine import EngineConfig, ReorderEngine, Sequencing
from l2tpreorder.core.reasons import Outcome
from tests.engine_helpers import FLOW, check_invariants, data, ident_of, ns_of

starts = st.one_of(st.sampled_from([65530, 65535, 0]), st.integers(0, 0xFFFF))


@st.composite
def late_streams(draw: st.DrawFn) -> tuple[int, list[tuple[float, int]]]:
    """(start Ns, [(arrival time, seq id)]): loss, duplicates, delays up to 20 timeouts. At most
    64 packets, so nothing is further behind than the window (W >= 64): no `stale` by design."""
    n = draw(st.integers(1, 64))
    start = draw(starts)
    arrivals: list[tuple[float, int]] = []
    for k in range(n):
        if draw(st.integers(0, 99)) < 8:
            continue  # lost
        base = k * 0.001
        arrivals.append((base + draw(st.sampled_from([0.0, 0.0, 0.003, 0.05, 0.2])), k))
        if draw(st.integers(0, 99)) < 5:  # duplicated on the way
            arrivals.append((base + draw(st.floats(0.0, 0.2)), k))
    arrivals.sort()
    return start, arrivals


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=late_streams(),
    mode=st.sampled_from([Sequencing.RENUMBER, Sequencing.STRIP]),
    cap=st.sampled_from([2, 8, 256]),
    timeout=st.sampled_from([0.002, 0.01]),
    adaptive=st.booleans(),
)
def test_every_packet_not_a_duplicate_reaches_the_lns_once(
    stream: tuple[int, list[tuple[float, int]]],
    mode: Sequencing,
    cap: int,
    timeout: float,
    adaptive: bool,
) -> None:
    start, arrivals = stream
    e = ReorderEngine(
        EngineConfig(
            reorder_timeout=timeout, sequencing=mode, max_held_per_session=cap, adaptive=adaptive
        )
    )
    sent: list[tuple[int, int | None, int]] = []  # (seq id, LNS Ns, outcome that sent it)
    late = 0
    for t, k in arrivals:
        e.expire(t)
        sent += [(ident_of(d), ns_of(d), -1) for _, d, _ in e.take_output()]
        outcome = e.receive(data((start + k) & 0xFFFF, k), FLOW, t, k)
        out = e.take_output()
        if outcome == Outcome.FORWARDED_LATE:
            late += 1
            # It never waits: it leaves with this very call, ahead of anything else.
            assert [tag for _, _, tag in out] == [k]
        sent += [(ident_of(d), ns_of(d), int(outcome == Outcome.FORWARDED_LATE)) for _, d, _ in out]
        check_invariants(e)
    deadline = e.next_deadline()
    while deadline is not None:
        e.expire(deadline)
        deadline = e.next_deadline()
    sent += [(ident_of(d), ns_of(d), -1) for _, d, _ in e.take_output()]
    check_invariants(e)

    ids = [k for k, _, _ in sent]
    assert sorted(ids) == sorted({k for _, k in arrivals})  # each delivered exactly once
    c = e.counters
    assert (c.dropped_late, c.dropped_stale) == (0, 0)
    assert c.dropped_duplicate == len(arrivals) - len(ids)
    assert c.forwarded_late == late
    if mode is Sequencing.RENUMBER and sent:  # contiguous from the first Ns, none repeated
        first = (start + arrivals[0][1]) & 0xFFFF  # the first arrival starts the session
        assert [ns for _, ns, _ in sent] == [(first + i) & 0xFFFF for i in range(len(sent))]
    else:
        assert all(ns is None for _, ns, _ in sent)
    # Everything but the late ones went out in Ns (= seq id) order.
    in_order = [k for k, _, was_late in sent if was_late != 1]
    assert in_order == sorted(in_order)
