"""Repeat the live xl2tpd lab's impairment scenarios with a reorder setting, count lost frames.

The evidence for `reorder.adaptive`'s default (docs/adaptive.md, issue 22): Debian's xl2tpd as
LAC and LNS in network namespaces (tests/integration/xl2tpd_lab.py), the impairment proxy between
them, l2tpreorder in front of the LNS in relay mode and in in-path mode (NFQUEUE), each scenario
`--runs` times. A frame is *lost* when the LAC's fake pppd wrote it, the proxy did not drop it on
purpose, and the LNS's fake pppd never got it. Frames that arrived out of order (a late packet
delivered with the next Ns) and duplicates are counted apart: they are not losses. Kernel-side
losses the lab notices itself (UDP receive-buffer overflows, tcpdump drops) are listed per run.

Needs root, xl2tpd, tcpdump, tshark, iproute2, iptables; optionally `--stress N` runs
`stress-ng --cpu N` alongside, as the issue asks. Example:

    sudo .venv/bin/python -m bench.adaptive_lab --runs 20 --reorder "adaptive: true" --stress 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.impair_proxy import frame_number
from tests.integration.xl2tpd_lab import Lab, LabError, Outcome, Scenario

FRAMES = 1000
SCENARIOS = {
    "swaps": Scenario("swaps", frames=FRAMES, displace=1, displace_rate=0.1),
    "displace4": Scenario("displace4", frames=FRAMES, displace=4, displace_rate=0.1),
    "loss2": Scenario("loss2", frames=FRAMES, drop=[(300, 2)]),
    "loss3": Scenario("loss3", frames=FRAMES, drop=[(300, 3)]),
    "duplicates": Scenario("duplicates", frames=FRAMES, duplicate_rate=0.05),
}
MODES = ("relay", "inpath")


def judge(o: Outcome) -> dict[str, Any]:
    """Lost (not dropped by the proxy, never received), out of order, duplicated at the LNS.

    Relay mode: the capture in the LNS namespace shows what reached xl2tpd's port, so a lost
    frame found there was lost behind the relay (xl2tpd's socket or its pppd: the lab's notes
    name the overflow), not by it. In-path mode tcpdump sees packets before NFQUEUE: no split."""
    dropped = o.frames_of("dropped")
    got = set(o.received)
    lost = sorted(set(range(o.scenario.frames)) - dropped - got)
    reached = {frame_number(c.datagram) for c in o.captured_data} if o.scenario.relay else set()
    by_relay = [f for f in lost if f not in reached] if o.scenario.relay else lost
    late = highest = 0
    for f in o.received:
        late += f < highest
        highest = max(highest, f)
    return {
        "lost": lost,
        "lost_before_lns_port": by_relay,
        "out_of_order": late,
        "duplicates": len(o.received) - len(got),
        "notes": o.notes,
        "workdir": str(o.workdir),
    }


def run_one(lab: Lab, name: str, mode: str, i: int, reorder: str) -> dict[str, Any]:
    sc = dataclasses.replace(
        SCENARIOS[name],
        name=f"{name}-{i}",
        seed=SCENARIOS[name].seed + i,  # each run its own impairment pattern
        relay=mode == "relay",
        inpath=mode == "inpath",
        reorder_yaml=reorder,
    )
    started = time.monotonic()
    try:
        result = judge(lab.run(sc))
    except (LabError, AssertionError, subprocess.SubprocessError, OSError) as e:
        result = {"error": f"{type(e).__name__}: {e}"[:300]}
    result.update(scenario=name, mode=mode, run=i, seconds=round(time.monotonic() - started, 1))
    return result


def summary(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'scenario':<11} {'mode':<7} {'runs':>4} {'errors':>6} {'runs w/ loss':>12} "
        f"{'frames lost':>11} {'of them at relay':>16} {'out of order':>12} {'dup at LNS':>10} "
        f"{'lab notes':>9}"
    ]
    keys = sorted({(r["scenario"], r["mode"]) for r in results}, key=lambda k: (k[1], k[0]))
    for name, mode in keys:
        rs = [r for r in results if (r["scenario"], r["mode"]) == (name, mode)]
        ok = [r for r in rs if "error" not in r]
        lines.append(
            f"{name:<11} {mode:<7} {len(rs):>4} {len(rs) - len(ok):>6} "
            f"{sum(1 for r in ok if r['lost']):>12} {sum(len(r['lost']) for r in ok):>11} "
            f"{sum(len(r.get('lost_before_lns_port', r['lost'])) for r in ok):>16} "
            f"{sum(r['out_of_order'] for r in ok):>12} {sum(r['duplicates'] for r in ok):>10} "
            f"{sum(1 for r in ok if r['notes']):>9}"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--scenario", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    p.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--reorder", default="adaptive: true", help='e.g. "adaptive: true"')
    p.add_argument("--stress", type=int, default=0, help="stress-ng --cpu N alongside (0: none)")
    p.add_argument("--deadline", type=float, default=None, help="stop starting runs after this "
                   "many seconds (the runs done are reported)")
    p.add_argument("--json", help="write every run here (one JSON object per line)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="adaptive-lab-"))
    stress = None
    if args.stress:
        stress = subprocess.Popen(["stress-ng", "--cpu", str(args.stress), "--quiet"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    out = open(args.json, "w", encoding="utf-8") if args.json else None  # noqa: SIM115
    lab = Lab(root)
    try:
        lab.open()
        print(f"load before: {os.getloadavg()}; reorder: {{{args.reorder}}}; "
              f"stress-ng --cpu {args.stress}", flush=True)
        for i in range(args.runs):
            for mode in args.mode:
                for name in args.scenario:
                    if args.deadline and time.monotonic() - started > args.deadline:
                        raise TimeoutError
                    r = run_one(lab, name, mode, i, args.reorder)
                    r["load1"] = round(os.getloadavg()[0], 2)
                    results.append(r)
                    if out is not None:
                        out.write(json.dumps(r) + "\n")
                        out.flush()
                    print(json.dumps({k: v for k, v in r.items() if k != "workdir"}), flush=True)
                    if "error" not in r and not r["lost"] and not r["notes"]:
                        shutil.rmtree(r["workdir"], ignore_errors=True)  # keep only the odd ones
    except (TimeoutError, KeyboardInterrupt):
        print("stopped early", flush=True)
    finally:
        lab.close()
        if stress is not None:
            stress.terminate()
            stress.wait(timeout=30)
        if out is not None:
            out.close()
    print(summary(results), flush=True)
    print(f"load after: {os.getloadavg()}", flush=True)
    return 1 if any(r.get("lost") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
