"""`--log-level debug`: lines worth reading, from the engine's outcomes, never from inside it.

The core does not log (it is sans-IO and its hot path counts in plain ints). With debug on, the
relay swaps its per-datagram `pipeline.from_lac` for `DebugEvents.receive`, which calls the
pipeline and, for a late, duplicate or stale drop or a malformed datagram, logs the LAC, tunnel_id,
session_id and Ns. With debug off nothing here runs: the relay calls the pipeline directly.
Session starts and gaps given up come from comparing the session table once per housekeeping
tick; session ends, with why, from the engine's `end_log`, recorded only while debug is on.
Every line goes through one rate limit (a flood must not fill the disk); what it holds back is
counted and said.
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

# The LAC-to-LNS engine's end reasons, in an operator's words ("reverse" is the LNS's side).
_ENDS: dict[str, str] = {
    reasons.END_CDN: "CDN from the LAC side",
    reasons.END_CDN_REVERSE: "CDN from the LNS",
    reasons.END_STOPCCN: "StopCCN from the LAC side (its tunnel closed)",
    reasons.END_STOPCCN_REVERSE: "StopCCN from the LNS (its tunnel closed)",
    reasons.END_EVICTED: "evicted, the longest silent at reorder.max_sessions",
    reasons.END_IDLE: "silent for reorder.session_idle_timeout_ms",
    reasons.END_PEER: "its LAC peer was forgotten (idle past peer_idle_timeout_ms, or not allowed)",
    reasons.END_REPLACED: "replaced by a session from the state file",
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
        pipeline.engine.end_log = []  # the engine records ends while this exists (see close)
        pipeline.engine.end_log_missed = 0
        # (flow, tunnel_id, session_id) -> skipped count at the last tick
        self._known: dict[tuple[Hashable, int, int], int] = {
            s.key: s.skipped for s in pipeline.sessions()
        }

    def close(self) -> None:
        """Debug logging is off again: the engine stops recording ends."""
        self._pipeline.engine.end_log = None

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
        engine = self._pipeline.engine
        ends, engine.end_log = engine.end_log or [], []
        for flow, tunnel_id, session_id, why in ends:
            self._line(now, "session ended", (flow, tunnel_id, session_id), _ENDS.get(why, why))
        if engine.end_log_missed:
            self._note(now, f"{engine.end_log_missed} more sessions ended (not itemised)")
            engine.end_log_missed = 0
        self._known = current

    def _note(self, now: float, text: str) -> None:
        if self.limit.allow(now):
            log.debug("%s", text)

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
