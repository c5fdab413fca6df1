"""The session table cap: a flood of made-up session IDs cannot grow memory or push out a real
session, and eviction order is least recently active, unconfirmed sessions first."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Hashable

import pytest

from l2tpreorder.core import engine as engine_module
from l2tpreorder.core import reasons
from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.wire import (
    MessageType,
    avp_assigned_session_id,
    avp_assigned_tunnel_id,
    avp_message_type,
    build_control,
)
from tests.engine_helpers import check_invariants, data, ident_of


def iccn(tunnel_id: int, session_id: int) -> bytes:
    """ICCN from the LAC: its header carries the LNS's tunnel and session ID (our data's key)."""
    return build_control(tunnel_id, session_id, 3, 2, [avp_message_type(MessageType.ICCN)])


def test_flood_keeps_table_at_cap_and_established_session_flows_in_order() -> None:
    cap = 500
    e = ReorderEngine(EngineConfig(max_sessions=cap, reorder_timeout=0.05))
    lac: Hashable = ("192.0.2.1", 1701)
    e.receive(iccn(7, 9), lac, 0.0)
    rng = random.Random(7)
    flood_flows = [(f"198.51.100.{i}", 1701) for i in range(16)]
    t = 0.0
    ns = 0
    for step in range(20_000):
        t += 0.0001
        tid, sid = rng.randrange(1, 65536), rng.randrange(1, 65536)
        e.receive(data(rng.randrange(65536), tunnel=tid, session=sid), rng.choice(flood_flows), t)
        if step % 10 == 0:
            # The real session: in order, except every 5th pair swapped (the LAC's habit).
            if ns % 10 == 5:
                for n in (ns + 1, ns):
                    e.receive(data(n, tunnel=7, session=9), lac, t)
                ns += 2
            else:
                e.receive(data(ns, tunnel=7, session=9), lac, t)
                ns += 1
        e.expire(t)
        if step % 1000 == 0:
            check_invariants(e)
    e.flush(t)
    check_invariants(e)
    c = e.counters
    assert e.session_count == cap
    assert c.sessions_evicted == c.sessions_started - cap
    assert c.sessions_evicted > 15_000
    assert c.sessions_evicted_confirmed == 0
    s = e.session(lac, 7, 9)
    assert s is not None and s.confirmed
    mine = [d for f, d, _ in e.take_output() if f == lac and d[0] & 0x80 == 0]
    payloads = [ident_of(d) for d in mine]
    assert payloads == list(range(ns)), "the established session lost or reordered packets"
    out_ns = [h.ns for h in map(parse_header, mine) if not isinstance(h, str)]
    assert out_ns == list(range(ns))


def test_least_recently_active_unconfirmed_is_evicted_first() -> None:
    e = ReorderEngine(EngineConfig(max_sessions=3))
    e.receive(data(0, tunnel=1, session=1), "a", 1.0)
    e.receive(data(0, tunnel=1, session=2), "a", 2.0)
    e.receive(data(0, tunnel=1, session=3), "b", 3.0)
    e.receive(data(1, tunnel=1, session=1), "a", 4.0)  # fast path: (1, 1) now most recently active
    e.receive(data(0, tunnel=1, session=4), "b", 5.0)
    assert e.session("a", 1, 2) is None
    assert {(s.flow, s.session_id) for s in e.sessions()} == {("a", 1), ("b", 3), ("b", 4)}
    e.receive(data(0, tunnel=1, session=5), "c", 6.0)
    assert e.session("b", 1, 3) is None
    assert e.counters.sessions_evicted == 2
    check_invariants(e)


def test_confirmed_sessions_are_evicted_only_when_nothing_else_is_left() -> None:
    e = ReorderEngine(EngineConfig(max_sessions=3))
    e.receive(iccn(5, 50), "lac", 0.0)  # confirmed before its first data packet
    e.receive(data(0, tunnel=5, session=50), "lac", 1.0)
    e.receive(data(0, tunnel=5, session=51), "lac", 2.0)
    e.receive(data(0, tunnel=5, session=52), "lac", 3.0)
    e.receive(iccn(5, 52), "lac", 3.5)  # confirmed after it started
    assert e.counters.sessions_confirmed == 2
    e.receive(data(0, tunnel=6, session=1), "flood", 4.0)
    e.receive(data(0, tunnel=6, session=2), "flood", 5.0)
    assert e.session("lac", 5, 50) is not None and e.session("lac", 5, 52) is not None
    assert e.counters.sessions_evicted == 2 and e.counters.sessions_evicted_confirmed == 0
    # Fill with confirmed sessions only: now the least recently active confirmed one goes.
    e.receive(iccn(5, 53), "lac", 6.0)
    e.receive(data(0, tunnel=5, session=53), "lac", 6.0)
    e.receive(data(1, tunnel=5, session=52), "lac", 7.0)
    e.receive(data(0, tunnel=6, session=3), "flood", 8.0)
    assert e.session("lac", 5, 50) is None
    assert e.counters.sessions_evicted_confirmed == 1
    check_invariants(e)


def test_eviction_delivers_held_packets_first() -> None:
    e = ReorderEngine(EngineConfig(max_sessions=1, reorder_timeout=1.0))
    e.receive(data(0, tunnel=1, session=1), "a", 0.0)
    assert e.receive(data(3, tunnel=1, session=1), "a", 0.1) == reasons.Outcome.HELD
    assert e.receive(data(2, tunnel=1, session=1), "a", 0.2) == reasons.Outcome.HELD
    e.take_output()
    e.receive(data(0, tunnel=2, session=2), "b", 0.3)  # evicts (1, 1) of "a" (holds Ns 2, 3)
    out = e.take_output()
    assert [f for f, _, _ in out] == ["a", "a", "b"]
    assert [parse_header(d).ns for _, d, _ in out[:2]] == [1, 2]  # type: ignore[union-attr]
    c = e.counters
    assert c.released == 2 and c.held_packets == 0
    assert c.skipped[reasons.SKIP_EVICTED] == 1
    assert c.sessions_evicted == 1
    check_invariants(e)


def test_reverse_icrp_confirms_the_lns_session_id() -> None:
    """SCCRP (LNS to LAC) pairs the tunnel IDs; ICRP's Assigned Session ID is our data's key."""
    e = ReorderEngine(EngineConfig(max_sessions=2))
    lac_tunnel, lns_tunnel, lac_session, lns_session = 11, 22, 33, 44
    sccrp = build_control(
        lac_tunnel, 0, 0, 1,
        [avp_message_type(MessageType.SCCRP), avp_assigned_tunnel_id(lns_tunnel)],
    )  # fmt: skip
    icrp = build_control(
        lac_tunnel, lac_session, 1, 2,
        [avp_message_type(MessageType.ICRP), avp_assigned_session_id(lns_session)],
    )  # fmt: skip
    assert e.observe_reverse(sccrp, "lac", 0.0) == "SCCRP"
    assert e.observe_reverse(icrp, "lac", 0.1) == "ICRP"
    e.receive(data(0, tunnel=lns_tunnel, session=lns_session), "lac", 1.0)
    s = e.session("lac", lns_tunnel, lns_session)
    assert s is not None and s.confirmed
    for i in range(5):
        e.receive(data(0, tunnel=9, session=i), "flood", 2.0 + i)
    assert e.session("lac", lns_tunnel, lns_session) is not None
    assert e.counters.sessions_evicted == 4


def test_ended_session_forgets_its_confirmation() -> None:
    e = ReorderEngine()
    e.receive(iccn(1, 2), "lac", 0.0)
    e.receive(data(0, tunnel=1, session=2), "lac", 0.1)
    assert e.end_session("lac", 1, 2, 0.2)
    e.receive(data(0, tunnel=1, session=2), "lac", 0.3)  # the ID reused without a new ICCN
    s = e.session("lac", 1, 2)
    assert s is not None and not s.confirmed


def test_pending_confirmations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood of ICCNs for sessions that never send data cannot grow the engine."""
    monkeypatch.setattr(engine_module, "MAX_PENDING_CONFIRMATIONS", 8)
    e = ReorderEngine()
    for sid in range(1, 40):
        e.receive(iccn(1, sid), "lac", 0.0)
    assert len(e._pending_confirmations) == 8
    e.receive(data(0, tunnel=1, session=39), "lac", 0.1)  # among the newest 8: still confirmed
    e.receive(data(0, tunnel=1, session=1), "lac", 0.1)  # pushed out long ago
    assert e.session("lac", 1, 39).confirmed  # type: ignore[union-attr]
    assert not e.session("lac", 1, 1).confirmed  # type: ignore[union-attr]


def test_reconfigure_to_a_smaller_cap_evicts_down_to_it() -> None:
    e = ReorderEngine(EngineConfig(max_sessions=10))
    for i in range(10):
        e.receive(data(0, tunnel=1, session=i), "a", float(i))
    e.reconfigure(EngineConfig(max_sessions=4), 20.0)
    assert e.session_count == 4
    assert {s.session_id for s in e.sessions()} == {6, 7, 8, 9}
    check_invariants(e)


def test_max_sessions_is_validated() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        EngineConfig(max_sessions=0)


def test_memory_stays_flat_under_a_flood_at_the_cap() -> None:
    """Python-heap bytes after a flood of 5x the cap stay near those after 1x (no growth)."""
    cap = 2000
    e = ReorderEngine(EngineConfig(max_sessions=cap))
    rng = random.Random(1)
    packets = [
        data(rng.randrange(65536), tunnel=rng.randrange(65536), session=rng.randrange(65536))
        for _ in range(5 * cap)
    ]
    tracemalloc.start()
    try:
        for i, p in enumerate(packets[:cap]):
            e.receive(p, i % 7, i * 1e-4)
        e.take_output()
        at_cap = tracemalloc.get_traced_memory()[0]
        for i, p in enumerate(packets[cap:], start=cap):
            e.receive(p, i % 7, i * 1e-4)
            if i % 1000 == 0:
                e.take_output()
        e.take_output()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert e.session_count == cap
    assert e.counters.sessions_evicted == 4 * cap
    assert after < at_cap * 1.25, (at_cap, after)


def test_evictions_are_exported_to_prometheus() -> None:
    from prometheus_client import generate_latest

    from l2tpreorder.daemon.metrics import MetricsConfig, build_registry
    from tests.metrics_helpers import Source, parse, value

    e = ReorderEngine(EngineConfig(max_sessions=2))
    e.receive(iccn(1, 1), "lac", 0.0)
    for sid in range(1, 6):
        e.receive(data(0, tunnel=1, session=sid), "lac", float(sid))
    assert e.counters.sessions_evicted == 3
    source = Source({"lac_to_lns": e})
    s = parse(generate_latest(build_registry(MetricsConfig(), source)).decode())  # type: ignore[arg-type]
    d = "lac_to_lns"
    assert value(s, "l2tpreorder_sessions_evicted_total", direction=d, confirmed="no") == 3
    assert value(s, "l2tpreorder_sessions_evicted_total", direction=d, confirmed="yes") == 0
    assert value(s, "l2tpreorder_sessions_limit", direction=d) == 2
    assert value(s, "l2tpreorder_sessions", direction=d) == 2
    skipped = "l2tpreorder_skipped_sequence_numbers_total"
    assert value(s, skipped, direction=d, reason="evicted") == 0


def test_stopccn_ends_only_its_tunnel_and_forgets_its_tunnel_pairs() -> None:
    e = ReorderEngine()
    for tid in (5, 6):
        sccrp = build_control(
            100 + tid, 0, 0, 1,
            [avp_message_type(MessageType.SCCRP), avp_assigned_tunnel_id(tid)],
        )  # fmt: skip
        e.observe_reverse(sccrp, "lac", 0.0)
        for sid in range(1, 4):
            e.receive(data(0, tunnel=tid, session=sid), "lac", 0.0)
    e.receive(data(0, tunnel=5, session=1), "other-lac", 0.0)
    stop = build_control(5, 0, 9, 9, [avp_message_type(MessageType.StopCCN)])
    e.receive(stop, "lac", 1.0)
    assert sorted((s.flow, s.tunnel_id) for s in e.sessions()) == [
        ("lac", 6), ("lac", 6), ("lac", 6), ("other-lac", 5),
    ]  # fmt: skip
    assert e.tunnel_pairs() == [("lac", 106, 6)]
    assert e.counters.sessions_ended == 3
    check_invariants(e)
