"""Packets behind the expected Ns: late, duplicate, stale, or the start of a peer's restart.

A mixin of ReorderEngine (as session_table.SessionTable is), kept apart because it is the one
place that reads the given-up window (core/continuation.py's first promise) and that decides what
a late packet becomes:

- `late`: its Ns was given up and never delivered. In `renumber` and `strip` mode (`reorder.late`
  deliver, their default) it goes out at once with the session's next Ns (`forwarded_late`): the
  LNS never saw our Ns for it, so its stream stays contiguous, and the payload arrives a little
  out of order, which IP and TCP tolerate, instead of being lost. It never waits behind a gap. In
  `preserve` mode the LNS judges the LAC's Ns itself, so it is dropped (`dropped_late`).
- `duplicate`: delivered, or held now (a second copy of a late packet too: delivering one clears
  its bit).
- `stale`: further back than the session knows, counted towards a resync.

The window must stay exact over time. The bitmap is anchored at `gaps_end` (where the last gap was
given up), but Ns wraps every 65,536: so each session also keeps `gaps_at`, its count of Ns
delivered in order when the anchor was set, and a bitmap whose anchor is W or more behind the
expected Ns (however many turns) is read as empty. And W itself can grow by reload: the Ns between
the old and the new W behind the expected one were never tracked, so until the session has moved
on past them (`known_back`) they are `stale`, not guessed as delivered or given up.
"""

from __future__ import annotations

from typing import Final

from l2tpreorder.core import adaptive, reasons
from l2tpreorder.core.engine_counters import EngineCounters
from l2tpreorder.core.fastpath import with_ns, without_sequence
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.core.session_table import KNOWS_ALL, RESTORED_PASSED, Session, SessionTable

MASK: Final = 0xFFFF
FORWARDED_IN_ORDER: Final = int(Outcome.FORWARDED_IN_ORDER)
FORWARDED_OUT_OF_ORDER: Final = int(Outcome.FORWARDED_OUT_OF_ORDER)
FORWARDED_LATE: Final = int(Outcome.FORWARDED_LATE)
DROPPED_DUPLICATE: Final = int(Outcome.DROPPED_DUPLICATE)
DROPPED_LATE: Final = int(Outcome.DROPPED_LATE)
DROPPED_STALE: Final = int(Outcome.DROPPED_STALE)


def progress(s: Session) -> int:
    """How far the session's expected Ns has moved since it started, not reduced mod 2**16
    (a resync aside): every Ns delivered in order, released after a hold, or given up."""
    return s.forwarded_in_order + s.released + s.skipped


def gaps_behind(s: Session) -> int:
    """How far `gaps_end` is behind the expected Ns, not reduced mod 2**16 (only in-order and
    released packets move `expected` without moving `gaps_end`). A session continued or restored
    from a record starts with the distance the record gives."""
    return max(s.forwarded_in_order + s.released - s.gaps_at, (s.expected - s.gaps_end) & MASK)


def far_run(s: Session, ns: int) -> int:
    """Count this packet, further than W from the expected Ns (behind, or ahead: core/ahead.py),
    into the session's run of such packets, each Ns the next with no other packet of the
    session in between; returns the run's length. Packets released by the timer meanwhile do
    not break it: only arrivals count."""
    arrivals = s.packets
    if ns == s.behind_next and arrivals == s.behind_at:
        s.behind_run += 1
    else:
        s.behind_run = 1
    s.behind_next = (ns + 1) & MASK
    s.behind_at = arrivals + 1
    return s.behind_run


class Behind(SessionTable):
    """Part of ReorderEngine: classify and handle one packet behind the expected Ns."""

    counters: EngineCounters
    _out: list[tuple[object, bytes, object]]
    _window: int
    _timeout: float
    _resync_after: int
    _deliver_late: bool
    _renumber: bool
    _adapt: adaptive.Bounds | None

    def _emit(self, s: Session, data: bytes, ns_offset: int, tag: object) -> None:
        raise NotImplementedError  # ReorderEngine's

    def _release_all(self, s: Session, now: float, reason: str) -> None:
        raise NotImplementedError  # ReorderEngine's

    def age_gaps(self, s: Session) -> None:
        """Forget a given-up record the session has moved W or more past (in-order traffic
        does not touch the bitmap, so after a full turn of Ns it would line up again)."""
        if s.gaps and gaps_behind(s) >= self._window:
            s.gaps = 0
            s.gaps_end = s.expected
            s.gaps_at = s.forwarded_in_order + s.released

    def _window_grown(self, s: Session, old_window: int) -> None:
        """W grew by reload: Ns beyond the old W behind the expected one were never tracked."""
        self.age_gaps(s)
        s.known_back = min(s.known_back, old_window - progress(s))

    def _behind(
        self, s: Session, data: bytes, ns: int, ns_offset: int, now: float, tag: object
    ) -> int:
        """A packet behind the expected Ns: late, duplicate, stale, or part of a peer's restart."""
        c = self.counters
        back = (s.expected - ns) & MASK
        if back > self._window:
            return self._far_behind(s, data, ns, ns_offset, now, tag)
        if s.known_back != KNOWS_ALL:
            known = s.known_back + progress(s)
            if known >= self._window:
                s.known_back = KNOWS_ALL  # the session has moved on past what it never tracked
            elif back > known:
                return self._far_behind(s, data, ns, ns_offset, now, tag)
        s.behind_run = 0
        self.age_gaps(s)
        i = (s.gaps_end - 1 - ns) & MASK  # tests/engine_helpers.given_up_bit
        bit = 1 << i if i < self._window else 0
        if s.gaps & bit:
            s.gaps &= ~bit  # a second copy is a duplicate
            if self._timeout <= 0:
                # No holding: a late packet still goes out, in arrival order.
                s.forwarded_out_of_order += 1
                c.forwarded_out_of_order += 1
                self._emit(s, data, ns_offset, tag)
                return FORWARDED_OUT_OF_ORDER
            if self._adapt is not None and adaptive.on_late(s, now, self._adapt):
                c.adaptive_grows += 1  # the timeout was too short for this session: grown
            # Not while a restored (or bypassed) session has not yet shown where its stream
            # went (in-path: the LNS may have seen higher Ns meanwhile, our next one could
            # step back). RESTORED_PASSED and BYPASSED are the two values from 2 up.
            if self._deliver_late and s.restored < RESTORED_PASSED:
                s.forwarded_late += 1
                c.forwarded_late += 1
                self._emit_late(s, data, ns_offset, tag)
                return FORWARDED_LATE
            s.dropped_late += 1
            c.dropped_late += 1
            return DROPPED_LATE
        s.dropped_duplicate += 1
        c.dropped_duplicate += 1
        return DROPPED_DUPLICATE

    def _emit_late(self, s: Session, data: bytes, ns_offset: int, tag: object) -> None:
        """Send a late packet on now: the session's next Ns (renumber) or none (strip). Unlike
        `_emit`, strip mode keeps `out_ns` in step with `expected`, not with this old Ns."""
        if self._renumber:
            out_ns = s.out_ns
            s.out_ns = (out_ns + 1) & MASK
            data = with_ns(data, ns_offset, out_ns)
        else:
            data = without_sequence(data, ns_offset)
        self._out.append((s.flow, data, tag))

    def _far_behind(
        self, s: Session, data: bytes, ns: int, ns_offset: int, now: float, tag: object
    ) -> int:
        """Further behind than the window: `stale`, unless `resync_after` of them in a row (each
        Ns the next, no other packet of the session in between: `far_run`) say the peer
        restarted its Ns."""
        c = self.counters
        if far_run(s, ns) >= self._resync_after:
            # Deliver what we hold, then continue from this packet.
            self._release_all(s, now, reasons.SKIP_RESYNC)
            c.resyncs += 1
            s.behind_run = 0
            s.gaps = 0
            s.expected = s.gaps_end = (ns + 1) & MASK
            s.known_back = KNOWS_ALL
            s.forwarded_in_order += 1
            c.forwarded_in_order += 1
            s.gaps_at = s.forwarded_in_order + s.released
            self._emit(s, data, ns_offset, tag)
            return FORWARDED_IN_ORDER
        s.dropped_stale += 1
        c.dropped_stale += 1
        return DROPPED_STALE
