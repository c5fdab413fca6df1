"""`l2tpreorder status`: the running daemon's LAC peers and sessions, as a table or JSON.

The daemon builds the answer (`daemon/status.py`, the same shape in both modes); this prints
it. Each LAC peer is shown with the upstream address xl2tpd sees it as (source address and port
of its socket towards the LNS): the one way to match an xl2tpd log line to a real LAC.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from l2tpreorder.commands.client import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    ControlError,
    add_config_argument,
    request,
)

COLUMNS = (
    ("tunnel_id", "tunnel", 6),
    ("session_id", "session", 7),
    ("packets", "packets", 9),
    ("reordered", "reordered", 9),
    ("held", "held", 5),
    ("skipped", "skipped", 7),
    ("late_delivered", "late sent", 9),
    ("late", "late drop", 9),
    ("duplicates", "dup", 6),
    ("timeout_ms", "timeout ms", 10),
    ("last_seen_s", "seen s ago", 10),
)


def format_table(answer: dict[str, Any]) -> str:
    """A human view: one header line per LAC peer, one line per session under it."""
    t = answer.get("totals", {})
    lines = [
        f"l2tpreorder pid {answer.get('pid', '?')}, up {answer.get('uptime_s', 0):.0f} s: "
        f"{answer.get('status', '')}",
        f"{_count(t.get('peers', 0), 'LAC peer')}, {_count(t.get('sessions', 0), 'session')}, "
        f"{t.get('held', 0)} held now",
    ]
    health = answer.get("lns_health", {})
    if health.get("problem"):
        lines.append(f"LNS {answer.get('lns', '?')} DOES NOT ANSWER: {health['problem']}")
    elif "lns_health" in answer and health.get("answering") is None:
        lines.append(f"LNS {answer.get('lns', '?')}: {health.get('state', 'unknown')}")
    lines.extend(_queue_line(q) for q in answer.get("queues", []))
    header = "  " + " ".join(f"{title:>{width}}" for _, title, width in COLUMNS)
    for peer in answer.get("peers", []):
        lines.append("")
        where = (
            f"on NFQUEUE {peer['queue']}"
            if "queue" in peer
            else f"seen by the LNS as {peer['upstream']}"
        )
        lines.append(
            f"LAC {peer['lac']}  {where}  "
            f"(last packet {peer['last_seen_s']:.1f} s ago, "
            f"{_count(len(peer['sessions']), 'session')})"
        )
        if peer["sessions"]:
            lines.append(header)
        for s in peer["sessions"]:
            lines.append("  " + " ".join(f"{_cell(s[k]):>{w}}" for k, _, w in COLUMNS))
    return "\n".join(lines)


def _queue_line(q: dict[str, Any]) -> str:
    """In-path mode: one line per queue's worker (or why it did not answer)."""
    if "error" in q:
        return f"NFQUEUE {q['queue']}: worker not answering: {q['error']}"
    k = q.get("kernel") or {}
    c = q["counters"]
    line = (
        f"NFQUEUE {q['queue']}: worker pid {q['pid']}, {c['packets']} packets, "
        f"{q['awaiting_verdict']} awaiting verdict; kernel: {k.get('waiting', '?')} waiting, "
        f"{k.get('queue_full_drops', '?')} queue_full + {k.get('socket_full_drops', '?')} "
        "socket_full drops"
    )
    if c.get("bad_checksum"):
        line += f"; {c['bad_checksum']} bad UDP checksums passed untouched"
    if c.get("not_allowed"):
        line += f"; {c['not_allowed']} from outside inpath.allow passed untouched"
    if c.get("fragments_seen"):
        line += (
            f"\n  WARNING: {c['fragments_seen']} IP fragments reached the queue (not ordered): "
            "load the reassembly rule `l2tpreorder rules` prints"
        )
    return line


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    parser.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="refresh the table every SECONDS until interrupted",
    )


def main(args: argparse.Namespace) -> int:
    while True:
        try:
            answer = request("status", args.config)
        except ControlError as e:
            print(f"l2tpreorder: status: {e}", file=sys.stderr)
            return EXIT_UNREACHABLE
        if not answer.get("ok"):
            print(f"l2tpreorder: status: {answer.get('error')}", file=sys.stderr)
            return EXIT_REFUSED
        if args.json:
            print(json.dumps(answer, indent=2))
        else:
            if args.watch:
                print("\x1b[H\x1b[2J", end="")  # clear the terminal for a live view
            print(format_table(answer))
        if not args.watch:
            return EXIT_OK
        try:
            time.sleep(max(args.watch, 0.2))
        except KeyboardInterrupt:
            return EXIT_OK
