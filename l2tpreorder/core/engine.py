"""The reorder engine: a pure state machine, in the sans-IO style of h11 and aioquic.

It is fed `(datagram, flow, now, tag)` and queues what should go to the LNS now, each with its
opaque `tag`, for `take_output()`; the caller asks `next_deadline()` and calls `expire(now)` when
that time comes. Adapters drive it through `pipeline.Pipeline`, which owns both directions. It
never touches a socket, a clock or an event loop, so the daemon, `replay pcap` (virtual time) and
the benchmarks drive the very same code.

Sessions are keyed by (flow, tunnel_id, session_id); `flow` is whatever hashable the adapter uses
for a peer. Only data messages with Ns are sequenced; control messages and data without Ns pass at
once, untouched. Every datagram ends in exactly one counted outcome (`reasons.Outcome`):

    received == forwarded (control, unsequenced, in order, out of order, late) + released (after
                hold)
                + dropped (duplicate, late, stale, far ahead, malformed) + held now

Sequence numbers are compared modulo 2**16 with the half-space rule: Ns is ahead of the expected
value when (Ns - expected) mod 65536 < 32768, else behind. Behind packets are classified exactly
within the window W (see core/continuation.py; core/behind.py handles them); a packet more than W
ahead is not trusted alone, and a restored session's first packet tells where its stream went
while the daemon was down (core/ahead.py); the session table,
its caps, idle expiry and the memory that lets a session continue across an end live in
core/session_table.py.
"""

from __future__ import annotations

import heapq
import struct
from bisect import bisect_left
from collections.abc import Hashable
from typing import Final

from l2tpreorder.build import BUILD
from l2tpreorder.core import adaptive, reasons
from l2tpreorder.core.ahead import Ahead
from l2tpreorder.core.behind import gaps_behind
from l2tpreorder.core.engine_config import LIMITS, LOW_OPEN, EngineConfig, Late, Sequencing
from l2tpreorder.core.engine_counters import (
    DISPLACEMENT_BUCKETS,
    HOLD_TIME_BUCKETS,
    EngineCounters,
    Histogram,
)
from l2tpreorder.core.events import HOLD_SAMPLES_KEPT
from l2tpreorder.core.fastpath import (
    T_BIT,
    control_fields,
    parse_header,
    raw_ns_readable,
    with_ns,
    without_sequence,
)
from l2tpreorder.core.msgtype import MessageType
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.core.session_table import (
    BYPASSED,
    HELD_SHRINK,
    MAX_PENDING_CONFIRMATIONS,
    Session,
)

HALF: Final = 0x8000
MASK: Final = 0xFFFF
INF: Final = float("inf")
_u16: Final = struct.Struct("!H").unpack_from
_u16x4: Final = struct.Struct("!HHHH").unpack_from
# Compiled exactly when the build is (l2tpreorder.build); receive's two header parses are both
# checked by tests/core/test_engine_inline_parse.py (`make test` runs it on both builds).
_NATIVE: Final = BUILD == "compiled"
# After the socket layer reports kernel receive-queue drops, a gap that may be one of them, in a
# session already holding, is given up after this long (or the reorder timeout, if shorter)
# instead of the full timeout: a swapped packet arrives right behind its successor, a dropped one
# never does. (A gap in a session holding nothing is given up at once; see _receive_sequenced.)
KERNEL_DROP_GRACE: Final = 0.002

# Outcome codes as plain ints: reading an IntEnum member costs ~130 ns, a global ~10 ns.
FORWARDED_CONTROL: Final = int(Outcome.FORWARDED_CONTROL)
FORWARDED_UNSEQUENCED: Final = int(Outcome.FORWARDED_UNSEQUENCED)
FORWARDED_IN_ORDER: Final = int(Outcome.FORWARDED_IN_ORDER)
HELD: Final = int(Outcome.HELD)
DROPPED_DUPLICATE: Final = int(Outcome.DROPPED_DUPLICATE)
DROPPED_MALFORMED: Final = int(Outcome.DROPPED_MALFORMED)
FORWARDED_MALFORMED: Final = int(Outcome.FORWARDED_MALFORMED)

# Reverse-direction tunnel-ID pairs remembered (bounded so a flood of SCCRQs cannot grow it).
MAX_TUNNEL_MAP: Final = 65536
__all__ = [
    "DISPLACEMENT_BUCKETS",
    "HOLD_TIME_BUCKETS",
    "LIMITS",
    "LOW_OPEN",
    "MAX_PENDING_CONFIRMATIONS",
    "EngineConfig",
    "EngineCounters",
    "Histogram",
    "Late",
    "ReorderEngine",
    "Sequencing",
    "Session",
]

# Control messages that establish a session, by where our data's session ID appears in them.
# Our data carries the LNS's IDs. A forward ICCN/OCRP/OCCN (LAC to LNS) has it in the header;
# a reverse ICRP/OCRQ (LNS to LAC) has it in the Assigned Session ID AVP. An ICRQ carries only
# the LAC's own session ID, so it cannot name the session our data will use.
CONFIRMING_FORWARD = frozenset({MessageType.ICCN, MessageType.OCRP, MessageType.OCCN})
CONFIRMING_REVERSE = frozenset({MessageType.ICRP, MessageType.OCRQ})


class ReorderEngine(Ahead):
    """Puts each session's sequenced data back in Ns order; see the module docstring."""

    def __init__(self, config: EngineConfig | None = None, *, pass_malformed: bool = False) -> None:
        # (flow, datagram, tag) ready to send, in order; handed over by take_output().
        self._out: list[tuple[Hashable, bytes, object]] = []
        self.counters = EngineCounters()
        # A malformed datagram goes out untouched (FORWARDED_MALFORMED) instead of being dropped:
        # the policy is the pipeline's, declared up front (pipeline.MalformedPolicy).
        self._pass_malformed = pass_malformed
        self._init_table()
        self._timers: list[tuple[float, int, Session]] = []
        self._next_timer_id = 1
        self._latest = float("-inf")  # latest `now` seen on the slow paths (clock never runs back)
        self._drop_mark = float("-inf")  # when the adapter last reported kernel drops
        self._bypass_deadline = INF  # sessions waiting for a witness wait until then (ahead.py)
        # (flow, the far side's tunnel ID) -> our side's tunnel ID, learned from SCCRQ/SCCRP, and
        # (flow, our tunnel ID) -> far side's IDs, so a StopCCN costs O(its own tunnel).
        self._tunnel_map: dict[tuple[Hashable, int], int] = {}
        self._tunnel_map_ours: dict[tuple[Hashable, int], set[int]] = {}
        self.config = config or EngineConfig()
        self._apply(self.config)

    # --- configuration ---------------------------------------------------------------------

    def _apply(self, config: EngineConfig) -> None:
        old_window = getattr(self, "_window", None)
        self._timeout = config.reorder_timeout
        self._mode = config.sequencing
        self._renumber = config.sequencing is Sequencing.RENUMBER
        self._max_held = config.max_held_per_session
        self._max_bytes = config.max_held_bytes
        self._resync_after = config.resync_after
        # The window W: a behind packet up to W back is classified exactly (duplicate or late,
        # from the given-up bitmap); further back it counts towards a resync (or is `stale`).
        # W is more than any packet we could still be holding.
        self._window = max(config.max_held_per_session, 64)
        self._all_given_up = (1 << self._window) - 1
        if old_window is not None and self._window > old_window:
            for s in self.sessions():
                self._window_grown(s, old_window)
        # The LNS judges Ns itself in preserve mode: a late packet cannot be delivered there.
        self._deliver_late = (
            config.sequencing is not Sequencing.PRESERVE and config.late is not Late.DROP
        )
        self._idle_timeout = config.session_idle_timeout
        self._max_sessions = config.max_sessions
        self._drop_grace = min(config.reorder_timeout, KERNEL_DROP_GRACE)
        self._adapt = (
            adaptive.Bounds(min(config.min_timeout, config.reorder_timeout), config.reorder_timeout)
            if config.adaptive and config.reorder_timeout > 0
            else None
        )

    def reconfigure(self, config: EngineConfig, now: float) -> None:
        """Apply a new config (SIGHUP) keeping every session and held packet."""
        old_timeout, old_adapt = self._timeout, self._adapt
        self.config = config
        self._apply(config)
        if self._adapt != old_adapt:
            self._adapt_rebound(old_adapt is None)
        if config.reorder_timeout != old_timeout or self._adapt != old_adapt:
            for s in self.sessions():
                if s.held:
                    self._schedule(s)
        for s in list(self.sessions()):
            while len(s.held) > self._max_held:
                self._skip_to_next_held(s, reasons.SKIP_CAP)
                self._release_run(s, now)
        self._enforce_byte_cap(now)
        while self._session_count > self._max_sessions and self._evict(now):
            pass
        self.expire(now)

    def _adapt_rebound(self, fresh: bool) -> None:
        """Adaptive mode switched on (fresh: start every session at the cap) or its bounds
        changed (keep what each session learnt, clamped into the new range)."""
        bounds = self._adapt
        if bounds is None:
            return
        for s in self.sessions():
            if fresh:
                adaptive.start(s, bounds)
            else:
                adaptive.rebound(s, bounds)

    @property
    def adaptive_timeouts(self) -> bool:
        """Sessions learn their own timeouts (else all use the configured one)."""
        return self._adapt is not None

    def timeout_of(self, s: Session) -> float:
        """The session's reorder timeout: its own in adaptive mode, else the configured one."""
        return self._timeout if self._adapt is None else s.timeout

    # --- the per-packet path -----------------------------------------------------------------

    def take_output(self) -> list[tuple[Hashable, bytes, object]]:
        """Everything ready to send, in send order: (flow, datagram, tag); clears it."""
        out = self._out
        if out:
            self._out = []
        return out

    def receive(self, data: bytes, flow: Hashable, now: float, tag: object = None) -> int:
        """Take one datagram travelling towards the LNS; returns its `Outcome`.

        `tag` is opaque and leaves with the datagram (the in-path adapter's packet id)."""
        # tests/engine_helpers.sequenced_data, inlined (a call costs ~13% of this path); the
        # property test tests/core/test_engine_inline_parse.py proves both classify alike.
        n = len(data)
        if n < 10:
            return self._receive_other(data, flow, now, tag)
        if _NATIVE:  # compiled: byte indexing is native code, no tuple of 4 ints per packet
            flags, a = (data[0] << 8) | data[1], (data[2] << 8) | data[3]
            b, ns = (data[4] << 8) | data[5], (data[6] << 8) | data[7]
        else:  # interpreted: one struct call costs less than eight subscripts
            flags, a, b, ns = _u16x4(data)
        shape = flags & 0xCA0F  # T, L, S, O bits and version; P and reserved bits ignored
        if shape == 0x0802:  # data, S, no L: flags tid sid Ns
            key = (a << 16) | b
            ns_offset = 6
        elif shape == 0x4802 and 12 <= a <= n:  # data, L, S: flags len tid sid Ns
            key = (b << 16) | ns
            ns = _u16(data, 8)[0]
            ns_offset = 8
        else:
            return self._receive_other(data, flow, now, tag)
        if _NATIVE:  # compiled: one slot read (session_table._find); interpreted: the dicts
            s = self._find(flow, key)
        else:
            sessions = self._flows.get(flow)
            s = sessions.get(key) if sessions is not None else None
        if s is not None and ns == s.expected and not s.held and not s.restored:
            # The common case: in order, nothing held. No copy unless Ns must change.
            # This is `_emit` inlined (a method call is a measurable share of this path):
            # a change to how a mode rewrites Ns goes in both.
            s.last_active = now
            s.expected = (ns + 1) & MASK
            s.forwarded_in_order += 1
            self.counters.forwarded_in_order += 1
            if self._renumber:
                out_ns = s.out_ns
                s.out_ns = (out_ns + 1) & MASK
                if out_ns != ns:
                    data = with_ns(data, ns_offset, out_ns)
            else:
                s.out_ns = s.expected
                if self._mode is Sequencing.STRIP:
                    data = without_sequence(data, ns_offset)
            self._out.append((flow, data, tag))
            return FORWARDED_IN_ORDER
        return self._receive_sequenced(data, flow, key, ns, ns_offset, now, tag)

    def receive_many(
        self,
        datas: list[bytes],
        flows: list[Hashable],
        now: float,
        tags: list[object] | None = None,
    ) -> None:
        """`receive` for each datagram of one read (recvmmsg), in order, all at `now`: the
        same outcomes, counted alike (tests/core/test_pipeline_batch_equivalence.py).
        Compiled, the loop and each call stay native (no vectorcall, no boxed float per
        datagram)."""
        if len(flows) != len(datas) or (tags is not None and len(tags) != len(datas)):
            raise ValueError("receive_many: datas, flows and tags differ in length")
        if _NATIVE:
            if tags is None:
                for i in range(len(datas)):
                    self.receive(datas[i], flows[i], now, None)
            else:
                for i in range(len(datas)):
                    self.receive(datas[i], flows[i], now, tags[i])
            return
        receive = self.receive  # interpreted: one attribute lookup per batch
        if tags is None:
            for data, flow in zip(datas, flows, strict=True):
                receive(data, flow, now)
        else:
            for data, flow, tag in zip(datas, flows, tags, strict=True):
                receive(data, flow, now, tag)

    def _receive_other(self, data: bytes, flow: Hashable, now: float, tag: object) -> int:
        """Control messages, data without Ns, unusual header shapes and malformed input."""
        c = self.counters
        header = parse_header(data)
        if isinstance(header, str):
            return self._malformed(header, data, flow, tag)
        if header.flags & T_BIT:
            control = control_fields(data)
            if isinstance(control, str):
                return self._malformed(control, data, flow, tag)
            c.rx_control += 1
            now = self._clock(now)
            msg = control.message_type
            if control.assigned_tunnel_id is not None and control.tunnel_id:
                self._remember_tunnel(flow, control.assigned_tunnel_id, control.tunnel_id)
            if msg in CONFIRMING_FORWARD and control.session_id:
                self._confirm(flow, (control.tunnel_id << 16) | control.session_id, now)
            # Flush the session's data before the message that ends it reaches the LNS.
            if msg == MessageType.CDN and control.session_id:
                self.end_session(flow, control.tunnel_id, control.session_id, now)
            elif msg == MessageType.StopCCN and control.tunnel_id:
                self.end_tunnel(flow, control.tunnel_id, now)
            c.forwarded_control += 1
            self._out.append((flow, data, tag))
            return FORWARDED_CONTROL
        if header.ns is None:
            c.rx_data_unseq += 1
            c.forwarded_unsequenced += 1
            self._out.append((flow, data, tag))
            return FORWARDED_UNSEQUENCED
        # Sequenced data of a rarer shape (offset field): same path as the fast one.
        assert header.ns_offset is not None
        key = (header.tunnel_id << 16) | header.session_id
        return self._receive_sequenced(data, flow, key, header.ns, header.ns_offset, now, tag)

    def _malformed(self, reason: str, data: bytes, flow: Hashable, tag: object) -> int:
        """Counted once, by reason; dropped, or passed on untouched in arrival order. Never
        passed with a raw Ns the LNS would read while it sees our numbering (issue 21)."""
        c = self.counters
        c.rx_malformed += 1
        c.malformed[reason] += 1
        if self._pass_malformed and (
            self._mode is Sequencing.PRESERVE or not raw_ns_readable(data)
        ):
            c.forwarded_malformed += 1
            self._out.append((flow, data, tag))
            return FORWARDED_MALFORMED
        return DROPPED_MALFORMED

    def _receive_sequenced(
        self,
        data: bytes,
        flow: Hashable,
        key: int,
        ns: int,
        ns_offset: int,
        now: float,
        tag: object,
    ) -> int:
        if now < self._latest:  # self._clock(now), inlined
            now = self._latest
        else:
            self._latest = now
        c = self.counters
        if _NATIVE:
            s = self._find(flow, key)
        else:
            sessions = self._flows.get(flow)
            s = sessions.get(key) if sessions is not None else None
        if s is None:
            # The first sequenced packet of a session starts it.
            s = self._new_session(flow, key, ns, now)
        # Kernel drops reported since this session's previous packet: a gap opening now may
        # be one of them.
        suspect = s.last_active <= self._drop_mark
        s.last_active = now
        distance = (ns - s.expected) & MASK
        if s.restored:
            if s.restored == BYPASSED:  # core/ahead.py: after a bypass episode (in-path)
                return self._bypassed(s, data, ns, ns_offset, distance, now, tag, True)
            if self._resume(s, ns, distance):
                distance = 0  # the first packet after a restart: the gap passed us meanwhile
        if distance == 0:
            s.behind_run = 0
            s.expected = (ns + 1) & MASK
            s.forwarded_in_order += 1
            c.forwarded_in_order += 1
            self._emit(s, data, ns_offset, tag)
            if s.held:
                if self._adapt is not None:  # the gap filled: how late its packet was
                    adaptive.on_fill(s, now - next(iter(s.held.values()))[1], self._adapt)
                self._release_run(s, now)
            return FORWARDED_IN_ORDER
        if distance < HALF:
            # Not trusted alone (core/ahead.py); after kernel drops a gap wider than W is one
            # of those (given up below), not a stray.
            if distance > self._window and not suspect:
                return self._far_ahead(s, data, ns, ns_offset, now, tag)
            if suspect and not s.held and self._timeout > 0:
                # Kernel drops since this session's previous packet: under overload this gap is
                # almost surely one of them. Waiting for it would hold this session's traffic
                # and cost the hold-and-release work per drop, when the relay is already short
                # of CPU (measured: 0.56x of the loss-free rate at 2x overload). Give it up now;
                # a merely swapped predecessor arriving next is then dropped as late.
                return self._ahead(
                    s, data, ns, ns_offset, distance, now, tag, reasons.SKIP_SOCKET_DROP
                )
            outcome = self._ahead(s, data, ns, ns_offset, distance, now, tag)
            if suspect and s.held:
                cut = now + self._drop_grace
                if cut < s.cut:
                    s.cut = cut
                    self._schedule(s)
            return outcome
        return self._behind(s, data, ns, ns_offset, now, tag)

    def _ahead(
        self,
        s: Session,
        data: bytes,
        ns: int,
        ns_offset: int,
        distance: int,
        now: float,
        tag: object,
        give_up: str | None = None,
    ) -> int:
        """An early packet: hold it, or give up the gap in front of it at once and pass it
        (timeout 0, or `give_up` names why, e.g. kernel drops)."""
        c = self.counters
        s.behind_run = 0
        held = s.held
        if ns in held:
            s.dropped_duplicate += 1
            c.dropped_duplicate += 1
            return DROPPED_DUPLICATE
        if distance > s.max_displacement:
            s.max_displacement = distance
        hist = c.displacement  # hist.observe(distance), inlined
        hist.counts[bisect_left(hist.bounds, distance)] += 1
        hist.total += distance
        if give_up is None and self._timeout <= 0:
            give_up = reasons.SKIP_TIMEOUT
        if give_up is not None:
            return self._forward_from(s, data, ns, ns_offset, tag, give_up)
        first = not held
        held[ns] = (data, now, ns_offset, tag)
        count = len(held)
        if count > s.held_peak:
            s.held_peak = count
        size = len(data)
        s.held_bytes += size
        c.held_packets += 1
        c.held_bytes += size
        if first:
            self._schedule(s)
        if count > self._max_held:
            self._skip_to_next_held(s, reasons.SKIP_CAP)
            self._release_run(s, now)
        if c.held_bytes > self._max_bytes:
            self._enforce_byte_cap(now)
        return HELD

    # --- output ------------------------------------------------------------------------------

    def _emit(self, s: Session, data: bytes, ns_offset: int, tag: object) -> None:
        """Send one sequenced packet on, with Ns as the configured mode wants it."""
        ns = (data[ns_offset] << 8) | data[ns_offset + 1]
        if self._renumber:
            out_ns = s.out_ns
            s.out_ns = (out_ns + 1) & MASK
            if ns != out_ns:
                data = with_ns(data, ns_offset, out_ns)
        else:
            # The LNS sees the LAC's Ns (or none); keep out_ns in step for a later mode switch.
            s.out_ns = (ns + 1) & MASK
            if self._mode is Sequencing.STRIP:
                data = without_sequence(data, ns_offset)
        self._out.append((s.flow, data, tag))

    def _release_run(self, s: Session, now: float) -> None:
        """Deliver held packets from `expected` on while they are contiguous."""
        held = s.held
        expected = s.expected
        item = held.pop(expected, None)
        if item is not None:
            # Per packet only what differs per packet: the counters move once per run, the
            # histogram's observe and (renumber mode) _emit are inlined.
            c = self.counters
            record = self._hold_log  # None unless an adapter records hold samples (replay)
            hist = c.hold_time
            counts, bounds = hist.counts, hist.bounds
            renumber = self._renumber
            out = self._out
            flow = s.flow
            released = size = 0
            while item is not None:
                data, arrival, ns_offset, tag = item
                size += len(data)
                released += 1
                waited = now - arrival
                counts[bisect_left(bounds, waited)] += 1
                hist.total += waited
                if record is not None:
                    record.append((flow, s.tunnel_id, s.session_id, waited))
                ns = expected  # the held key is the packet's Ns
                expected = (ns + 1) & MASK
                if renumber:  # self._emit(s, data, ns_offset, tag), inlined
                    out_ns = s.out_ns
                    s.out_ns = (out_ns + 1) & MASK
                    if out_ns != ns:
                        data = with_ns(data, ns_offset, out_ns)
                    out.append((flow, data, tag))
                else:
                    self._emit(s, data, ns_offset, tag)
                item = held.pop(expected, None)
            s.expected = expected
            s.held_bytes -= size
            c.held_bytes -= size
            c.held_packets -= released
            s.released += released
            c.released += released
            if record is not None and len(record) > HOLD_SAMPLES_KEPT:
                self._hold_missed += len(record) - HOLD_SAMPLES_KEPT
                del record[HOLD_SAMPLES_KEPT:]
        if not held:
            if s.held_peak > HELD_SHRINK:
                s.held = {}  # give back the table a burst grew
                s.held_peak = 0
            s.timer_id = 0  # self._schedule(s) of an empty session, inlined
            s.cut = INF
        else:
            self._schedule(s)

    def _skip(self, s: Session, count: int, reason: str) -> None:
        """Give up `count` missing Ns from `expected` on; remember them to spot late arrivals."""
        start = s.expected
        # The bitmap after Ns start..start+count-1 are given up (bit i = Ns end-1-i; bits further
        # back than W fall off), with no big-int work where the old bits all fall off. Defined by
        # tests/engine_helpers.mark_given_up; test_engine_skip_inline proves the two equal.
        window = self._window
        if count >= window:
            s.gaps = self._all_given_up
        else:
            gaps = s.gaps
            shift = (start - s.gaps_end) & MASK
            # In-order traffic moved `expected` a full turn or more past the last gap?
            if gaps and gaps_behind(s) < window:
                s.gaps = ((gaps << (shift + count)) | ((1 << count) - 1)) & self._all_given_up
            else:
                s.gaps = (1 << count) - 1
        s.expected = s.gaps_end = (start + count) & MASK
        s.gaps_at = s.forwarded_in_order + s.released
        s.skipped += count
        self.counters.skipped[reason] += count

    def _skip_to_next_held(self, s: Session, reason: str) -> None:
        expected = s.expected
        self._skip(s, min((ns - expected) & MASK for ns in s.held), reason)

    def _release_all(self, s: Session, now: float, reason: str) -> None:
        while s.held:
            self._skip_to_next_held(s, reason)
            self._release_run(s, now)

    # --- timers ------------------------------------------------------------------------------

    def _schedule(self, s: Session) -> None:
        """(Re)arm the session's deadline: its oldest held packet's arrival + timeout, or the
        earlier cut set after kernel drops."""
        if not s.held or not s.alive:
            s.timer_id = 0
            s.cut = INF
            return
        if s.restored == BYPASSED:  # waits for its witness until then (core/ahead.py)
            s.timer_id = timer_id = self._next_timer_id
            self._next_timer_id += 1
            heapq.heappush(self._timers, (self._bypass_deadline, timer_id, s))
            return
        # Arrival of the oldest (dict order is arrival order) + self.timeout_of(s), inlined.
        deadline = next(iter(s.held.values()))[1] + (
            self._timeout if self._adapt is None else s.timeout
        )
        if s.cut < deadline:
            deadline = s.cut
        timer_id = self._next_timer_id
        self._next_timer_id += 1
        s.timer_id = timer_id
        heapq.heappush(self._timers, (deadline, timer_id, s))

    def _live_timer_top(self) -> tuple[float, int, Session] | None:
        timers = self._timers
        while timers:
            top = timers[0]
            if top[2].timer_id == top[1]:
                return top
            heapq.heappop(timers)  # stale: the session's deadline moved or it ended
        return None

    def next_deadline(self) -> float | None:
        """The earliest time at which `expire` will release something, or None."""
        top = self._live_timer_top()
        return top[0] if top is not None else None

    def expire(self, now: float) -> None:
        """Release every packet whose hold time is up, giving up the gaps in front of it, and
        forget sessions silent for `session_idle_timeout` (see next_idle_deadline)."""
        now = self._clock(now)
        adapt = self._adapt
        while True:
            top = self._live_timer_top()
            if top is None or top[0] > now:
                break
            heapq.heappop(self._timers)
            s = top[2]
            s.timer_id = 0
            if s.restored == BYPASSED:  # no witness in time? (core/ahead.py)
                self._wait_over(s, now)
                continue
            timeout = self._timeout if adapt is None else s.timeout  # self.timeout_of(s)
            while s.held and (first := next(iter(s.held.values()))[1]) + timeout <= now:
                if adapt is not None:
                    adaptive.on_give_up(s, first, adapt)
                self._skip_to_next_held(s, reasons.SKIP_TIMEOUT)
                self._release_run(s, now)
            if s.cut <= now:
                s.cut = INF
                self._release_all(s, now, reasons.SKIP_SOCKET_DROP)
            self._schedule(s)
        self._expire_idle(now)

    def flush(self, now: float) -> None:
        """Deliver everything held, in order (shutdown). Sessions stay."""
        now = self._clock(now)
        for s in list(self.sessions()):
            self._release_held(s, now, reasons.SKIP_END)
            self.age_gaps(s)  # what a snapshot saves is read without the session's counters

    def note_kernel_drops(self, now: float) -> None:
        """The adapter learnt that the kernel dropped datagrams on their way in (a full socket
        receive queue, e.g. SO_RXQ_OVFL), at or before `now`. Which sessions lost them is
        unknown; so a gap that opens from now on in a session whose previous packet came at or
        before `now` (the drops may lie between the two) is given up at once when the session
        holds nothing, else after KERNEL_DROP_GRACE, instead of the reorder timeout (skip
        reason "socket_overflow"). Without this, under overload every session waits the full
        timeout for packets that will never come, holding everything behind them, and the
        hold-and-release work per drop takes CPU the relay does not have."""
        self._drop_mark = now

    def _enforce_byte_cap(self, now: float) -> None:
        """Over the global byte cap: close the oldest gap of the session waiting longest (one
        waiting for its witness sends all it holds keeping its offset: core/ahead.py)."""
        while self.counters.held_bytes > self._max_bytes:
            top = self._live_timer_top()
            if top is None:
                return
            s = top[2]
            if s.restored == BYPASSED:  # a skipped gap must not reuse the bypassed Ns
                self._no_witness(s, now)
                continue
            self._skip_to_next_held(s, reasons.SKIP_CAP)
            self._release_run(s, now)

    @property
    def latest_time(self) -> float:
        """The latest `now` seen on the slow paths (-inf before any)."""
        return self._latest

    def _clock(self, now: float) -> float:
        """Capture timestamps can step back; held-packet ages must not."""
        if now < self._latest:
            return self._latest
        self._latest = now
        return now

    def end_tunnel(
        self,
        flow: Hashable,
        tunnel_id: int,
        now: float,
        *,
        remember: bool = True,
        why: str = reasons.END_STOPCCN,
    ) -> int:
        """Flush and forget every session of one tunnel (StopCCN); returns how many ended.
        `remember`, `why`: see end_session."""
        ended = self.tunnel_sessions(flow, tunnel_id)
        for s in ended:
            self.end_session(flow, tunnel_id, s.session_id, now, remember=remember, why=why)
        for theirs in self._tunnel_map_ours.pop((flow, tunnel_id), ()):
            del self._tunnel_map[(flow, theirs)]
        return len(ended)

    def observe_reverse(
        self, data: bytes, flow: Hashable, now: float, *, authoritative: bool = True
    ) -> str | None:
        """Read a control message travelling the other way (LNS to LAC) for session lifecycle.

        The far side names our sessions in its AVPs: a CDN carries the Assigned Session ID our
        data uses, in the tunnel whose ID we learned from its SCCRQ/SCCRP; a StopCCN carries the
        Assigned Tunnel ID. `authoritative`: the message comes from the receiver of our data (the
        LNS, through the socket only it can send to), which ended those sessions itself, so
        nothing will continue them and their numbering is not remembered; False when it may be
        spoofed (LNS-to-LAC reordering: it comes from the LAC's side). Returns the message name,
        or None when `data` is not control. The datagram itself is the caller's to forward; this
        only updates state.
        """
        if len(data) < 2 or not data[0] & 0x80:
            return None
        control = control_fields(data)
        if isinstance(control, str):
            return control
        now = self._clock(now)
        if control.assigned_tunnel_id is not None and control.tunnel_id:
            self._remember_tunnel(flow, control.tunnel_id, control.assigned_tunnel_id)
        msg = control.message_type
        if msg in CONFIRMING_REVERSE and control.assigned_session_id:
            key = self._our_key(flow, control.tunnel_id, control.assigned_session_id)
            if key is not None:
                self._confirm(flow, key, now)
        elif msg == MessageType.CDN and control.assigned_session_id:
            key = self._our_key(flow, control.tunnel_id, control.assigned_session_id)
            if key is not None:
                self.end_session(
                    flow, key >> 16, key & MASK, now,
                    remember=not authoritative, why=reasons.END_CDN_REVERSE,
                )  # fmt: skip
        elif msg == MessageType.StopCCN and control.assigned_tunnel_id is not None:
            self.end_tunnel(
                flow, control.assigned_tunnel_id, now,
                remember=not authoritative, why=reasons.END_STOPCCN_REVERSE,
            )  # fmt: skip
        return control.name

    def _our_key(self, flow: Hashable, their_tunnel_id: int, our_session_id: int) -> int | None:
        """Our session key named by a far-side message: its header has the far side's tunnel
        ID, its Assigned Session ID ours. Without the tunnel pairing (we started mid-tunnel),
        only a session ID unique on this peer is taken."""
        ours = self._tunnel_map.get((flow, their_tunnel_id))
        if ours is not None:
            return (ours << 16) | our_session_id
        match = [k for k, s in self._flows.get(flow, {}).items() if s.session_id == our_session_id]
        return match[0] if len(match) == 1 else None

    def _remember_tunnel(self, flow: Hashable, their_tunnel_id: int, our_tunnel_id: int) -> None:
        """Pair the two ends' tunnel IDs: ours is the one in our direction's headers."""
        tunnel_map = self._tunnel_map
        key = (flow, their_tunnel_id)
        old = tunnel_map.pop(key, None)
        if old is None and len(tunnel_map) >= MAX_TUNNEL_MAP:
            oldest = next(iter(tunnel_map))
            old = tunnel_map.pop(oldest)
            self._forget_far_tunnel(oldest[0], oldest[1], old)
        elif old is not None:
            self._forget_far_tunnel(flow, their_tunnel_id, old)
        tunnel_map[key] = our_tunnel_id
        ours = self._tunnel_map_ours.get((flow, our_tunnel_id))
        if ours is None:
            ours = self._tunnel_map_ours[(flow, our_tunnel_id)] = set()
        ours.add(their_tunnel_id)

    def _forget_far_tunnel(self, flow: Hashable, their_tunnel_id: int, our_tunnel_id: int) -> None:
        ours = self._tunnel_map_ours[(flow, our_tunnel_id)]
        ours.discard(their_tunnel_id)
        if not ours:
            del self._tunnel_map_ours[(flow, our_tunnel_id)]

    def tunnel_pairs(self) -> list[tuple[Hashable, int, int]]:
        """(flow, far side's tunnel ID, our side's tunnel ID) learned so far (for `state`)."""
        return [(flow, theirs, ours) for (flow, theirs), ours in self._tunnel_map.items()]

    def restore_tunnel(self, flow: Hashable, their_tunnel_id: int, our_tunnel_id: int) -> None:
        """Re-learn a tunnel-ID pair saved before a restart."""
        self._remember_tunnel(flow, their_tunnel_id & MASK, our_tunnel_id & MASK)
