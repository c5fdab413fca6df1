"""Memory per session under churn: `python -m bench.session_memory [--cap N] [--rounds R]`.

A table at `reorder.max_sessions` = N that churns: live sessions sending (with swaps that hold a
packet, and losses the timer gives up), calls ending (CDN) and new ones starting, sessions going
silent (idle expiry), new sessions evicting the longest-silent ones, and the continuation memory
filled to its cap. RSS is read from /proc after each round of N x 10 datagrams; the per-session
figure is (RSS at the last round - RSS of the same process before any session) / N, so it
includes every side table, the continuation memory at its fixed cap and allocator slack.
"""

from __future__ import annotations

import argparse
import random
import struct

from l2tpreorder.core.engine import EngineConfig, ReorderEngine

_DATA = struct.Struct("!HHHHHI")  # flags, tunnel, session, Ns, Nr, payload


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def datagram(tunnel: int, session: int, ns: int) -> bytes:
    return _DATA.pack(0x0802, tunnel, session, ns & 0xFFFF, 0, ns)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=int, default=20_000, help="max_sessions")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args(argv)
    cap = args.cap
    rng = random.Random(16)
    e = ReorderEngine(
        EngineConfig(max_sessions=cap, reorder_timeout=0.05, session_idle_timeout=30.0)
    )
    baseline = rss_bytes()
    flows = [(f"10.0.{i >> 8}.{i & 255}", 1701) for i in range(200)]
    # Calls by slot: 1.25 x the cap, so the table is always full and evicts. A slot's call
    # sends, ends with a CDN (1%), or is replaced by a new call (2%; the old one goes silent:
    # idle expiry or eviction takes it).
    live: dict[tuple[tuple[str, int], int, int], int] = {}  # key -> next Ns
    keys: list[tuple[tuple[str, int], int, int] | None] = [None] * (cap + cap // 4)
    t = 0.0
    print(f"cap {cap:,} sessions; baseline RSS {baseline / 2**20:.1f} MiB")
    for rnd in range(1, args.rounds + 1):
        for _ in range(10 * cap):
            t += 0.0001
            roll = rng.random()
            slot = rng.randrange(len(keys))
            key = keys[slot]
            if key is None or roll < 0.02:  # a new call
                if key is not None:
                    del live[key]
                key = keys[slot] = (
                    rng.choice(flows),
                    rng.randrange(1, 65536),
                    rng.randrange(1, 65536),
                )
                live[key] = rng.randrange(65536)
            elif roll < 0.03:  # the call ends (CDN)
                del live[key]
                keys[slot] = None
                e.end_session(key[0], key[1], key[2], t)
                continue
            ns = live[key]
            flow, tunnel, session = key
            if roll > 0.9:  # a swap: the early half is held until its predecessor comes
                e.receive(datagram(tunnel, session, ns + 1), flow, t)
                e.receive(datagram(tunnel, session, ns), flow, t)
                ns += 2
            elif roll > 0.89:  # a loss: the timer gives it up
                ns += 1
            else:
                e.receive(datagram(tunnel, session, ns), flow, t)
                ns += 1
            live[key] = ns
            e.take_output()
            deadline = e.next_deadline()
            if deadline is not None and deadline <= t:
                e.expire(t)
        e.expire(t)
        e.take_output()
        rss = rss_bytes()
        c = e.counters
        print(
            f"round {rnd}: sessions {e.session_count:,}, remembered {len(e._memory):,}, "
            f"started {c.sessions_started:,}, evicted {c.sessions_evicted:,}, "
            f"idle {c.sessions_idle_expired:,}; RSS {rss / 2**20:.1f} MiB, "
            f"{(rss - baseline) / max(1, e.session_count):,.0f} bytes/session"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
