"""The adaptive per-session reorder timeout (`reorder.adaptive`, core/adaptive.py) driven
through the real engine: what it learns from fills, give-ups and late arrivals, its bounds,
reloads, and the engine's invariants in adaptive mode under any input."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2tpreorder.core import adaptive, reasons
from l2tpreorder.core.engine import EngineConfig, ReorderEngine, Sequencing, Session
from l2tpreorder.core.pipeline import Pipeline
from tests.engine_helpers import (
    FLOW,
    SESSION,
    TUNNEL,
    check_invariants,
    data,
    drain,
    ident_of,
)

CAP, FLOOR = 0.1, 0.002
LEARN = 80  # small fills that take a new session from the cap down to the floor
ADAPTIVE = EngineConfig(reorder_timeout=CAP, adaptive=True, min_timeout=FLOOR)


def session(e: ReorderEngine) -> Session:
    s = e.session(FLOW, TUNNEL, SESSION)
    assert s is not None
    return s


def run_to(e: ReorderEngine, now: float) -> None:
    """Virtual time: fire every deadline up to `now`, as the daemon's timer would."""
    deadline = e.next_deadline()
    while deadline is not None and deadline <= now:
        e.expire(deadline)
        deadline = e.next_deadline()


def swaps(e: ReorderEngine, ns: int, t: float, pairs: int, delay: float) -> tuple[int, float]:
    """`pairs` swapped pairs, 1 ms apart: Ns+1 first, Ns `delay` later (a gap that fills)."""
    for _ in range(pairs):
        run_to(e, t)
        e.receive(data(ns + 1), FLOW, t)
        run_to(e, t + delay)
        e.receive(data(ns), FLOW, t + delay)
        ns, t = ns + 2, t + 0.001
    return ns, t


def test_a_new_session_starts_at_the_cap() -> None:
    e = ReorderEngine(ADAPTIVE)
    e.receive(data(0), FLOW, 0.0)
    assert session(e).timeout == CAP
    e.receive(data(2), FLOW, 0.001)  # holds: the deadline is the cap, as in fixed mode
    assert e.next_deadline() == pytest.approx(0.001 + CAP)


def test_small_reordering_brings_the_timeout_down_to_the_floor_and_a_loss_costs_only_that() -> None:
    e = ReorderEngine(ADAPTIVE)
    e.receive(data(0), FLOW, 0.0)
    ns, t = swaps(e, 1, 0.001, LEARN, 0.0003)
    assert session(e).timeout == FLOOR
    # Now a loss: Ns `ns` never comes. The packet behind it waits the learnt timeout, not 100 ms.
    e.receive(data(ns + 1), FLOW, t)
    assert e.next_deadline() == pytest.approx(t + FLOOR)
    drain(e)
    run_to(e, t + 0.05)
    assert [ident_of(d) for _, d in drain(e)] == [ns + 1]
    assert e.counters.skipped[reasons.SKIP_TIMEOUT] == 1
    assert e.counters.dropped_late == 0


def test_the_timeout_follows_the_largest_recent_delays_not_the_mean() -> None:
    e = ReorderEngine(ADAPTIVE)
    e.receive(data(0), FLOW, 0.0)
    ns, t = swaps(e, 1, 0.001, LEARN, 0.0003)
    ns, t = swaps(e, ns, t, 1, 0.0019)  # one within the 2 ms: the estimate jumps to it
    grown = session(e).timeout
    assert grown == pytest.approx(0.0019 * adaptive.MULTIPLIER)
    ns, t = swaps(e, ns, t, 5, 0.0003)  # a few small ones after it barely lower it
    assert grown > session(e).timeout > 0.8 * grown
    assert e.counters.dropped_late == 0


def test_a_late_arrival_grows_the_timeout_and_it_stays_grown_for_a_while() -> None:
    e = ReorderEngine(ADAPTIVE)
    e.receive(data(0), FLOW, 0.0)
    ns, t = swaps(e, 1, 0.001, LEARN, 0.0003)
    assert session(e).timeout == FLOOR
    # Ns `ns` is 8 ms late: its gap is given up after 2 ms, then it arrives: late.
    e.receive(data(ns + 1), FLOW, t)
    run_to(e, t + 0.008)
    assert e.receive(data(ns), FLOW, t + 0.008) == reasons.Outcome.FORWARDED_LATE  # delivered
    assert e.counters.adaptive_grows == 1
    grown = session(e).timeout
    assert grown >= 0.008 * adaptive.MULTIPLIER - 1e-12  # at least what that packet needed
    # The next ones are all small; the grown timeout is kept for KEEP_EVENTS events.
    ns, t = swaps(e, ns + 2, t + 0.009, adaptive.KEEP_EVENTS, 0.0003)
    assert session(e).timeout == grown
    swaps(e, ns, t, 1, 0.0003)
    assert session(e).timeout < grown


def test_the_timeout_never_leaves_its_bounds_and_idling_keeps_what_was_learnt() -> None:
    e = ReorderEngine(ADAPTIVE)
    e.receive(data(0), FLOW, 0.0)
    ns, t = swaps(e, 1, 0.001, 3, 0.5)  # reordering far beyond the cap: late, grown, kept
    assert session(e).timeout == CAP
    ns, t = swaps(e, ns, t + 1, adaptive.KEEP_EVENTS + 200, 0.0)  # then none (slow decay)
    assert session(e).timeout == FLOOR
    t += 3600.0  # an hour of silence: time alone changes nothing
    e.receive(data(ns + 1), FLOW, t)
    assert e.next_deadline() == pytest.approx(t + FLOOR)


def test_a_floor_above_the_cap_gives_the_cap() -> None:
    e = ReorderEngine(replace(ADAPTIVE, reorder_timeout=0.001, min_timeout=0.005))
    e.receive(data(0), FLOW, 0.0)
    swaps(e, 1, 0.001, LEARN, 0.0)
    assert session(e).timeout == 0.001


def test_fixed_mode_and_timeout_zero_ignore_the_estimator() -> None:
    fixed = ReorderEngine(replace(ADAPTIVE, adaptive=False))
    fixed.receive(data(0), FLOW, 0.0)
    ns, t = swaps(fixed, 1, 0.001, LEARN, 0.0003)
    fixed.receive(data(ns + 1), FLOW, t)
    assert fixed.next_deadline() == pytest.approx(t + CAP)
    zero = ReorderEngine(replace(ADAPTIVE, reorder_timeout=0.0))
    zero.receive(data(0), FLOW, 0.0)
    assert zero.receive(data(2), FLOW, 0.001) == reasons.Outcome.FORWARDED_IN_ORDER
    assert zero.next_deadline() is None


def test_reload_switches_adaptive_on_and_off_and_clamps_to_new_bounds() -> None:
    e = ReorderEngine(replace(ADAPTIVE, adaptive=False))
    e.receive(data(0), FLOW, 0.0)
    e.receive(data(2), FLOW, 0.001)  # held, deadline at the fixed cap
    e.reconfigure(ADAPTIVE, 0.002)
    assert session(e).timeout == CAP  # switched on: starts at the cap
    e.receive(data(1), FLOW, 0.003)  # fills: what was held goes out
    swaps(e, 3, 0.004, LEARN, 0.0003)
    assert session(e).timeout == FLOOR
    e.reconfigure(replace(ADAPTIVE, min_timeout=0.004), 0.1)
    assert session(e).timeout == 0.004  # what was learnt, clamped into the new range
    e.reconfigure(replace(ADAPTIVE, reorder_timeout=0.003, min_timeout=0.001), 0.1)
    assert 0.001 <= session(e).timeout <= 0.003
    e.reconfigure(replace(ADAPTIVE, adaptive=False), 0.1)
    e.receive(data(200), FLOW, 0.2)
    assert e.next_deadline() == pytest.approx(0.2 + CAP)


@st.composite
def hostile_runs(draw: st.DrawFn) -> list[tuple[str, float, int, int]]:
    """Packets for a few sessions (mostly near in Ns, so gaps fill, time out and come late),
    expiries, and reloads with other bounds."""
    ops: list[tuple[str, float, int, int]] = []
    t = 0.0
    for _ in range(draw(st.integers(1, 200))):
        t += draw(st.sampled_from([0.0, 0.0002, 0.001, 0.003, 0.02, 0.2]))
        kind = draw(st.integers(0, 19))
        if kind == 0:
            ops.append(("expire", t, 0, 0))
        elif kind == 1:
            ops.append(("reload", t, draw(st.integers(0, 3)), 0))
        else:
            ns = draw(st.one_of(st.integers(0, 40), st.integers(0, 0xFFFF)))
            ops.append(("receive", t, draw(st.integers(1, 3)), ns))
    return ops


RELOADS = [
    EngineConfig(reorder_timeout=0.01, adaptive=True, min_timeout=0.001),
    EngineConfig(reorder_timeout=0.1, adaptive=True, min_timeout=0.002),
    EngineConfig(reorder_timeout=0.005, adaptive=True, min_timeout=0.02),
    EngineConfig(reorder_timeout=0.05, adaptive=False),
]


def check_bounds(e: ReorderEngine) -> None:
    cfg = e.config
    if not cfg.adaptive or cfg.reorder_timeout <= 0:
        return
    floor = min(cfg.min_timeout, cfg.reorder_timeout)
    for s in e.sessions():
        assert floor <= s.timeout <= cfg.reorder_timeout, (s.timeout, floor, cfg)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=hostile_runs(),
    timeout=st.sampled_from([0.0, 0.003, 0.01, 0.1]),
    floor=st.sampled_from([0.0005, 0.002, 0.05]),
    cap=st.integers(1, 8),
    mode=st.sampled_from(list(Sequencing)),
)
def test_adaptive_mode_keeps_every_invariant_and_the_timeout_in_its_bounds(
    ops: list[tuple[str, float, int, int]],
    timeout: float,
    floor: float,
    cap: int,
    mode: Sequencing,
) -> None:
    """Whatever arrives: one counted outcome per datagram, caps respected, nothing delivered
    twice, everything held delivered at the end, and each session's timeout in [floor, cap]."""
    e = ReorderEngine(
        EngineConfig(
            reorder_timeout=timeout,
            adaptive=True,
            min_timeout=floor,
            sequencing=mode,
            max_held_per_session=cap,
            max_held_bytes=300,
            resync_after=3,
        )
    )
    serial = 0
    seen: set[int] = set()
    for op, t, session_, ns in ops:
        if op == "expire":
            e.expire(t)
        elif op == "reload":
            e.reconfigure(replace(RELOADS[session_], max_held_per_session=cap, sequencing=mode), t)
        else:
            serial += 1
            e.receive(data(ns, serial, session=session_, size=20), FLOW, t)
        check_invariants(e)
        check_bounds(e)
        for _, d in drain(e):
            assert ident_of(d) not in seen  # never delivered twice
            seen.add(ident_of(d))
    e.flush(ops[-1][1])
    check_invariants(e)
    assert e.counters.held_packets == 0
    seen.update(ident_of(d) for _, d in drain(e))
    assert len(seen) == e.counters.forwarded + e.counters.released


def test_the_pipeline_adapters_drive_adapts_too_and_tags_travel() -> None:
    """The relay and the in-path adapter (NFQUEUE ids as tags) drive a Pipeline: adaptive mode
    lives in the engine, so it works there, and a late packet leaves with its own tag."""
    p = Pipeline(ADAPTIVE)
    e = p.engine
    p.from_lac(data(0), FLOW, 0.0, "id0")
    ns, t = swaps(e, 1, 0.001, LEARN, 0.0003)  # learn through the pipeline's own engine
    p.take_output()
    assert session(e).timeout == FLOOR
    assert p.from_lac(data(ns + 1), FLOW, t, "behind") == reasons.Outcome.HELD
    assert p.next_deadline() == pytest.approx(t + FLOOR)  # the learnt timeout, not the cap
    p.expire(t + FLOOR)
    assert [(o.tag, ident_of(o.data)) for o in p.take_output()] == [("behind", ns + 1)]
    assert p.from_lac(data(ns), FLOW, t + 0.008, "late") == reasons.Outcome.FORWARDED_LATE
    assert [(o.tag, ident_of(o.data)) for o in p.take_output()] == [("late", ns)]
    assert e.counters.adaptive_grows == 1
    check_invariants(e)
