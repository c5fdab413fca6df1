"""Interleaved A/B of the engine microbenchmark between source trees (e.g. before/after a change).

Each case of `bench/engine_bench.py` (`bench_case`: best of `--repeat` runs, ratio against the
plain dict loop of the same run) is run in a fresh interpreter per tree, cwd = that tree, so each
tree measures its own engine with its own bench code. Trees alternate A B B A ... per case and
round, so a slow spell on a shared machine hits both alike; the summary gives the median and the
best ratio per tree. Example (old engine vs a checkout of this tree's HEAD, pinned to CPU 0):

    git archive HEAD | tar -x -C /tmp/ab-head
    python -m bench.engine_ab --cpu 0 --tree old=/work/wt-old:/work/wt-old/.venv/bin/python \\
        --tree head=/tmp/ab-head
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

SNIPPET = (
    "import json, sys\n"
    "from bench.engine_bench import bench_case\n"
    "s, p, n, r = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]\n"
    "print(json.dumps(bench_case(int(s), p, int(n), int(r))))\n"
)


def parse_tree(spec: str) -> tuple[str, str, str]:
    """NAME=DIR[:PYTHON] (PYTHON defaults to this interpreter)."""
    name, _, rest = spec.partition("=")
    path, _, python = rest.partition(":")
    if not name or not path:
        raise argparse.ArgumentTypeError(f"--tree {spec!r}: expected NAME=DIR[:PYTHON]")
    return name, path, python or sys.executable


def wait_quiet(pattern: str | None) -> None:
    """Wait while `pgrep -f pattern` finds a process other than this one (other benchmarks on a
    shared machine; this one's command line holds the pattern itself)."""
    while pattern:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
        if not set(found.split()) - {str(os.getpid())}:
            return
        time.sleep(2)


def run_one(tree: tuple[str, str, str], case: tuple[int, str], args: argparse.Namespace) -> Any:
    wait_quiet(args.pause_while)
    _name, path, python = tree
    sessions, pattern = case
    count = max(args.packets, 2 * sessions)
    cmd = [python, "-c", SNIPPET, str(sessions), pattern, str(count), str(args.repeat)]
    if args.cpu is not None:
        cmd = ["taskset", "-c", str(args.cpu), *cmd]
    proc = subprocess.run(cmd, cwd=path, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tree", type=parse_tree, action="append", required=True,
                   help="NAME=DIR[:PYTHON], given twice (A and B)")
    p.add_argument("--sessions", type=int, nargs="+", default=[100, 10_000])
    p.add_argument("--patterns", nargs="+", default=["swaps", "loss"])
    p.add_argument("--rounds", type=int, default=3, help="A B B A rounds per case")
    p.add_argument("--packets", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3, help="runs per process (best kept)")
    p.add_argument("--cpu", type=int, default=None, help="taskset every run to this CPU")
    p.add_argument("--pause-while", metavar="REGEX",
                   help="before each run, wait while `pgrep -f REGEX` finds a process")
    p.add_argument("--json", help="write every run here")
    args = p.parse_args(argv)
    if len(args.tree) != 2:
        p.error("--tree: give exactly two")
    a, b = args.tree
    results: dict[tuple[int, str, str], list[Any]] = {}
    for rnd in range(args.rounds):
        for sessions in args.sessions:
            for pattern in args.patterns:
                case = (sessions, pattern)
                for tree in (a, b, b, a) if rnd % 2 == 0 else (b, a, a, b):
                    r = run_one(tree, case, args)
                    results.setdefault((sessions, pattern, tree[0]), []).append(r)
                    print(f"round {rnd} {sessions:6d} {pattern:6s} {tree[0]:>8s} "
                          f"{r['engine_ns_per_packet']:6.0f} ns/pkt ratio "
                          f"{r['ratio_engine_over_plain']:.2f}", file=sys.stderr, flush=True)
    print(f"{'sessions':>8s} {'pattern':7s} {'tree':>8s} {'ratio med':>9s} {'best':>6s} "
          f"{'ns/pkt med':>10s}  outcomes (in order, released, dropped)")
    for (sessions, pattern, name), runs in results.items():
        ratios = [r["ratio_engine_over_plain"] for r in runs]
        ns = [r["engine_ns_per_packet"] for r in runs]
        c = runs[0]["engine_counters"]
        print(f"{sessions:8d} {pattern:7s} {name:>8s} {statistics.median(ratios):9.2f} "
              f"{min(ratios):6.2f} {statistics.median(ns):10.0f}  "
              f"{c['forwarded_in_order']} {c['released']} {c['dropped']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"sessions": k[0], "pattern": k[1], "tree": k[2], "runs": v}
                       for k, v in results.items()], f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
