"""What rejecting and acting on control messages costs, as ratios to a baseline in the same run.

  * `fastpath.control_fields` (struct, what the engine uses) vs `wire.parse_control` (construct,
    the definition) on valid and broken control messages;
  * `fastpath.parse_header` vs `wire.parse_header_reference` on a data header;
  * a StopCCN ending one tunnel of a peer with many sessions, through the tunnel index, vs a scan
    of the whole session table for that tunnel (what ending a tunnel costs without the index).

Run: .venv/bin/python -m bench.control_bench [--sessions 50000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from l2tpreorder import wire
from l2tpreorder.core import fastpath
from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.wire import MessageType, avp_message_type, build_control, build_data

PEER = ("192.0.2.1", 1701)
SMALL_TUNNEL = 10  # sessions in each tunnel a StopCCN ends


def per_call_us(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best of `repeat` timeit rounds of ~0.1 s, in µs per call (best: least disturbed)."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat, number)) / number * 1e6


def control_messages() -> dict[str, bytes]:
    sccrq = build_control(0, 0, 0, 0, [avp_message_type(MessageType.SCCRQ),
                                       wire.avp_assigned_tunnel_id(7)])
    broken = bytearray(sccrq)
    struct.pack_into("!H", broken, 12, 0x8000 | 1023)  # first AVP's length past the end
    return {
        "SCCRQ": sccrq,
        "ICCN": build_control(7, 9, 3, 2, [avp_message_type(MessageType.ICCN)]),
        "ZLB": build_control(7, 0, 4, 3, []),
        "broken AVP": bytes(broken),
    }


def parsers() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, msg in control_messages().items():
        fast = per_call_us(lambda m=msg: fastpath.control_fields(m))
        ref = per_call_us(lambda m=msg: wire.parse_control(m))
        out[f"control {name}"] = {"struct_us": fast, "construct_us": ref, "ratio": ref / fast}
    data = build_data(7, 9, bytes(100), ns=5)
    fast = per_call_us(lambda: fastpath.parse_header(data))
    ref = per_call_us(lambda: wire.parse_header_reference(data))
    out["data header"] = {"struct_us": fast, "construct_us": ref, "ratio": ref / fast}
    return out


def stopccn(sessions: int, rounds: int) -> dict[str, float]:
    """Median time of a StopCCN for a tunnel of SMALL_TUNNEL sessions while `PEER` has
    `sessions` others, against scanning the session table for that tunnel."""
    e = ReorderEngine(EngineConfig(max_sessions=sessions + rounds * SMALL_TUNNEL))
    template = bytearray(build_data(0, 0, b"x", ns=0))

    def start(tunnel_id: int, session_id: int) -> None:
        struct.pack_into("!HH", template, 2, tunnel_id, session_id)  # no Length: IDs at 2
        e.receive(bytes(template), PEER, 0.0)

    for i in range(sessions):
        start(1000 + i // 1000, 1 + i % 1000)
    for t in range(1, rounds + 1):
        for s in range(1, SMALL_TUNNEL + 1):
            start(t, s)
    e.take_output()
    scan: list[float] = []
    indexed: list[float] = []
    for t in range(1, rounds + 1):
        t0 = time.perf_counter()
        found = [s for s in e.sessions() if s.flow == PEER and s.tunnel_id == t]
        scan.append(time.perf_counter() - t0)
        stop = build_control(t, 0, 5, 4, [avp_message_type(MessageType.StopCCN)])
        t0 = time.perf_counter()
        e.receive(stop, PEER, 1.0)
        indexed.append(time.perf_counter() - t0)
        assert len(found) == SMALL_TUNNEL and not e.tunnel_sessions(PEER, t)
        e.take_output()
    assert e.session_count == sessions
    scan_ms = statistics.median(scan) * 1e3
    index_ms = statistics.median(indexed) * 1e3
    return {"sessions": sessions, "tunnel_sessions": SMALL_TUNNEL,
            "stopccn_indexed_ms": index_ms, "table_scan_ms": scan_ms, "ratio": scan_ms / index_ms}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = {"parsers": parsers(), "stopccn": stopccn(args.sessions, args.rounds)}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for name, r in result["parsers"].items():
        print(f"{name:18s} struct {r['struct_us']:6.2f} us  construct {r['construct_us']:7.1f} us"
              f"  construct/struct {r['ratio']:6.1f}x")
    s = result["stopccn"]
    print(f"StopCCN of a {s['tunnel_sessions']:.0f}-session tunnel, {s['sessions']:.0f} other "
          f"sessions on the peer: "
          f"{s['stopccn_indexed_ms']:.3f} ms via the tunnel index, a table scan alone "
          f"{s['table_scan_ms']:.2f} ms ({s['ratio']:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
