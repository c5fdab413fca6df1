"""Fixed vs adaptive reorder timeout on field-shaped captures: `python -m bench.adaptive_eval`.

Builds the captures (this module writes the traffic shapes with the project's pcap writer, then
`l2tpreorder impair` adds loss, bursts and Ns exactly as the CLI would), replays each with the
fixed 100 ms timeout and with `reorder.adaptive`, models included (`replay --compare`), and
prints the table that docs/adaptive.md shows. Deterministic: fixed seeds, virtual time.

    python -m bench.adaptive_eval [--workdir DIR] [--json] [--only NAME] [--scale X]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.tools.impair import ImpairConfig, impair_file
from l2tpreorder.tools.lns_models import DeliveryStats, ModelRunner
from l2tpreorder.tools.pcapwriter import PcapWriter
from l2tpreorder.tools.replay import ReplayOptions, replay
from l2tpreorder.tools.replay_report import (
    COMPARE_KERNEL0,
    COMPARE_XL2TPD,
    ReplayResult,
)

LAC, LNS = "10.0.0.1", "10.0.0.2"
JNETPCAP = Path(__file__).resolve().parents[1] / "../shared/pcaps/jnetpcap_test-l2tp.pcap"
SMALL, BIG = b"\xff\x03\x00\x21" + bytes(60), b"\xff\x03\x00\x21" + bytes(1400)

def write_capture(path: Path, packets: list[tuple[float, int, int, bytes]]) -> None:
    """packets: (time, session index, Ns, PPP payload); written in time order."""
    packets.sort(key=lambda p: p[0])
    with PcapWriter.create(path) as w:
        for ts, sess, ns, ppp in packets:
            data = struct.pack("!HHHHH", 0x0802, 1 + sess // 100, 1 + sess % 100, ns, 0) + ppp
            w.write_udp(ts, LAC, 1701, LNS, 1701, data)


def split_pair(rng: random.Random, sessions: int, seconds: float) -> list[Any]:
    """1 packet/ms per session; every 5th is a big frame sent in two, whose small second half
    overtakes the big first half by 0.1-0.4 ms (the seed case)."""
    out = []
    for sess in range(sessions):
        t, ns, i = 1.0 + rng.random() * 1e-3, 0, 0
        while t < 1.0 + seconds:
            if i % 5 == 4:
                out.append((t + rng.uniform(1e-4, 4e-4), sess, ns, BIG))
                out.append((t, sess, (ns + 1) & 0xFFFF, SMALL))
                ns += 2
            else:
                out.append((t, sess, ns, SMALL))
                ns += 1
            ns &= 0xFFFF
            t += 1e-3
            i += 1
    return out


def multipath(rng: random.Random, sessions: int, seconds: float, p: float = 0.05) -> list[Any]:
    """1 packet/ms per session; a share p of the packets takes a slower path, 6-18 ms late."""
    out = []
    for sess in range(sessions):
        t, ns = 1.0 + rng.random() * 1e-3, 0
        while t < 1.0 + seconds:
            late = rng.uniform(6e-3, 18e-3) if rng.random() < p else 0.0
            out.append((t + late, sess, ns, SMALL))
            ns = (ns + 1) & 0xFFFF
            t += 1e-3
    return out


def steady(rng: random.Random, sessions: int, seconds: float) -> list[Any]:
    """1 packet/ms per session, in order (impair adds swaps and loss bursts)."""
    out = []
    for sess in range(sessions):
        t, ns = 1.0 + rng.random() * 1e-3, 0
        while t < 1.0 + seconds:
            out.append((t, sess, ns, SMALL))
            ns = (ns + 1) & 0xFFFF
            t += 1e-3
    return out


def idle_resume(rng: random.Random, sessions: int, seconds: float) -> list[Any]:
    """Split-pair traffic, 30 s of silence, then the same sessions resume on a path where 2 %
    of the packets come 6-18 ms late: the learnt small timeout must grow again."""
    first = split_pair(rng, sessions, seconds / 2)
    nxt = {s: 0 for s in range(sessions)}
    for _, sess, ns, _ in first:
        nxt[sess] = max(nxt[sess], ns + 1)
    resumed = []
    for sess, ns, in nxt.items():
        t = 31.0 + seconds / 2 + rng.random() * 1e-3
        while t < 31.0 + seconds:
            late = rng.uniform(6e-3, 18e-3) if rng.random() < 0.02 else 0.0
            resumed.append((t + late, sess, ns, SMALL))
            ns = (ns + 1) & 0xFFFF
            t += 1e-3
    return first + resumed


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    build: Callable[[random.Random, float], list[Any]] | None  # None: a file from ../shared
    impair: ImpairConfig | None


def cases(scale: float, sessions: int = 20) -> list[Case]:
    lns, n = LNS, sessions
    return [
        Case(
            "split-pair",
            f"{n} sessions x 1/ms, every 5th frame split, small half 0.1-0.4 ms early; 0.5% loss",
            lambda r, s: split_pair(r, n, 3.0 * s),
            ImpairConfig(seed=1, loss=0.005, lns_address=lns),
        ),
        Case(
            "multipath",
            f"{n} sessions x 1/ms, 5% of packets 6-18 ms late; 0.1% loss",
            lambda r, s: multipath(r, n, 3.0 * s),
            ImpairConfig(seed=2, loss=0.001, lns_address=lns),
        ),
        Case(
            "loss-bursts",
            f"{n} sessions x 1/ms, 2% swapped, loss bursts of 5 (0.2% of slots start one)",
            lambda r, s: steady(r, n, 3.0 * s),
            ImpairConfig(seed=3, swap=0.02, burst_loss=0.002, burst_len=5, lns_address=lns),
        ),
        Case(
            "idle-resume",
            f"{max(1, n // 2)} sessions: split-pair, 30 s idle, resume with 2% of packets "
            "6-18 ms late; 0.2% loss",
            lambda r, s: idle_resume(r, max(1, n // 2), 4.0 * s),
            ImpairConfig(seed=4, loss=0.002, lns_address=lns),
        ),
        Case(
            "jnetpcap",
            "jnetpcap_test-l2tp.pcap (real, 2 sessions), impair --add-seq --swap 0.05 --loss 0.02",
            None,
            ImpairConfig(seed=5, add_seq=True, swap=0.05, loss=0.02),
        ),
    ]


def build(case: Case, workdir: Path, scale: float) -> Path | None:
    """The capture for a case; None when its source file is not there."""
    src = workdir / f"{case.name}.base.pcap"
    if case.build is None:
        if not JNETPCAP.exists():
            return None
        src = JNETPCAP.resolve()
    else:
        write_capture(src, case.build(random.Random(case.name), scale))
    out = workdir / f"{case.name}.pcap"
    if case.impair is not None:
        impair_file(str(src), str(out), case.impair)
        return out
    return src


def summarize(result: ReplayResult) -> dict[str, Any]:
    """The table's numbers for one replay."""
    seq = [s for s in result.sessions if s.sequenced]
    sequenced = sum(s.sequenced for s in seq)
    # Late arrivals (their gap given up first): delivered with the next Ns (reorder.late, the
    # default in renumber mode) or dropped.
    late_sent = sum(s.forwarded_late for s in seq)
    late_dropped = sum(s.dropped_late for s in seq)
    late = late_sent + late_dropped
    p50 = [s.hold.quantile(0.5) for s in seq if s.hold.count]
    p99 = [s.hold.quantile(0.99) for s in seq if s.hold.count]
    learned = [s.learned_timeout for s in seq if s.learned_timeout is not None]
    models: dict[str, dict[str, int]] = {}
    for name in (COMPARE_KERNEL0, COMPARE_XL2TPD):
        d = DeliveryStats()
        for s in seq:
            x = s.compare.get(name)
            st = x.stats if isinstance(x, ModelRunner) else x
            if st is not None:
                d.delivered += st.delivered
                d.dropped += st.dropped
        models[name] = {"delivered": d.delivered, "dropped": d.dropped}

    def ms(values: list[float | None], f: Callable[[list[float]], float]) -> float | None:
        v = [x for x in values if x is not None]
        return round(f(v) * 1000, 3) if v else None

    return {
        "sequenced": sequenced,
        "held_share": round(sum(s.released for s in seq) / max(1, sequenced), 4),
        "hold_p50_ms_median": ms(p50, statistics.median),
        "hold_p99_ms_median": ms(p99, statistics.median),
        "hold_p99_ms_max": ms(p99, max),
        "late": late,
        "late_share": round(late / max(1, sequenced), 5),
        "late_delivered": late_sent,
        "skipped": sum(s.skipped for s in seq),
        "learned_timeout_ms_median": ms(list(learned), statistics.median),
        "learned_timeout_ms_max": ms(list(learned), max),
        "delivered": sequenced
        - late_dropped
        - sum(s.dropped_duplicate + s.dropped_stale + s.dropped_far_ahead for s in seq),
        "models": models,
        "adaptive_grows": result.counters.get("adaptive_grows", 0),
    }


def run_case(
    case: Case, path: Path, engine: EngineConfig, compare: bool = True
) -> Iterator[tuple[str, dict[str, Any]]]:
    lns = case.impair.lns_address if case.impair else None
    for label, cfg in (
        ("fixed 100 ms", replace(engine, adaptive=False)),
        ("adaptive", replace(engine, adaptive=True)),
    ):
        result = replay(str(path), ReplayOptions(engine=cfg, lns_address=lns, compare=compare))
        yield label, summarize(result)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def format_table(rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    head = (
        f"{'capture':<12} {'mode':<13} {'seq pkts':>8} {'held':>6} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'p99 max':>7} {'late':>5} {'late %':>7} {'sent':>5} {'Ns skip':>7} "
        f"{'timeout ms':>11} {'ours':>7} {'kernel0':>15} {'xl2tpd':>15}"
    )
    lines = [
        head,
        "(p50/p99: the typical (median) session's hold-time percentiles; p99 max: the worst "
        "session's; late: arrived after their gap was given up, sent: of those delivered with the "
        "next Ns; timeout: learnt, median/max; models: delivered/dropped)",
        "-" * len(head),
    ]
    for name, label, r in rows:
        k, x = r["models"][COMPARE_KERNEL0], r["models"][COMPARE_XL2TPD]
        timeout = (
            "100"
            if label.startswith("fixed")
            else f"{_f(r['learned_timeout_ms_median'])}/{_f(r['learned_timeout_ms_max'])}"
        )
        lines.append(
            f"{name:<12} {label:<13} {r['sequenced']:>8} {r['held_share'] * 100:>5.1f}% "
            f"{_f(r['hold_p50_ms_median']):>7} {_f(r['hold_p99_ms_median']):>7} "
            f"{_f(r['hold_p99_ms_max']):>7} {r['late']:>5} {r['late_share'] * 100:>6.3f}% "
            f"{r['late_delivered']:>5} "
            f"{r['skipped']:>7} {timeout:>11} {r['delivered']:>7} "
            f"{k['delivered']:>7}/{k['dropped']:<7} {x['delivered']:>7}/{x['dropped']:<7}"
        )
    return "\n".join(lines)


def evaluate(
    workdir: Path,
    scale: float = 1.0,
    only: str | None = None,
    engine: EngineConfig | None = None,
    *,
    sessions: int = 20,
    compare: bool = True,
) -> list[tuple[str, str, dict[str, Any]]]:
    """Build each capture and replay it fixed and adaptive; rows of (capture, mode, numbers)."""
    engine = engine or EngineConfig(reorder_timeout=0.1)
    rows = []
    for case in cases(scale, sessions):
        if only and case.name != only:
            continue
        path = build(case, workdir, scale)
        if path is None:
            print(f"{case.name}: {JNETPCAP} not found, skipped", file=sys.stderr)
            continue
        for label, r in run_case(case, path, engine, compare):
            rows.append((case.name, label, r))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="keep the captures here (default: a temporary directory)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", help="one capture by name")
    ap.add_argument("--scale", type=float, default=1.0, help="capture length factor")
    ap.add_argument("--min-timeout", type=float, default=None, metavar="MS")
    args = ap.parse_args(argv)
    engine = EngineConfig(reorder_timeout=0.1)
    if args.min_timeout is not None:
        engine = replace(engine, min_timeout=args.min_timeout / 1000)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = evaluate(workdir, args.scale, args.only, engine)
    if args.json:
        print(json.dumps([{"capture": n, "mode": m, **r} for n, m, r in rows], indent=2))
    else:
        print(format_table(rows))
        print()
        for case in cases(args.scale):
            print(f"{case.name:<12} {case.what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
