"""The reorder engine: a pure state machine, in the sans-IO style of h11 and aioquic.

It is fed `(datagram, flow, now, tag)` and queues what should go to the LNS now, each with its
opaque `tag`, for `take_output()`; the caller asks `next_deadline()` and calls `expire(now)` when
that time comes. Adapters drive it through `pipeline.Pipeline`, which owns both directions. It
never touches a socket, a clock or an event loop, so the daemon, `replay pcap` (virtual time) and
the benchmarks drive the very same code.

Sessions are keyed by (flow, tunnel_id, session_id); `flow` is whatever hashable the adapter uses
for a peer. Only data messages with Ns are sequenced; control messages and data without Ns pass at
once, untouched. Every datagram ends in exactly one counted outcome (`reasons.Outcome`):

    received == forwarded (control, unsequenced, in order, out of order) + released (after hold)
                + dropped (duplicate, late, malformed) + held now

Sequence numbers are compared modulo 2**16 with the half-space rule: Ns is ahead of the expected
value when (Ns - expected) mod 65536 < 32768, else behind.
"""

from __future__ import annotations

import heapq
import struct
from bisect import bisect_left
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from l2tpreorder.core import reasons
from l2tpreorder.core.fastpath import (
    T_BIT,
    control_fields,
    parse_header,
    with_ns,
    without_sequence,
)
from l2tpreorder.core.msgtype import MessageType
from l2tpreorder.core.reasons import Outcome

HALF = 0x8000
MASK = 0xFFFF
INF = float("inf")
_u16 = struct.Struct("!H").unpack_from
_u16x4 = struct.Struct("!HHHH").unpack_from
# After the socket layer reports kernel receive-queue drops, a gap that may be one of them, in a
# session already holding, is given up after this long (or the reorder timeout, if shorter)
# instead of the full timeout: a swapped packet arrives right behind its successor, a dropped one
# never does. (A gap in a session holding nothing is given up at once; see _receive_sequenced.)
KERNEL_DROP_GRACE = 0.002

# Outcome codes as plain ints: reading an IntEnum member costs ~130 ns, a global ~10 ns.
FORWARDED_CONTROL = int(Outcome.FORWARDED_CONTROL)
FORWARDED_UNSEQUENCED = int(Outcome.FORWARDED_UNSEQUENCED)
FORWARDED_IN_ORDER = int(Outcome.FORWARDED_IN_ORDER)
FORWARDED_OUT_OF_ORDER = int(Outcome.FORWARDED_OUT_OF_ORDER)
HELD = int(Outcome.HELD)
DROPPED_DUPLICATE = int(Outcome.DROPPED_DUPLICATE)
DROPPED_LATE = int(Outcome.DROPPED_LATE)
DROPPED_MALFORMED = int(Outcome.DROPPED_MALFORMED)

# How many recent skipped Ns ranges a session remembers, to tell a late packet from a duplicate.
SKIPPED_RANGES_KEPT = 32
# Reverse-direction tunnel-ID pairs remembered (bounded so a flood of SCCRQs cannot grow it).
MAX_TUNNEL_MAP = 65536
# Sessions the control channel established before their first data packet (bounded likewise).
MAX_PENDING_CONFIRMATIONS = 65536
# Numbering of recently ended sessions, so a session recreated with the same IDs whose Ns carry
# on where the old one stopped keeps the LNS's renumbered stream contiguous
# (see _continue_numbering).
ENDED_KEPT = 16384
ENDED_MEMORY = 120.0  # seconds; longer than L2TP's 60 s hello interval

# Control messages that establish a session, by where our data's session ID appears in them.
# Our data carries the LNS's IDs. A forward ICCN/OCRP/OCCN (LAC to LNS) has it in the header;
# a reverse ICRP/OCRQ (LNS to LAC) has it in the Assigned Session ID AVP. An ICRQ carries only
# the LAC's own session ID, so it cannot name the session our data will use.
CONFIRMING_FORWARD = frozenset({MessageType.ICCN, MessageType.OCRP, MessageType.OCCN})
CONFIRMING_REVERSE = frozenset({MessageType.ICRP, MessageType.OCRQ})

HOLD_TIME_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
DISPLACEMENT_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 16, 32, 64, 128, 256, 1024)


class Sequencing(StrEnum):
    """What the LNS sees in the Ns field of sequenced data (see README: choosing a mode)."""

    RENUMBER = "renumber"  # contiguous Ns, even across gaps we gave up on
    PRESERVE = "preserve"  # the LAC's Ns, untouched
    STRIP = "strip"  # no Ns/Nr at all (S cleared, Length fixed)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine's knobs. Times in seconds; the YAML file speaks milliseconds."""

    reorder_timeout: float = 0.1  # longest a packet is held waiting for a gap; 0 = never hold
    sequencing: Sequencing = Sequencing.RENUMBER
    max_held_per_session: int = 256
    max_held_bytes: int = 32 * 1024 * 1024
    resync_after: int = 4  # consecutive far-behind packets that mean "the peer restarted Ns"
    record_hold_times: bool = False  # keep each hold time per session (replay reports)
    max_sessions: int = 100_000  # session table cap; the least recently active unconfirmed go

    def __post_init__(self) -> None:
        if not 0 <= self.reorder_timeout <= 60:
            raise ValueError(f"reorder_timeout={self.reorder_timeout!r}: expected 0..60 seconds")
        if not isinstance(self.sequencing, Sequencing):
            raise ValueError(f"sequencing={self.sequencing!r}: expected renumber|preserve|strip")
        if not 1 <= self.max_held_per_session <= 32767:
            raise ValueError(
                f"max_held_per_session={self.max_held_per_session!r}: expected 1..32767"
            )
        if self.max_held_bytes < 1:
            raise ValueError(f"max_held_bytes={self.max_held_bytes!r}: expected >= 1")
        if not 2 <= self.resync_after <= 1000:
            raise ValueError(f"resync_after={self.resync_after!r}: expected 2..1000")
        if not 1 <= self.max_sessions <= 10_000_000:
            raise ValueError(f"max_sessions={self.max_sessions!r}: expected 1..10000000")


class Histogram:
    """Cumulative-friendly bucket counts kept as plain ints (exported at scrape time)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last bucket is +Inf; their sum is the count
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class EngineCounters:
    """Every outcome and event as a plain int: an increment costs ~15 ns, not ~240 ns."""

    __slots__ = (
        "displacement",
        "dropped_duplicate",
        "dropped_late",
        "forwarded_control",
        "forwarded_in_order",
        "forwarded_out_of_order",
        "forwarded_unsequenced",
        "held_bytes",
        "held_packets",
        "hold_time",
        "malformed",
        "released",
        "resyncs",
        "rx_control",
        "rx_data_unseq",
        "rx_malformed",
        "sessions_confirmed",
        "sessions_continued",
        "sessions_ended",
        "sessions_evicted",
        "sessions_evicted_confirmed",
        "sessions_started",
        "skipped",
    )

    def __init__(self) -> None:
        self.rx_control = 0
        self.rx_data_unseq = 0
        self.rx_malformed = 0
        self.malformed: dict[str, int] = dict.fromkeys(reasons.MALFORMED_REASONS, 0)
        self.forwarded_control = 0
        self.forwarded_unsequenced = 0
        self.forwarded_in_order = 0
        self.forwarded_out_of_order = 0
        self.released = 0
        self.dropped_duplicate = 0
        self.dropped_late = 0
        self.skipped: dict[str, int] = dict.fromkeys(reasons.SKIP_REASONS, 0)
        self.resyncs = 0
        self.sessions_started = 0
        self.sessions_ended = 0  # includes evicted ones: active = started - ended
        self.sessions_evicted = 0  # the session table was full (max_sessions)
        self.sessions_evicted_confirmed = 0  # of those, established by the control channel
        self.sessions_continued = 0  # recreated sessions whose stream went on
        self.sessions_confirmed = 0  # sessions the control channel established (ICCN, ICRP...)
        self.held_packets = 0  # gauge
        self.held_bytes = 0  # gauge
        self.hold_time = Histogram(HOLD_TIME_BUCKETS)
        self.displacement = Histogram(DISPLACEMENT_BUCKETS)

    @property
    def rx_data_seq(self) -> int:
        """Sequenced data received: derived from its outcomes, so the hot path skips a count."""
        return (
            self.forwarded_in_order
            + self.forwarded_out_of_order
            + self.released
            + self.held_packets
            + self.dropped_duplicate
            + self.dropped_late
        )

    @property
    def sessions_evicted_unconfirmed(self) -> int:
        return self.sessions_evicted - self.sessions_evicted_confirmed

    @property
    def received(self) -> int:
        return self.rx_control + self.rx_data_seq + self.rx_data_unseq + self.rx_malformed

    @property
    def forwarded(self) -> int:
        return (
            self.forwarded_control
            + self.forwarded_unsequenced
            + self.forwarded_in_order
            + self.forwarded_out_of_order
        )

    @property
    def dropped(self) -> int:
        return self.dropped_duplicate + self.dropped_late + self.rx_malformed

    @property
    def accounted(self) -> int:
        """Outcomes so far; equals `received` at all times (the engine's invariant)."""
        return self.forwarded + self.released + self.dropped + self.held_packets


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
        "dropped_late",
        "expected",
        "flow",
        "forwarded_in_order",
        "forwarded_out_of_order",
        "held",
        "held_bytes",
        "hold_times",
        "last_active",
        "max_displacement",
        "out_ns",
        "released",
        "session_id",
        "skipped",
        "skipped_ranges",
        "started",
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
        self.timer_id = 0  # id of this session's live entry in the engine's timer heap; 0 = none
        self.cut = INF  # earlier deadline for gaps that may be kernel drops (see note_kernel_drops)
        # (first Ns, count) of recently skipped runs: a packet found here later is "late".
        self.skipped_ranges: list[tuple[int, int]] = []
        self.behind_run = 0
        self.behind_next = -1
        self.behind_at = -1  # `expected` when the last far-behind packet came (see _behind)
        self.alive = True
        self.confirmed = False  # established by the control channel: evicted last
        self.started = now
        self.last_active = now  # also the key of the eviction order (see ReorderEngine._evict)
        self.forwarded_in_order = 0
        self.forwarded_out_of_order = 0
        self.released = 0
        self.dropped_duplicate = 0
        self.dropped_late = 0
        self.skipped = 0
        self.max_displacement = 0
        self.hold_times: list[float] | None = None

    @property
    def packets(self) -> int:
        """Sequenced packets received: derived from outcomes (one count fewer per packet)."""
        return (
            self.forwarded_in_order
            + self.forwarded_out_of_order
            + self.released
            + len(self.held)
            + self.dropped_duplicate
            + self.dropped_late
        )

    @property
    def key(self) -> tuple[Hashable, int, int]:
        return (self.flow, self.tunnel_id, self.session_id)


class ReorderEngine:
    """Puts each session's sequenced data back in Ns order; see the module docstring."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        # (flow, datagram, tag) ready to send, in order; handed over by take_output().
        self._out: list[tuple[Hashable, bytes, object]] = []
        self.counters = EngineCounters()
        self._flows: dict[Hashable, dict[int, Session]] = {}
        self._timers: list[tuple[float, int, Session]] = []
        self._next_timer_id = 1
        self._latest = float("-inf")  # latest `now` seen on the slow paths (clock never runs back)
        self._drop_mark = float("-inf")  # when the adapter last reported kernel drops
        # (flow, the far side's tunnel ID) -> our side's tunnel ID, learned from SCCRQ/SCCRP.
        self._tunnel_map: dict[tuple[Hashable, int], int] = {}
        # Indexes so a StopCCN costs O(its own tunnel), not O(all sessions and tunnels): a flood
        # of StopCCNs must not stall the relay. (flow, our tunnel ID) -> far side's IDs, and
        # flow -> our tunnel ID -> that tunnel's sessions: the session itself while it is the
        # only one (a flood of random IDs makes ~1 session per tunnel: ~80 bytes, not ~360).
        self._tunnel_map_ours: dict[tuple[Hashable, int], set[int]] = {}
        self._tunnel_sessions: dict[Hashable, dict[int, Session | dict[int, Session]]] = {}
        # (flow, session key) confirmed by the control channel before its first data packet.
        self._pending_confirmations: dict[tuple[Hashable, int], None] = {}
        # (flow, session key) -> (expected, out_ns, when) of sessions that ended lately.
        self._ended: dict[tuple[Hashable, int], tuple[int, int, float]] = {}
        # Eviction order: heaps of (last_active when pushed, tiebreak, session), one for
        # unconfirmed and one for confirmed sessions. The per-packet path only writes
        # s.last_active; an entry whose stamp is older is refreshed when it reaches the top.
        self._lru: tuple[list[tuple[float, int, Session]], list[tuple[float, int, Session]]] = (
            [],
            [],
        )
        self._lru_seq = 0
        self._session_count = 0
        self.config = config or EngineConfig()
        self._apply(self.config)

    # --- configuration ---------------------------------------------------------------------

    def _apply(self, config: EngineConfig) -> None:
        self._timeout = config.reorder_timeout
        self._mode = config.sequencing
        self._renumber = config.sequencing is Sequencing.RENUMBER
        self._max_held = config.max_held_per_session
        self._max_bytes = config.max_held_bytes
        self._resync_after = config.resync_after
        # A behind packet counts towards a resync only when it is further behind than any packet
        # we could still be holding: closer than that it is a plain duplicate or late packet.
        self._resync_distance = max(config.max_held_per_session, 64)
        self._record = config.record_hold_times
        self._max_sessions = config.max_sessions
        self._drop_grace = min(config.reorder_timeout, KERNEL_DROP_GRACE)

    def reconfigure(self, config: EngineConfig, now: float) -> None:
        """Apply a new config (SIGHUP) keeping every session and held packet."""
        old_timeout = self._timeout
        self.config = config
        self._apply(config)
        if config.reorder_timeout != old_timeout:
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
        sessions = self._flows.get(flow)
        if sessions is not None:
            s = sessions.get(key)
            if s is not None and ns == s.expected and not s.held:
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

    def _receive_other(self, data: bytes, flow: Hashable, now: float, tag: object) -> int:
        """Control messages, data without Ns, unusual header shapes and malformed input."""
        c = self.counters
        header = parse_header(data)
        if isinstance(header, str):
            return self._malformed(header)
        if header.flags & T_BIT:
            control = control_fields(data)
            if isinstance(control, str):
                return self._malformed(control)
            c.rx_control += 1
            now = self._clock(now)
            msg = control.message_type
            if control.assigned_tunnel_id is not None and control.tunnel_id:
                self._remember_tunnel(flow, control.assigned_tunnel_id, control.tunnel_id)
            if msg in CONFIRMING_FORWARD and control.session_id:
                self._confirm(flow, (control.tunnel_id << 16) | control.session_id)
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

    def _malformed(self, reason: str) -> int:
        c = self.counters
        c.rx_malformed += 1
        c.malformed[reason] += 1
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
        now = self._clock(now)
        c = self.counters
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
        if distance == 0:
            s.behind_run = 0
            s.expected = (ns + 1) & MASK
            s.forwarded_in_order += 1
            c.forwarded_in_order += 1
            self._emit(s, data, ns_offset, tag)
            if s.held:
                self._release_run(s, now)
            return FORWARDED_IN_ORDER
        if distance < HALF:
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
        if ns in s.held:
            s.dropped_duplicate += 1
            c.dropped_duplicate += 1
            return DROPPED_DUPLICATE
        if distance > s.max_displacement:
            s.max_displacement = distance
        c.displacement.observe(distance)
        if give_up is None and self._timeout <= 0:
            give_up = reasons.SKIP_TIMEOUT
        if give_up is not None:
            self._skip(s, distance, give_up)
            s.expected = (ns + 1) & MASK
            s.forwarded_in_order += 1
            c.forwarded_in_order += 1
            self._emit(s, data, ns_offset, tag)
            return FORWARDED_IN_ORDER
        first = not s.held
        s.held[ns] = (data, now, ns_offset, tag)
        size = len(data)
        s.held_bytes += size
        c.held_packets += 1
        c.held_bytes += size
        if first:
            self._schedule(s)
        if len(s.held) > self._max_held:
            self._skip_to_next_held(s, reasons.SKIP_CAP)
            self._release_run(s, now)
        if c.held_bytes > self._max_bytes:
            self._enforce_byte_cap(now)
        return HELD

    def _behind(
        self, s: Session, data: bytes, ns: int, ns_offset: int, now: float, tag: object
    ) -> int:
        """A packet behind the expected Ns: late, duplicate, or part of a peer's restart."""
        c = self.counters
        expected = s.expected
        far = ((expected - ns) & MASK) > self._resync_distance
        # Consecutive means: the previous packet was far behind too (behind_next), and nothing
        # was delivered in between (expected unchanged). Checking `expected` here keeps the
        # in-order fast path free of a reset per packet.
        if far and ns == s.behind_next and expected == s.behind_at:
            s.behind_run += 1
        else:
            s.behind_run = 1 if far else 0
        s.behind_next = (ns + 1) & MASK
        s.behind_at = expected
        if s.behind_run >= self._resync_after:
            # Several consecutive packets far behind: the peer restarted its numbering.
            # Deliver what we hold, then continue from this packet.
            self._release_all(s, now, reasons.SKIP_RESYNC)
            c.resyncs += 1
            s.behind_run = 0
            s.skipped_ranges.clear()
            s.expected = (ns + 1) & MASK
            s.forwarded_in_order += 1
            c.forwarded_in_order += 1
            self._emit(s, data, ns_offset, tag)
            return FORWARDED_IN_ORDER
        if self._take_skipped(s, ns):
            if self._timeout <= 0:
                # No holding: a late packet still goes out, in arrival order.
                s.forwarded_out_of_order += 1
                c.forwarded_out_of_order += 1
                self._emit(s, data, ns_offset, tag)
                return FORWARDED_OUT_OF_ORDER
            s.dropped_late += 1
            c.dropped_late += 1
            return DROPPED_LATE
        s.dropped_duplicate += 1
        c.dropped_duplicate += 1
        return DROPPED_DUPLICATE

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
        c = self.counters
        held = s.held
        record = s.hold_times
        while True:
            item = held.pop(s.expected, None)
            if item is None:
                break
            data, arrival, ns_offset, tag = item
            size = len(data)
            s.held_bytes -= size
            c.held_bytes -= size
            c.held_packets -= 1
            s.released += 1
            c.released += 1
            waited = now - arrival
            c.hold_time.observe(waited)
            if record is not None:
                record.append(waited)
            s.expected = (s.expected + 1) & MASK
            self._emit(s, data, ns_offset, tag)
        self._schedule(s)

    def _skip(self, s: Session, count: int, reason: str) -> None:
        """Give up `count` missing Ns from `expected` on; remember them to spot late arrivals."""
        ranges = s.skipped_ranges
        ranges.append((s.expected, count))
        if len(ranges) > SKIPPED_RANGES_KEPT:
            del ranges[0]
        s.skipped += count
        self.counters.skipped[reason] += count
        s.expected = (s.expected + count) & MASK

    def _skip_to_next_held(self, s: Session, reason: str) -> None:
        expected = s.expected
        self._skip(s, min((ns - expected) & MASK for ns in s.held), reason)

    def _take_skipped(self, s: Session, ns: int) -> bool:
        """Was `ns` given up earlier? Then it is late; forget it so a 2nd copy is a duplicate."""
        ranges = s.skipped_ranges
        for i, (start, count) in enumerate(ranges):
            offset = (ns - start) & MASK
            if offset < count:
                pieces = []
                if offset:
                    pieces.append((start, offset))
                if offset + 1 < count:
                    pieces.append(((ns + 1) & MASK, count - offset - 1))
                ranges[i : i + 1] = pieces
                return True
        return False

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
        deadline = next(iter(s.held.values()))[1] + self._timeout  # dict order: arrival order
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
        """Release every packet whose hold time is up, giving up the gaps in front of it."""
        now = self._clock(now)
        timeout = self._timeout
        while True:
            top = self._live_timer_top()
            if top is None or top[0] > now:
                return
            heapq.heappop(self._timers)
            s = top[2]
            s.timer_id = 0
            while s.held and next(iter(s.held.values()))[1] + timeout <= now:
                self._skip_to_next_held(s, reasons.SKIP_TIMEOUT)
                self._release_run(s, now)
            if s.cut <= now:
                s.cut = INF
                self._release_all(s, now, reasons.SKIP_SOCKET_DROP)
            self._schedule(s)

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
        """Over the global byte cap: close the oldest gap of the session waiting longest."""
        while self.counters.held_bytes > self._max_bytes:
            top = self._live_timer_top()
            if top is None:
                return
            s = top[2]
            self._skip_to_next_held(s, reasons.SKIP_CAP)
            self._release_run(s, now)

    def _clock(self, now: float) -> float:
        """Capture timestamps can step back; held-packet ages must not."""
        if now < self._latest:
            return self._latest
        self._latest = now
        return now

    # --- session lifecycle -------------------------------------------------------------------

    def _new_session(self, flow: Hashable, key: int, ns: int, now: float) -> Session:
        """Create a session, evicting one first when the table is full (max_sessions)."""
        if self._session_count >= self._max_sessions:
            self._evict(now)
        sessions = self._flows.get(flow)
        if sessions is None:
            sessions = self._flows[flow] = {}
        s = sessions[key] = Session(flow, key >> 16, key & MASK, ns, now)
        if self._record:
            s.hold_times = []
        self._index_session(s, key)
        self._session_count += 1
        self.counters.sessions_started += 1
        pending = self._pending_confirmations
        if pending and (flow, key) in pending:
            del pending[(flow, key)]
            s.confirmed = True
            self.counters.sessions_confirmed += 1
        if self._ended:
            self._continue_numbering(s, flow, key, ns, now)
        self._lru_push(s)
        return s

    def _continue_numbering(
        self, s: Session, flow: Hashable, key: int, ns: int, now: float
    ) -> None:
        """Carry a recently ended session's renumbering over when its stream simply goes on.

        Sessions end on a CDN or StopCCN the LNS may yet reject (a spoofed one: its control
        Ns is wrong), on eviction, or when a peer went idle. If data with the same IDs then
        continues from where the old session stopped (Ns within the window ahead of its next
        expected value), the LNS still has that session: restarting the renumbering there would
        show it a jump, which xl2tpd answers by dropping everything until Ns wraps. A real new
        call restarts its Ns at 0 and so starts afresh.
        """
        last = self._ended.pop((flow, key), None)
        if last is None:
            return
        expected, out_ns, ended_at = last
        gap = (ns - expected) & MASK
        if now - ended_at > ENDED_MEMORY or gap >= self._resync_distance:
            return
        s.out_ns = out_ns
        c = self.counters
        c.sessions_continued += 1
        c.skipped[reasons.SKIP_END] += gap  # missing between the two: never reached the LNS

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

    def _lru_push(self, s: Session) -> None:
        heap = self._lru[s.confirmed]
        self._lru_seq += 1
        heapq.heappush(heap, (s.last_active, self._lru_seq, s))
        if len(heap) > 2 * self._session_count + 1024:
            # Entries of ended (or since confirmed) sessions pile up: drop them all at once.
            live = [e for e in heap if e[2].alive and e[2].confirmed == (heap is self._lru[1])]
            heapq.heapify(live)
            heap[:] = live

    def _evict(self, now: float) -> bool:
        """End the least recently active session, unconfirmed ones first; False if none.

        Exact LRU at O(log n) per eviction although the per-packet path only writes
        `last_active`: every live session has an entry stamped no later than its real last
        activity, so a top entry whose stamp is still current is the true minimum; a top entry
        that is out of date is re-pushed with the current value.
        """
        for confirmed, heap in enumerate(self._lru):
            while heap:
                stamp, _, s = heap[0]
                if not s.alive or s.confirmed != bool(confirmed):
                    heapq.heappop(heap)
                    continue
                if s.last_active != stamp:
                    self._lru_seq += 1
                    heapq.heapreplace(heap, (s.last_active, self._lru_seq, s))
                    continue
                heapq.heappop(heap)
                c = self.counters
                c.sessions_evicted += 1
                if s.confirmed:
                    c.sessions_evicted_confirmed += 1
                self._end(s, now, reasons.SKIP_EVICTED)
                return True
        return False

    def _confirm(self, flow: Hashable, key: int) -> None:
        """The control channel established session `key` of `flow`: protect it from eviction."""
        s = self._flows.get(flow, {}).get(key)
        if s is not None:
            if not s.confirmed:
                s.confirmed = True
                self.counters.sessions_confirmed += 1
                self._lru_push(s)
            return
        pending = self._pending_confirmations
        if len(pending) >= MAX_PENDING_CONFIRMATIONS:
            del pending[next(iter(pending))]
        pending[(flow, key)] = None

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
    ) -> Session:
        """Recreate a session saved before a restart (see `state`): the LNS keeps seeing
        contiguous Ns in renumber mode because `out_ns` continues where it stopped."""
        key = ((tunnel_id & MASK) << 16) | (session_id & MASK)
        now = self._clock(now)
        old = self._flows.get(flow, {}).get(key)
        if old is not None:
            self._end(old, now, reasons.SKIP_END)
        s = self._new_session(flow, key, expected & MASK, now)
        s.out_ns = out_ns & MASK
        if confirmed and not s.confirmed:
            s.confirmed = True
            self.counters.sessions_confirmed += 1
            self._lru_push(s)
        return s

    def flush(self, now: float) -> None:
        """Deliver everything held, in order (shutdown). Sessions stay."""
        now = self._clock(now)
        for s in list(self.sessions()):
            self._release_all(s, now, reasons.SKIP_END)

    def end_session(self, flow: Hashable, tunnel_id: int, session_id: int, now: float) -> bool:
        """Flush and forget one session (CDN); a reused session ID then starts afresh."""
        sessions = self._flows.get(flow)
        if sessions is None:
            return False
        s = sessions.get((tunnel_id << 16) | session_id)
        if s is None:
            return False
        self._end(s, self._clock(now), reasons.SKIP_END)
        return True

    def _end(self, s: Session, now: float, reason: str) -> None:
        """Deliver what the session holds (no silent loss), then forget it."""
        self._release_all(s, now, reason)
        sessions = self._flows[s.flow]
        key = (s.tunnel_id << 16) | s.session_id
        del sessions[key]
        self._unindex_session(s, key)
        self._pending_confirmations.pop((s.flow, key), None)
        if s.confirmed or reason != reasons.SKIP_EVICTED:
            # Unconfirmed sessions evicted by a flood of random IDs are not worth remembering.
            ended = self._ended
            if len(ended) >= ENDED_KEPT:
                del ended[next(iter(ended))]
            ended[(s.flow, key)] = (s.expected, s.out_ns, now)
        s.alive = False
        s.timer_id = 0
        self._session_count -= 1
        self.counters.sessions_ended += 1
        if not sessions:
            del self._flows[s.flow]

    def end_tunnel(self, flow: Hashable, tunnel_id: int, now: float) -> int:
        """Flush and forget every session of one tunnel (StopCCN); returns how many ended."""
        ended = self.tunnel_sessions(flow, tunnel_id)
        for s in ended:
            self.end_session(flow, tunnel_id, s.session_id, now)
        for theirs in self._tunnel_map_ours.pop((flow, tunnel_id), ()):
            del self._tunnel_map[(flow, theirs)]
        return len(ended)

    def end_flow(self, flow: Hashable, now: float) -> int:
        """Flush and forget every session of a peer (it went idle or was evicted)."""
        sessions = self._flows.get(flow)
        if sessions is None:
            return 0
        ended = list(sessions.values())
        for s in ended:
            self.end_session(flow, s.tunnel_id, s.session_id, now)
        return len(ended)

    def observe_reverse(self, data: bytes, flow: Hashable, now: float) -> str | None:
        """Read a control message travelling the other way (LNS to LAC) for session lifecycle.

        The far side names our sessions in its AVPs: a CDN carries the Assigned Session ID our
        data uses, in the tunnel whose ID we learned from its SCCRQ/SCCRP; a StopCCN carries the
        Assigned Tunnel ID. Returns the message name, or None when `data` is not control. The
        datagram itself is the caller's to forward; this only updates state.
        """
        if len(data) < 2 or not data[0] & 0x80:
            return None
        control = control_fields(data)
        if isinstance(control, str):
            return control
        if control.assigned_tunnel_id is not None and control.tunnel_id:
            self._remember_tunnel(flow, control.tunnel_id, control.assigned_tunnel_id)
        msg = control.message_type
        if msg in CONFIRMING_REVERSE and control.assigned_session_id:
            key = self._our_key(flow, control.tunnel_id, control.assigned_session_id)
            if key is not None:
                self._confirm(flow, key)
        elif msg == MessageType.CDN and control.assigned_session_id:
            key = self._our_key(flow, control.tunnel_id, control.assigned_session_id)
            if key is not None:
                self.end_session(flow, key >> 16, key & MASK, now)
        elif msg == MessageType.StopCCN and control.assigned_tunnel_id is not None:
            self.end_tunnel(flow, control.assigned_tunnel_id, now)
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

    # --- inspection --------------------------------------------------------------------------

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
    def session_count(self) -> int:
        return self._session_count
