"""An engine's state as plain data: what a restart needs to carry on where it stopped.

The core owns what the state is (per session the next Ns expected and the next Ns the LNS will
see, the given-up bitmap, the continuation memory of ended sessions, tunnel-ID pairs) and how
an engine is rebuilt from it; the daemon (`daemon/state.py`) only decides how it is written to a
file. No I/O here, so replay, tests and any adapter can snapshot and restore an engine alike.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

from l2tpreorder.core.continuation import Ended
from l2tpreorder.core.engine import ReorderEngine

TunnelPair = tuple[Hashable, int, int]  # (flow, their tunnel ID, our tunnel ID)


@dataclass(frozen=True, slots=True)
class SessionState:
    """What one session needs to continue where it stopped."""

    flow: Hashable
    tunnel_id: int
    session_id: int
    expected: int  # next Ns expected from the LAC
    out_ns: int  # next Ns the LNS will see (renumber mode)
    confirmed: bool  # established by the control channel
    gaps: int = 0  # given-up bitmap (bit i = Ns gaps_end-1-i)
    gaps_end: int | None = None  # None: expected
    # Set for an ended session in the continuation memory: seconds before the save it ended.
    ended_ago: float | None = None
    idle: bool = False  # it ended by idle expiry (remembered longer)


def snapshot(engine: ReorderEngine) -> tuple[list[SessionState], list[TunnelPair]]:
    """The engine's live sessions, then its ended-session memory, and its tunnel-ID pairs.
    Call after `engine.flush(now)` (held packets are delivered, never saved)."""
    now = engine.latest_time
    live = [
        SessionState(
            s.flow, s.tunnel_id, s.session_id, s.expected, s.out_ns, s.confirmed, s.gaps, s.gaps_end
        )
        for s in engine.sessions()
    ]
    ended = [
        SessionState(
            flow,
            tunnel_id,
            session_id,
            e.expected,
            e.out_ns,
            e.confirmed,
            e.gaps,
            e.gaps_end,
            ended_ago=max(0.0, now - e.at) if math.isfinite(now) else 0.0,
            idle=idle,
        )
        for flow, tunnel_id, session_id, e, idle in engine.ended_sessions()
    ]
    return live + ended, engine.tunnel_pairs()


def restore_engine(
    engine: ReorderEngine,
    sessions: list[SessionState],
    tunnels: list[TunnelPair],
    now: float,
    elapsed: float = 0.0,
    *,
    passed: bool = False,
) -> int:
    """Recreate saved sessions, continuation memory and tunnel-ID pairs in `engine` (`elapsed`:
    seconds since the save; `passed`: traffic may have reached the receiver untouched while we
    were down, the in-path fail-open bypass); returns how many live sessions."""
    for flow, theirs, ours in tunnels:
        engine.restore_tunnel(flow, theirs, ours)
    live = 0
    for s in sessions:
        if s.ended_ago is not None:
            gaps_end = s.expected if s.gaps_end is None else s.gaps_end
            at = now - s.ended_ago - elapsed
            ended = Ended(s.expected, s.out_ns, s.gaps, gaps_end, at, s.confirmed, passed)
            engine.restore_ended(s.flow, s.tunnel_id, s.session_id, ended, idle=s.idle)
            continue
        restored = engine.restore_session(
            s.flow,
            s.tunnel_id,
            s.session_id,
            s.expected,
            s.out_ns,
            now,
            confirmed=s.confirmed,
            passed=passed,
        )
        restored.gaps = s.gaps & ((1 << engine.window) - 1)
        restored.gaps_end = s.expected if s.gaps_end is None else s.gaps_end
        live += 1
    return live


# --- both directions: what Pipeline.snapshot/restore hand over ----------------------------------


@dataclass(frozen=True, slots=True)
class EngineState:
    """One direction's state: live sessions and ended-session memory, and tunnel-ID pairs."""

    sessions: list[SessionState]
    tunnels: list[TunnelPair]

    @property
    def live(self) -> int:
        return sum(1 for s in self.sessions if s.ended_ago is None)


@dataclass(frozen=True, slots=True)
class PipelineState:
    """Both directions' state (direction label -> EngineState; LNS_TO_LAC only when that
    direction reorders) and the sequencing mode it was numbered in."""

    sequencing: str
    directions: dict[str, EngineState]

    @property
    def live(self) -> int:
        """Live sessions in all directions."""
        return sum(d.live for d in self.directions.values())


@dataclass(frozen=True, slots=True)
class Restored:
    """What `Pipeline.restore` did: live sessions restored per direction, and per direction
    the live sessions saved but not restored because that direction does not reorder now."""

    sessions: dict[str, int]
    ignored: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.sessions.values())


def engine_state(engine: ReorderEngine) -> EngineState:
    sessions, tunnels = snapshot(engine)
    return EngineState(sessions, tunnels)
