"""`replay pcap --plot FILE.png`: what the replay did, as a picture an operator reads at a glance.

Per session (the busiest few): each packet's Ns against time as captured and as released, with
what went wrong marked: packets that arrived after a higher Ns, packets dropped, late packets
delivered anyway, and the gaps the engine gave up. Then the hold-time histogram of the packets
it reordered, and with `--compare` what each receiver (us, the kernel, xl2tpd) delivered and
dropped.

`PlotRecorder` follows the replay packet by packet (replay.py calls it at arrival, release and
hold sample). A released packet is matched to its captured Ns by its payload, not by the Ns it
leaves with: `reorder.sequencing: renumber` (the default) rewrites Ns, `strip` removes it. What
it keeps is bounded (`MAX_*`): the rest of a long capture is replayed and reported, not plotted.

matplotlib is an optional extra (`pip install 'l2tpreorder[plot]'`): imported only when the
picture is drawn, so `replay` and the daemon never need it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TYPE_CHECKING

from l2tpreorder.config import format_address
from l2tpreorder.core.fastpath import Header, parse_header
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.tools.replay_report import (
    ReplayResult,
    SessionReport,
    compare_totals,
    fmt_duration,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MAX_SESSION_POINTS = 20_000  # arrivals kept per session (releases: at most as many)
MAX_POINTS = 1_000_000  # arrivals kept over all sessions
MAX_HOLD_SAMPLES = 1_000_000
PLOTTED_SESSIONS = 3  # the busiest sessions get a panel each
EXTRA = "plot"  # pyproject's optional dependency group that brings matplotlib

# How an arrival is drawn.
CAPTURED, AFTER_HIGHER, DROPPED, LATE_SENT = range(4)
_DROPS = (
    Outcome.DROPPED_DUPLICATE,
    Outcome.DROPPED_LATE,
    Outcome.DROPPED_STALE,
    Outcome.DROPPED_FAR_AHEAD,
)


class PlotUnavailable(Exception):
    """matplotlib is not installed; the message says which extra to install."""


def require_matplotlib() -> None:
    """Fail before a long replay, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            f"--plot needs matplotlib, which is not installed: install the `{EXTRA}` extra "
            f"(pip install 'l2tpreorder[{EXTRA}]', or `.[{EXTRA}]` from a clone)"
        ) from None


class Trace:
    """One session's points: y is the captured Ns, unwrapped (first Ns + sender's order)."""

    __slots__ = (
        "arrivals", "base", "gaps", "last_released", "max_y", "pending", "releases", "report",
    )  # fmt: skip

    def __init__(self, report: SessionReport) -> None:
        self.report = report
        self.arrivals: list[tuple[float, int, int]] = []  # (time, y, CAPTURED..LATE_SENT)
        self.releases: list[tuple[float, int]] = []
        self.gaps: list[tuple[float, int, int]] = []  # (time, first y, last y) given up
        # payload hash -> the y of captured packets with that payload not released yet
        self.pending: dict[int, list[int]] = {}
        self.base: int | None = None  # y - order (SessionReport.order_of's unwrapped order)
        self.max_y: int | None = None
        self.last_released: int | None = None

    def release(self, now: float, payload_hash: int) -> None:
        ys = self.pending.get(payload_hash)
        if not ys:
            return  # not recorded (past the cap), or not ours
        y = ys.pop(0)
        if not ys:
            del self.pending[payload_hash]
        self.releases.append((now, y))
        last = self.last_released
        if last is not None and y > last + 1:
            self.gaps.append((now, last + 1, y - 1))
        if last is None or y > last:
            self.last_released = y


class PlotRecorder:
    """What `--plot` draws, gathered during the replay (bounded, see the module docstring)."""

    def __init__(self) -> None:
        self.traces: dict[tuple[Hashable, int, int], Trace] = {}
        self.points = 0
        self.holds: list[float] = []
        self.capped = False  # some arrivals were not kept

    def arrival(
        self, report: SessionReport, data: bytes, header: Header, order: int, outcome: int
    ) -> None:
        """A data message with Ns towards the LNS, after the engine took it (`outcome`)."""
        key = (report.conversation, report.tunnel_id, report.session_id)
        trace = self.traces.get(key)
        if trace is None:
            trace = self.traces[key] = Trace(report)
        if self.points >= MAX_POINTS or len(trace.arrivals) >= MAX_SESSION_POINTS:
            self.capped = True
            return
        self.points += 1
        assert header.ns is not None
        if trace.base is None:  # its first packet: y is its Ns, later ones follow their order
            trace.base = header.ns - order
        y = trace.base + order
        if outcome in _DROPS:
            kind = DROPPED
        elif outcome == Outcome.FORWARDED_LATE:
            kind = LATE_SENT
        elif trace.max_y is not None and y < trace.max_y:
            kind = AFTER_HIGHER
        else:
            kind = CAPTURED
        trace.arrivals.append((report.last_ts, y, kind))
        if trace.max_y is None or y > trace.max_y:
            trace.max_y = y
        if kind != DROPPED:
            h = hash(bytes(data[header.payload_offset : header.end]))
            trace.pending.setdefault(h, []).append(y)

    def released(self, flow: Hashable, data: bytes, now: float) -> None:
        """A datagram the engine sent towards the LNS at `now`."""
        header = parse_header(data)
        if isinstance(header, str) or header.is_control:
            return
        trace = self.traces.get((flow, header.tunnel_id, header.session_id))
        if trace is not None:
            trace.release(now, hash(bytes(data[header.payload_offset : header.end])))

    def hold(self, waited: float) -> None:
        if len(self.holds) < MAX_HOLD_SAMPLES:
            self.holds.append(waited)
        else:
            self.capped = True

    def busiest(self, n: int = PLOTTED_SESSIONS) -> list[Trace]:
        ranked = sorted(self.traces.values(), key=lambda t: -t.report.sequenced)
        return [t for t in ranked[:n] if t.arrivals]


# --- drawing ------------------------------------------------------------------------------------

WIDTH_IN, PANEL_IN, DPI = 10.0, 2.6, 100


def write_plot(result: ReplayResult, recorder: PlotRecorder, path: str) -> None:
    """Draw the picture and save it as PNG at `path` (OSError when it cannot be written)."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    traces = recorder.busiest()
    rows = max(1, len(traces)) + 1 + (1 if result.compared else 0)
    fig = Figure(figsize=(WIDTH_IN, PANEL_IN * rows), dpi=DPI, layout="constrained")
    grid = fig.subplots(rows, 1, squeeze=False)
    axes: list[Axes] = [grid[i, 0] for i in range(rows)]
    t0 = result.first_ts or 0.0
    if traces:
        for ax, trace in zip(axes, traces, strict=False):
            _session_panel(ax, trace, t0)
    else:
        _empty(axes[0], "no data message carries Ns: nothing was reordered "
               "(`l2tpreorder impair --add-seq` makes a sequenced copy)")  # fmt: skip
    _hold_panel(axes[max(1, len(traces))], recorder.holds)
    if result.compared:
        _compare_panel(axes[-1], result)
    more = (
        f", the {len(traces)} busiest of {len(recorder.traces)} sessions with Ns"
        if len(recorder.traces) > len(traces)
        else ""
    )
    capped = "; only the first packets of a long capture are drawn" if recorder.capped else ""
    fig.suptitle(f"l2tpreorder replay of {result.path}{more}{capped}", fontsize=10)
    fig.savefig(path, format="png")


def _session_panel(ax: Axes, trace: Trace, t0: float) -> None:
    r = trace.report
    styles = {
        CAPTURED: ("captured", dict(marker=".", color="0.55", s=10)),
        AFTER_HIGHER: ("arrived after a higher Ns", dict(marker="^", color="tab:orange", s=22)),
        DROPPED: ("dropped", dict(marker="x", color="tab:red", s=30)),
        LATE_SENT: ("late, delivered anyway", dict(marker="D", color="tab:purple", s=22)),
    }
    if trace.releases:
        ax.plot(
            [t - t0 for t, _ in trace.releases], [y for _, y in trace.releases],
            drawstyle="steps-post", color="tab:blue", lw=1.0, label="released",
        )  # fmt: skip
    for kind, (label, style) in styles.items():
        points = [(t - t0, y) for t, y, k in trace.arrivals if k == kind]
        if points:
            ax.scatter(*zip(*points, strict=True), label=label, zorder=3, **style)  # type: ignore[arg-type]
    if trace.gaps:
        ax.vlines(
            [t - t0 for t, _, _ in trace.gaps],
            [lo - 0.5 for _, lo, _ in trace.gaps],
            [hi + 0.5 for _, _, hi in trace.gaps],
            color="tab:red", lw=3, label="gap given up", zorder=4,
        )  # fmt: skip
    ax.set_title(
        f"LAC {format_address(r.conversation.lac)} tunnel {r.tunnel_id} session "
        f"{r.session_id}: {r.sequenced:,} with Ns, {r.released:,} reordered, "
        f"{r.skipped:,} Ns given up",
        fontsize=9,
    )
    ax.set_xlabel("seconds into the capture", fontsize=8)
    ax.set_ylabel("Ns", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", markerscale=1.2)


def _hold_panel(ax: Axes, holds: list[float]) -> None:
    if not holds:
        _empty(ax, "no packet was held (nothing arrived ahead of a gap)")
        return
    low = max(min(holds), 1e-6)
    high = max(max(holds), low * 10)
    n_bins = 40
    ratio = (high / low) ** (1 / n_bins)
    bins = [low * ratio**i for i in range(n_bins + 1)]
    ax.hist([max(h, low) for h in holds], bins=bins, color="tab:blue")
    ax.set_xscale("log")
    ticks = [10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]
    ax.set_xticks(ticks, [fmt_duration(t) for t in ticks])
    ax.set_xlim(low / 1.5, high * 1.5)  # the decade ticks must not widen the axis
    holds_sorted = sorted(holds)
    p50 = holds_sorted[len(holds_sorted) // 2]
    ax.set_title(
        f"hold time of the {len(holds):,} reordered packets (median {fmt_duration(p50)}, "
        f"max {fmt_duration(holds_sorted[-1])})",
        fontsize=9,
    )
    ax.set_ylabel("packets", fontsize=8)


def _compare_panel(ax: Axes, result: ReplayResult) -> None:
    totals = compare_totals(result)
    names = list(totals)
    x = list(range(len(names)))
    delivered = [totals[n].delivered for n in names]
    dropped = [totals[n].dropped for n in names]
    ax.bar([i - 0.2 for i in x], delivered, 0.4, label="delivered", color="tab:green")
    ax.bar([i + 0.2 for i in x], dropped, 0.4, label="dropped", color="tab:red")
    for i in x:
        ax.annotate(f"{delivered[i]:,}", (i - 0.2, delivered[i]), ha="center", fontsize=7)
        ax.annotate(f"{dropped[i]:,}", (i + 0.2, dropped[i]), ha="center", fontsize=7)
    ax.set_xticks(x, names)
    ax.set_title("what the LNS would get, all sessions with Ns (--compare)", fontsize=9)
    ax.set_ylabel("packets", fontsize=8)
    ax.legend(fontsize=7)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, transform=ax.transAxes)
    ax.set_axis_off()
