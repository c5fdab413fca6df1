"""`--log-level debug`: lines worth reading, from the core's events, never from inside it.

The core does not log (it is sans-IO and its hot path counts in plain ints). With debug on, the
adapter switches the pipeline's debug events on (`Pipeline.record_events(debug=True)`) and this
reads `take_events()` after each batch and once per housekeeping tick: a late, duplicate or
stale drop or a malformed datagram names the LAC, tunnel_id, session_id and Ns; a session end
says why. With debug off the pipeline records nothing and nothing here runs. Session starts and
gaps given up come from comparing the session table (`Pipeline.sessions()`) once per tick.
Every line goes through one rate limit (a flood must not fill the disk); what it holds back is
counted and said.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from l2tpreorder.config import format_address
from l2tpreorder.core import reasons
from l2tpreorder.core.counters import LAC_TO_LNS
from l2tpreorder.core.events import Dropped, Malformed, Missed, SessionEnded
from l2tpreorder.core.pipeline import Pipeline

log = logging.getLogger("l2tpreorder")

LINES_PER_SECOND = 50

_DROPS: dict[int, str] = {
    reasons.Outcome.DROPPED_LATE: "late (its gap was given up already)",
    reasons.Outcome.DROPPED_DUPLICATE: "duplicate (this Ns was delivered already)",
    reasons.Outcome.DROPPED_STALE: "stale (further behind than the session's window)",
    reasons.Outcome.DROPPED_FAR_AHEAD: "far ahead (beyond the window, not confirmed: a stray)",
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
# The LNS-to-LAC engine's: its "reverse" side is the LAC's.
_ENDS_TO_LAC: dict[str, str] = {
    **_ENDS,
    reasons.END_CDN: "CDN from the LNS side",
    reasons.END_CDN_REVERSE: "CDN from the LAC",
    reasons.END_STOPCCN: "StopCCN from the LNS side (its tunnel closed)",
    reasons.END_STOPCCN_REVERSE: "StopCCN from the LAC (its tunnel closed)",
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
    """Debug lines for one pipeline: its events, and its LAC-to-LNS session table per tick."""

    __slots__ = ("_known", "_pipeline", "limit")

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.limit = RateLimit()
        pipeline.record_events(debug=True)  # recorded while this exists (see close)
        # (flow, tunnel_id, session_id) -> skipped count at the last tick
        self._known: dict[tuple[Hashable, int, int], int] = {
            s.key: s.skipped for s in pipeline.sessions()
        }

    def close(self) -> None:
        """Debug logging is off again: the pipeline stops recording."""
        self._pipeline.record_events(debug=False)

    def drain(self, now: float) -> None:
        """Log what the pipeline reported since the last call (after a batch, and each tick)."""
        for event in self._pipeline.take_events():
            if isinstance(event, Dropped):
                self._dropped(event, now)
            elif isinstance(event, Malformed):
                self._malformed(event, now)
            elif isinstance(event, SessionEnded):
                ends = _ENDS if event.direction == LAC_TO_LNS else _ENDS_TO_LAC
                key = (event.flow, event.tunnel_id, event.session_id)
                what = _what("session ended", event.direction)
                self._line(now, what, key, ends.get(event.why, event.why))
            elif isinstance(event, Missed):
                noun = "sessions ended" if event.kind == "ended" else "drops"
                self._note(now, f"{event.count} more {noun} (not itemised)")

    def _dropped(self, e: Dropped, now: float) -> None:
        if self.limit.allow(now):
            log.debug(
                "dropped %s %s: tunnel_id %d session_id %d Ns %d: %s",
                _source(e.direction),
                _peer(e.flow),
                e.tunnel_id,
                e.session_id,
                e.ns,
                _DROPS.get(e.outcome, "dropped"),
            )

    def _malformed(self, e: Malformed, now: float) -> None:
        if self.limit.allow(now):
            done = "passed untouched" if e.passed else "dropped"
            log.debug(
                "%s %s %s: malformed (%s)", done, _source(e.direction), _peer(e.flow), e.reason
            )

    def refused(self, key: tuple[str, int], why: str, now: float) -> None:
        if self.limit.allow(now):
            log.debug("refused datagram from %s: %s", format_address(key), why)

    def tick(self, now: float) -> None:
        """The events since the last drain, then sessions started since the last tick and gaps
        given up in them (LAC to LNS)."""
        self.drain(now)
        current: dict[tuple[Hashable, int, int], int] = {}
        for s in self._pipeline.sessions():
            key = s.key
            current[key] = s.skipped
            before = self._known.get(key)
            if before is None:
                self._line(now, "session started", key, f"at Ns {s.expected}")
            elif s.skipped > before:
                self._line(now, "gave up", key, f"{s.skipped - before} missing Ns (waited out)")
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


def _source(direction: str) -> str:
    return "from LAC" if direction == LAC_TO_LNS else "from the LNS towards LAC"


def _what(what: str, direction: str) -> str:
    return what if direction == LAC_TO_LNS else f"{what} (LNS to LAC)"
