"""Packets far ahead of the expected Ns: a stray one, a real jump, or traffic that passed us.

A mixin of ReorderEngine (as behind.Behind is), the mirror of its far-behind rule:

- **A stray packet does not move a session.** A packet more than the window W ahead of the
  expected Ns is not trusted alone: one spoofed datagram, or one whose Ns a bit flip changed,
  would otherwise be held, then make the session give up everything up to it, and every genuine
  packet after it would be further behind than W (`stale`) until a resync. So it is dropped
  (`far_ahead`) and the session stays where it is, unless `resync_after` such packets in a row
  (each Ns the next, no other packet of the session in between) confirm the jump: then what is
  held goes out, the Ns up to the jump are given up (`resync`) and the session follows. As with
  a peer restarting behind, the first `resync_after - 1` of a real jump are dropped. The kernel
  drops only beyond half the Ns space; that is the floor, W is the rule here.
- **A restored session does not know where its stream is.** After a restart (`state_file`) the
  first packet of a session tells: ahead of the saved numbering means the Ns between passed us
  while the daemon was down (in-path mode: the fail-open bypass took them to the LNS untouched)
  or were lost (relay mode). They will not come: the gap is given up at once (`restart`), never
  held for the timeout, and far ahead is expected here, not a stray. Where the traffic may have
  passed untouched (`RESTORED_PASSED`, in-path), the LNS has seen the LAC's own Ns meanwhile:
  renumbering continues from this packet's Ns when that is beyond ours (offset 0 from then on),
  so the LNS never sees an Ns step back or repeat; and any gap is given up at once, however
  small (a packet of it that still comes is late: delivered with the next Ns). In relay mode
  nothing passed, so a gap within W is waited for as usual and the renumbering goes on (the LNS
  sees no jump).
- **A bypass episode while the sessions run** (in-path mode: the kernel's queue, or our socket,
  was full, and fail-open passed packets untouched with the LAC's Ns, ahead of the queued
  ones). Which Ns passed is not known, only that they came after the backlog we read and
  before the first packet queued after the episode. So (renumber mode) every session waits
  (`note_bypass`): what it held, and every packet of the backlog (`hold_before_bypass`), is
  held, and none goes out numbered below the bypassed ones. Its first packet that
  arrived after the episode (`after`) and lies beyond all it holds is the witness: the
  bypassed Ns were below it (or just above, where a swap straddles the episode's end:
  BYPASS_STRADDLE), so renumbering goes on from max(ours, its Ns + 1 + BYPASS_STRADDLE): first
  what was held (in Ns order, gaps given up: `bypass`), then the witness. The LNS sees one
  forward jump and no Ns twice. With no witness within BYPASS_WITNESS_WAIT (or the reorder
  timeout) of the episode (the latest, when more come before the backlog is read:
  `extend_bypass`; the session fell silent), what it held goes out keeping our offset to the
  LAC's Ns
  (`_no_witness`): below the bypassed ones (a step back) but, at offset 0, none of theirs; the
  session's next packet is still taken as its witness, but once the wait is over only within
  the window (a stray far ahead is dropped, `far_ahead`, unless `resync_after` in a row).
  The in-order fast path sends a waiting session's packets here too, so the first packet
  after the episode always ends the wait. In preserve and strip mode the LNS judges no
  renumbering of ours: nothing waits.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

from l2tpreorder.core import reasons
from l2tpreorder.core.behind import Behind, far_run
from l2tpreorder.core.fastpath import T_BIT, parse_header
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.core.session_table import BYPASSED, RESTORED_PASSED, Session

MASK: Final = 0xFFFF
HALF: Final = 0x8000
INF: Final = float("inf")
FORWARDED_IN_ORDER: Final = int(Outcome.FORWARDED_IN_ORDER)
DROPPED_FAR_AHEAD: Final = int(Outcome.DROPPED_FAR_AHEAD)
# After a bypass episode a session waits this long (or the reorder timeout, if longer; not at
# all with timeout 0) for its witness: a live session sends one within it, one that fell
# silent should not hold its frames for long.
BYPASS_WITNESS_WAIT: Final = 1.0
# How far past the witness a bypassed packet's Ns may lie: the LAC's swap (the small half
# overtaking the big one) straddling the episode's end puts the later packet among the passed
# ones and the earlier one first after it. Deeper reordering just there can still meet ours.
BYPASS_STRADDLE: Final = 1
DROPPED_DUPLICATE: Final = int(Outcome.DROPPED_DUPLICATE)
HELD: Final = int(Outcome.HELD)


class Ahead(Behind):
    """Part of ReorderEngine: far-ahead packets and a restored session's first packet.

    One chain of bases (SessionTable <- Behind <- Ahead <- ReorderEngine), not mixins: mypyc
    compiles single inheritance only, and the chain is the mixins' MRO, so nothing changes.
    """

    _bypass_deadline: float  # set by ReorderEngine

    def _skip(self, s: Session, count: int, reason: str) -> None:
        raise NotImplementedError  # ReorderEngine's

    def receive(self, data: bytes, flow: Hashable, now: float, tag: object = None) -> int:
        raise NotImplementedError  # ReorderEngine's

    def _schedule(self, s: Session) -> None:
        raise NotImplementedError  # ReorderEngine's

    def _skip_to_next_held(self, s: Session, reason: str) -> None:
        raise NotImplementedError  # ReorderEngine's

    def _release_run(self, s: Session, now: float) -> None:
        raise NotImplementedError  # ReorderEngine's

    def _live_timer_top(self) -> tuple[float, int, Session] | None:
        raise NotImplementedError  # ReorderEngine's

    def _resume(self, s: Session, ns: int, distance: int) -> bool:
        """A restored session's first packet, `distance` ahead of the saved expectation (behind
        when >= HALF): True when the gap before it was given up (`expected` is now `ns`)."""
        how = s.restored
        if s.forwarded_in_order or s.released or s.forwarded_late or s.held:
            # Already sent with our numbering (the in-order fast path does not come here):
            # the position is known, any gap is an ordinary one.
            s.restored = 0
            return False
        if distance >= HALF:
            # Behind: a duplicate, a late packet or a stray tells nothing about where the
            # stream went; the next packet may (late ones are not delivered meanwhile: behind.py).
            return False
        s.restored = 0
        if not distance:
            return False
        if how != RESTORED_PASSED and distance <= self._window:
            return False  # relay mode: nothing passed, the gap may be a swap; wait as usual
        self._skip(s, distance, reasons.SKIP_RESTART)
        if how == RESTORED_PASSED and self._renumber and (ns - s.out_ns) & MASK < HALF:
            s.out_ns = ns  # the LNS saw the LAC's Ns up to here: go on from them, never below
        return True

    def _far_ahead(
        self, s: Session, data: bytes, ns: int, ns_offset: int, now: float, tag: object
    ) -> int:
        """Further ahead than the window: `far_ahead` (dropped), unless it is the
        `resync_after`-th of a run that confirms the jump."""
        c = self.counters
        if far_run(s, ns) < self._resync_after:
            s.dropped_far_ahead += 1
            c.dropped_far_ahead += 1
            return DROPPED_FAR_AHEAD
        # Deliver what we hold, give up the Ns up to the jump, continue from this packet.
        self._release_all(s, now, reasons.SKIP_RESYNC)
        c.resyncs += 1
        s.behind_run = 0
        gap = (ns - s.expected) & MASK
        if gap >= HALF:
            # A packet held beyond `ns` went out (held before a reload shrank W): this Ns was
            # given up on the way, so it is a late one now.
            return self._behind(s, data, ns, ns_offset, now, tag)
        return self._forward_from(s, data, ns, ns_offset, tag, reasons.SKIP_RESYNC)

    def _forward_from(
        self, s: Session, data: bytes, ns: int, ns_offset: int, tag: object, reason: str
    ) -> int:
        """Give up every Ns before `ns` (counted as `reason`) and forward this packet as the
        session's next in order: the end of a resync, a witness, a gap given up at once."""
        gap = (ns - s.expected) & MASK
        if gap:
            self._skip(s, gap, reason)
        s.expected = (ns + 1) & MASK
        s.forwarded_in_order += 1
        self.counters.forwarded_in_order += 1
        self._emit(s, data, ns_offset, tag)
        return FORWARDED_IN_ORDER

    # --- bypass episodes (in-path fail-open) ---------------------------------------------------

    def hold_budget(self, limit: int, now: float) -> None:
        """Hold at most `limit` packets in all: beyond it, close the oldest gap of the session
        waiting longest (`queue_budget`), as the byte cap does. In-path mode keeps what is held
        well below the queue's maxlen, so that held packets alone never fill the queue and make
        every new packet pass unordered. Sessions waiting for a witness are left alone."""
        while self.counters.held_packets > limit:
            top = self._live_timer_top()
            if top is None or top[2].restored == BYPASSED:
                return
            s = top[2]
            self._skip_to_next_held(s, reasons.SKIP_QUEUE_BUDGET)
            self._release_run(s, now)

    def note_bypass(self, now: float) -> int:
        """Packets of any session may have passed us untouched just now (in-path: the queue or
        our socket was full). Renumber mode: every session waits for its witness (module
        docstring); returns how many sessions wait. Preserve and strip: nothing changes."""
        if not self._renumber:
            return 0
        self._bypass_deadline = now + self._witness_wait()
        waiting = 0
        for s in self.sessions():
            s.restored = BYPASSED
            s.cut = INF
            self._schedule(s)  # the witness is waited for until _bypass_deadline
            waiting += 1
        return waiting

    def extend_bypass(self, now: float) -> None:
        """Another episode while the backlog of the last one is not read yet (sustained
        overflow): the sessions wait already; the wait now runs from this one. The timers of
        sessions holding packets move when they fire (`_wait_over`), so an episode costs no
        pass over every session."""
        if self._renumber:
            self._bypass_deadline = now + self._witness_wait()

    def _witness_wait(self) -> float:
        timeout = self._timeout
        return max(timeout, BYPASS_WITNESS_WAIT) if timeout > 0 else 0.0

    def _wait_over(self, s: Session, now: float) -> None:
        """A waiting session's timer fired: no witness in time, unless a later episode
        moved the wait on (then the timer is re-armed for the new end)."""
        if now < self._bypass_deadline:
            self._schedule(s)
        else:
            self._no_witness(s, now)

    def hold_before_bypass(
        self, data: bytes, flow: Hashable, now: float, tag: object = None
    ) -> int:
        """A datagram of the backlog read after a bypass episode: it may have reached the queue
        before packets that passed us, so a waiting session's sequenced data is held (a new
        session's too: it waits as well). Anything else is `receive`'s (preserve and strip
        never wait; control and data without Ns are told by the flags, without a parse)."""
        if not self._renumber or len(data) < 2 or data[0] & 0x88 != 0x08:
            return self.receive(data, flow, now, tag)
        h = parse_header(data)
        if isinstance(h, str) or h.flags & T_BIT or h.ns is None or h.ns_offset is None:
            return self.receive(data, flow, now, tag)
        key = (h.tunnel_id << 16) | h.session_id
        sessions = self._flows.get(flow)
        s = sessions.get(key) if sessions is not None else None
        if s is None and self._renumber:
            s = self._new_session(flow, key, h.ns, self._clock(now))
            s.restored = BYPASSED
        if s is None or s.restored != BYPASSED:
            return self.receive(data, flow, now, tag)
        now = self._clock(now)
        s.last_active = now
        distance = (h.ns - s.expected) & MASK
        return self._bypassed(s, data, h.ns, h.ns_offset, distance, now, tag, False)

    def _bypassed(
        self,
        s: Session,
        data: bytes,
        ns: int,
        ns_offset: int,
        distance: int,
        now: float,
        tag: object,
        after: bool,
    ) -> int:
        """A packet of a session waiting after a bypass episode: held, unless it arrived after
        the episode (`after`) and lies beyond everything held (the witness)."""
        if distance >= HALF:  # behind: a duplicate, or a late one (not delivered meanwhile)
            return self._behind(s, data, ns, ns_offset, now, tag)
        held = s.held
        if (
            after
            and distance > self._window
            and now > self._bypass_deadline
            and far_run(s, ns) < self._resync_after
        ):
            # The wait is over (the session was silent through it): a stray far ahead is
            # no witness (issue 21 point 5); a run of `resync_after` is, as a resync would be.
            s.dropped_far_ahead += 1
            self.counters.dropped_far_ahead += 1
            return DROPPED_FAR_AHEAD
        if not after or (held and distance <= max((k - s.expected) & MASK for k in held)):
            # Far ahead is no stray here: the bypass may have taken everything in between
            # (and the backlog can reach past it: the maxlen was raised before it was read).
            return self._hold_untimed(s, data, ns, ns_offset, now, tag)
        s.restored = 0
        # The bypassed Ns were below the witness's, or just above it where a swap straddles
        # the episode's end (its later packet passed, the earlier one is the witness): number
        # above those too (BYPASS_STRADDLE).
        base = (ns + BYPASS_STRADDLE + 1) & MASK
        if self._renumber and (base - s.out_ns) & MASK < HALF:
            s.out_ns = base
        self._release_all(s, now, reasons.SKIP_BYPASS)
        s.behind_run = 0
        return self._forward_from(s, data, ns, ns_offset, tag, reasons.SKIP_BYPASS)

    def _no_witness(self, s: Session, now: float) -> None:
        """No witness in time (the session fell silent after the episode): what it holds goes
        out, each gap skipped in our numbering too, so our Ns keep their offset to the LAC's.
        Where that offset is 0 (nothing given up before) the LNS gets the held frames with
        their own Ns: below the bypassed ones (a step back), but never one of theirs (their Ns
        are the gaps). The session still takes its next packet as its witness."""
        start = s.expected
        # The held Ns in order once (a backlog can hold thousands, with as many gaps): each
        # gap is the distance from where the last run ended to the next held Ns.
        for offset in sorted((ns - start) & MASK for ns in s.held):
            gap = offset - ((s.expected - start) & MASK)
            if gap < 0:
                continue  # went out with the run before it
            if gap:
                self._skip(s, gap, reasons.SKIP_BYPASS)
                if self._renumber:
                    s.out_ns = (s.out_ns + gap) & MASK
            self._release_run(s, now)

    def _release_held(self, s: Session, now: float, reason: str) -> None:
        """Everything the session holds goes out (flush, session end or eviction; `reason` for
        its gaps): while it waits for its witness, as `_no_witness` sends it (its gaps may be
        the bypassed Ns: skipped in our numbering too, never reused)."""
        if s.restored == BYPASSED:
            self._no_witness(s, now)
        self._release_all(s, now, reason)

    def _hold_untimed(
        self, s: Session, data: bytes, ns: int, ns_offset: int, now: float, tag: object
    ) -> int:
        """Held until the witness, or the wait after the episode runs out (no per-session cap:
        the backlog bounds it)."""
        held = s.held
        c = self.counters
        if ns in held:
            s.dropped_duplicate += 1
            c.dropped_duplicate += 1
            return DROPPED_DUPLICATE
        first = not held
        held[ns] = (data, now, ns_offset, tag)
        if first:
            self._schedule(s)
        if len(held) > s.held_peak:
            s.held_peak = len(held)
        size = len(data)
        s.held_bytes += size
        c.held_packets += 1
        c.held_bytes += size
        return HELD
