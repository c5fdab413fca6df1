"""Property tests of the engine under arbitrary arrival orders, loss and duplication."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2tpreorder import wire
from l2tpreorder.core import reasons
from l2tpreorder.core.engine import EngineConfig, ReorderEngine, Sequencing
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.wire import MessageType
from tests.engine_helpers import FLOW, TUNNEL, check_invariants, data, drain, ident_of, ns_of

starts = st.one_of(st.sampled_from([65530, 65535, 0]), st.integers(0, 0xFFFF))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=starts, rest=st.permutations(list(range(1, 60))))
def test_any_order_within_the_timeout_comes_out_in_ns_order_exactly_once(
    start: int, rest: list[int]
) -> None:
    """The first packet starts the session; after it, any order arriving within the timeout
    is delivered in Ns order, each once, renumbered contiguously, with nothing skipped."""
    e = ReorderEngine(EngineConfig(reorder_timeout=1.0, max_held_per_session=100))
    for i, k in enumerate([0, *rest]):
        e.receive(data((start + k) & 0xFFFF, k), FLOW, i * 0.001)
        check_invariants(e)
    out = drain(e)
    assert [ident_of(d) for _, d in out] == list(range(60))
    assert [ns_of(d) for _, d in out] == [(start + k) & 0xFFFF for k in range(60)]
    assert sum(e.counters.skipped.values()) == 0
    assert e.counters.held_packets == 0 and e.next_deadline() is None


@st.composite
def impaired_streams(draw: st.DrawFn) -> tuple[int, list[tuple[float, int]], set[int]]:
    """(start Ns, [(arrival time, seq id)], lost ids): loss, duplicates, bounded displacement."""
    n = draw(st.integers(1, 120))
    start = draw(starts)
    lost = {k for k in range(1, n) if draw(st.integers(0, 99)) < 8}
    arrivals: list[tuple[float, int]] = []
    for k in range(n):
        if k in lost:
            continue
        base = k * 0.001
        jitter = 0.0 if k == 0 else draw(st.floats(0.0, 0.02))  # <= 20 ms of displacement
        arrivals.append((base + jitter, k))
        if draw(st.integers(0, 99)) < 5:  # duplicated on the way
            arrivals.append((base + draw(st.floats(0.0, 0.02)), k))
    arrivals.sort()
    return start, arrivals, lost


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=impaired_streams(), mode=st.sampled_from(list(Sequencing)))
def test_loss_duplication_and_reordering_within_the_timeout(
    stream: tuple[int, list[tuple[float, int]], set[int]], mode: Sequencing
) -> None:
    """Only the lost packets are missing; nothing comes out twice or out of order; every
    datagram has exactly one outcome; the timer alone releases what waits for a lost one."""
    start, arrivals, lost = stream
    e = ReorderEngine(EngineConfig(reorder_timeout=0.05, sequencing=mode, max_held_per_session=500))
    idents: list[int] = []
    for t, k in arrivals:
        e.expire(t)
        e.receive(data((start + k) & 0xFFFF, k), FLOW, t)
        check_invariants(e)
        idents += [ident_of(d) for _, d in drain(e)]
    deadline = e.next_deadline()
    while deadline is not None:
        e.expire(deadline)
        check_invariants(e)
        deadline = e.next_deadline()
    idents += [ident_of(d) for _, d in drain(e)]
    sent = sorted({k for _, k in arrivals})
    assert idents == sent
    assert e.counters.dropped_late == 0
    assert e.counters.dropped_duplicate == len(arrivals) - len(sent)
    expected_skipped = sum(1 for k in lost if k < max(sent))
    assert e.counters.skipped[reasons.SKIP_TIMEOUT] == expected_skipped


@st.composite
def hostile_runs(draw: st.DrawFn) -> list[tuple[str, float, int, int]]:
    """Random operations: packets for a few sessions with any Ns, and expiries at any time."""
    ops: list[tuple[str, float, int, int]] = []
    t = 0.0
    for _ in range(draw(st.integers(1, 200))):
        t += draw(st.floats(0.0, 0.05))
        if draw(st.integers(0, 9)) == 0:
            ops.append(("expire", t, 0, 0))
        else:
            session = draw(st.integers(1, 3))
            ns = draw(st.one_of(st.integers(0, 40), st.integers(0, 0xFFFF)))
            ops.append(("receive", t, session, ns))
    return ops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=hostile_runs(),
    timeout=st.sampled_from([0.0, 0.01, 0.1]),
    cap=st.integers(1, 8),
    byte_cap=st.integers(60, 400),
    mode=st.sampled_from(list(Sequencing)),
)
def test_invariants_hold_for_any_input(
    ops: list[tuple[str, float, int, int]],
    timeout: float,
    cap: int,
    byte_cap: int,
    mode: Sequencing,
) -> None:
    """Whatever arrives: accounting adds up, caps hold, no packet comes out twice, and each
    session's output keeps the relative order of what was delivered."""
    e = ReorderEngine(
        EngineConfig(
            reorder_timeout=timeout,
            sequencing=mode,
            max_held_per_session=cap,
            max_held_bytes=byte_cap,
            resync_after=3,
        )
    )
    serial = 0
    seen: set[int] = set()
    for op, t, session, ns in ops:
        if op == "expire":
            e.expire(t)
        else:
            serial += 1
            e.receive(data(ns, serial, session=session, size=20), FLOW, t)
        check_invariants(e)
        for _, d in drain(e):
            ident = ident_of(d)
            assert ident not in seen  # never delivered twice
            seen.add(ident)
    e.flush(ops[-1][1])
    check_invariants(e)
    assert e.counters.held_packets == 0
    for _, d in drain(e):
        ident = ident_of(d)
        assert ident not in seen
        seen.add(ident)
    assert len(seen) == e.counters.forwarded + e.counters.released


# --- session ends interleaved with swaps, duplicates and loss (issue 11) -----------------------

SESSIONS = (1, 2)
ENDS = ("cdn", "stopccn", "evict", "idle", "restart")


@st.composite
def lifecycles(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """Ops: ("pkt", session, LAC seq), an end of one of ENDS kinds, or ("expire", 0, 0). Each
    session's stream goes on across ends: swapped pairs, duplicates of recent packets, short
    losses (a new call never starts here, so the LNS must see one contiguous stream)."""
    ops: list[tuple[str, int, int]] = []
    nxt = dict.fromkeys(SESSIONS, 0)
    for _ in range(draw(st.integers(1, 80))):
        kind = draw(st.integers(0, 19))
        sid = draw(st.sampled_from(SESSIONS))
        k = nxt[sid]
        if kind < 9:
            ops.append(("pkt", sid, k))
            nxt[sid] = k + 1
        elif kind < 12:  # swap: k+1 overtakes k
            ops += [("pkt", sid, k + 1), ("pkt", sid, k)]
            nxt[sid] = k + 2
        elif kind < 13:  # lost
            nxt[sid] = k + draw(st.integers(1, 3))
        elif kind < 15 and k:  # a duplicate of a recent packet
            ops.append(("pkt", sid, max(0, k - draw(st.integers(1, 5)))))
        elif kind < 18:
            ops.append((draw(st.sampled_from(ENDS)), sid, 0))
        else:
            ops.append(("expire", 0, 0))
    return ops


def _restart(e: ReorderEngine, cfg: EngineConfig, now: float) -> ReorderEngine:
    """What the daemon does on SIGTERM (after flushing) + start: save, restore into a new
    engine."""
    from l2tpreorder.core.snapshot import engine_state, restore_engine
    from l2tpreorder.daemon import state

    document = state.export_direction(engine_state(e))
    fresh = ReorderEngine(cfg)
    saved = state.parse_direction(document)
    restore_engine(fresh, saved.sessions, saved.tunnels, now)
    return fresh


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=lifecycles(),
    timeout=st.sampled_from([0.0, 0.02]),
    start=starts,
)
def test_session_ends_never_break_the_renumbered_stream(
    ops: list[tuple[str, int, int]], timeout: float, start: int
) -> None:
    """Across CDN, StopCCN, eviction, idle expiry and restart, interleaved with swaps, duplicates
    and loss: each LAC Ns is delivered at most once, each session's renumbered stream at the LNS
    stays contiguous, and every datagram has exactly one counted outcome."""
    cfg = EngineConfig(
        reorder_timeout=timeout, max_sessions=2, max_held_per_session=64, session_idle_timeout=5.0
    )
    e = ReorderEngine(cfg)
    t = 0.0
    delivered: set[tuple[int, int]] = set()
    last_out: dict[int, int] = {}
    flood = 0

    def collect(engine: ReorderEngine) -> None:
        for _, d in drain(engine):
            h = parse_header(d)
            assert not isinstance(h, str)
            if h.is_control or h.tunnel_id != TUNNEL:
                continue
            ident = ident_of(d)
            assert (h.session_id, ident) not in delivered  # at most once
            delivered.add((h.session_id, ident))
            assert h.ns is not None
            if h.session_id in last_out:
                assert h.ns == (last_out[h.session_id] + 1) & 0xFFFF, (last_out, h.ns)
            last_out[h.session_id] = h.ns

    for op, sid, k in ops:
        t += 0.001
        if op == "pkt":
            e.receive(data((start + k) & 0xFFFF, k, session=sid), FLOW, t)
        elif op == "cdn":  # spoofed: the LNS keeps the session
            cdn = wire.build_control(
                TUNNEL, sid, 1, 1, [wire.avp_message_type(wire.MessageType.CDN)]
            )
            e.receive(cdn, FLOW, t)
        elif op == "stopccn":
            stop = wire.build_control(TUNNEL, 0, 1, 1, [wire.avp_message_type(MessageType.StopCCN)])
            e.receive(stop, FLOW, t)
        elif op == "evict":
            flood += 1
            for i in range(2):  # fills the table of 2: both real sessions may go
                e.receive(data(7, tunnel=9, session=(flood << 1) + i), "flood", t)
        elif op == "idle":
            t += 6.0
            e.expire(t)
        elif op == "restart":
            e.flush(t)  # SIGTERM delivers what is held first
            collect(e)
            check_invariants(e)
            e = _restart(e, cfg, t)
        else:
            e.expire(t)
        check_invariants(e)
        collect(e)
    e.flush(t)
    check_invariants(e)
    collect(e)
