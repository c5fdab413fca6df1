"""Engine microbenchmarks without sockets: ns/packet through `ReorderEngine.receive`, RSS/session.

Each case is timed twice: per call (`receive` per datagram: the figures this benchmark always
gave) and in batches (`receive_many` per batch, as the relay hands over one recvmmsg: issue 23),
on fresh engines, with identical counters required.

Driven like the daemon drives it: batches of 64 datagrams in virtual time at 100k pps, `expire`
whenever `next_deadline()` is due, `out` cleared after each batch. Patterns: in order, 10% swaps
(a packet sent before its predecessor, adjacent), 1% loss (Ns never sent, so the next packet waits
for the reorder timeout), at 1, 100, 10,000 and 100,000 sessions (one warm-up packet per session
first, untimed). Each case is timed `--repeat` times and the best run is kept (the least-disturbed
one on a shared machine).

The ratio is against a plain loop measured in the same run: unpack tunnel/session/Ns with one
struct call, look the session up in a dict, store Ns, append to the out list. That is the floor of
any Python relay that keys sessions; the engine's cost above it is its reorder work.

RSS per idle session is measured in a fresh interpreter: RSS after creating N sessions (one packet
each, out list cleared, gc run) minus RSS before, over N.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.wire import build_data

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
PPS = 100_000.0
TIMEOUT = 0.1
FLOW = ("192.0.2.1", 1701)  # documentation address: a flow key only, nothing is sent anywhere
SESSIONS_PER_TUNNEL = 65535
HDR = struct.Struct("!HHHH")  # flags, tunnel_id, session_id, Ns (data with S, no L)

Packet = tuple[bytes, Hashable]


class Maker:
    """Datagrams from one build_data template, ids and Ns patched with struct (fast, same bytes)."""

    def __init__(self, size: int = 100) -> None:
        self.template = bytearray(build_data(1, 1, b"\xff\x03\x00\x21" + bytes(size - 14), ns=0))
        flags, tunnel, session, ns = HDR.unpack_from(self.template)
        if (tunnel, session, ns) != (1, 1, 0) or flags & 0x0800 == 0:
            raise SystemExit("build_data's header layout is not flags/tunnel/session/Ns")
        self.flags = flags

    def make(self, index: int, ns: int) -> bytes:
        HDR.pack_into(self.template, 0, self.flags, 1 + index // SESSIONS_PER_TUNNEL,
                      1 + index % SESSIONS_PER_TUNNEL, ns & 0xFFFF)
        return bytes(self.template)


def traffic(sessions: int, count: int, pattern: str, seed: int = 6) -> list[bytes]:
    """`count` datagrams over `sessions` sessions (uniformly random), Ns starting at 1."""
    rng = random.Random(seed)
    maker = Maker()
    next_ns = [1] * sessions
    pending: list[bytes | None] = [None] * sessions  # the swapped predecessor to send next
    out: list[bytes] = []
    while len(out) < count:
        s = rng.randrange(sessions)
        waiting = pending[s]
        if waiting is not None:
            out.append(waiting)
            pending[s] = None
            continue
        ns = next_ns[s]
        r = rng.random()
        if pattern == "swaps" and r < 0.1 / 0.9:  # 10% of packets go before their predecessor
            out.append(maker.make(s, ns + 1))
            pending[s] = maker.make(s, ns)
            next_ns[s] = ns + 2
        elif pattern == "loss" and r < 0.01:
            out.append(maker.make(s, ns + 1))  # ns is lost
            next_ns[s] = ns + 2
        else:
            out.append(maker.make(s, ns))
            next_ns[s] = ns + 1
    return out


def warmup_packets(sessions: int) -> list[bytes]:
    maker = Maker()
    return [maker.make(s, 0) for s in range(sessions)]


def drive_engine(engine: ReorderEngine, packets: list[bytes], start: float) -> int:
    """The daemon's loop in virtual time; returns elapsed perf_counter ns."""
    receive = engine.receive
    take_output = engine.take_output
    next_deadline = engine.next_deadline
    expire = engine.expire
    flow = FLOW
    step = BATCH / PPS
    now = start
    t0 = time.perf_counter_ns()
    for i in range(0, len(packets), BATCH):
        for data in packets[i : i + BATCH]:
            receive(data, flow, now)
        deadline = next_deadline()
        if deadline is not None and deadline <= now:
            expire(now)
        take_output()
        now += step
    return time.perf_counter_ns() - t0


def drive_engine_batched(engine: ReorderEngine, packets: list[bytes], start: float) -> int:
    """`drive_engine` with each batch handed over in one `receive_many` call (what the relay
    does with one recvmmsg's datagrams): the per-packet loop runs inside the engine."""
    receive_many = engine.receive_many
    take_output = engine.take_output
    next_deadline = engine.next_deadline
    expire = engine.expire
    flows: list[Hashable] = [FLOW] * BATCH
    step = BATCH / PPS
    now = start
    t0 = time.perf_counter_ns()
    for i in range(0, len(packets), BATCH):
        batch = packets[i : i + BATCH]
        receive_many(batch, flows if len(batch) == BATCH else flows[: len(batch)], now)
        deadline = next_deadline()
        if deadline is not None and deadline <= now:
            expire(now)
        take_output()
        now += step
    return time.perf_counter_ns() - t0


def drive_plain(packets: list[bytes], sessions: int) -> int:
    """The floor: unpack ids + Ns, dict lookup, store Ns, append, same batching."""
    table: dict[tuple[Hashable, int], list[int]] = {}
    for s in range(sessions):
        table[(FLOW, (1 + s // SESSIONS_PER_TUNNEL) << 16 | (1 + s % SESSIONS_PER_TUNNEL))] = [0]
    unpack = HDR.unpack_from
    out: list[tuple[Hashable, bytes]] = []
    append = out.append
    flow = FLOW
    t0 = time.perf_counter_ns()
    for i in range(0, len(packets), BATCH):
        for data in packets[i : i + BATCH]:
            _flags, tunnel, session, ns = unpack(data)
            table[(flow, tunnel << 16 | session)][0] = ns
            append((flow, data))
        out.clear()
    return time.perf_counter_ns() - t0


def timed_engine(
    drive: Callable[[ReorderEngine, list[bytes], float], int],
    packets: list[bytes],
    warm: list[bytes],
) -> tuple[int, dict[str, int]]:
    """One timed run of `drive` on a fresh engine with every session warmed up:
    (elapsed ns, the timed packets' counters)."""
    engine = ReorderEngine(EngineConfig(reorder_timeout=TIMEOUT))
    for data in warm:
        engine.receive(data, FLOW, 0.0)
    engine.take_output()
    gc.collect()
    c = engine.counters
    before = (c.forwarded_in_order, c.released, c.dropped)
    elapsed = drive(engine, packets, 1.0)
    return elapsed, {  # the timed packets only (warm-up subtracted)
        "forwarded_in_order": c.forwarded_in_order - before[0],
        "released": c.released - before[1],
        "held_packets_at_end": sum(len(s.held) for s in engine.sessions()),
        "dropped": c.dropped - before[2],
    }


def bench_case(sessions: int, pattern: str, count: int, repeat: int) -> dict[str, Any]:
    """Per call (`receive` per datagram, the existing figures) and in batches (`receive_many`
    per batch of 64), each the best of `repeat` runs, against the plain loop."""
    packets = traffic(sessions, count, pattern)
    warm = warmup_packets(sessions)
    best_engine = best_batch = best_plain = None
    counters: dict[str, int] = {}
    for _ in range(repeat):
        elapsed, counters = timed_engine(drive_engine, packets, warm)
        best_engine = elapsed if best_engine is None else min(best_engine, elapsed)
        elapsed, batch_counters = timed_engine(drive_engine_batched, packets, warm)
        best_batch = elapsed if best_batch is None else min(best_batch, elapsed)
        if batch_counters != counters:
            raise SystemExit(f"receive_many counted {batch_counters}, receive {counters}")
        plain = drive_plain(packets, sessions)
        best_plain = plain if best_plain is None else min(best_plain, plain)
    assert best_engine is not None and best_batch is not None and best_plain is not None
    return {
        "sessions": sessions,
        "pattern": pattern,
        "packets": len(packets),
        "engine_ns_per_packet": best_engine / len(packets),
        "plain_ns_per_packet": best_plain / len(packets),
        "ratio_engine_over_plain": best_engine / best_plain,
        "engine_counters": counters,
        "batch_ns_per_packet": best_batch / len(packets),
        "ratio_batch_over_plain": best_batch / best_plain,
    }


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss_child(sessions: int) -> dict[str, Any]:
    """In this (fresh) process: RSS growth per idle session."""
    maker = Maker()
    engine = ReorderEngine(EngineConfig(reorder_timeout=TIMEOUT))
    gc.collect()
    before = rss_kib()
    for s in range(sessions):
        engine.receive(maker.make(s, 0), FLOW, 0.0)
        if s % BATCH == 0:
            engine.take_output()
    engine.take_output()
    gc.collect()
    after = rss_kib()
    return {
        "sessions": engine.session_count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_idle_session": (after - before) * 1024 / sessions,
    }


def measure_rss(sessions: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.engine_bench", "--rss-child", str(sessions)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def run(sizes: list[int], count: int, repeat: int, rss_sessions: int) -> dict[str, Any]:
    cases = []
    for sessions in sizes:
        for pattern in ("in_order", "swaps", "loss"):
            n = max(count, 2 * sessions)
            case = bench_case(sessions, pattern, n, repeat)
            cases.append(case)
            print(
                f"engine {sessions:7d} sessions {pattern:9s} "
                f"{case['engine_ns_per_packet']:7.0f} ns/pkt  plain loop "
                f"{case['plain_ns_per_packet']:5.0f} ns/pkt  ratio "
                f"{case['ratio_engine_over_plain']:.2f}",
                file=sys.stderr, flush=True,
            )
            print(
                f"engine {sessions:7d} sessions {pattern:9s} "
                f"{case['batch_ns_per_packet']:7.0f} ns/pkt  in batches of {BATCH} "
                f"(receive_many)  ratio {case['ratio_batch_over_plain']:.2f}",
                file=sys.stderr, flush=True,
            )
    rss = measure_rss(rss_sessions)
    print(f"engine RSS per idle session ({rss['sessions']} sessions): "
          f"{rss['bytes_per_idle_session']:.0f} bytes", file=sys.stderr, flush=True)
    lines = []
    for c in cases:
        if c["sessions"] == 10_000 and c["pattern"] == "in_order":
            lines.append(
                f"10,000 sessions, in order: {c['engine_ns_per_packet']:.0f} ns/packet per "
                f"call, {c['batch_ns_per_packet']:.0f} in batches of {BATCH} (target <= 150)")
        if c["sessions"] == 10_000 and c["pattern"] == "swaps":
            lines.append(
                f"10,000 sessions, 10% swaps: {c['engine_ns_per_packet']:.0f} ns/packet "
                f"(target <= 300), {c['ratio_engine_over_plain']:.2f}x the plain dict loop")
    lines.append(f"RSS per idle session: {rss['bytes_per_idle_session']:.0f} bytes "
                 f"at {rss['sessions']} sessions (target <= 1024)")
    return {"batch": BATCH, "virtual_pps": PPS, "reorder_timeout_s": TIMEOUT, "cases": cases,
            "rss": rss, "summary_lines": lines}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 100, 10_000, 100_000])
    p.add_argument("--packets", type=int, default=200_000, help="timed packets per case")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rss-sessions", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        json.dump(rss_child(args.rss_child), sys.stdout)
        return 0
    if args.quick:
        args.sessions, args.packets, args.repeat, args.rss_sessions = [1, 100], 2000, 1, 1000
    result = run(args.sessions, args.packets, args.repeat, args.rss_sessions)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
