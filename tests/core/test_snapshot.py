"""core.snapshot: an engine's state as plain data, and an engine rebuilt from it (no I/O)."""

from __future__ import annotations

from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.core.snapshot import restore_engine, snapshot
from tests.engine_helpers import data, drain

FLOW = ("192.0.2.1", 1701)


def test_snapshot_then_restore_carries_numbering_and_ended_memory() -> None:
    cfg = EngineConfig(reorder_timeout=0.1)
    e = ReorderEngine(cfg)
    for ns in range(5):
        e.receive(data(ns, tunnel=1, session=2), FLOW, float(ns))
    e.receive(data(0, tunnel=1, session=3), FLOW, 5.0)
    assert e.end_session(FLOW, 1, 3, 5.0)  # remembered: the stream may carry on
    e.flush(5.0)
    drain(e)
    sessions, tunnels = snapshot(e)
    live = [s for s in sessions if s.ended_ago is None]
    ended = [s for s in sessions if s.ended_ago is not None]
    assert [(s.tunnel_id, s.session_id, s.expected) for s in live] == [(1, 2, 5)]
    assert [(s.tunnel_id, s.session_id, s.expected) for s in ended] == [(1, 3, 1)]

    fresh = ReorderEngine(cfg)
    assert restore_engine(fresh, sessions, tunnels, 10.0) == 1
    fresh.receive(data(5, tunnel=1, session=2), FLOW, 10.0)  # carries on, not a new session
    fresh.receive(data(1, tunnel=1, session=3), FLOW, 10.0)  # the ended one continues too
    out = drain(fresh)
    assert len(out) == 2
    assert fresh.counters.sessions_continued == 1
