"""Adaptive per-session reorder timeout (`reorder.adaptive`), after RACK (RFC 8985).

A fixed timeout makes every *lost* packet stall its session for the whole timeout, although the
reordering a session really shows is often a fraction of a millisecond. So each session learns
its own timeout from two kinds of evidence, both O(1) and a few slots on the Session:

- a gap that *fills* (the missing packet arrives while later ones are held): it arrived
  `delay` after the first packet that overtook it, which is the timeout it needed. The estimate
  `reo_delay` jumps up to a larger delay at once and creeps down towards a smaller one by
  1/DECAY_DIV of the difference per event, so it follows the largest recent delays, not the mean
  (a young session steps down by 1/2, 1/3, ... of the difference: the running mean of what it
  has seen, so it leaves the cap within its first few dozen events);
- a gap given up by the timer: no packet turned up within the timeout, most likely a loss, so it
  counts as an observation of delay 0 (the same slow creep down). Its start is remembered: if the
  packet turns up later after all (`late`), the timeout was too short: the estimate grows to at
  least what that packet needed and to twice what it was, and stays there for KEEP_EVENTS
  events (no creeping down), as RACK keeps its grown reordering window for 16 recoveries.

The timeout is MULTIPLIER x the estimate, clamped to [floor, cap] = [`reorder.min_timeout_ms`,
`reorder.timeout_ms`]. A new session starts at the cap (as safe as fixed mode) and comes down
as evidence arrives. Time never decays it: a session that goes idle keeps what it learnt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

MULTIPLIER = 2.0  # timeout / estimated reorder delay: room for a delay a bit above those seen
DECAY_DIV = 32  # per event, the estimate moves ~1/32 of the way down to a smaller observation
KEEP_EVENTS = 64  # after a late arrival grew the timeout, this many events do not shrink it
NO_GAP = -1.0  # gave_up_at when no gap has been given up by the timer yet


class Adaptive(Protocol):
    """The per-session fields the estimator keeps (slots on core.engine.Session)."""

    timeout: float  # the session's current reorder timeout, seconds
    reo_delay: float  # estimated reorder delay, seconds
    reo_keep: int  # events left before the estimate may shrink again
    reo_seen: int  # events seen, up to DECAY_DIV (the step down is 1/(reo_seen + 1))
    gave_up_at: float  # arrival of the first packet held behind the last gap given up (timer)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The timeout's range: `floor` (min_timeout) .. `cap` (timeout), seconds."""

    floor: float
    cap: float


def _set(s: Adaptive, reo_delay: float, b: Bounds) -> None:
    t = reo_delay * MULTIPLIER
    if t >= b.cap:  # never above the cap, and no credit beyond it to decay from later
        s.reo_delay = b.cap / MULTIPLIER
        s.timeout = b.cap
    else:
        s.reo_delay = reo_delay
        s.timeout = b.floor if t <= b.floor else t


def start(s: Adaptive, b: Bounds) -> None:
    """A new session: start at the cap (nothing learnt yet, so as safe as fixed mode)."""
    s.reo_keep = 0
    s.reo_seen = 0
    s.gave_up_at = NO_GAP
    _set(s, b.cap / MULTIPLIER, b)


def rebound(s: Adaptive, b: Bounds) -> None:
    """New bounds (reload): keep what was learnt, clamp the timeout into the new range."""
    _set(s, s.reo_delay, b)


def _observe(s: Adaptive, delay: float, b: Bounds) -> None:
    reo = s.reo_delay
    seen = s.reo_seen
    if seen < DECAY_DIV:
        s.reo_seen = seen = seen + 1
    if delay >= reo:
        _set(s, delay, b)
    elif s.reo_keep > 0:
        s.reo_keep -= 1
    else:
        _set(s, reo - (reo - delay) / (seen + 1), b)


def on_fill(s: Adaptive, delay: float, b: Bounds) -> None:
    """A held session's gap filled: its packet came `delay` after the first that overtook it."""
    _observe(s, delay, b)


def on_give_up(s: Adaptive, first_arrival: float, b: Bounds) -> None:
    """The timer gave up a gap; `first_arrival` is when the first packet behind it came."""
    s.gave_up_at = first_arrival
    _observe(s, 0.0, b)


def on_late(s: Adaptive, now: float, b: Bounds) -> bool:
    """A packet of a gap given up earlier arrived: grow the timeout and keep it grown.

    Returns whether the timeout grew (it cannot beyond the cap)."""
    needed = now - s.gave_up_at if s.gave_up_at != NO_GAP else 0.0
    old = s.timeout
    reo = s.reo_delay * 2.0
    _set(s, needed if needed > reo else reo, b)
    s.reo_keep = KEEP_EVENTS
    return s.timeout > old
