"""`--log-level debug`: lines worth reading, from the engine's outcomes, never from inside it.

The core does not log (it is sans-IO and its hot path counts in plain ints). With debug on, the
relay swaps its per-datagram `pipeline.from_lac` for `DebugEvents.receive`, which calls the
pipeline and, for a late, duplicate or stale drop or a malformed datagram, logs the LAC, tunnel_id,
session_id and Ns. With debug off nothing here runs: the relay calls the pipeline directly.
Session starts and ends, and gaps given up, come from comparing the session table once per
housekeeping tick. Every line goes through one rate limit (a flood must not fill the disk);
what it holds back is counted and said.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from l2tpreorder.config import format_address
from l2tpreorder.core import reasons
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.core.pipeline import Pipeline

log = logging.getLogger("l2tpreorder")

LINES_PER_SECOND = 50

_DROPS: dict[int, str] = {
    reasons.Outcome.DROPPED_LATE: "late (its gap was given up already)",
    reasons.Outcome.DROPPED_DUPLICATE: "duplicate (this Ns was delivered already)",
    reasons.Outcome.DROPPED_STALE: "stale (further behind than the session's window)",
}


def _peer(flow: Hashable) -> str:
    if isinstance(flow, tuple) and len(flow) == 2:
        return format_address((str(flow[0]), int(flow[1])))
    return str(flow)


class RateLimit:
    """At most `per_second` lines in each wall-clock second of the relay's clock."""

    __slots__ = ("_second", "_used", "per_second", "suppressed")

    def __init__(self, per_second: int = LINES_PER_SECOND) -> None:
        self.per_second = per_second
        self._second = -1
        self._used = 0
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        second = int(now)
        if second != self._second:
            if self.suppressed:
                log.debug("%d debug lines suppressed (rate limit)", self.suppressed)
                self.suppressed = 0
            self._second, self._used = second, 0
        if self._used >= self.per_second:
            self.suppressed += 1
            return False
        self._used += 1
        return True


class DebugEvents:
    """Debug lines for one pipeline's LAC-to-LNS direction."""

    __slots__ = ("_known", "_pipeline", "limit")

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.limit = RateLimit()
        # (flow, tunnel_id, session_id) -> skipped count at the last tick
        self._known: dict[tuple[Hashable, int, int], int] = {
            s.key: s.skipped for s in pipeline.sessions()
        }

    def receive(self, data: bytes, flow: Hashable, now: float, tag: object = None) -> int:
        """What the relay calls per datagram while debug logging is on (`from_lac`'s shape;
        looked up each call: the pipeline rebinds it on reconfigure)."""
        outcome = self._pipeline.from_lac(data, flow, now, tag)
        if outcome in _DROPS or outcome == reasons.Outcome.DROPPED_MALFORMED:
            self._dropped(outcome, data, flow, now)
        return outcome

    def _dropped(self, outcome: int, data: bytes, flow: Hashable, now: float) -> None:
        if not self.limit.allow(now):
            return
        h = parse_header(data)
        if isinstance(h, str):
            log.debug("dropped from LAC %s: malformed (%s)", _peer(flow), h)
            return
        log.debug(
            "dropped from LAC %s: tunnel_id %d session_id %d Ns %s: %s",
            _peer(flow),
            h.tunnel_id,
            h.session_id,
            h.ns,
            _DROPS.get(outcome, "malformed"),
        )

    def refused(self, key: tuple[str, int], why: str, now: float) -> None:
        if self.limit.allow(now):
            log.debug("refused datagram from %s: %s", format_address(key), why)

    def tick(self, now: float) -> None:
        """Sessions started and ended since the last tick, and gaps given up in them."""
        current: dict[tuple[Hashable, int, int], int] = {}
        for s in self._pipeline.sessions():
            key = s.key
            current[key] = s.skipped
            before = self._known.get(key)
            if before is None:
                self._line(now, "session started", key, f"at Ns {s.expected}")
            elif s.skipped > before:
                self._line(now, "gave up", key, f"{s.skipped - before} missing Ns (waited out)")
        for key in self._known.keys() - current.keys():
            why = "CDN/StopCCN, eviction, idle expiry, or its peer went idle"
            self._line(now, "session ended", key, why)
        self._known = current

    def _line(self, now: float, what: str, key: tuple[Hashable, int, int], detail: str) -> None:
        if self.limit.allow(now):
            flow, tunnel_id, session_id = key
            log.debug(
                "%s: LAC %s tunnel_id %d session_id %d, %s",
                what,
                _peer(flow),
                tunnel_id,
                session_id,
                detail,
            )
