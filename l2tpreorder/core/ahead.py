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
"""

from __future__ import annotations

from typing import Final

from l2tpreorder.core import reasons
from l2tpreorder.core.behind import Behind, far_run
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.core.session_table import RESTORED_PASSED, Session

MASK: Final = 0xFFFF
HALF: Final = 0x8000
FORWARDED_IN_ORDER: Final = int(Outcome.FORWARDED_IN_ORDER)
DROPPED_FAR_AHEAD: Final = int(Outcome.DROPPED_FAR_AHEAD)


class Ahead(Behind):
    """Part of ReorderEngine: far-ahead packets and a restored session's first packet.

    One chain of bases (SessionTable <- Behind <- Ahead <- ReorderEngine), not mixins: mypyc
    compiles single inheritance only, and the chain is the mixins' MRO, so nothing changes.
    """

    def _skip(self, s: Session, count: int, reason: str) -> None:
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
        if gap:
            self._skip(s, gap, reasons.SKIP_RESYNC)
        s.expected = (ns + 1) & MASK
        s.forwarded_in_order += 1
        c.forwarded_in_order += 1
        self._emit(s, data, ns_offset, tag)
        return FORWARDED_IN_ORDER
