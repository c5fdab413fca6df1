"""`make bench`: the live loopback benchmark, daemon vs a bare uvloop forwarder, in one run.

Processes: load generator -> relay under test -> sink, each its own process. On 2+ CPUs the relay
is pinned alone to CPU 1 and the harness (generator + sink) to CPU 0 with taskset, so the relay
never competes with the harness for a core; the harness's own ceiling (generator -> sink, no
relay) is measured first and printed, so a result at that ceiling is flagged, not believed. The
generator is bench/c/loadgen.c when gcc builds it, else bench/loadgen.py (same traffic).

Steps: harness ceilings; highest clean rate (<= 0.1% lost or out of order) for the baseline and
the daemon (100 sessions, 5% swaps), per build (pure; compiled when built, bench/builds.py) for
relay and in-path mode, and the C NFQUEUE reader's ceiling (bench/run_builds.py); the daemon at
10,000 sessions; throughput at 2x those rates; in-order latency at a quarter of the baseline's
rate; release lateness of held packets (1% planned loss); the engine microbenchmarks per build.
Results: JSON in bench/results/, a PNG plot, ratios, the issue-23 ratio lines, and the headline
as the last line: `loss-free ratio daemon/baseline: X.XX`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import builds
from bench.cprogs import try_build
from bench.harness import BASELINE_CMD, DAEMON_CMD, PY, ROOT, Bench, Target, TargetUnavailable
from bench.run_builds import Plan, measure_inpath, measure_relay_pure, ratio_lines

RESULTS = ROOT / "bench" / "results"


def choose_generator(b: Bench) -> str:
    """The C generator when gcc builds it (the Python one tops out near 150-200k pps on one
    core, under what in-path mode takes), else the Python one: the line says which."""
    program, why = try_build("loadgen")
    if program is None:
        b.notes.append(f"C generator unavailable ({why}): the Python generator was used, so "
                       "rates near its ceiling are harness-bound")
        return f"Python (bench/loadgen.py; C generator unavailable: {why})"
    b.generator = [str(program)]
    return f"C ({program.relative_to(ROOT)})"


def plan_builds(b: Bench, args: argparse.Namespace) -> Plan:
    """Which builds run here (a stand-in --daemon-cmd has none) and whether the C reader built."""
    stand_in = args.daemon_cmd != DAEMON_CMD
    why = "a stand-in --daemon-cmd has no builds" if stand_in else builds.compiled_unavailable()
    reader, reader_why = try_build("nfq_reader")
    plan = Plan(compiled_why=why, reader=reader, reader_why=reader_why)
    if why is not None and not stand_in:
        b.notes.append(why)
    return plan


def measure_ceilings(b: Bench) -> dict[str, float]:
    """Generator alone into an unread socket, and generator -> sink with no relay."""
    import socket

    out: dict[str, float] = {}
    unread = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unread.bind(("127.0.0.1", 0))
    try:
        cmd = [*b.generator, "--target", f"127.0.0.1:{unread.getsockname()[1]}",
               "--rate", "0", "--duration", "1", "--sessions", "100", "--swaps", "0.05",
               "--no-warmup"]
        out["generator_pps"] = b.run_generator(cmd, 60)["achieved_pps"]
    finally:
        unread.close()
    r = b.trial(Target("direct", None), sessions=100, rate=0, swaps=0.05, duration=1.0,
                label="ceiling")
    out["generator_to_sink_pps"] = r["forwarded_pps"]
    return out


def pct_us(lat: dict[str, float], key: str) -> float | None:
    return lat[key] / 1000.0 if key in lat else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def plot(trials: list[dict[str, Any]], path: Path, summary: dict[str, Any]) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib not installed (pip install -e '.[bench]')"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        if t["label"] in ("search", "overload") and t["target"] != "direct":
            key = f"{t['target_label']} ({t['sessions']} sessions)"
            series.setdefault(key, []).append((t["offered_pps"], t["forwarded_pps"]))
    top = 1.0
    for key, pts in sorted(series.items()):
        pts.sort()
        xs = [p[0] / 1000 for p in pts]
        ys = [p[1] / 1000 for p in pts]
        top = max(top, *xs, *ys)
        ax.plot(xs, ys, marker="o", label=key)
    stars = [
        lf["loss_free_pps"] / 1000
        for section in (summary.get("baseline") or {}, summary.get("daemon") or {},
                        summary.get("daemon_gso") or {})
        for lf in (section.get("loss_free"), section.get("loss_free_many"))
        if lf and lf.get("loss_free_pps")
    ]
    if stars:
        ax.plot(stars, stars, marker="*", markersize=13, color="black", linestyle="none",
                label="highest loss-free rate (<= 0.1% loss)")
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="offered = forwarded")
    ceiling = summary.get("ceilings", {}).get("generator_to_sink_pps")
    if ceiling:
        ax.axhline(ceiling / 1000, color="red", linestyle="--", linewidth=0.8,
                   label="harness ceiling (no relay)")
    ax.set_xlabel("offered load (kpps, 100-byte L2TP data)")
    ax.set_ylabel("forwarded (kpps)")
    ax.set_title(f"{summary['daemon_label']} vs bare uvloop forwarder (loopback, 2-core VM)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"


def run_child_bench(b: Bench, name: str, cmd: list[str], min_remaining: float,
                    show_stderr: bool = False,
                    env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """A benchmark that runs as its own process on the relay's CPU and prints JSON; a failure,
    a timeout or a spent budget is a note in the results, not an abort."""
    if b.remaining() < min_remaining:
        b.notes.append(f"{name} skipped: time budget spent")
        return None
    proc = b.spawn(cmd, 1, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=max(10.0, b.remaining() - 5))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        b.notes.append(f"{name}: timed out inside the budget")
        return None
    if show_stderr:
        sys.stdout.write(err)
    if proc.returncode != 0:
        b.notes.append(f"{name} failed: {err.strip().splitlines()[-1:]}")
        return None
    result: dict[str, Any] = json.loads(out)
    return result


def run_engine_bench(b: Bench, build: str) -> dict[str, Any] | None:
    cmd = [PY, "-m", "bench.engine_bench", "--json", *(["--quick"] if b.args.quick else [])]
    result = run_child_bench(b, f"engine bench ({build})", cmd, 20, show_stderr=True,
                             env=builds.env(build))
    if result is not None:
        result["build"] = build
    return result


def run_metrics_bench(b: Bench) -> dict[str, Any] | None:
    """bench/metrics_bench.py (scrape time at 10,000 sessions, loop stall while scraping)."""
    cmd = [PY, "-m", "bench.metrics_bench", "--seconds", "1", "--repeat", "5"]
    return run_child_bench(b, "metrics bench", cmd, 15)


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so `finally` blocks stop our child processes


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=400, help="seconds for the whole run")
    p.add_argument("--trial-seconds", type=float, default=2.0)
    p.add_argument("--latency-rounds", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=8, help="trials per rate search")
    p.add_argument("--precision", type=float, default=0.07, help="stop bisecting at hi/lo-1")
    p.add_argument("--lateness-seconds", type=float, default=2.0)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--many-sessions", type=int, default=10000)
    p.add_argument("--swaps", type=float, default=0.05)
    p.add_argument("--timeout-ms", type=int, default=100, help="daemon reorder timeout")
    p.add_argument("--start-rate", type=float, default=40000)
    p.add_argument("--baseline-cmd", default=BASELINE_CMD,
                   help="relay command template: {python} {listen} {lns} {timeout_ms}")
    p.add_argument("--daemon-cmd", default=DAEMON_CMD, help="same placeholders, and {rcvbuf}")
    p.add_argument("--daemon-label", default="daemon",
                   help="name shown for --daemon-cmd (say so when it is a stand-in)")
    p.add_argument("--relay-rcvbuf", type=int, default=4 << 20,
                   help="SO_RCVBUF for the baseline (the {rcvbuf} placeholder): the same buffer "
                        "the daemon should use, so loss-free compares CPU cost, not buffer size")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not use taskset")
    p.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                   help="nice level of every bench process (default -10 as root: other load "
                        "on a shared machine then disturbs baseline and daemon less)")
    p.add_argument("--quick", action="store_true", help="tiny engine bench (smoke)")
    p.add_argument("--smoke", action="store_true",
                   help="prove the harness works in ~20 s: short trials, 2 search steps, "
                        "300 'many' sessions, tiny engine bench, no metrics bench")
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--generator-mode", choices=["auto", "gso", "sendmmsg"], default="auto",
                   help="how the generator sends (auto: UDP GSO where it works). In-path mode: "
                   "the kernel flags GSO segments CSUM_NOTVERIFIED, so every datagram's UDP "
                   "checksum is verified (as for traffic from a NIC that does not verify); "
                   "with sendmmsg none is (a NIC that does)")
    p.add_argument("--no-gso-variant", dest="gso_variant", action="store_false",
                   help="skip the loss-free search of the daemon with --udp-gso")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default: bench/results/bench-<time>.json and latest.json)")
    p.add_argument("--plot", type=Path, default=RESULTS / "throughput.png")
    args = p.parse_args(argv)
    if args.smoke:
        args.trial_seconds, args.max_steps, args.start_rate = 0.5, 2, 5000.0
        args.many_sessions, args.quick, args.precision = 300, True, 1.0
        args.lateness_seconds, args.latency_rounds = 1.0, 1
        args.gso_variant = False

    started = time.monotonic()
    pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    autogroup = bool(args.nice) and Path("/proc/self/autogroup").exists() and Path(
        "/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    b = Bench(args=args, deadline=started + args.budget, pin=pin, autogroup=autogroup)
    try:
        return measure(b, args, started)
    finally:
        b.kill_all()
        shutil.rmtree(b.tmp, ignore_errors=True)


def measure(b: Bench, args: argparse.Namespace, started: float) -> int:
    pin = b.pin
    autogroup = b.autogroup
    baseline = Target("baseline", args.baseline_cmd)
    plan = plan_builds(b, args)
    stand_in = args.daemon_cmd != DAEMON_CMD
    # The real daemon puts sessions back in order (an order error is a failure); a stand-in is
    # judged like the baseline. Its default build is what `l2tpreorder run` runs here.
    daemon = Target("daemon", args.daemon_cmd,
                    args.daemon_label + ("" if stand_in else f" {plan.default_build}"),
                    reorders=not stand_in, env={} if stand_in else builds.env(plan.default_build))
    summary: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname()), "pinned": pin,
                    "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "daemon_label": daemon.label,
        "builds": {"default": plan.default_build, "compiled_unavailable": plan.compiled_why},
    }
    print(f"bench: pinning {'relay on CPU 1, harness on CPU 0' if pin else 'off'}, nice "
          f"{args.nice}{' (own autogroups)' if autogroup else ''}, load average "
          f"{' '.join(summary['machine']['loadavg_at_start'])}", flush=True)
    summary["generator"] = choose_generator(b)
    print(f"bench: generator {summary['generator']}; daemon build {plan.default_build}"
          + (f" (compiled: n/a, {plan.compiled_why})" if plan.compiled_why else
             " (pure measured too)"), flush=True)

    print("harness ceilings:", flush=True)
    ceilings = measure_ceilings(b)
    summary["ceilings"] = ceilings
    print(f"  generator alone {ceilings['generator_pps']:.0f} pps, generator->sink "
          f"{ceilings['generator_to_sink_pps']:.0f} pps", flush=True)
    ceiling = ceilings["generator_to_sink_pps"]

    print(f"loss-free search, {args.sessions} sessions, {args.swaps:.0%} swaps:", flush=True)
    base_lf = b.search(baseline, sessions=args.sessions, swaps=args.swaps,
                       start=args.start_rate, ceiling=ceiling)
    summary["baseline"] = {"loss_free": base_lf}
    base_rate = base_lf["loss_free_pps"]

    daemon_ok = True
    daemon_lf: dict[str, Any] | None = None
    try:
        daemon_lf = b.search(daemon, sessions=args.sessions, swaps=args.swaps,
                             start=base_rate or args.start_rate, ceiling=ceiling)
    except TargetUnavailable as e:
        daemon_ok = False
        b.notes.append(f"daemon unavailable: {e}")
        print(f"  daemon unavailable: {e}", flush=True)
    summary["daemon"] = {"loss_free": daemon_lf}
    relay: dict[str, dict[str, Any] | None] = {plan.default_build: daemon_lf}
    if plan.default_build != "pure" and b.remaining() > 60:
        relay["pure"] = measure_relay_pure(b, args, daemon,
                                           (daemon_lf or {}).get("loss_free_pps") or base_rate
                                           or args.start_rate, ceiling)
    summary["relay"] = relay
    # The same daemon with `udp_gso: true` (opt-in: captures on the sending host then show
    # unsplit super-datagrams), so both sides of that trade-off come from one run.
    if daemon_ok and daemon_lf and args.gso_variant and b.remaining() > 60:
        # Judged like the daemon (it reorders) and run as the daemon (the same build env).
        gso = Target("daemon_gso", args.daemon_cmd + " --udp-gso", daemon.label + "+gso",
                     reorders=daemon.reorders, env=daemon.env)
        try:
            summary["daemon_gso"] = {"loss_free": b.search(
                gso, sessions=args.sessions, swaps=args.swaps,
                start=daemon_lf["loss_free_pps"] or args.start_rate, ceiling=ceiling)}
        except TargetUnavailable as e:
            b.notes.append(f"daemon with --udp-gso unavailable: {e}")

    relay_pure = (relay.get("pure") or {}).get("loss_free_pps")
    summary["inpath"] = measure_inpath(b, args, plan, relay_pure or base_rate or args.start_rate,
                                       ceiling)

    # 2x overload at the usual session count, and at many sessions for the daemon.
    if base_rate and b.remaining() > 20:
        summary["baseline"]["overload_2x"] = b.trial(
            baseline, sessions=args.sessions, rate=2 * base_rate, swaps=args.swaps,
            label="overload")
    if daemon_ok and daemon_lf and daemon_lf["loss_free_pps"] and b.remaining() > 20:
        d_rate = daemon_lf["loss_free_pps"]
        summary["daemon"]["overload_2x"] = b.trial(
            daemon, sessions=args.sessions, rate=2 * d_rate, swaps=args.swaps, label="overload")
        print(f"loss-free search, {args.many_sessions} sessions:", flush=True)
        many = b.search(daemon, sessions=args.many_sessions, swaps=args.swaps, start=d_rate,
                        ceiling=ceiling)
        summary["daemon"]["loss_free_many"] = many
        if many["loss_free_pps"] and b.remaining() > 15:
            over = b.trial(daemon, sessions=args.many_sessions, rate=2 * many["loss_free_pps"],
                           swaps=args.swaps, label="overload")
            summary["daemon"]["overload_2x_many"] = over

    # Latency of in-order packets at a quarter of the baseline's loss-free rate, small batches,
    # interleaved rounds; the least-disturbed round (lowest p99) of each target is kept.
    lat_rate = 0.25 * base_rate if base_rate else 10000.0
    print(f"latency at {lat_rate:.0f} pps (batch 4, {args.latency_rounds} rounds):", flush=True)
    for _ in range(args.latency_rounds):
        for tgt in ([baseline, daemon] if daemon_ok else [baseline]):
            if b.remaining() > 15:
                r = b.trial(tgt, sessions=args.sessions, rate=lat_rate, swaps=args.swaps,
                            latency=True, batch=4, label="latency")
                best = summary[tgt.name].get("latency")
                p99 = r["latency_normal_ns"].get("p99", math.inf)
                if best is None or p99 < best["latency_normal_ns"].get("p99", math.inf):
                    summary[tgt.name]["latency"] = r

    # Release lateness of held packets: 1% planned loss, no swaps.
    if daemon_ok and b.remaining() > 15:
        late_rate = min(20000.0, 0.25 * base_rate) if base_rate else 5000.0
        print(f"release lateness at {late_rate:.0f} pps, 1% loss:", flush=True)
        r = b.trial(daemon, sessions=args.sessions, rate=late_rate, swaps=0.0, loss=0.01,
                    batch=4, duration=args.lateness_seconds, label="lateness")
        timeout_ns = args.timeout_ms * 1_000_000
        lat = r["latency_after_gap_ns"]
        summary["daemon"]["lateness"] = {
            "trial": r,
            # release time minus (send time + timeout): includes the transit (tens of us);
            # negative = released before the deadline (held for less than the timeout)
            "lateness_us": {k: (v - timeout_ns) / 1000.0 for k, v in lat.items()
                            if k.startswith("p") or k in ("min", "max")},
            "held_packets_seen": lat.get("count", 0),
        }

    if not args.skip_engine:
        # The default build's numbers under "engine"; the pure build's too when that differs.
        summary["engine"] = run_engine_bench(b, plan.default_build)
        if plan.default_build != "pure":
            summary["engine_pure"] = run_engine_bench(b, "pure")
        if not args.smoke:
            summary["metrics"] = run_metrics_bench(b)

    # ---- ratios and headline ----------------------------------------------------------------
    ratios: dict[str, float | None] = {}
    d_lf = daemon_lf["loss_free_pps"] if daemon_lf else None
    ratios["loss_free_daemon_over_baseline"] = d_lf / base_rate if d_lf and base_rate else None
    gso_lf = (summary.get("daemon_gso") or {}).get("loss_free") or {}
    g_lf = gso_lf.get("loss_free_pps")
    ratios["loss_free_daemon_gso_over_baseline"] = g_lf / base_rate if g_lf and base_rate else None
    many_d = summary["daemon"].get("loss_free_many")
    over_many = summary["daemon"].get("overload_2x_many")
    ratios["overload_2x_many_over_loss_free_many"] = (
        over_many["forwarded_pps"] / many_d["loss_free_pps"] if over_many and many_d else None)
    over_b = summary["baseline"].get("overload_2x")
    ratios["baseline_overload_2x_over_loss_free"] = (
        over_b["forwarded_pps"] / base_rate if over_b and base_rate else None)
    lat_b = summary["baseline"].get("latency", {}).get("latency_normal_ns", {})
    lat_d = summary.get("daemon", {}).get("latency", {}) or {}
    lat_d = lat_d.get("latency_normal_ns", {}) if lat_d else {}
    added = {}
    for key in ("p50", "p99"):
        if key in lat_b and key in lat_d:
            added[key] = (lat_d[key] - lat_b[key]) / 1000.0
    summary["added_latency_us"] = added
    # The issue-23 lines (relay and in-path per build, the C reader's ceiling) and their ratios.
    build_lines = ratio_lines(summary["relay"], summary["inpath"], plan, ratios)
    summary["ratios"] = ratios
    summary["notes"] = b.notes
    summary["trials"] = b.trials
    summary["elapsed_s"] = time.monotonic() - started

    out = args.out or RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    if args.out is None:  # an explicit --out (e.g. the smoke test) leaves latest.json alone
        (RESULTS / "latest.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(plot(b.trials, args.plot, summary))

    print("\nsummary (ratios against the same run's baseline):")
    print(f"  harness ceiling (generator->sink, no relay): {ceiling:.0f} pps")
    print(f"  baseline loss-free: {base_rate:.0f} pps"
          + ("  [harness-bound]" if base_lf["harness_bound"] else ""))
    if daemon_lf:
        print(f"  {daemon.label} loss-free: {daemon_lf['loss_free_pps']:.0f} pps"
              + ("  [harness-bound]" if daemon_lf["harness_bound"] else ""))
    if g_lf:
        print(f"  {daemon.label} with --udp-gso loss-free: {g_lf:.0f} pps, ratio to baseline "
              f"{fmt(ratios['loss_free_daemon_gso_over_baseline'])}"
              + ("  [harness-bound]" if gso_lf.get("harness_bound") else ""))
    if many_d:
        print(f"  {daemon.label} loss-free at {args.many_sessions} sessions: "
              f"{many_d['loss_free_pps']:.0f} pps")
    print(f"  2x overload, {args.many_sessions} sessions, forwarded / loss-free: "
          f"{fmt(ratios['overload_2x_many_over_loss_free_many'])} (target >= 0.90)")
    print(f"  2x overload, baseline, forwarded / loss-free: "
          f"{fmt(ratios['baseline_overload_2x_over_loss_free'])}")
    if lat_b:
        print(f"  in-order latency baseline p50/p99: {fmt(pct_us(lat_b, 'p50'), '.1f')} / "
              f"{fmt(pct_us(lat_b, 'p99'), '.1f')} us")
    if lat_d:
        print(f"  in-order latency {daemon.label} p50/p99: {fmt(pct_us(lat_d, 'p50'), '.1f')} / "
              f"{fmt(pct_us(lat_d, 'p99'), '.1f')} us  (added p99 "
              f"{fmt(added.get('p99'), '.1f')} us, target <= 50)")
    late = summary.get("daemon", {}).get("lateness") if summary.get("daemon") else None
    if late:
        lu = late["lateness_us"]
        print(f"  held-packet release minus deadline min/p50/p99/max: "
              f"{fmt(lu.get('min'), '.0f')} / {fmt(lu.get('p50'), '.0f')} / "
              f"{fmt(lu.get('p99'), '.0f')} / {fmt(lu.get('max'), '.0f')} us over "
              f"{late['held_packets_seen']:.0f} packets (target p99 <= 1000)")
    for eng in (summary.get("engine"), summary.get("engine_pure")):
        for line in (eng or {}).get("summary_lines", []):
            print(f"  engine ({eng['build']}): {line}")
    met = summary.get("metrics")
    if met:
        print(f"  /metrics scrape at {met['sessions']} sessions: "
              f"{met['scrape_default']['median_ms']:.1f} ms median (default series), "
              f"{met['scrape_per_session']['median_ms']:.1f} ms with per-session top N "
              f"(target: loop stall <= 5 ms)")
        r = met["ratios_vs_baseline"]
        print(f"  relay batch latency while scraping back to back / without scrapes, p50 p99: "
              f"default {r['default']['p50']:.2f} {r['default']['p99']:.2f}, per-session "
              f"{r['per_session']['p50']:.2f} {r['per_session']['p99']:.2f}")
    for note in b.notes:
        print(f"  note: {note}")
    print(f"  results: {out} ({summary['elapsed_s']:.0f} s)")
    ratio = ratios["loss_free_daemon_over_baseline"]
    if ratio is None:
        reason = "daemon unavailable" if not daemon_ok else "no loss-free rate found"
        print(f"loss-free ratio daemon/baseline: n/a ({reason})")
        return 1
    for line in build_lines:
        print(line)
    label = f"  (daemon = {args.daemon_label})" if args.daemon_label != "daemon" else ""
    print(f"loss-free ratio daemon/baseline: {ratio:.2f}{label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
