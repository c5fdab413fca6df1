"""What `replay pcap` reports: per-session accumulators, the result, and its table/JSON forms.

Memory does not grow with the capture: hold times are folded into fixed-size log histograms per
session, and the engine's per-session counters are read once at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from l2tpreorder.config import format_address
from l2tpreorder.core import counters
from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.core.views import DirectionView, Session
from l2tpreorder.tools import capture
from l2tpreorder.tools.direction import Conversation
from l2tpreorder.tools.lns_models import DeliveryStats, ModelRunner

# Names of the receivers `--compare` puts side by side (column titles and JSON keys).
COMPARE_L2TPREORDER = "l2tpreorder"
COMPARE_KERNEL0 = "kernel reorderto=0"
COMPARE_XL2TPD = "xl2tpd"


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
        "dropped_far_ahead",
        "dropped_late",
        "dropped_stale",
        "engine_sessions",
        "first_ts",
        "forwarded_in_order",
        "forwarded_late",
        "forwarded_out_of_order",
        "hold",
        "last_ns",
        "last_order",
        "last_ts",
        "learned_timeout",
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
        # Arrived after a packet with a higher Ns (seen in the capture, before the engine). Not
        # "reordered": that word means the engine's `released` everywhere (docs/reordered.md).
        self.reordered = 0
        self.last_ns: int | None = None
        self.last_order = -1
        self.max_order = -1
        self.first_ts = 0.0
        self.last_ts = 0.0
        self.hold = LogHistogram()
        self.engine_sessions: list[Session] = []
        self.forwarded_in_order = 0
        self.forwarded_out_of_order = 0
        self.forwarded_late = 0  # its Ns given up, then delivered with the next Ns (reorder.late)
        self.released = 0
        self.dropped_duplicate = 0
        self.dropped_late = 0
        self.dropped_stale = 0
        self.dropped_far_ahead = 0
        self.skipped = 0
        self.max_displacement = 0
        self.learned_timeout: float | None = None  # adaptive mode: the timeout at the end
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

    def track_engine_session(self, view: DirectionView) -> None:
        """Remember the engine's current Session object (it makes a new one when a session
        ends and its IDs come back), so `finish` can add up all of them."""
        s = view.session(self.conversation, self.tunnel_id, self.session_id)
        if s is not None and (not self.engine_sessions or self.engine_sessions[-1] is not s):
            self.engine_sessions.append(s)

    def finish(self) -> None:
        for s in self.engine_sessions:  # the counters table's per-session `total` rows
            for name in counters.SESSION_TOTALS:
                setattr(self, name, getattr(self, name) + getattr(s, name))
            self.max_displacement = max(self.max_displacement, s.max_displacement)
        if self.engine_sessions and self.engine_sessions[-1].timeout > 0:
            self.learned_timeout = self.engine_sessions[-1].timeout  # 0 = fixed timeout
        self.engine_sessions = []

    def as_dict(self) -> dict[str, Any]:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 3)

        d: dict[str, Any] = {
            "tunnel_id": self.tunnel_id,
            "session_id": self.session_id,
            "peer": format_address(self.conversation.lac),
            "lns": format_address(self.conversation.lns),
            "packets": self.data,
            "sequenced": self.sequenced,
            "in_order": self.forwarded_in_order,
            "reordered": self.released,  # held, then released in order (docs/reordered.md)
            "arrived_after_higher_ns": self.reordered,
            "max_displacement": self.max_displacement,
            "hold_ms": {
                "count": self.hold.count,
                "p50": ms(self.hold.quantile(0.5)),
                "p99": ms(self.hold.quantile(0.99)),
                "max": ms(self.hold.max) if self.hold.count else None,
            },
            "learned_timeout_ms": ms(self.learned_timeout),
            "skipped_ns": self.skipped,
            "late": self.dropped_late,  # dropped: late packets delivered are late_delivered
            "late_delivered": self.forwarded_late,
            "duplicate": self.dropped_duplicate,
            "stale": self.dropped_stale,
            "far_ahead": self.dropped_far_ahead,
            "forwarded_out_of_order": self.forwarded_out_of_order,
        }
        if self.compare:
            d["compare"] = {
                name: (r.stats if isinstance(r, ModelRunner) else r).as_dict()
                for name, r in self.compare.items()
            }
        return d


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
            "file_error": st.file_error,
            "l2tpv2_packets": r.l2tp_packets,
            "control": r.control,
            "data": r.data,
            "data_with_ns": r.data_with_ns,
            "malformed": dict(sorted(r.malformed.items())),
            "tunnels": r.tunnels,
            "sessions": r.sessions_seen,
            "duration_s": (
                round(r.last_ts - r.first_ts, 6)
                if r.l2tp_packets >= 2 and r.first_ts is not None and r.last_ts is not None
                else None
            ),
            "timestamps_went_back": r.time_went_back,
        },
        "conversations": [
            {"lac": format_address(c.lac), "lns": format_address(c.lns), "direction": c.method}
            for c in r.conversations
        ],
        "direction_conflicts": r.direction_conflicts,
        "engine": {
            "reorder_timeout_ms": r.engine.reorder_timeout * 1000,
            "sequencing": str(r.engine.sequencing),
            "max_held_per_session": r.engine.max_held_per_session,
            "max_held_bytes": r.engine.max_held_bytes,
            "resync_after": r.engine.resync_after,
            "adaptive": r.engine.adaptive,
            "min_timeout_ms": r.engine.min_timeout * 1000,
        },
        "totals": r.counters,
        "forwarded": r.forwarded,
        "written": r.written,
        "sessions": [s.as_dict() for s in r.sessions],
        "compared": r.compared,
    }


def plural(n: int, noun: str) -> str:
    """`1 frame`, `2 frames`, `1,234 frames`."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.3g}"


def _timeout_col(s: SessionReport, e: EngineConfig) -> str:
    """The session's learnt timeout (adaptive), else the fixed one; ms."""
    t = s.learned_timeout if s.learned_timeout is not None else e.reorder_timeout
    return f"{t * 1000:.3g}"


def _session_rows(r: ReplayResult) -> list[str]:
    """The per-session table: header, rule and one row per session."""
    e = r.engine
    lines: list[str] = []
    head = (
        f"{'LAC peer':<22} {'tunnel':>6} {'session':>7} {'packets':>8} {'with Ns':>8} "
        f"{'in order':>8} {'reordered':>9} {'max disp':>8} {'hold ms p50/p99/max':>20} "
        f"{'skipped':>7} {'late sent':>9} {'late drop':>9} {'dup':>5} {'timeout ms':>10}"
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
                f"{s.forwarded_in_order:>8,} {s.released:>9,} {s.max_displacement:>8} "
                f"{hold:>20} {s.skipped:>7,} {s.forwarded_late:>9,} {s.dropped_late:>9,} "
                f"{s.dropped_duplicate:>5,} "
                f"{_timeout_col(s, e):>10}"
            )
        else:  # nothing to reorder: the engine passes unsequenced data straight through
            dash = "-"
            seq_cols = (
                f"{dash:>8} {dash:>9} {dash:>8} {dash:>20} {dash:>7} {dash:>9} {dash:>9} "
                f"{dash:>5} {dash:>10}"
            )
        lines.append(
            f"{format_address(s.conversation.lac):<22} {s.tunnel_id:>6} {s.session_id:>7} "
            f"{s.data:>8,} {s.sequenced:>8,} {seq_cols}"
        )
    return lines


def format_report(r: ReplayResult) -> str:
    st = r.capture
    # The span of the L2TP datagrams: with fewer than two there is none (not "0.000 s").
    span = (
        f"L2TP over {r.last_ts - r.first_ts:.3f} s"
        if r.l2tp_packets >= 2 and r.first_ts is not None and r.last_ts is not None
        else "no L2TP time span"
    )
    lines = [
        f"{r.path}: {st.file_format}, {plural(st.frames, 'frame')}, {span}",
        f"  L2TPv2: {plural(r.l2tp_packets, 'packet')} ({r.control:,} control, {r.data:,} data, "
        f"{r.data_with_ns:,} with Ns), {plural(r.tunnels, 'tunnel')}, "
        f"{plural(r.sessions_seen, 'session')}",
    ]
    if st.reassembled:
        lines.append(f"  {st.reassembled:,} datagrams reassembled from outer IP fragments")
    lines += capture.describe_unreadable(st)
    for reason, n in sorted(r.malformed.items()):
        lines.append(f"  malformed L2TP: {n:,} ({reason})")
    if r.time_went_back:
        lines.append(f"  {r.time_went_back:,} timestamps went backwards (replayed as 'now')")
    for c in r.conversations:
        lines.append(
            f"  LAC {format_address(c.lac)} -> LNS {format_address(c.lns)}  [{c.method}]"
        )
    if r.direction_conflicts:
        lines.append(
            f"  warning: {r.direction_conflicts} handshake messages contradict a guessed "
            "direction: pass --lns ADDR"
        )
    e = r.engine
    timeout = (
        f"adaptive reorder timeout {min(e.min_timeout, e.reorder_timeout) * 1000:g}.."
        f"{e.reorder_timeout * 1000:g} ms"
        if e.adaptive and e.reorder_timeout > 0
        else f"reorder timeout {e.reorder_timeout * 1000:g} ms"
    )
    lines.append(
        f"engine: {timeout}, sequencing {e.sequencing}, max held {e.max_held_per_session}/session"
    )
    lines.append("")
    lines += _session_rows(r)
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
        ("late, delivered", lambda d: f"{d.late_delivered:,}"),
        ("stalled total s", lambda d: f"{d.stalled_total:.3f}"),
        ("longest stall s", lambda d: f"{d.stalled_max:.3f}"),
    ]
    for s in r.sessions:
        if not s.compare:
            continue
        label = f"{format_address(s.conversation.lac)} {s.tunnel_id}/{s.session_id}"
        stats = {n: _stats(s.compare[n]) for n in names}
        for n in names:
            t, d = totals[n], stats[n]
            t.delivered += d.delivered
            t.dropped += d.dropped
            t.out_of_order += d.out_of_order
            t.late_delivered += d.late_delivered
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
