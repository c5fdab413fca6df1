"""`l2tpreorder replay pcap FILE`: what l2tpreorder would have done with a capture's traffic.

A thin adapter around the same sans-IO `ReorderEngine` the daemon runs, driven in virtual time by
the capture's timestamps: before each datagram every engine deadline up to its timestamp fires at
its own time, so release times in `-o OUT.pcap` are the ones the daemon would have produced.

Only traffic towards the LNS goes through the engine, as in the daemon; the other direction is
passed through (its control messages still end sessions via `observe_reverse`). Which end is the
LNS is decided per conversation on its first datagram, from (in this order) `--lns`, the control
message type (SCCRQ/ICRQ/ICCN come from the LAC, SCCRP/ICRP/OCRQ from the LNS), the UDP ports
(the end on the L2TP port when only one is), an address already known as LNS or LAC in another
conversation, and finally the first packet's destination (reported as a guess).

Memory does not grow with the capture: per-packet state lives only in the engine's bounded hold
queues; hold times are folded into fixed-size log histograms per session.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import IO, Any

from l2tpreorder import capture
from l2tpreorder.capture import CaptureReader, UdpDatagram
from l2tpreorder.engine import EngineConfig, ReorderEngine, Sequencing, Session
from l2tpreorder.fastpath import parse_header
from l2tpreorder.lns_models import DeliveryStats, KernelSession, ModelRunner, Xl2tpdSession
from l2tpreorder.pcapwriter import PcapWriter
from l2tpreorder.reasons import Outcome
from l2tpreorder.wire import MessageType, parse_control

Endpoint = tuple[str, int]

LAC_SENDS = {
    MessageType.SCCRQ,
    MessageType.SCCCN,
    MessageType.ICRQ,
    MessageType.ICCN,
    MessageType.OCRP,
    MessageType.OCCN,
    MessageType.WEN,
}
LNS_SENDS = {MessageType.SCCRP, MessageType.ICRP, MessageType.OCRQ, MessageType.SLI}


def format_endpoint(ep: Endpoint) -> str:
    return f"[{ep[0]}]:{ep[1]}" if ":" in ep[0] else f"{ep[0]}:{ep[1]}"


def parse_host_port(value: str) -> tuple[str, int | None]:
    """'192.0.2.1', '192.0.2.1:1701', '2001:db8::1', '[2001:db8::1]:1701' -> (host, port)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port)
    return value, None


# --- direction ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conversation:
    """One LAC-LNS UDP conversation; the engine's `flow` for it."""

    lac: Endpoint
    lns: Endpoint
    method: str  # how the direction was decided


class DirectionFinder:
    def __init__(self, lns_address: str | None = None, ports: tuple[int, ...] = (1701,)) -> None:
        self.lns_address = lns_address
        self.ports = frozenset(ports)
        self._conversations: dict[tuple[Endpoint, Endpoint], Conversation] = {}
        self._known_lns: set[str] = set()
        self._known_lac: set[str] = set()
        self.conflicts = 0  # later handshake messages that contradict a guessed direction

    @property
    def conversations(self) -> list[Conversation]:
        return list(self._conversations.values())

    def find(
        self, src: Endpoint, dst: Endpoint, message_type: int | None
    ) -> tuple[Conversation, bool]:
        """The conversation and whether this datagram travels towards the LNS."""
        key = (src, dst) if src <= dst else (dst, src)
        conv = self._conversations.get(key)
        if conv is None:
            conv = self._decide(src, dst, message_type)
            self._conversations[key] = conv
            self._known_lns.add(conv.lns[0])
            self._known_lac.add(conv.lac[0])
        elif message_type is not None and conv.method.startswith("guess"):
            said_lac = message_type in LAC_SENDS
            said_lns = message_type in LNS_SENDS
            if (said_lac and src != conv.lac) or (said_lns and src != conv.lns):
                self.conflicts += 1
        return conv, dst == conv.lns

    def _decide(self, src: Endpoint, dst: Endpoint, message_type: int | None) -> Conversation:
        if self.lns_address is not None:
            host, port = parse_host_port(self.lns_address)
            for lns, lac in ((dst, src), (src, dst)):
                if lns[0] == host and (port is None or port == lns[1]):
                    return Conversation(lac, lns, "--lns")
        if message_type in LAC_SENDS:
            return Conversation(src, dst, f"handshake ({MessageType(message_type).name})")
        if message_type in LNS_SENDS:
            return Conversation(dst, src, f"handshake ({MessageType(message_type).name})")
        src_on_port, dst_on_port = src[1] in self.ports, dst[1] in self.ports
        if dst_on_port and not src_on_port:
            return Conversation(src, dst, "ports")
        if src_on_port and not dst_on_port:
            return Conversation(dst, src, "ports")
        if dst[0] in self._known_lns or src[0] in self._known_lac:
            return Conversation(src, dst, "known address")
        if src[0] in self._known_lns or dst[0] in self._known_lac:
            return Conversation(dst, src, "known address")
        return Conversation(src, dst, "guess (first packet's destination; use --lns)")


# --- per-session report -------------------------------------------------------------------------


class LogHistogram:
    """Fixed-size histogram of positive durations (1 us .. ~100 s, 2 % wide buckets)."""

    __slots__ = ("count", "counts", "max")
    BASE = 1e-6
    RATIO = 1.02
    BUCKETS = int(math.log(1e8) / math.log(1.02)) + 2

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.max = 0.0

    def add(self, value: float) -> None:
        i = (
            0
            if value <= self.BASE
            else min(self.BUCKETS, int(math.log(value / self.BASE) / math.log(self.RATIO)) + 1)
        )
        self.counts[i] = self.counts.get(i, 0) + 1
        self.count += 1
        if value > self.max:
            self.max = value

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (at most 2 % high), capped at max."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(self.max, self.BASE * self.RATIO**i)
        return self.max


class SessionReport:
    """Everything the report says about one session towards the LNS."""

    __slots__ = (
        "compare",
        "conversation",
        "data",
        "dropped_duplicate",
        "dropped_late",
        "engine_sessions",
        "first_ts",
        "forwarded_in_order",
        "forwarded_out_of_order",
        "hold",
        "last_ns",
        "last_order",
        "last_ts",
        "max_displacement",
        "max_order",
        "released",
        "reordered",
        "sequenced",
        "session_id",
        "skipped",
        "tunnel_id",
    )

    def __init__(self, conversation: Conversation, tunnel_id: int, session_id: int) -> None:
        self.conversation = conversation
        self.tunnel_id = tunnel_id
        self.session_id = session_id
        self.data = 0
        self.sequenced = 0
        self.reordered = 0  # arrived after a packet with a higher Ns (seen in the capture)
        self.last_ns: int | None = None
        self.last_order = -1
        self.max_order = -1
        self.first_ts = 0.0
        self.last_ts = 0.0
        self.hold = LogHistogram()
        self.engine_sessions: list[Session] = []
        self.forwarded_in_order = 0
        self.forwarded_out_of_order = 0
        self.released = 0
        self.dropped_duplicate = 0
        self.dropped_late = 0
        self.skipped = 0
        self.max_displacement = 0
        self.compare: dict[str, ModelRunner | DeliveryStats] = {}

    def order_of(self, ns: int) -> int:
        """The sender's position of this Ns: unwrapped relative to the previous packet."""
        if self.last_ns is None:
            order = 0
        else:
            delta = (ns - self.last_ns) & 0xFFFF
            order = self.last_order + (delta - 0x10000 if delta >= 0x8000 else delta)
        self.last_ns, self.last_order = ns, order
        if order < self.max_order:
            self.reordered += 1
        else:
            self.max_order = order
        return order

    def engine_session(self, engine: ReorderEngine) -> Session | None:
        flow = self.conversation
        s = engine.session(flow, self.tunnel_id, self.session_id)
        if s is not None and (not self.engine_sessions or self.engine_sessions[-1] is not s):
            self.engine_sessions.append(s)
        return s

    def drain_hold_times(self) -> None:
        for s in self.engine_sessions:
            if s.hold_times:
                for waited in s.hold_times:
                    self.hold.add(waited)
                s.hold_times.clear()

    def finish(self) -> None:
        self.drain_hold_times()
        for s in self.engine_sessions:
            self.forwarded_in_order += s.forwarded_in_order
            self.forwarded_out_of_order += s.forwarded_out_of_order
            self.released += s.released
            self.dropped_duplicate += s.dropped_duplicate
            self.dropped_late += s.dropped_late
            self.skipped += s.skipped
            self.max_displacement = max(self.max_displacement, s.max_displacement)
        self.engine_sessions = []

    def as_dict(self) -> dict[str, Any]:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 3)

        d: dict[str, Any] = {
            "tunnel_id": self.tunnel_id,
            "session_id": self.session_id,
            "peer": format_endpoint(self.conversation.lac),
            "lns": format_endpoint(self.conversation.lns),
            "packets": self.data,
            "sequenced": self.sequenced,
            "in_order": self.forwarded_in_order,
            "reordered": self.reordered,
            "released_after_hold": self.released,
            "max_displacement": self.max_displacement,
            "hold_ms": {
                "count": self.hold.count,
                "p50": ms(self.hold.quantile(0.5)),
                "p99": ms(self.hold.quantile(0.99)),
                "max": ms(self.hold.max) if self.hold.count else None,
            },
            "skipped_ns": self.skipped,
            "late": self.dropped_late,
            "duplicate": self.dropped_duplicate,
            "forwarded_out_of_order": self.forwarded_out_of_order,
        }
        if self.compare:
            d["compare"] = {
                name: (r.stats if isinstance(r, ModelRunner) else r).as_dict()
                for name, r in self.compare.items()
            }
        return d


# --- the replay ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayOptions:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(record_hold_times=True))
    ports: tuple[int, ...] = (capture.L2TP_PORT,)
    lns_address: str | None = None
    compare: bool = False
    kernel_reorder_timeout: float | None = None  # also model pppol2tp_reorderto = N seconds
    output: str | None = None
    progress: IO[str] | None = None


@dataclass(slots=True)
class ReplayResult:
    path: str
    capture: capture.CaptureStats
    l2tp_packets: int = 0
    control: int = 0
    data: int = 0
    data_with_ns: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    tunnels: int = 0
    sessions_seen: int = 0
    sessions: list[SessionReport] = field(default_factory=list)
    conversations: list[Conversation] = field(default_factory=list)
    direction_conflicts: int = 0
    time_went_back: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    forwarded: int = 0
    written: int = 0
    engine: EngineConfig = field(default_factory=EngineConfig)
    compared: list[str] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)


COMPARE_L2TPREORDER = "l2tpreorder"
COMPARE_KERNEL0 = "kernel reorderto=0"
COMPARE_XL2TPD = "xl2tpd"


class Replay:
    def __init__(self, path: str, options: ReplayOptions) -> None:
        self.path = path
        self.options = options
        config = options.engine
        if not config.record_hold_times:
            config = replace(config, record_hold_times=True)
        self.engine = ReorderEngine(config)
        self.reader = CaptureReader(path, options.ports)
        self.directions = DirectionFinder(options.lns_address, options.ports)
        self.result = ReplayResult(path, self.reader.stats, engine=options.engine)
        self.reports: dict[tuple[Conversation, int, int], SessionReport] = {}
        # (direction, conversation) -> tunnel ids / (tunnel, session) pairs, for the summary
        self._tunnel_ids: dict[tuple[bool, Conversation], set[int]] = {}
        self._session_ids: dict[tuple[bool, Conversation], set[tuple[int, int]]] = {}
        self.writer = PcapWriter.create(options.output) if options.output else None
        self.compare_names = [COMPARE_L2TPREORDER, COMPARE_KERNEL0]
        if options.kernel_reorder_timeout:
            self.compare_names.append(self._kernel_n_name())
        self.compare_names.append(COMPARE_XL2TPD)
        self._now = float("-inf")
        self._strips = config.sequencing is Sequencing.STRIP

    def _kernel_n_name(self) -> str:
        n = self.options.kernel_reorder_timeout or 0.0
        return f"kernel reorderto={n * 1000:g}ms"

    # virtual time --------------------------------------------------------------------------

    def _advance(self, ts: float) -> float:
        if ts < self._now:
            self.result.time_went_back += 1
            ts = self._now
        engine = self.engine
        deadline = engine.next_deadline()
        while deadline is not None and deadline <= ts:
            engine.expire(deadline)
            self._drain(deadline)
            deadline = engine.next_deadline()
        self._now = ts
        return ts

    def _drain(self, now: float) -> None:
        engine = self.engine
        if not engine.out:
            return
        compare = self.options.compare
        for flow, data in engine.out:
            self.result.forwarded += 1
            assert isinstance(flow, Conversation)
            if self.writer is not None:
                self._write(now, flow.lac, flow.lns, data)
            if compare and not data[0] & 0x80:
                header = parse_header(data)
                if not isinstance(header, str) and (header.ns is not None or self._strips):
                    rep = self.reports.get((flow, header.tunnel_id, header.session_id))
                    if rep is not None and rep.compare:
                        stats = rep.compare[COMPARE_L2TPREORDER]
                        assert isinstance(stats, DeliveryStats)
                        # the engine delivers out of order only with timeout 0, and counts it
                        stats.on_delivered(None, now)
        engine.out.clear()

    def _write(self, ts: float, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write_udp(ts, src[0], src[1], dst[0], dst[1], data)
        self.result.written += 1

    # the loop ------------------------------------------------------------------------------

    def run(self) -> ReplayResult:
        result = self.result
        progress = Progress(self.reader, self.options.progress)
        try:
            for n, item in enumerate(self.reader):
                if n & 0x3FF == 0:
                    progress.update()
                if isinstance(item, UdpDatagram):
                    self._datagram(item)
            end = self._now if self._now != float("-inf") else 0.0
            self._advance_to_end(end)
        finally:
            progress.done()
            if self.writer is not None:
                self.writer.close()
        self._finish()
        return result

    def _advance_to_end(self, end: float) -> None:
        """After the last packet the daemon would still release what it holds, at its deadline."""
        engine = self.engine
        deadline = engine.next_deadline()
        while deadline is not None:
            engine.expire(deadline)
            self._drain(deadline)
            self._now = max(self._now, deadline)
            deadline = engine.next_deadline()
        engine.flush(self._now if self._now != float("-inf") else end)
        self._drain(self._now)

    def _datagram(self, d: UdpDatagram) -> None:
        result = self.result
        now = self._advance(d.ts)
        if result.first_ts is None:
            result.first_ts = d.ts
        result.last_ts = d.ts
        payload = d.payload
        header = parse_header(payload)
        src, dst = (d.src, d.sport), (d.dst, d.dport)
        if isinstance(header, str):
            result.malformed[header] = result.malformed.get(header, 0) + 1
            conv, towards_lns = self.directions.find(src, dst, None)
            if towards_lns:
                self.engine.receive(payload, conv, now)  # counted by the engine as malformed
                self._drain(now)
            elif self.writer is not None:
                self._write(now, src, dst, payload)
            return
        result.l2tp_packets += 1
        message_type: int | None = None
        if header.is_control:
            result.control += 1
            control = parse_control(payload)
            if not isinstance(control, str):
                message_type = control.message_type
        else:
            result.data += 1
            if header.ns is not None:
                result.data_with_ns += 1
        conv, towards_lns = self.directions.find(src, dst, message_type)
        if header.tunnel_id:
            self._tunnel_ids.setdefault((towards_lns, conv), set()).add(header.tunnel_id)
            if header.session_id:
                self._session_ids.setdefault((towards_lns, conv), set()).add(
                    (header.tunnel_id, header.session_id)
                )
        if not towards_lns:
            if header.is_control:
                self.engine.observe_reverse(payload, conv, now)
                self._drain(now)
            if self.writer is not None:
                self._write(now, src, dst, payload)
            return
        rep: SessionReport | None = None
        order = 0
        if not header.is_control:
            key = (conv, header.tunnel_id, header.session_id)
            rep = self.reports.get(key)
            if rep is None:
                rep = self.reports[key] = SessionReport(conv, header.tunnel_id, header.session_id)
                rep.first_ts = now
            rep.data += 1
            rep.last_ts = now
            if header.ns is not None:
                rep.sequenced += 1
                order = rep.order_of(header.ns)
                if self.options.compare:
                    self._compare_models(rep, header.ns, order, now)
        outcome = self.engine.receive(payload, conv, now)
        if rep is not None and header.ns is not None:
            rep.engine_session(self.engine)
            if rep.sequenced & 0xFF == 0:
                rep.drain_hold_times()
            if self.options.compare:
                stats = rep.compare[COMPARE_L2TPREORDER]
                assert isinstance(stats, DeliveryStats)
                stats.on_arrival(now)
                if outcome in (Outcome.DROPPED_DUPLICATE, Outcome.DROPPED_LATE):
                    stats.on_dropped(Outcome(outcome).name.lower(), now)
                if outcome == Outcome.FORWARDED_OUT_OF_ORDER:
                    stats.out_of_order += 1
                if outcome not in (Outcome.FORWARDED_IN_ORDER, Outcome.FORWARDED_OUT_OF_ORDER):
                    self._drain(now)  # releases that this arrival triggered come first
                    stats.on_waiting(now)
                    return
        self._drain(now)

    def _compare_models(self, rep: SessionReport, ns: int, order: int, now: float) -> None:
        if not rep.compare:
            rep.compare[COMPARE_L2TPREORDER] = DeliveryStats()
            # Models start in step with the session's first packet in the capture: it may
            # begin mid-session, where the real LNS had been following all along.
            k0: KernelSession[int] = KernelSession(0.0, start_ns=ns)
            rep.compare[COMPARE_KERNEL0] = ModelRunner(k0)
            if self.options.kernel_reorder_timeout:
                kn: KernelSession[int] = KernelSession(
                    self.options.kernel_reorder_timeout, start_ns=ns
                )
                rep.compare[self._kernel_n_name()] = ModelRunner(kn)
            x: Xl2tpdSession[int] = Xl2tpdSession(None)
            rep.compare[COMPARE_XL2TPD] = ModelRunner(x)
        for runner in rep.compare.values():
            if isinstance(runner, ModelRunner):
                runner.receive(ns, order, now)

    def _finish(self) -> None:
        result = self.result
        last = self._now if self._now != float("-inf") else 0.0
        for rep in self.reports.values():
            rep.finish()
            for runner in rep.compare.values():
                if isinstance(runner, ModelRunner):
                    runner.close(max(last, rep.last_ts))
                else:
                    runner.finish(max(last, rep.last_ts))
        result.sessions = sorted(
            self.reports.values(),
            key=lambda r: (r.first_ts, r.conversation.lac, r.tunnel_id, r.session_id),
        )
        result.conversations = self.directions.conversations
        result.direction_conflicts = self.directions.conflicts
        convs = {c for _, c in self._tunnel_ids} | {c for _, c in self._session_ids}
        result.tunnels = sum(
            max(len(self._tunnel_ids.get((d, c), ())) for d in (True, False)) for c in convs
        )
        result.sessions_seen = sum(
            max(len(self._session_ids.get((d, c), ())) for d in (True, False)) for c in convs
        )
        result.compared = self.compare_names if self.options.compare else []
        c = self.engine.counters
        result.counters = {
            "received": c.received,
            "forwarded_control": c.forwarded_control,
            "forwarded_unsequenced": c.forwarded_unsequenced,
            "forwarded_in_order": c.forwarded_in_order,
            "forwarded_out_of_order": c.forwarded_out_of_order,
            "released": c.released,
            "dropped_duplicate": c.dropped_duplicate,
            "dropped_late": c.dropped_late,
            "malformed": {k: v for k, v in c.malformed.items() if v},
            "skipped": {k: v for k, v in c.skipped.items() if v},
            "resyncs": c.resyncs,
        }


def replay(path: str, options: ReplayOptions | None = None) -> ReplayResult:
    return Replay(path, options or ReplayOptions()).run()


# --- progress -----------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, only on a terminal and only for a long capture."""

    MIN_BYTES = 32 * 1024 * 1024
    MIN_SECONDS = 2.0

    def __init__(self, reader: CaptureReader, stream: IO[str] | None) -> None:
        self.reader = reader
        self.stream = stream
        self.enabled = stream is not None and reader.size >= self.MIN_BYTES
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = False

    def update(self) -> None:
        if not self.enabled or self.stream is None:
            return
        t = time.monotonic()
        if t - self.started < self.MIN_SECONDS or t - self.last < 0.25:
            return
        self.last = t
        done = self.reader.position / max(1, self.reader.size)
        bar = "#" * int(done * 30)
        self.stream.write(f"\r[{bar:<30}] {done * 100:5.1f}%  {self.reader.stats.frames:,} frames")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown and self.stream is not None:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


# --- output -------------------------------------------------------------------------------------


def result_as_dict(r: ReplayResult) -> dict[str, Any]:
    st = r.capture
    return {
        "capture": {
            "file": r.path,
            "format": st.file_format,
            "frames": st.frames,
            "udp_datagrams": st.datagrams,
            "reassembled_from_fragments": st.reassembled,
            "unreadable": dict(sorted(st.unreadable.items())),
            "l2tpv2_packets": r.l2tp_packets,
            "control": r.control,
            "data": r.data,
            "data_with_ns": r.data_with_ns,
            "malformed": dict(sorted(r.malformed.items())),
            "tunnels": r.tunnels,
            "sessions": r.sessions_seen,
            "duration_s": round((r.last_ts or 0) - (r.first_ts or 0), 6),
            "timestamps_went_back": r.time_went_back,
        },
        "conversations": [
            {"lac": format_endpoint(c.lac), "lns": format_endpoint(c.lns), "direction": c.method}
            for c in r.conversations
        ],
        "direction_conflicts": r.direction_conflicts,
        "engine": {
            "reorder_timeout_ms": r.engine.reorder_timeout * 1000,
            "sequencing": str(r.engine.sequencing),
            "max_held_per_session": r.engine.max_held_per_session,
        },
        "totals": r.counters,
        "forwarded": r.forwarded,
        "written": r.written,
        "sessions": [s.as_dict() for s in r.sessions],
        "compared": r.compared,
    }


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.3g}"


def format_report(r: ReplayResult) -> str:
    st = r.capture
    lines = [
        f"{r.path}: {st.file_format}, {st.frames:,} frames, "
        f"{(r.last_ts or 0) - (r.first_ts or 0):.3f} s",
        f"  L2TPv2: {r.l2tp_packets:,} packets ({r.control:,} control, {r.data:,} data, "
        f"{r.data_with_ns:,} with Ns), {r.tunnels} tunnels, {r.sessions_seen} sessions",
    ]
    if st.reassembled:
        lines.append(f"  {st.reassembled:,} datagrams reassembled from outer IP fragments")
    for reason, n in sorted(st.unreadable.items(), key=lambda kv: -kv[1]):
        text = capture.REASON_TEXT.get(reason, reason)
        lines.append(f"  not read: {n:,} frames {text}")
    if st.unreadable.get(capture.ENCRYPTED):
        lines.append(
            "    -> this is L2TP over IPsec: capture inside the tunnel (after decryption, e.g. on "
            "the LNS's L2TP port 1701) to see the L2TP traffic."
        )
    for reason, n in sorted(r.malformed.items()):
        lines.append(f"  malformed L2TP: {n:,} ({reason})")
    if r.time_went_back:
        lines.append(f"  {r.time_went_back:,} timestamps went backwards (replayed as 'now')")
    for c in r.conversations:
        lines.append(
            f"  LAC {format_endpoint(c.lac)} -> LNS {format_endpoint(c.lns)}  [{c.method}]"
        )
    if r.direction_conflicts:
        lines.append(
            f"  warning: {r.direction_conflicts} handshake messages contradict a guessed "
            "direction: pass --lns ADDR"
        )
    e = r.engine
    lines.append(
        f"engine: reorder timeout {e.reorder_timeout * 1000:g} ms, sequencing {e.sequencing}, "
        f"max held {e.max_held_per_session}/session"
    )
    lines.append("")
    head = (
        f"{'LAC peer':<22} {'tunnel':>6} {'session':>7} {'packets':>8} {'with Ns':>8} "
        f"{'in order':>8} {'reordered':>9} {'max disp':>8} {'hold ms p50/p99/max':>20} "
        f"{'skipped':>7} {'late':>5} {'dup':>5}"
    )
    lines.append(head)
    lines.append("-" * len(head))
    for s in r.sessions:
        hold = (
            "-"
            if not s.hold.count
            else (
                f"{_fmt_ms(s.hold.quantile(0.5))}/{_fmt_ms(s.hold.quantile(0.99))}/"
                f"{_fmt_ms(s.hold.max)}"
            )
        )
        if s.sequenced:
            seq_cols = (
                f"{s.forwarded_in_order:>8,} {s.reordered:>9,} {s.max_displacement:>8} "
                f"{hold:>20} {s.skipped:>7,} {s.dropped_late:>5,} {s.dropped_duplicate:>5,}"
            )
        else:  # nothing to reorder: the engine passes unsequenced data straight through
            seq_cols = f"{'-':>8} {'-':>9} {'-':>8} {'-':>20} {'-':>7} {'-':>5} {'-':>5}"
        lines.append(
            f"{format_endpoint(s.conversation.lac):<22} {s.tunnel_id:>6} {s.session_id:>7} "
            f"{s.data:>8,} {s.sequenced:>8,} {seq_cols}"
        )
    if not r.sessions:
        lines.append("(no data messages towards an LNS)")
    malformed = sum(r.malformed.values())
    lines.append(f"malformed (not attributable to a session): {malformed:,}")
    if r.sessions and not any(s.sequenced for s in r.sessions):
        lines.append(
            "note: no data message carries Ns, so there is nothing to reorder; "
            "`l2tpreorder impair --add-seq` makes a sequenced copy to experiment with."
        )
    if r.compared:
        lines.append("")
        lines.append(format_compare(r))
    return "\n".join(lines)


def format_compare(r: ReplayResult) -> str:
    names = r.compared
    width = max(14, *(len(n) + 1 for n in names))
    lines = ["what the LNS would get (sequenced data only):"]
    head = f"{'session':<28} {'':<18}" + "".join(f"{n:>{width}}" for n in names)
    lines.append(head)
    lines.append("-" * len(head))
    totals: dict[str, DeliveryStats] = {n: DeliveryStats() for n in names}
    rows: list[tuple[str, Callable[[DeliveryStats], str]]] = [
        ("delivered", lambda d: f"{d.delivered:,}"),
        ("dropped", lambda d: f"{d.dropped:,}"),
        ("out of order", lambda d: f"{d.out_of_order:,}"),
        ("stalled total s", lambda d: f"{d.stalled_total:.3f}"),
        ("longest stall s", lambda d: f"{d.stalled_max:.3f}"),
    ]
    for s in r.sessions:
        if not s.compare:
            continue
        label = f"{format_endpoint(s.conversation.lac)} {s.tunnel_id}/{s.session_id}"
        stats = {n: _stats(s.compare[n]) for n in names}
        for n in names:
            t, d = totals[n], stats[n]
            t.delivered += d.delivered
            t.dropped += d.dropped
            t.out_of_order += d.out_of_order
            t.stalled_total += d.stalled_total
            t.stalled_max = max(t.stalled_max, d.stalled_max)
        for i, (title, fmt) in enumerate(rows):
            first = label if i == 0 else ""
            lines.append(
                f"{first:<28} {title:<18}" + "".join(f"{fmt(stats[n]):>{width}}" for n in names)
            )
    if any(s.compare for s in r.sessions):
        for i, (title, fmt) in enumerate(rows):
            lines.append(
                f"{'all sessions' if i == 0 else '':<28} {title:<18}"
                + "".join(f"{fmt(totals[n]):>{width}}" for n in names)
            )
    else:
        lines.append("(no data message carries Ns: every receiver delivers everything)")
    return "\n".join(lines)


def _stats(x: ModelRunner | DeliveryStats) -> DeliveryStats:
    return x.stats if isinstance(x, ModelRunner) else x


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    sub = parser.add_subparsers(dest="replay_command", metavar="SOURCE", required=True)
    p = sub.add_parser(
        "pcap",
        help="replay a pcap/pcapng capture through the engine (virtual time)",
        description=(
            "Replay the L2TP traffic of a capture through l2tpreorder's engine in virtual time "
            "and report per session what it would have done; --compare shows the Linux kernel's "
            "and xl2tpd's data paths side by side."
        ),
    )
    p.add_argument("file", help="capture file (pcap or pcapng, any common link layer)")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT.pcap",
        help="write what the engine forwarded, in release order and time",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--compare",
        action="store_true",
        help="also run the traffic through models of Linux l2tp_core and xl2tpd",
    )
    p.add_argument(
        "--kernel-reorder-timeout",
        type=float,
        metavar="MS",
        help="with --compare: also model the kernel with pppol2tp_reorderto = MS",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="the daemon's config file (engine settings); flags below override it",
    )
    p.add_argument("--timeout", type=float, metavar="MS", help="reorder timeout in milliseconds")
    p.add_argument("--sequencing", choices=[m.value for m in Sequencing])
    p.add_argument("--max-held", type=int, metavar="N", help="max held packets per session")
    p.add_argument(
        "--port",
        type=int,
        action="append",
        metavar="PORT",
        help="UDP port carrying L2TP (repeatable; default 1701)",
    )
    p.add_argument(
        "--lns",
        metavar="ADDR[:PORT]",
        help="the LNS address, when the capture cannot tell the direction",
    )
    p.add_argument(
        "--live",
        metavar="HOST:PORT",
        help="send the capture's LAC->LNS payloads to a running daemon instead",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="N",
        help="with --live: N times the original pace (0 = as fast as possible)",
    )


def engine_config_from_args(args: Any) -> EngineConfig:
    config = EngineConfig()
    if args.config:
        # The daemon's loader (l2tpreorder.config) validates the file and names bad keys.
        loader = importlib.import_module("l2tpreorder.config")
        config = loader.load_config(args.config).engine
    overrides: dict[str, Any] = {"record_hold_times": True}
    if args.timeout is not None:
        overrides["reorder_timeout"] = args.timeout / 1000.0
    if args.sequencing is not None:
        overrides["sequencing"] = Sequencing(args.sequencing)
    if args.max_held is not None:
        overrides["max_held_per_session"] = args.max_held
    return replace(config, **overrides)


def main(args: Any) -> int:
    if args.replay_command != "pcap":  # pragma: no cover - argparse enforces the choice
        return 2
    try:
        engine = engine_config_from_args(args)
    except (ValueError, OSError) as e:
        print(f"l2tpreorder replay: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the config loader's ConfigError names key and value
        print(f"l2tpreorder replay: {e}", file=sys.stderr)
        return 2
    ports = tuple(args.port) if args.port else (capture.L2TP_PORT,)
    if args.live:
        from l2tpreorder.live import send_live

        return send_live(args.file, args.live, args.speed, ports, args.lns)
    options = ReplayOptions(
        engine=engine,
        ports=ports,
        lns_address=args.lns,
        compare=args.compare,
        kernel_reorder_timeout=(
            args.kernel_reorder_timeout / 1000.0 if args.kernel_reorder_timeout else None
        ),
        output=args.output,
        progress=sys.stderr if sys.stderr.isatty() else None,
    )
    try:
        result = replay(args.file, options)
    except (capture.CaptureFormatError, OSError) as e:
        print(f"l2tpreorder replay: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result_as_dict(result), indent=2))
    else:
        print(format_report(result))
    return 0
