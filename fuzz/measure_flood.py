"""Measure what a session flood costs the engine: memory at the cap, eviction rate, and that an
established session keeps flowing. Prints the numbers quoted in README "Reliability".

    .venv/bin/python fuzz/measure_flood.py [--cap 100000] [--flood 300000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.wire import MessageType, avp_message_type, build_control, build_data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cap", type=int, default=100_000)
    parser.add_argument("--flood", type=int, default=300_000)
    args = parser.parse_args()
    rng = random.Random(1)
    template = build_data(0, 0, b"\xff\x03\x00\x21" + bytes(40), ns=0)
    flood = []
    for _ in range(args.flood):
        p = bytearray(template)
        p[2:8] = rng.randbytes(6)  # random tunnel ID, session ID, Ns
        flood.append(bytes(p))
    ppp = b"\xff\x03\x00\x21"
    real = [build_data(7, 9, ppp + n.to_bytes(2, "big"), ns=n) for n in range(65536)]
    sources = [(f"198.51.100.{i}", 1701) for i in range(64)]
    lac = ("192.0.2.1", 1701)

    tracemalloc.start()
    e = ReorderEngine(EngineConfig(max_sessions=args.cap))
    e.receive(build_control(7, 9, 3, 2, [avp_message_type(MessageType.ICCN)]), lac, 0.0)
    base = tracemalloc.get_traced_memory()[0]
    sent_real = 0
    peak_at_cap = 0
    for i, p in enumerate(flood):
        now = i * 1e-5
        e.receive(p, sources[i % 64], now)
        if i % 20 == 0:
            e.receive(real[sent_real & 0xFFFF], lac, now)
            sent_real += 1
        if i % 4096 == 0:
            e.take_output()
        if i == args.cap:
            peak_at_cap = tracemalloc.get_traced_memory()[0]
    e.take_output()
    end = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    c = e.counters
    s = e.session(lac, 7, 9)
    print(f"cap {args.cap:,} sessions; flood {args.flood:,} datagrams, random IDs, 64 sources")
    print(
        f"sessions now {e.session_count:,}; evicted {c.sessions_evicted:,} "
        f"(confirmed {c.sessions_evicted_confirmed})"
    )
    print(
        f"python heap: {(peak_at_cap - base) / 2**20:.1f} MiB when the table first filled, "
        f"{(end - base) / 2**20:.1f} MiB after the whole flood "
        f"({(end - base) / e.session_count:.0f} bytes per session)"
    )
    # tracemalloc slows everything down: the time comes from a second run without it.
    e2 = ReorderEngine(EngineConfig(max_sessions=args.cap))
    started = time.perf_counter()
    for i, p in enumerate(flood):
        e2.receive(p, sources[i % 64], i * 1e-5)
        if i % 4096 == 0:
            e2.take_output()
    elapsed = time.perf_counter() - started
    print(
        f"engine time {elapsed / args.flood * 1e6:.2f} us per flood datagram "
        f"({args.flood / elapsed:,.0f} a second on one core, "
        f"{e2.counters.sessions_evicted:,} evictions)"
    )
    print(
        f"established session: {sent_real} sent, {s.forwarded_in_order if s else 0} forwarded "
        f"in order, alive={s is not None}, confirmed={s.confirmed if s else None}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
