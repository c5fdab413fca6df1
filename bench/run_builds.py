"""`make bench`'s issue-23 steps: relay and in-path mode, pure and compiled builds, and the C
NFQUEUE reader's ceiling, each as a clean-rate search; and the ratio lines they give.

"Clean" (harness.Bench.search): nothing lost and nothing out of order beyond the planned swaps a
plain forwarder passes through, so what in-path mode's fail-open bypass lets past the queue is
an order error, never throughput. The reference of every ratio is the relay's pure build.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import builds
from bench.harness import Bench, Target, TargetUnavailable
from bench.inpath_bench import unavailable

Result = dict[str, Any]


@dataclass
class Plan:
    """What this run can measure: the builds, and the C reader when it was built."""

    compiled_why: str | None  # None = the compiled build runs here
    reader: Path | None
    reader_why: str = ""

    @property
    def default_build(self) -> str:
        return "compiled" if self.compiled_why is None else "pure"

    @property
    def builds(self) -> list[str]:
        return ["pure"] if self.compiled_why else ["pure", "compiled"]


def measure_relay_pure(b: Bench, args: argparse.Namespace, daemon: Target, start: float,
                       ceiling: float) -> Result | None:
    """The relay's pure build, when the daemon's default search ran the compiled one."""
    pure = Target("daemon_pure", daemon.template, "daemon pure", reorders=daemon.reorders,
                  env=builds.env("pure"))
    print(f"loss-free search, daemon pure build, {args.sessions} sessions:", flush=True)
    try:
        return b.search(pure, sessions=args.sessions, swaps=args.swaps, start=start,
                        ceiling=ceiling)
    except TargetUnavailable as e:
        b.notes.append(f"daemon pure build unavailable: {e}")
        return None


def measure_inpath(b: Bench, args: argparse.Namespace, plan: Plan, start: float,
                   ceiling: float) -> Result:
    """In-path mode, 1 worker per build, 2 workers on the default build, then the C reader."""
    why = unavailable()
    if why is not None:
        b.notes.append(why)
        return {"unavailable": why}
    out: Result = {}
    runs = [(build, 1) for build in plan.builds] + [(plan.default_build, 2)]
    for build, workers in runs:
        if b.remaining() < 40:
            b.notes.append(f"in-path {build}, {workers} worker(s) skipped: bench budget spent")
            continue
        target = Target(f"inpath{workers}_{build}", None, f"inpath {build} x{workers}",
                        inpath=tuple(range(workers)), reorders=True, env=builds.env(build))
        print(f"loss-free search, in-path {build} build, {workers} worker(s), {args.sessions} "
              f"sessions:", flush=True)
        try:
            r = b.search(target, sessions=args.sessions, swaps=args.swaps, start=start,
                         ceiling=ceiling)
        except TargetUnavailable as e:
            b.notes.append(f"in-path {build} with {workers} worker(s) unavailable: {e}")
            continue
        r["build"] = build
        out.setdefault(build, {})[str(workers)] = r
        if workers == 1 and r["loss_free_pps"]:
            start = max(start, r["loss_free_pps"])
    out["ceiling"] = measure_ceiling(b, args, plan, start, ceiling)
    return out


def measure_ceiling(b: Bench, args: argparse.Namespace, plan: Plan, start: float,
                    ceiling: float) -> Result:
    """The C reader (bench/c/nfq_reader.c) on the same queue, same traffic: what the kernel's
    queue path allows here, the anchor of `inpath/ceiling`."""
    if plan.reader is None:
        return {"unavailable": f"C reader: {plan.reader_why}"}
    if b.remaining() < 30:
        return {"unavailable": "bench budget spent"}
    target = Target("inpath_ceiling", None, "C reader", inpath=(0,),
                    reader=[str(plan.reader), "--queue", "0"])
    print(f"loss-free search, C NFQUEUE reader (one verdict message per packet), "
          f"{args.sessions} sessions:", flush=True)
    try:
        return b.search(target, sessions=args.sessions, swaps=args.swaps, start=start,
                        ceiling=ceiling)
    except TargetUnavailable as e:
        return {"unavailable": str(e)}


def _rate(r: Result | None) -> float | None:
    return (r or {}).get("loss_free_pps") or None


def ratio_lines(relay: dict[str, Result | None], inpath: Result, plan: Plan,
                ratios: dict[str, float | None]) -> list[str]:
    """The issue-23 lines, printed just above the headline (which stays the last line); their
    values also go into `ratios` (the results JSON), None where n/a."""
    lines: list[str] = []

    def _ratio(line: str, num: float | None, den: float | None, detail: str, why: str) -> str:
        key = "loss_free_" + line.removeprefix("loss-free ratio ").replace("/", "_over_").replace(
            " ", "_")
        ratios[key] = num / den if num and den else None
        if num and den:
            return f"{line}: {num / den:.2f}  ({detail})"
        return f"{line}: n/a ({why})"

    for build in plan.builds:
        for workers in ("1", "2"):
            r = inpath.get(build, {}).get(workers)
            if r:
                lines.append(f"  in-path {build} build, {workers} worker(s), clean: "
                             f"{r['loss_free_pps']:.0f} pps"
                             + ("  [harness-bound]" if r["harness_bound"] else ""))
    one, two = (_rate(inpath.get(plan.default_build, {}).get(w)) for w in ("1", "2"))
    if one and two:
        lines.append(f"  in-path {plan.default_build} build, 2 workers / 1 worker: {two / one:.2f}"
                     " (2 cores: the generator and sink need one)")
    ceiling = inpath.get("ceiling") or {}
    if _rate(ceiling):
        lines.append(f"  C NFQUEUE reader (ceiling), clean: {ceiling['loss_free_pps']:.0f} pps"
                     + ("  [harness-bound: the ceiling is at least this]"
                        if ceiling["harness_bound"] else ""))
    relay_pure = _rate(relay.get("pure"))
    ip_build = plan.default_build if _rate(inpath.get(plan.default_build, {}).get("1")) else "pure"
    ip = _rate(inpath.get(ip_build, {}).get("1"))
    no_inpath = inpath.get("unavailable") or "no clean in-path rate"
    target = "; target >= 2.0 with the compiled build" if ip_build == "compiled" else ""
    lines.append(_ratio("loss-free ratio inpath/relay", ip, relay_pure,
                        f"in-path {ip_build}, 1 worker / relay pure{target}", no_inpath))
    comp = plan.compiled_why or ""
    lines.append(_ratio("loss-free ratio compiled/pure relay", _rate(relay.get("compiled")),
                        relay_pure, "target >= 1.3", comp or "no clean relay rate"))
    lines.append(_ratio("loss-free ratio compiled/pure inpath",
                        _rate(inpath.get("compiled", {}).get("1")),
                        _rate(inpath.get("pure", {}).get("1")), "1 worker",
                        comp or no_inpath))
    why_ceiling = ceiling.get("unavailable") or (no_inpath if not ip else "no clean C reader rate")
    bound = "; the reader was harness-bound" if ceiling.get("harness_bound") else ""
    lines.append(_ratio("loss-free ratio inpath/ceiling", ip, _rate(ceiling),
                        f"in-path {ip_build} / C reader{bound}", why_ceiling))
    return lines
