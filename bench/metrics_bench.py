"""How long a /metrics scrape takes at 10,000 sessions, and how much it stalls the relay.

The collector runs in prometheus-client's HTTP thread and holds the GIL while it builds the
families, so the relay's event loop waits that long. This measures, in one run on one machine:

  * scrape time (generate_latest) with the default series and with per_session top N;
  * the relay's batch latency (64 datagrams through `ReorderEngine.receive`) with no scrapes
    (the baseline) and with a thread scraping back to back (far worse than a real 15 s interval);
    reported as ratios to the baseline, not absolute speeds.

Run: .venv/bin/python -m bench.metrics_bench [--sessions 10000] [--seconds 3]
Writes bench/results/metrics_bench.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.daemon.metrics import MetricsConfig, build_registry
from l2tpreorder.wire import build_data
from tests.metrics_helpers import Source

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
SESSIONS_PER_PEER = 1000


def populate(engine: ReorderEngine, sessions: int) -> list[tuple[tuple[str, int], bytes, int]]:
    """`sessions` sessions over peers of 1000 each; every 10th holds one early packet."""
    templates = []
    now = 0.0
    for i in range(sessions):
        peer = (f"198.51.100.{i // SESSIONS_PER_PEER + 1}", 1701)
        tunnel, sid = 1 + i // SESSIONS_PER_PEER, 1 + i % SESSIONS_PER_PEER
        engine.receive(build_data(tunnel, sid, b"\xff\x03\x00\x21" + bytes(100), ns=0), peer, now)
        if i % 10 == 0:
            engine.receive(build_data(tunnel, sid, bytes(104), ns=5), peer, now)  # held
        templates.append((peer, build_data(tunnel, sid, bytes(104), ns=1), i))
    engine.take_output()
    return templates


def time_scrapes(source: Source, config: MetricsConfig, repeat: int) -> dict[str, float]:
    registry = build_registry(config, source)
    generate_latest(registry)  # warm up
    times = []
    size = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        size = len(generate_latest(registry))
        times.append(time.perf_counter() - t0)
    return {
        "median_ms": statistics.median(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "bytes": size,
    }


def relay_batches(
    engine: ReorderEngine, templates: list[tuple[tuple[str, int], bytes, int]], seconds: float
) -> list[float]:
    """Feed in-order datagrams in batches of 64 for `seconds`; returns each batch's latency."""
    # Per-session next Ns (sessions holding Ns 5 have expected 1: feed them too, they stay held).
    next_ns = [1] * len(templates)
    latencies = []
    deadline = time.perf_counter() + seconds
    k = 0
    n = len(templates)
    while time.perf_counter() < deadline:
        batch = []
        for _ in range(BATCH):
            peer, template, i = templates[k % n]
            k += 1
            ns = next_ns[i]
            if i % 10 == 0:
                continue  # leave the holding sessions holding
            next_ns[i] = (ns + 1) & 0xFFFF
            data = bytearray(template)
            data[6:8] = ns.to_bytes(2, "big")  # Ns of a header with L=0, S=1
            batch.append((bytes(data), peer))
        t0 = time.perf_counter()
        now = time.monotonic()
        for data, peer in batch:
            engine.receive(data, peer, now)
        engine.take_output()
        latencies.append(time.perf_counter() - t0)
    return latencies


class Scraper(threading.Thread):
    """Scrapes back to back until stopped: the worst case for the relay thread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry
        self.scrapes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            generate_latest(self.registry)
            self.scrapes += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def summarize(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "batches": len(ordered),
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99)] * 1e6,
        "max_us": ordered[-1] * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--top-n", type=int, default=100)
    args = parser.parse_args()

    engine = ReorderEngine(EngineConfig(reorder_timeout=60))
    source = Source({"lac_to_lns": engine, "lns_to_lac": ReorderEngine()})
    templates = populate(engine, args.sessions)
    assert engine.session_count == args.sessions

    result: dict[str, object] = {"sessions": args.sessions, "held": engine.counters.held_packets}
    result["scrape_default"] = time_scrapes(source, MetricsConfig(), args.repeat)
    per_session = MetricsConfig(per_session=True, per_session_top_n=args.top_n)
    result["scrape_per_session"] = time_scrapes(source, per_session, args.repeat)

    baseline = summarize(relay_batches(engine, templates, args.seconds))
    contended: dict[str, dict[str, float]] = {}
    for name, config in (("default", MetricsConfig()), ("per_session", per_session)):
        scraper = Scraper(build_registry(config, source))
        scraper.start()
        try:
            contended[name] = summarize(relay_batches(engine, templates, args.seconds))
        finally:
            scraper.stop()
        contended[name]["scrapes"] = scraper.scrapes
    in_order = engine.counters.forwarded_in_order
    assert in_order > args.sessions, "the relay batches did not forward in-order packets"
    result["relay_batch_baseline"] = baseline
    result["relay_batch_while_scraping"] = contended
    result["ratios_vs_baseline"] = {
        name: {
            "p50": c["p50_us"] / baseline["p50_us"],
            "p99": c["p99_us"] / baseline["p99_us"],
            "max": c["max_us"] / baseline["max_us"],
        }
        for name, c in contended.items()
    }
    out = ROOT / "bench" / "results" / "metrics_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
