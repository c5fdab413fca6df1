"""`l2tpreorder status`: the running daemon's LAC peers and sessions, as a table or JSON.

The daemon builds the answer (`daemon/status.py`, the same shape in both modes); this prints
it. Each LAC peer is shown with the upstream address xl2tpd sees it as (source address and port
of its socket towards the LNS): the one way to match an xl2tpd log line to a real LAC.

A daemon may hold 100,000 sessions, so the terminal view is a one-screen summary (uptime, drops
by reason, LNS health), followed by the sessions only when they fit on a screen
(`SCREEN_SESSIONS`), with `--all`, or with a selection (`--peer`, `--tunnel`, `--session`,
`--sort`, `--top`) that the daemon applies before it builds its answer. `--json` prints the whole
answer (every session, the shape before issue 24) unless a selection or `--summary` is given.
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
from l2tpreorder.daemon.status import SORT_KEYS, StatusQuery, select_answer
from l2tpreorder.words import plural

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


SCREEN_SESSIONS = 20  # the default view lists sessions when there are at most this many

# Drops by reason, as the totals name them and as the summary says them.
DROP_REASONS = (
    ("dropped_late", "late"),
    ("dropped_duplicate", "duplicate"),
    ("dropped_stale", "stale"),
    ("dropped_far_ahead", "far ahead"),
    ("dropped_malformed", "malformed"),
)


def human_duration(seconds: float) -> str:
    """`42 s`, `5 min 3 s`, `2 h 14 min`, `3 d 4 h`: the two largest units, like uptime(1)."""
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {s} s"
    return f"{s} s"


def format_summary(answer: dict[str, Any]) -> str:
    """One screen whatever the session count: who, how long, how many, what was lost, and
    whether the LNS (relay) or each queue's worker (in-path) is healthy."""
    t = answer.get("totals", {})
    lines = [
        f"l2tpreorder pid {answer.get('pid', '?')}, up "
        f"{human_duration(answer.get('uptime_s', 0))}: {answer.get('status', '')}",
        f"{plural(t.get('peers', 0), 'LAC peer')}, {plural(t.get('sessions', 0), 'session')}, "
        f"{t.get('held', 0):,} held now, {t.get('reordered', 0):,} reordered",
    ]
    if any(key in t for key, _ in DROP_REASONS):
        drops = ", ".join(f"{t.get(key, 0):,} {word}" for key, word in DROP_REASONS)
        lines.append(
            f"dropped: {drops}; {t.get('late_delivered', 0):,} late delivered (not dropped)"
        )
    lines.extend(_health_lines(answer))
    return "\n".join(lines)


def _health_lines(answer: dict[str, Any]) -> list[str]:
    lines = []
    health = answer.get("lns_health")
    if isinstance(health, dict):
        lns = answer.get("lns", "?")
        if health.get("problem"):
            lines.append(f"LNS {lns} DOES NOT ANSWER: {health['problem']}")
        elif health.get("answering") is None:
            lines.append(f"LNS {lns}: {health.get('state', 'unknown')}")
        else:
            lines.append(f"LNS {lns}: answering")
    lines.extend(_queue_line(q) for q in answer.get("queues", []))
    return lines


def select(answer: dict[str, Any], query: StatusQuery) -> dict[str, Any]:
    """`answer` cut to `query` again (an older daemon ignores the selection) with `selection`
    added: the query, how many matched, how many are shown."""
    selected, matched, shown = select_answer(answer, query)
    selected["selection"] = {**query.as_request(), "matched": matched, "shown": shown}
    return selected


def format_table(answer: dict[str, Any]) -> str:
    """A human view: the summary, then one header line per LAC peer, one line per session."""
    lines = [format_summary(answer)]
    selection = answer.get("selection")
    if selection is not None:
        how = f", by {selection['sort']}" if selection.get("sort") else ""
        lines.append(
            f"showing {selection['shown']:,} of {plural(selection['matched'], 'matching session')}"
            f"{how}"
        )
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
            f"{plural(len(peer['sessions']), 'session')})"
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
    # the queue's maxlen in the kernel now (queue_maxlen, or raised: docs/inpath.md)
    maxlen = f" of maxlen {q['maxlen']}" if "maxlen" in q else ""  # (an older worker: none)
    line = (
        f"NFQUEUE {q['queue']}: worker pid {q['pid']}, {c['packets']} packets, "
        f"{q['awaiting_verdict']} awaiting verdict; kernel: {k.get('waiting', '?')} waiting"
        f"{maxlen}, "
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


def _non_negative(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the daemon's answer as JSON (every session, unless selected below)",
    )
    parser.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="refresh the view every SECONDS until interrupted",
    )
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        "--summary",
        action="store_true",
        help="totals only: uptime, sessions, drops by reason, LNS health (the default view "
        f"lists the sessions too when there are at most {SCREEN_SESSIONS})",
    )
    view.add_argument("--all", action="store_true", help="list every session of every peer")
    sel = parser.add_argument_group("selecting sessions (the daemon applies these)")
    sel.add_argument("--peer", metavar="ADDR", help="one LAC: HOST:PORT, or HOST for any port")
    sel.add_argument("--tunnel", type=_non_negative, metavar="ID", help="sessions of tunnel_id ID")
    sel.add_argument("--session", type=_non_negative, metavar="ID", help="session_id ID")
    sel.add_argument(
        "--sort",
        choices=list(SORT_KEYS),
        help="biggest first: held now, drops, packets, reordered, skipped Ns, age (since the "
        "first packet), idle (since the last)",
    )
    sel.add_argument("--top", type=_non_negative, metavar="N", help="at most N sessions")


def query_of(args: argparse.Namespace) -> StatusQuery:
    return StatusQuery(args.peer, args.tunnel, args.session, args.sort, args.top)


def request_fields(args: argparse.Namespace, query: StatusQuery) -> dict[str, Any]:
    """What to ask the daemon for: no session for --summary, a screenful by default (enough
    to tell whether all fit), else every session or the selection."""
    if args.summary:
        return {"top": 0}
    if query.selects or args.all or args.json:
        return query.as_request()
    return {"top": SCREEN_SESSIONS + 1}


def main(args: argparse.Namespace) -> int:
    query = query_of(args)
    if args.summary and query.selects:
        print(
            "l2tpreorder: status: --summary lists no session, so a selection would be ignored: "
            "drop --summary or the selection",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE  # 2: bad usage
    fields = request_fields(args, query)
    while True:
        try:
            answer = request("status", args.config, fields=fields)
        except ControlError as e:
            print(f"l2tpreorder: status: {e}", file=sys.stderr)
            return EXIT_UNREACHABLE
        if not answer.get("ok"):
            print(f"l2tpreorder: status: {answer.get('error')}", file=sys.stderr)
            return EXIT_REFUSED
        if query.selects:
            answer = select(answer, query)
        listing = not args.summary and (
            query.selects
            or args.all
            or args.json
            or answer.get("totals", {}).get("sessions", 0) <= SCREEN_SESSIONS
        )
        if not listing:
            answer = {k: v for k, v in answer.items() if k != "peers"}
            answer["totals"] = {
                k: v for k, v in answer.get("totals", {}).items() if k != "sessions_matched"
            }
        if args.json:
            print(json.dumps(answer, indent=2))
        else:
            if args.watch:
                print("\x1b[H\x1b[2J", end="")  # clear the terminal for a live view
            print(format_table(answer) if listing else _summary_view(answer))
        if not args.watch:
            return EXIT_OK
        try:
            time.sleep(max(args.watch, 0.2))
        except KeyboardInterrupt:
            return EXIT_OK


def _summary_view(answer: dict[str, Any]) -> str:
    return (
        format_summary(answer)
        + "\n(sessions: --all, or --top N --sort held|drops|...; --peer, --tunnel, --session)"
    )
