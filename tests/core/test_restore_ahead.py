"""A restart under traffic (issue 21, point 3): what a restored session does with its first
packet when traffic went on while the daemon was down (core/ahead.py), through the Pipeline's
snapshot/restore, as the daemon does it.

In-path mode fails open: the LNS got the LACs' packets untouched meanwhile, with their own Ns,
so it must then see no Ns step back or repeat. Relay mode has no bypass: what was sent meanwhile
was lost, and the renumbered stream must go on without a jump."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2tpreorder.core import reasons
from l2tpreorder.core.engine import EngineConfig, Sequencing
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.core.snapshot import PipelineState
from tests.engine_helpers import FLOW, check_invariants, data, ident_of, never_steps_back, ns_of

MASK = 0xFFFF
HALF = 0x8000


def lns_ns(p: Pipeline) -> list[tuple[int, int | None]]:
    """(payload id, Ns as the LNS gets it) of everything the pipeline sends now."""
    return [(ident_of(o.data), ns_of(o.data)) for o in p.take_output()]


def before_the_restart(
    config: EngineConfig, start: int, count: int, lost: range
) -> tuple[PipelineState, list[int | None]]:
    """A session running `count` packets from `start` with `lost` given up (so in renumber mode
    the LNS's Ns lag the LAC's), stopped as SIGTERM does: flush, snapshot."""
    p = Pipeline(config)
    now = 0.0
    for k in range(count):
        now = k * 0.001
        ns = (start + k) & MASK
        if ns not in lost:
            p.from_lac(data(ns), FLOW, now)
        p.expire(now)
    p.expire(now + 1.0)
    p.flush(now + 1.0)
    seen = [n for _, n in lns_ns(p)]
    return p.snapshot(), seen


@pytest.mark.parametrize("start", [1000, 65000])
def test_in_path_restart_under_traffic_the_lns_never_steps_back(start: int) -> None:
    """The issue's case: renumbered Ns lag the LAC's (gaps given up before the stop), the
    bypass passes the LAC's own Ns during the downtime (the LNS saw ... 1627), and the
    restored session renumbered from the saved value (then ... 802). Now it goes on from the
    Ns the LNS saw, and its first packet is not held for the timeout."""
    config = EngineConfig(reorder_timeout=0.1, sequencing=Sequencing.RENUMBER)
    lost = range(start + 20, start + 60)  # 40 Ns given up: our Ns lag the LAC's by 40
    state, seen = before_the_restart(config, start, 800, lost)
    bypassed = [(start + k) & MASK for k in range(800, 1400)]  # the LAC's Ns, untouched
    seen += bypassed

    p = Pipeline(config)
    assert p.restore(state, 10.0, passed=True).total == 1
    # After the bind: a swap right away (1401 before 1400), then in order.
    first = [(start + 1401) & MASK, (start + 1400) & MASK]
    rest = [(start + k) & MASK for k in range(1402, 1420)]
    outcomes = [p.from_lac(data(ns), FLOW, 10.0 + i * 0.001) for i, ns in enumerate(first + rest)]
    assert outcomes[0] == Outcome.FORWARDED_IN_ORDER  # not held for the timeout
    assert outcomes[1] == Outcome.FORWARDED_LATE  # its gap was given up: next Ns, no loss
    after = lns_ns(p)
    assert [i for i, _ in after] == first + rest  # every packet, nothing held
    seen += [n for _, n in after]
    never_steps_back(seen)
    assert after[0][1] == (start + 1401) & MASK  # offset 0: the LAC's own Ns from here on
    view = p.directions()["lac_to_lns"]
    # the 600 that took the bypass and start+1400, overtaken by the first one after the bind
    assert view.counters.skipped[reasons.SKIP_RESTART] == 601
    check_invariants(p.engine)


@pytest.mark.parametrize("mode", [Sequencing.PRESERVE, Sequencing.STRIP])
def test_in_path_restart_other_modes_do_not_hold_the_first_packet(mode: Sequencing) -> None:
    config = EngineConfig(reorder_timeout=0.1, sequencing=mode)
    state, _ = before_the_restart(config, 7, 100, range(0))
    p = Pipeline(config)
    p.restore(state, 10.0, passed=True)
    assert p.from_lac(data(107 + 30), FLOW, 10.0) == Outcome.FORWARDED_IN_ORDER
    out = lns_ns(p)
    assert [i for i, _ in out] == [137]
    assert out[0][1] == (137 if mode is Sequencing.PRESERVE else None)


def test_in_path_restart_with_nothing_passed_changes_nothing() -> None:
    """No traffic during the downtime: the first packet is the saved expectation, and the
    renumbered stream goes on without a jump."""
    config = EngineConfig(reorder_timeout=0.1)
    state, seen = before_the_restart(config, 0, 50, range(10, 15))
    p = Pipeline(config)
    p.restore(state, 10.0, passed=True)
    for ns in range(50, 60):
        assert p.from_lac(data(ns), FLOW, 10.0) == Outcome.FORWARDED_IN_ORDER
    after = [n for _, n in lns_ns(p)]
    assert after == list(range(45, 55))
    never_steps_back(seen + after)


def test_relay_restart_gives_up_what_was_lost_at_once_without_a_jump() -> None:
    """Relay mode: no bypass, so the packets sent during the downtime are lost. The first one
    after the restart, far ahead, is not held for them, and the renumbered Ns go on where the
    LNS saw them stop (no jump: a jump of 3 or more stalls xl2tpd's data path)."""
    config = EngineConfig(reorder_timeout=0.1)
    state, seen = before_the_restart(config, 0, 500, range(100, 120))
    assert seen[-1] == 479
    p = Pipeline(config)
    p.restore(state, 10.0)
    assert p.from_lac(data(1200), FLOW, 10.0) == Outcome.FORWARDED_IN_ORDER  # 700 were lost
    assert p.from_lac(data(1201), FLOW, 10.0) == Outcome.FORWARDED_IN_ORDER
    assert [n for _, n in lns_ns(p)] == [480, 481]
    assert p.directions()["lac_to_lns"].counters.skipped[reasons.SKIP_RESTART] == 700


def test_relay_restart_a_small_gap_is_waited_for_as_usual() -> None:
    """Within the window the gap may be a swap across the restart: held, then filled."""
    config = EngineConfig(reorder_timeout=0.1)
    state, _ = before_the_restart(config, 0, 100, range(0))
    p = Pipeline(config)
    p.restore(state, 10.0)
    assert p.from_lac(data(101), FLOW, 10.0) == Outcome.HELD
    assert p.from_lac(data(100), FLOW, 10.001) == Outcome.FORWARDED_IN_ORDER
    assert lns_ns(p) == [(100, 100), (101, 101)]


def test_only_the_first_packet_after_a_restore_is_trusted_far_ahead() -> None:
    """A restored session's position is unconfirmed until its first packet; after that a
    packet far ahead is a stray again (issue 21, point 5)."""
    config = EngineConfig(reorder_timeout=0.1)
    state, _ = before_the_restart(config, 0, 100, range(0))
    for first in (100, 3000):  # in order (the fast path), or far ahead (trusted)
        p = Pipeline(config)
        p.restore(state, 10.0, passed=True)
        assert p.from_lac(data(first), FLOW, 10.0) == Outcome.FORWARDED_IN_ORDER
        assert p.from_lac(data(first + 20000), FLOW, 10.0) == Outcome.DROPPED_FAR_AHEAD
        assert p.from_lac(data(first + 1), FLOW, 10.0) == Outcome.FORWARDED_IN_ORDER
        assert [i for i, _ in lns_ns(p)] == [first, first + 1]


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(0, MASK),
    lost=st.integers(0, 200),
    bypassed=st.integers(0, 3000),
    swaps=st.lists(st.integers(0, 18), max_size=4),
)
def test_in_path_restart_property_the_lns_never_steps_back_or_repeats(
    start: int, lost: int, bypassed: int, swaps: list[int]
) -> None:
    """Whatever our Ns lagged by, however long the bypass ran, and with swaps right after the
    bind: across the restart the LNS sees every Ns after the one before it, and every packet
    that reached us after the restart is delivered once (renumber)."""
    config = EngineConfig(reorder_timeout=0.05)
    state, seen = before_the_restart(config, start, 300, range(start + 5, start + 5 + lost))
    seen = [n for n in seen if n is not None]
    seen += [(start + 300 + k) & MASK for k in range(bypassed)]
    after_bind = [(start + 300 + bypassed + k) & MASK for k in range(20)]
    for i in swaps:
        after_bind[i], after_bind[i + 1] = after_bind[i + 1], after_bind[i]
    p = Pipeline(config)
    p.restore(state, 10.0, passed=True)
    for i, ns in enumerate(after_bind):
        p.from_lac(data(ns), FLOW, 10.0 + i * 0.001)
        p.expire(10.0 + i * 0.001)
    p.expire(11.0)
    out = lns_ns(p)
    assert sorted(i for i, _ in out) == sorted(after_bind)
    never_steps_back(seen + [n for _, n in out])
    check_invariants(p.engine)


def test_in_path_restart_a_first_packet_behind_keeps_the_session_unconfirmed() -> None:
    """Review finding: the first packet after the restart is behind (here a late one, given up
    before the stop). Delivered with our next Ns it would step the LNS back (it saw the LAC's
    higher Ns during the bypass), and the session would forget it was restored: the next
    packet, ahead, would then be held and renumbered into Ns the LNS saw. Dropped instead, and
    the next one ahead still moves the numbering on."""
    config = EngineConfig(reorder_timeout=0.1)
    state, seen = before_the_restart(config, 0, 100, range(20, 60))  # our Ns lag by 40
    seen += list(range(100, 130))  # the bypass
    p = Pipeline(config)
    p.restore(state, 10.0, passed=True)
    assert p.from_lac(data(30), FLOW, 10.0) == Outcome.DROPPED_LATE
    for i, ns in enumerate(range(130, 140)):
        assert p.from_lac(data(ns), FLOW, 10.001 + i * 0.001) == Outcome.FORWARDED_IN_ORDER
    after = [n for _, n in lns_ns(p)]
    never_steps_back([n for n in seen if n is not None] + after)
    assert after[0] == 130


def test_in_path_restart_a_session_ended_before_the_stop_continues_without_stepping_back() -> None:
    """Review finding: a session in the ended-session memory at the stop (its LAC peer was
    forgotten, say) whose stream goes on through the bypass and after the restart takes up its
    old numbering: like a restored one, its first packet tells where the stream went."""
    config = EngineConfig(reorder_timeout=0.1)
    p = Pipeline(config)
    for ns in range(0, 100):
        if not 20 <= ns < 60:
            p.from_lac(data(ns), FLOW, ns * 0.001)
        p.expire(ns * 0.001)
    p.expire(1.0)
    seen = [n for _, n in lns_ns(p)]
    p.end_flow(FLOW, 1.0)  # ended, remembered for its numbering
    p.flush(1.0)
    state = p.snapshot()
    seen += list(range(100, 110))  # the bypass: the LAC's own Ns
    q = Pipeline(config)
    q.restore(state, 10.0, passed=True)
    for i, ns in enumerate(range(110, 120)):
        assert q.from_lac(data(ns), FLOW, 10.0 + i * 0.001) == Outcome.FORWARDED_IN_ORDER
    after = [n for _, n in lns_ns(q)]
    assert after[0] == 110
    never_steps_back([n for n in seen if n is not None] + after)
    assert q.directions()["lac_to_lns"].counters.sessions_continued == 1


def test_after_in_order_packets_a_restored_session_delivers_late_ones_again() -> None:
    """Third review finding: the first packets after the restore come in order (the fast path,
    which does not clear the restored mark), so nothing passed meanwhile; a late packet of a gap
    given up before the stop must then be delivered with the next Ns as usual, not dropped as if
    the session's position were still unknown."""
    config = EngineConfig(reorder_timeout=0.1)
    state, _ = before_the_restart(config, 0, 100, range(90, 92))  # 90, 91 given up
    p = Pipeline(config)
    p.restore(state, 10.0, passed=True)
    for i, ns in enumerate(range(100, 105)):
        assert p.from_lac(data(ns), FLOW, 10.0 + i * 0.001) == Outcome.FORWARDED_IN_ORDER
    assert p.from_lac(data(90), FLOW, 10.3) == Outcome.FORWARDED_LATE
