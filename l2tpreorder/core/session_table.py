"""The session table: sessions, their lifecycle, the cap, idle expiry and the side tables.

Kept apart from the per-packet logic (engine.py) because it is what decides how much memory the
relay holds: every table here is bounded by a cap and purged by age or by lifecycle.

- Sessions silent for `session_idle_timeout` are forgotten (held packets go out first); their
  numbering stays in the continuation memory, so a session that resumes shows the LNS no jump.
- At `max_sessions`, the longest-silent session is evicted, whatever its confirmation state;
  evicting one that was active lately (`sessions_evicted_active`) means the cap is too small.
- The eviction order is one heap of (last activity, entry id, flow, key): it names sessions, it
  does not hold them, so an ended session is freed at once; stale entries are compacted away.
- Pending confirmations (the control channel set up a call before its first data packet) go when
  the call ends (CDN) or after PENDING_MEMORY.
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Final

from l2tpreorder.build import BUILD
from l2tpreorder.core import adaptive, reasons
from l2tpreorder.core.continuation import ContinuationMemory, Ended
from l2tpreorder.core.events import EVENTS_KEPT

if TYPE_CHECKING:
    from l2tpreorder.core.engine_counters import EngineCounters

MASK: Final = 0xFFFF
INF: Final = float("inf")
# Pending confirmations older than this are dropped: by then the call sends data without Ns,
# or never started. (Bounded by count too, against a flood of ICCNs.)
PENDING_MEMORY: Final = 120.0
MAX_PENDING_CONFIRMATIONS = 65536
# An evicted session counts as active (`sessions_evicted_active`) when its last packet came
# within this many reorder timeouts, or within ACTIVE_FLOOR seconds, whichever is longer.
ACTIVE_TIMEOUTS: Final = 4
ACTIVE_FLOOR: Final = 1.0
# A held-packet dict that grew beyond this is replaced by a fresh one once empty: a dict never
# gives back the table it grew for a burst.
HELD_SHRINK: Final = 16
# Session.known_back when the whole window W is tracked (no reload has grown W lately).
KNOWS_ALL: Final = 1 << 62
# Session.restored: how a restored session takes its first packet (core/ahead.py); 0: not
# restored, or it has had a packet since.
RESTORED: Final = 1  # nothing passed while the daemon was down (relay mode): what was sent is lost
RESTORED_PASSED: Final = 2  # traffic may have passed untouched meanwhile (in-path fail-open bypass)
# A bypass episode (in-path: queue or socket full) while the session ran: what it holds waits
# for its first packet that arrived after the episode (core/ahead.py `_bypassed`).
BYPASSED: Final = 3
# The slot index (SessionTable._find): slots, a power of two, at most half of them used; a table
# at less than an eighth is halved. Slot of a key: multiply-shift on 32 bits (the top bits of
# key * multiplier mod 2**32, the multiplier random and odd), so every bit of the key counts.
SLOTS_MIN: Final = 64
SLOTS_MIN_BITS: Final = 6
_U32: Final = 0xFFFFFFFF
# Kept only where it is read: the compiled receive. Interpreted, the dicts are C code and the
# index only costs (in-order pure at 10,000 sessions: 917-1208 ns with it maintained against
# 724-817 without, in a noisy sitting; not explained, not needed).
SLOTTED: Final = BUILD == "compiled"
# Ends recorded between two `take_records()` (the debug lines read them once per tick); beyond
# it they are only counted.
END_LOG_KEPT = EVENTS_KEPT


class Session:
    """Reorder state of one (flow, tunnel_id, session_id). Its counters are plain ints too."""

    __slots__ = (
        "alive",
        "behind_at",
        "behind_next",
        "behind_run",
        "confirmed",
        "cut",
        "dropped_duplicate",
        "dropped_far_ahead",
        "dropped_late",
        "dropped_stale",
        "expected",
        "flow",
        "forwarded_in_order",
        "forwarded_late",
        "forwarded_out_of_order",
        "gaps",
        "gaps_at",
        "gaps_end",
        "gave_up_at",
        "held",
        "held_bytes",
        "held_peak",
        "known_back",
        "last_active",
        "lru_seq",
        "max_displacement",
        "out_ns",
        "released",
        "reo_delay",
        "reo_keep",
        "reo_seen",
        "restored",
        "session_id",
        "skipped",
        "started",
        "timeout",
        "timer_id",
        "tunnel_id",
    )

    def __init__(
        self, flow: Hashable, tunnel_id: int, session_id: int, ns: int, now: float
    ) -> None:
        self.flow = flow
        self.tunnel_id = tunnel_id
        self.session_id = session_id
        self.expected = ns  # next Ns we can deliver
        self.out_ns = ns  # next Ns the LNS will see (renumber mode)
        # Ns -> (datagram, arrival time, Ns byte offset, tag). Insertion order is arrival order.
        self.held: dict[int, tuple[bytes, float, int, object]] = {}
        self.held_bytes = 0
        self.held_peak = 0  # most packets held since `held` was last replaced (see HELD_SHRINK)
        self.timer_id = 0  # id of this session's live entry in the engine's timer heap; 0 = none
        self.cut = INF  # earlier deadline for gaps that may be kernel drops (see note_kernel_drops)
        # Given-up Ns as a bitmap: bit i is Ns gaps_end-1-i (ReorderEngine._skip writes it).
        self.gaps = 0
        self.gaps_end = ns
        self.gaps_at = 0  # forwarded_in_order + released when gaps_end was set (core/behind.py)
        self.known_back = KNOWS_ALL  # see core/behind.py: W grew by reload
        self.behind_run = 0
        self.behind_next = -1
        # A run of packets further than W from the expected Ns, behind (a peer restarting its
        # numbering, core/behind.py) or ahead (a jump to confirm, core/ahead.py): the next Ns
        # that continues it, and the arrivals counted by then (nothing else may come between).
        self.behind_at = -1
        # Restored from the state file (ahead.RESTORED*) and no packet since: where the stream
        # is now is not known yet (see core/ahead.py); 0 otherwise.
        self.restored = 0
        self.alive = True
        self.confirmed = False  # established by the control channel
        self.started = now
        self.last_active = now  # also the key of the eviction order (see SessionTable._evict)
        self.lru_seq = 0  # id of this session's live entry in the eviction heap
        self.forwarded_in_order = 0
        self.forwarded_out_of_order = 0
        self.forwarded_late = 0
        self.released = 0
        self.dropped_duplicate = 0
        self.dropped_late = 0
        self.dropped_stale = 0
        self.dropped_far_ahead = 0
        self.skipped = 0
        self.max_displacement = 0
        # Adaptive timeout (see core.adaptive; set by adaptive.start when the mode is on).
        self.timeout = 0.0
        self.reo_delay = 0.0
        self.reo_keep = 0
        self.reo_seen = 0
        self.gave_up_at = adaptive.NO_GAP

    @property
    def packets(self) -> int:
        """Sequenced packets received: derived from outcomes (one count fewer per packet)."""
        return (
            self.forwarded_in_order
            + self.forwarded_out_of_order
            + self.forwarded_late
            + self.released
            + len(self.held)
            + self.dropped_duplicate
            + self.dropped_late
            + self.dropped_stale
            + self.dropped_far_ahead
        )

    @property
    def key(self) -> tuple[Hashable, int, int]:
        return (self.flow, self.tunnel_id, self.session_id)


class SessionTable:
    """Base of ReorderEngine: the table of sessions and everything bounded around it."""

    counters: EngineCounters
    _max_sessions: int
    _idle_timeout: float
    _timeout: float
    _window: int
    _all_given_up: int  # (1 << W) - 1, computed once per config
    _adapt: adaptive.Bounds | None

    def _init_table(self) -> None:
        self._flows: dict[Hashable, dict[int, Session]] = {}
        self._session_count = 0
        # Indexes so a StopCCN costs O(its own tunnel): flow -> our tunnel ID -> that tunnel's
        # sessions, the session itself while it is the only one (~80 bytes, not ~360).
        self._tunnel_sessions: dict[Hashable, dict[int, Session | dict[int, Session]]] = {}
        # (flow, session key) confirmed by the control channel before its first data packet.
        self._pending_confirmations: dict[tuple[Hashable, int], float] = {}
        self._memory = ContinuationMemory()
        # Eviction and idle order: (last_active when pushed, entry id, flow, key). The per-packet
        # path only writes s.last_active; an entry whose stamp is older is refreshed at the top.
        self._lru: list[tuple[float, int, Hashable, int]] = []
        self._lru_seq = 0
        # What `set_recording` switched on (None: not recorded, the default), taken by
        # `take_records`: (flow, tunnel_id, session_id, reasons.END_*) of each end, and (flow,
        # tunnel_id, session_id, seconds held) of each released packet (ReorderEngine._release_run).
        self._end_log: list[tuple[Hashable, int, int, str]] | None = None
        self._end_log_missed = 0
        self._hold_log: list[tuple[Hashable, int, int, float]] | None = None
        self._hold_missed = 0
        # The per-packet lookup (`_find`): the live sessions in an open-addressed table (linear
        # probing) by their key, so a packet costs one slot read to reach its session.
        # `_flows[flow][key]` costs a boxed int, two hashes and the dict entry's and the key
        # object's cache misses before the session's own (perf: a third of the compiled
        # in-order path at 10,000 sessions). Odd multiplier below 2**30: key * it stays a
        # machine int compiled; random per table, so IDs a peer chooses spread like any others.
        # At most one session per key is slotted: the same (tunnel_id, session_id) on other
        # flows (many LACs' tunnel 1 session 1, or a peer's flood of source ports) stays only
        # in `_flows` (`_unslotted` counts them), so no flow count makes a probe run longer.
        self._slots: list[Session | None] = [None] * SLOTS_MIN
        self._slot_mask = SLOTS_MIN - 1
        self._slot_shift = 32 - SLOTS_MIN_BITS
        self._slot_mult = secrets.randbits(30) | 1
        self._unslotted = 0

    def _release_held(self, s: Session, now: float, reason: str) -> None:
        raise NotImplementedError  # ReorderEngine's (core/ahead.py)

    def _clock(self, now: float) -> float:
        raise NotImplementedError  # ReorderEngine's

    def age_gaps(self, s: Session) -> None:
        raise NotImplementedError  # ReorderEngine's (core/behind.py)

    # --- creation ----------------------------------------------------------------------------

    def _new_session(self, flow: Hashable, key: int, ns: int, now: float) -> Session:
        """Create a session, making room first when the table is full (max_sessions)."""
        if self._session_count >= self._max_sessions:
            self._expire_idle(now)
            if self._session_count >= self._max_sessions:
                self._evict(now)
        sessions = self._flows.get(flow)
        if sessions is None:
            sessions = self._flows[flow] = {}
        s = sessions[key] = Session(flow, key >> 16, key & MASK, ns, now)
        self._slot_add(s, key)
        if self._adapt is not None:
            adaptive.start(s, self._adapt)  # at the cap: nothing learnt yet (a continued one too)
        self._index_session(s, key)
        self._session_count += 1
        self.counters.sessions_started += 1
        pending = self._pending_confirmations
        if pending and pending.pop((flow, key), None) is not None:
            s.confirmed = True
            self.counters.sessions_confirmed += 1
        ended = self._memory.take(flow, key, now) if len(self._memory) else None
        if ended is None or not self._continue_numbering(s, ended, ns):
            # A session's first packet: a predecessor arriving after it was never delivered and
            # never will be (the LNS saw a later Ns first). It counts as `late`, not duplicate.
            s.gaps = self._all_given_up  # one shared int: no allocation per session
        self._lru_push(s)
        return s

    def _continue_numbering(self, s: Session, ended: Ended, ns: int) -> bool:
        """Carry an ended session's numbering over when its stream simply goes on.

        Sessions end on a CDN or StopCCN the LNS may yet reject (a spoofed one), on eviction or
        idle expiry. If data with the same IDs then comes within the window around where the old
        session stopped, ahead (the stream carries on) or behind (a late packet, a duplicate or
        the early half of a swap straddling the end), the session takes up the old state: its
        next expected Ns, renumbering and given-up bitmap. The packet is then classified as if
        the session had never ended, so each LAC Ns is delivered at most once and the LNS's
        renumbered stream stays contiguous. A real new call starts afresh: the control message
        setting it up clears this memory (see _confirm).
        """
        ahead = (ns - ended.expected) & MASK
        if ahead >= self._window and ((ended.expected - ns) & MASK) > self._window:
            return False
        s.expected = ended.expected
        s.out_ns = ended.out_ns
        s.gaps = ended.gaps
        s.gaps_end = ended.gaps_end
        if ended.confirmed and not s.confirmed:
            s.confirmed = True
        if ended.passed:  # ended before a restart that let traffic pass: where is it now?
            s.restored = RESTORED_PASSED
        self.counters.sessions_continued += 1
        return True

    def _confirm(self, flow: Hashable, key: int, now: float) -> None:
        """The control channel set up session `key` of `flow`: a new call with these IDs, so an
        ended session's numbering must not carry over to it."""
        self._memory.forget(flow, key)
        s = self._flows.get(flow, {}).get(key)
        if s is not None:
            if not s.confirmed:
                s.confirmed = True
                self.counters.sessions_confirmed += 1
            return
        pending = self._pending_confirmations
        pending.pop((flow, key), None)
        while pending:
            first = next(iter(pending))
            if len(pending) < MAX_PENDING_CONFIRMATIONS and now - pending[first] <= PENDING_MEMORY:
                break
            del pending[first]
        pending[(flow, key)] = now

    def restore_session(
        self,
        flow: Hashable,
        tunnel_id: int,
        session_id: int,
        expected: int,
        out_ns: int,
        now: float,
        *,
        confirmed: bool = True,
        gaps: int = 0,
        passed: bool = False,
    ) -> Session:
        """Recreate a session saved before a restart (see `state`): the LNS keeps seeing
        contiguous Ns in renumber mode because `out_ns` continues where it stopped. `passed`:
        traffic may have reached the LNS untouched while we were down (in-path fail-open), so
        the first packet may move the numbering on (core/ahead.py)."""
        key = ((tunnel_id & MASK) << 16) | (session_id & MASK)
        now = self._clock(now)
        old = self._flows.get(flow, {}).get(key)
        if old is not None:
            self._end(old, now, reasons.SKIP_END, reasons.END_REPLACED)
        self._memory.forget(flow, key)
        s = self._new_session(flow, key, expected & MASK, now)
        s.out_ns = out_ns & MASK
        s.gaps = gaps & ((1 << self._window) - 1)
        s.restored = RESTORED_PASSED if passed else RESTORED
        if confirmed and not s.confirmed:
            s.confirmed = True
            self.counters.sessions_confirmed += 1
        return s

    def ended_sessions(self) -> Iterator[tuple[Hashable, int, int, Ended, bool]]:
        """(flow, tunnel_id, session_id, where it stopped, ended idle) of the continuation
        memory, for the state file: a spoofed CDN before a restart must not cost a jump."""
        for flow, key, ended, idle in self._memory.items():
            yield flow, key >> 16, key & MASK, ended, idle

    def restore_ended(
        self, flow: Hashable, tunnel_id: int, session_id: int, ended: Ended, *, idle: bool
    ) -> None:
        """Re-learn a continuation memory entry saved before a restart (`ended.at` in this
        engine's clock)."""
        key = ((tunnel_id & MASK) << 16) | (session_id & MASK)
        ended.gaps &= (1 << self._window) - 1
        self._memory.remember(flow, key, ended, idle=idle)

    # --- the tunnel index ---------------------------------------------------------------------

    def _index_session(self, s: Session, key: int) -> None:
        tunnels = self._tunnel_sessions.get(s.flow)
        if tunnels is None:
            tunnels = self._tunnel_sessions[s.flow] = {}
        current = tunnels.get(s.tunnel_id)
        if current is None:
            tunnels[s.tunnel_id] = s
        elif isinstance(current, Session):
            tunnels[s.tunnel_id] = {(current.tunnel_id << 16) | current.session_id: current, key: s}
        else:
            current[key] = s

    def _unindex_session(self, s: Session, key: int) -> None:
        tunnels = self._tunnel_sessions[s.flow]
        current = tunnels[s.tunnel_id]
        if isinstance(current, Session):
            del tunnels[s.tunnel_id]
        else:
            del current[key]
            if not current:
                del tunnels[s.tunnel_id]
        if not tunnels:
            del self._tunnel_sessions[s.flow]

    def tunnel_sessions(self, flow: Hashable, tunnel_id: int) -> list[Session]:
        """The live sessions of one tunnel (our tunnel ID) of a peer."""
        current = self._tunnel_sessions.get(flow, {}).get(tunnel_id)
        if current is None:
            return []
        if isinstance(current, Session):
            return [current]
        return list(current.values())

    # --- the slot index ---------------------------------------------------------------------------

    def _find(self, flow: Hashable, key: int) -> Session | None:
        """`_flows[flow][key]`, or None: by the slot index (compiled build: SLOTTED), falling
        back to the dicts for a key slotted for another flow."""
        if not SLOTTED:
            sessions = self._flows.get(flow)
            return sessions.get(key) if sessions is not None else None
        slots = self._slots
        mask = self._slot_mask
        i = ((key * self._slot_mult) & _U32) >> self._slot_shift
        free = True
        while True:
            s = slots[i]
            if s is None:
                break
            if ((s.tunnel_id << 16) | s.session_id) == key:
                other = s.flow
                if other is flow or other == flow:
                    return s
                free = False  # one session per key is slotted: this flow's, if any, is not
                break
            i = (i + 1) & mask
        if not self._unslotted:
            return None
        sessions = self._flows.get(flow)
        found = sessions.get(key) if sessions is not None else None
        if found is not None and free:
            # Its key's slotted session has ended: it takes the free slot its run ends at
            # (where `_slot_place` would put it), so it is one slot read again from now on.
            slots[i] = found
            self._unslotted -= 1
        return found

    def _slot_add(self, s: Session, key: int) -> None:
        """Put `s` (already in `_flows`) in the slot index."""
        if not SLOTTED:
            return
        if 2 * (self._session_count + 1) > len(self._slots):
            self._slots_resize(2 * len(self._slots))  # places every session in _flows, s too
            return
        self._slot_place(self._slots, s, key)

    def _slot_place(self, slots: list[Session | None], s: Session, key: int) -> None:
        """`s` in the first free slot of its probe run, unless the run holds its key already
        (another flow's session): then it is only counted in `_unslotted`."""
        mask = self._slot_mask
        i = ((key * self._slot_mult) & _U32) >> self._slot_shift
        while (t := slots[i]) is not None:
            if ((t.tunnel_id << 16) | t.session_id) == key:
                self._unslotted += 1
                return
            i = (i + 1) & mask
        slots[i] = s

    def _slot_remove(self, s: Session, key: int) -> None:
        """Take `s` (already out of `_flows`) out, shifting the rest of its probe run back
        (no tombstones)."""
        if not SLOTTED:
            return
        slots = self._slots
        mask = self._slot_mask
        mult = self._slot_mult
        shift = self._slot_shift
        i = ((key * mult) & _U32) >> shift
        while slots[i] is not s:
            if slots[i] is None:  # never slotted: its key was another flow's
                self._unslotted -= 1
                break
            i = (i + 1) & mask
        else:
            j = i
            while True:
                j = (j + 1) & mask
                t = slots[j]
                if t is None:
                    break
                home = ((((t.tunnel_id << 16) | t.session_id) * mult) & _U32) >> shift
                if (j - home) & mask >= (j - i) & mask:  # its home is not in (i, j]: it moves
                    slots[i] = t
                    i = j
            slots[i] = None
        size = len(slots)
        if size > SLOTS_MIN and 8 * (self._session_count - 1) < size:
            self._slots_resize(size // 2)

    def _slots_resize(self, size: int) -> None:
        """A table of `size` (a power of two) slots holding every session in `_flows`."""
        slots: list[Session | None] = [None] * size
        self._slots = slots
        self._slot_mask = size - 1
        self._slot_shift = 33 - size.bit_length()
        self._unslotted = 0
        for s in self.sessions():
            self._slot_place(slots, s, (s.tunnel_id << 16) | s.session_id)

    # --- eviction and idle order ----------------------------------------------------------------

    def _lru_push(self, s: Session) -> None:
        heap = self._lru
        self._lru_seq += 1
        s.lru_seq = self._lru_seq
        key = (s.tunnel_id << 16) | s.session_id
        heapq.heappush(heap, (s.last_active, self._lru_seq, s.flow, key))
        if len(heap) > 2 * self._session_count + 64:
            # Entries of ended sessions pile up (a few ints each): drop them all at once.
            live = [e for e in heap if self._lru_entry_session(e) is not None]
            heapq.heapify(live)
            heap[:] = live

    def _lru_entry_session(self, entry: tuple[float, int, Hashable, int]) -> Session | None:
        sessions = self._flows.get(entry[2])
        s = sessions.get(entry[3]) if sessions is not None else None
        return s if s is not None and s.lru_seq == entry[1] else None

    def _lru_oldest(self) -> Session | None:
        """The longest-silent live session, exactly: every live session has one entry stamped no
        later than its real last activity, so a top entry whose stamp is current is the minimum;
        an out-of-date top entry is re-pushed with the current value."""
        heap = self._lru
        flows = self._flows
        while heap:
            entry = heap[0]
            # s = self._lru_entry_session(entry), inlined: expire() comes here every time.
            sessions = flows.get(entry[2])
            s = sessions.get(entry[3]) if sessions is not None else None
            if s is None or s.lru_seq != entry[1]:
                heapq.heappop(heap)
            elif s.last_active != entry[0]:
                seq = self._lru_seq = self._lru_seq + 1
                s.lru_seq = seq
                heapq.heapreplace(heap, (s.last_active, seq, entry[2], entry[3]))
            else:
                return s
        return None

    def _evict(self, now: float) -> bool:
        """End the longest-silent session, whatever its confirmation state; False if none."""
        s = self._lru_oldest()
        if s is None:
            return False
        heapq.heappop(self._lru)
        c = self.counters
        c.sessions_evicted += 1
        if s.confirmed:
            c.sessions_evicted_confirmed += 1
        if s.last_active > now - max(ACTIVE_TIMEOUTS * self._timeout, ACTIVE_FLOOR):
            c.sessions_evicted_active += 1
        self._end(s, now, reasons.SKIP_EVICTED, reasons.END_EVICTED)
        return True

    def next_idle_deadline(self) -> float | None:
        """When `expire` will next forget a silent session (None: idle expiry is off or no
        session). Adapters wake at min(next_deadline(), this)."""
        if self._idle_timeout <= 0:
            return None
        s = self._lru_oldest()
        return None if s is None else s.last_active + self._idle_timeout

    def _expire_idle(self, now: float) -> None:
        """Forget sessions silent for `session_idle_timeout` (held packets go out first); their
        numbering is remembered for IDLE_MEMORY, so one that resumes shows the LNS no jump."""
        idle = self._idle_timeout
        if idle <= 0:
            return
        heap = self._lru
        if not heap or heap[0][0] + idle > now:
            # No entry is stamped later than its session's last activity, so the top's stamp is
            # a lower bound: nobody is idle yet, and the out-of-date entries can wait (refreshing
            # them on every expire() cost ~150 ns a packet at 10,000 sessions with 1% loss).
            self._purge_side_tables(now)
            return
        while True:
            s = self._lru_oldest()
            if s is None or s.last_active + idle > now:
                break
            heapq.heappop(self._lru)
            self.counters.sessions_idle_expired += 1
            self._end(s, now, reasons.SKIP_END, reasons.END_IDLE, idle=True)
        self._purge_side_tables(now)

    def _purge_side_tables(self, now: float) -> None:
        self._memory.purge(now)
        pending = self._pending_confirmations
        while pending:
            first = next(iter(pending))
            if now - pending[first] <= PENDING_MEMORY:
                break
            del pending[first]

    # --- ends ----------------------------------------------------------------------------------

    def end_session(
        self,
        flow: Hashable,
        tunnel_id: int,
        session_id: int,
        now: float,
        *,
        remember: bool = True,
        why: str = reasons.END_CDN,
    ) -> bool:
        """Flush and forget one session (CDN). `remember`: keep its numbering for ENDED_MEMORY in
        case the LNS did not act on the CDN (a CDN from the LAC's side may be spoofed; see
        _continue_numbering); False when the LNS itself ended it. `why`: reasons.END_*."""
        key = (tunnel_id << 16) | session_id
        self._pending_confirmations.pop((flow, key), None)  # the call ended before any data
        sessions = self._flows.get(flow)
        s = sessions.get(key) if sessions is not None else None
        if s is None:
            return False
        self._end(s, self._clock(now), reasons.SKIP_END, why, remember=remember)
        return True

    def _end(
        self,
        s: Session,
        now: float,
        reason: str,
        why: str,
        *,
        idle: bool = False,
        remember: bool = True,
    ) -> None:
        """Deliver what the session holds (no silent loss), then forget it. `reason`: the skip
        reason of any gap still open; `why`: the end's reasons.END_*, recorded when asked."""
        self._release_held(s, now, reason)
        log = self._end_log
        if log is not None:
            if len(log) < END_LOG_KEPT:
                log.append((s.flow, s.tunnel_id, s.session_id, why))
            else:
                self._end_log_missed += 1
        sessions = self._flows[s.flow]
        key = (s.tunnel_id << 16) | s.session_id
        del sessions[key]
        self._slot_remove(s, key)
        self._unindex_session(s, key)
        self._pending_confirmations.pop((s.flow, key), None)
        # Every end is remembered, evictions too (even a session seen once may be real): the
        # memory is bounded by count (a flood pushes out its own entries) and purged by age.
        if remember:
            self.age_gaps(s)  # the record is read without the session's counters
            ended = Ended(s.expected, s.out_ns, s.gaps, s.gaps_end, now, s.confirmed)
            self._memory.remember(s.flow, key, ended, idle=idle)
        else:
            self._memory.forget(s.flow, key)
        s.alive = False
        s.timer_id = 0
        s.held = {}
        self._session_count -= 1
        self.counters.sessions_ended += 1
        if not sessions:
            del self._flows[s.flow]

    def end_flow(self, flow: Hashable, now: float) -> int:
        """Flush and forget every session of a peer (it went idle or was evicted)."""
        sessions = self._flows.get(flow)
        if sessions is None:
            return 0
        ended = list(sessions.values())
        for s in ended:
            self.end_session(flow, s.tunnel_id, s.session_id, now, why=reasons.END_PEER)
        return len(ended)

    # --- records for an adapter (through Pipeline.take_events) -----------------------------------

    def set_recording(self, *, ends: bool, hold_samples: bool) -> None:
        """Record session ends and/or hold samples from now on (off: dropped at once)."""
        self._end_log = ([] if self._end_log is None else self._end_log) if ends else None
        self._hold_log = (
            ([] if self._hold_log is None else self._hold_log) if hold_samples else None
        )
        if not ends:
            self._end_log_missed = 0
        if not hold_samples:
            self._hold_missed = 0

    def take_records(
        self,
    ) -> tuple[
        list[tuple[Hashable, int, int, str]], int, list[tuple[Hashable, int, int, float]], int
    ]:
        """(ends, ends not itemised, hold samples, hold samples not itemised) since the last call;
        clears them. Empty when not recording."""
        ends: list[tuple[Hashable, int, int, str]] = []
        holds: list[tuple[Hashable, int, int, float]] = []
        if self._end_log:
            ends, self._end_log = self._end_log, []
        if self._hold_log:
            holds, self._hold_log = self._hold_log, []
        missed = (self._end_log_missed, self._hold_missed)
        self._end_log_missed = self._hold_missed = 0
        return ends, missed[0], holds, missed[1]

    # --- inspection ------------------------------------------------------------------------------

    def sessions(self) -> Iterator[Session]:
        for sessions in self._flows.values():
            yield from sessions.values()

    def sessions_snapshot(self) -> list[Session]:
        """Every live session, safe to take from another thread (the metrics scrape).

        `list(dict.values())` runs in C without releasing the GIL, so each copy is atomic; a
        generator over the live dicts could see one change size mid-walk and raise.
        """
        out: list[Session] = []
        for sessions in list(self._flows.values()):
            out.extend(list(sessions.values()))
        return out

    def session(self, flow: Hashable, tunnel_id: int, session_id: int) -> Session | None:
        return self._flows.get(flow, {}).get((tunnel_id << 16) | session_id)

    @property
    def window(self) -> int:
        """W: behind packets up to W back are classified exactly (see continuation)."""
        return self._window

    @property
    def session_count(self) -> int:
        return self._session_count
