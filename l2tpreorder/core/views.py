"""What an adapter may read of one direction of the pipeline: `Pipeline.directions()`.

Status, metrics, the debug lines and replay read sessions, counters, histograms and timeouts;
none of them changes an engine. This Protocol names exactly what they read, so nothing outside
`core/` needs the engine itself (tests/core/test_core_door.py checks it): the engine satisfies
it, and a change to the engine that keeps these names keeps every adapter working.

`Session` objects handed out are the live ones: read them, never write them. A session that
ended is not updated any more (`alive` is False).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Protocol

from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.core.engine_counters import EngineCounters, Histogram
from l2tpreorder.core.session_table import Session

__all__ = ["DirectionView", "EngineConfig", "EngineCounters", "Histogram", "Session"]


class DirectionView(Protocol):
    """Read-only access to one direction's engine (ReorderEngine satisfies it)."""

    @property
    def counters(self) -> EngineCounters:
        """Every outcome and event as plain ints, and the hold-time and displacement histograms
        (`counters.hold_time`, `counters.displacement`)."""
        ...

    @property
    def config(self) -> EngineConfig:
        """The settings this direction runs with."""
        ...

    @property
    def session_count(self) -> int: ...

    @property
    def adaptive_timeouts(self) -> bool:
        """Sessions learn their own timeouts (`timeout_of` differs per session)."""
        ...

    def timeout_of(self, s: Session) -> float:
        """The session's reorder timeout: its own in adaptive mode, else the configured one."""
        ...

    def sessions(self) -> Iterator[Session]:
        """The live sessions (on the adapter's own thread)."""
        ...

    def sessions_snapshot(self) -> list[Session]:
        """The live sessions, safe to take from another thread (the metrics scrape)."""
        ...

    def session(self, flow: Hashable, tunnel_id: int, session_id: int) -> Session | None: ...
