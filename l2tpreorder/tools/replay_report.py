"""What `replay pcap` reports: per-session accumulators, the result, and its table/JSON forms.

Memory does not grow with the capture: hold times are folded into fixed-size log histograms per
session, and the engine's per-session counters are read once at the end.
"""

from __future__ import annotations

import argparse
import math
import textwrap
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
from l2tpreorder.words import plural

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

    def merge(self, other: LogHistogram) -> None:
        """Add `other`'s samples (the report's all-sessions percentiles)."""
        for i, n in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + n
        self.count += other.count
        self.max = max(self.max, other.max)

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


WIDTH = 100  # the text report fits a 100-column terminal (bar a long capture path)


def fit(lines: list[str]) -> list[str]:
    """Lines longer than WIDTH (sentences from elsewhere) wrapped, continued 2 columns deeper."""
    out: list[str] = []
    for line in lines:
        if len(line) <= WIDTH:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        out += textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_on_hyphens=False)
    return out


def top_count(text: str) -> int:
    """`--top N`'s argparse type: 0 or more."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n}: expected 0 or more")
    return n


def fmt_duration(v: float | None) -> str:
    """A hold time or timeout as a reader takes it in: `412µs` below 1 ms (a LAN's reordering
    is tens of µs, "0.041 ms" hides that), `2.5ms`, `1.2s`; `-` for none. Rounded to three
    digits before the unit is chosen: 999.9996 µs is `1ms`, not `1e+03µs`."""
    if v is None:
        return "-"
    r = float(f"{v:.3g}")
    if r < 1e-3:
        return f"{_digits(r * 1e6)}µs"
    if r < 1.0:
        return f"{_digits(r * 1e3)}ms"
    return f"{_digits(r)}s"


def _digits(x: float) -> str:
    """Three significant digits, never in exponent form (`1e+03`): `1,500` from a thousand up."""
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def _timeout_col(s: SessionReport, e: EngineConfig) -> str:
    """The session's learnt timeout (adaptive), else the fixed one; ms."""
    t = s.learned_timeout if s.learned_timeout is not None else e.reorder_timeout
    return _digits(t * 1000)


def busiest(r: ReplayResult, top: int | None) -> list[SessionReport]:
    """The sessions the tables list: all in capture order, or the `top` busiest (most data
    messages) still in capture order, so `--top` does not reshuffle what one has read."""
    if top is None or top >= len(r.sessions):
        return r.sessions
    keep = set(map(id, sorted(r.sessions, key=lambda s: -s.data)[:top]))
    return [s for s in r.sessions if id(s) in keep]


# The per-session table (fits 100 columns: the LAC peer is a heading, not a column).
_COUNT_HEAD = (
    f"  {'tunnel':>6} {'session':>7} {'packets':>8} {'with Ns':>8} {'in order':>8} "
    f"{'reordered':>9} {'skipped':>7} {'late sent':>9} {'late drop':>9} {'dup':>5} "
    f"{'timeout ms':>10}"
)
_HOLD_HEAD = (
    f"  {'tunnel':>6} {'session':>7} {'held':>8} {'hold p50':>9} {'p99':>9} {'max':>9} "
    f"{'max disp':>8}"
)


def _session_rows(r: ReplayResult, sessions: list[SessionReport]) -> list[str]:
    """Per LAC peer (in capture order), one row of counts per session; then the hold times of
    the sessions that held anything."""
    e = r.engine
    lines: list[str] = []
    peers: dict[Conversation, list[SessionReport]] = {}
    for s in sessions:
        peers.setdefault(s.conversation, []).append(s)
    for conv, group in peers.items():
        lines.append(
            f"LAC {format_address(conv.lac)} -> LNS {format_address(conv.lns)}: "
            f"{plural(len(group), 'session')}"
        )
        lines.append(_COUNT_HEAD)
        for s in group:
            head = f"  {s.tunnel_id:>6} {s.session_id:>7} {s.data:>8,} {s.sequenced:>8,} "
            if s.sequenced:
                timeout = _timeout_col(s, e)
                lines.append(
                    head + f"{s.forwarded_in_order:>8,} {s.released:>9,} {s.skipped:>7,} "
                    f"{s.forwarded_late:>9,} {s.dropped_late:>9,} {s.dropped_duplicate:>5,} "
                    f"{timeout:>10}"
                )
            else:  # nothing to reorder: the engine passes unsequenced data straight through
                lines.append(head + " ".join(f"{'-':>{w}}" for w in (8, 9, 7, 9, 9, 5, 10)))
    held = [s for s in sessions if s.hold.count]
    if held:
        lines += ["", "hold times of the reordered packets, and the largest displacement:"]
        lines.append(_HOLD_HEAD)
        for s in held:
            h = s.hold
            lines.append(
                f"  {s.tunnel_id:>6} {s.session_id:>7} {h.count:>8,} "
                f"{fmt_duration(h.quantile(0.5)):>9} {fmt_duration(h.quantile(0.99)):>9} "
                f"{fmt_duration(h.max):>9} {s.max_displacement:>8}"
            )
    return lines


def _all_sessions(r: ReplayResult) -> list[str]:
    """The summary over every session: what `--summary` prints instead of the tables."""
    hold = LogHistogram()
    for s in r.sessions:
        hold.merge(s.hold)

    def total(name: str) -> int:
        return sum(int(getattr(s, name)) for s in r.sessions)

    lines = [
        f"all sessions: {plural(total('data'), 'data message')}, {total('sequenced'):,} with Ns: "
        f"{total('forwarded_in_order'):,} in order, {total('released'):,} reordered, "
        f"{total('skipped'):,} Ns skipped",
        f"  late: {total('forwarded_late'):,} sent, {total('dropped_late'):,} dropped; "
        f"{total('dropped_duplicate'):,} duplicates, {total('dropped_stale'):,} stale, "
        f"{total('dropped_far_ahead'):,} far ahead dropped",
    ]
    if hold.count:
        lines.append(
            f"  hold times: {hold.count:,} packets held, p50 {fmt_duration(hold.quantile(0.5))}, "
            f"p99 {fmt_duration(hold.quantile(0.99))}, max {fmt_duration(hold.max)}"
        )
    return lines


def format_report(r: ReplayResult, top: int | None = None, summary: bool = False) -> str:
    """The text report, every line within 100 columns (bar a long capture path). `top`: the
    tables list the `top` busiest sessions; `summary`: no per-session table at all."""
    lines = _header(r)
    lines += _all_sessions(r)
    if not summary:
        shown = busiest(r, top)
        lines.append("")
        if len(shown) < len(r.sessions):
            lines.append(
                f"the {len(shown):,} busiest of {plural(len(r.sessions), 'session')} (--top):"
            )
        lines += _session_rows(r, shown)
    if not r.sessions:
        lines.append("(no data messages towards an LNS)")
    malformed = sum(r.malformed.values())
    lines.append(f"malformed (not attributable to a session): {malformed:,}")
    if r.sessions and not any(s.sequenced for s in r.sessions):
        lines.append("note: no data message carries Ns, so there is nothing to reorder;")
        lines.append("  `l2tpreorder impair --add-seq` makes a sequenced copy to experiment with.")
    if r.compared:
        lines.append("")
        lines.append(format_compare(r, top, summary))
    return "\n".join(lines)


def _header(r: ReplayResult) -> list[str]:
    """The capture, its L2TP, its conversations and the engine's settings."""
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
    lines += fit(capture.describe_unreadable(st))
    for reason, n in sorted(r.malformed.items()):
        lines.append(f"  malformed L2TP: {n:,} ({reason})")
    if r.time_went_back:
        lines.append(f"  {r.time_went_back:,} timestamps went backwards (replayed as 'now')")
    for c in r.conversations:
        line = f"  LAC {format_address(c.lac)} -> LNS {format_address(c.lns)}"
        how = f"[{c.method}]"
        # IPv6 addresses and a long "how we know" would pass 100 columns: then on a line of its own
        lines += [f"{line}  {how}"] if len(line) + len(how) < 99 else [line, f"    {how}"]
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
    return lines


_COMPARE_ROWS: list[tuple[str, Callable[[DeliveryStats], str]]] = [
    ("delivered", lambda d: f"{d.delivered:,}"),
    ("dropped", lambda d: f"{d.dropped:,}"),
    ("out of order", lambda d: f"{d.out_of_order:,}"),
    ("late, delivered", lambda d: f"{d.late_delivered:,}"),
    ("stalled total s", lambda d: f"{d.stalled_total:.3f}"),
    ("longest stall s", lambda d: f"{d.stalled_max:.3f}"),
]


def compare_totals(r: ReplayResult) -> dict[str, DeliveryStats]:
    """Each receiver's numbers summed over the sessions (the longest stall: the longest)."""
    totals: dict[str, DeliveryStats] = {n: DeliveryStats() for n in r.compared}
    for s in r.sessions:
        if not s.compare:
            continue
        for n in r.compared:
            t, d = totals[n], _stats(s.compare[n])
            t.delivered += d.delivered
            t.dropped += d.dropped
            t.out_of_order += d.out_of_order
            t.late_delivered += d.late_delivered
            t.stalled_total += d.stalled_total
            t.stalled_max = max(t.stalled_max, d.stalled_max)
    return totals


def format_compare(r: ReplayResult, top: int | None = None, summary: bool = False) -> str:
    """Receivers side by side, one column each (as wide as its name): per session (the `top`
    busiest; none with `summary`), then all sessions."""
    names = r.compared
    widths = [max(10, len(n)) for n in names]
    lines = ["what the LNS would get (sequenced data only):"]
    head = f"  {'':<16}" + "".join(f" {n:>{w}}" for n, w in zip(names, widths, strict=True))
    lines.append(head)
    lines.append("-" * len(head))

    def block(label: str, stats: dict[str, DeliveryStats]) -> None:
        lines.append(label)
        for title, fmt in _COMPARE_ROWS:
            cells = "".join(f" {fmt(stats[n]):>{w}}" for n, w in zip(names, widths, strict=True))
            lines.append(f"  {title:<16}{cells}")

    compared = [s for s in r.sessions if s.compare]
    if not summary:
        for s in busiest(r, top):
            if s.compare:
                label = f"{format_address(s.conversation.lac)} {s.tunnel_id}/{s.session_id}"
                block(label, {n: _stats(s.compare[n]) for n in names})
    if compared:
        block(f"all {plural(len(compared), 'session')} with Ns", compare_totals(r))
    else:
        lines.append("(no data message carries Ns: every receiver delivers everything)")
    return "\n".join(lines)


def _stats(x: ModelRunner | DeliveryStats) -> DeliveryStats:
    return x.stats if isinstance(x, ModelRunner) else x
