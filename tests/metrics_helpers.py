"""Helpers shared by the metrics tests: a metrics source, a virtual-clock driver, a parser,
scraping a live daemon, and the kernel's socket drop count of a daemon process."""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Hashable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.daemon.counters import SERVICE_ROWS, ServiceCounters
from l2tpreorder.daemon.metrics import CounterTable
from l2tpreorder.daemon.relay.counters import RELAY_ROWS, RelayCounters
from l2tpreorder.daemon.relay.sockets import udp_drops
from tests.impaired_traffic import ImpairedTraffic

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Source:
    """What `start_metrics_server` reads: the daemon's shape, built from real engines."""

    engines: dict[str, ReorderEngine] = field(default_factory=dict)
    relay: RelayCounters = field(default_factory=RelayCounters)
    service: ServiceCounters = field(default_factory=ServiceCounters)

    def counter_tables(self) -> list[CounterTable]:
        """As a relay-mode service has them: the service's rows and the relay's."""
        return [(SERVICE_ROWS, self.service, {}), (RELAY_ROWS, self.relay, {})]

    @classmethod
    def with_timeout(cls, timeout: float, lns_to_lac: bool = False) -> Source:
        """Engines as `Relay.engines` has them: lac_to_lns always, lns_to_lac only with
        `reorder.lns_to_lac: true`."""
        engines = {"lac_to_lns": ReorderEngine(EngineConfig(reorder_timeout=timeout))}
        if lns_to_lac:
            engines["lns_to_lac"] = ReorderEngine(EngineConfig(reorder_timeout=timeout))
        return cls(engines)


def drive(
    engine: ReorderEngine, traffic: ImpairedTraffic, peer: Hashable, now: float = 1000.0
) -> float:
    """Feed the script on a virtual clock (deterministic on a loaded VM); returns the end time."""
    for kind, item in traffic.events:
        if isinstance(item, bytes):
            now += 1e-5
            engine.receive(item, peer, now)
        else:
            assert kind == "wait"
            target = now + item
            while (deadline := engine.next_deadline()) is not None and deadline <= target:
                now = max(now, deadline)
                engine.expire(now)
            now = target
        engine.take_output()
    engine.expire(now)
    engine.take_output()
    return now


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample `name{labels}`; fails loudly when absent."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def matching(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in samples.items() if n == name and want <= lab}


def metrics_url(log: str) -> str:
    """The /metrics URL the daemon logged on start (it was told port 0)."""
    found = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", log)
    assert found, log
    return found.group(1)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds (as /proc/net/udp lists them)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def daemon_socket_drops(pid: int) -> int:
    """The kernel's receive-queue drops over the sockets of `pid`, read from /proc now (with the
    daemon's own reader), not from the metric the daemon refreshes once a second."""
    return sum(udp_drops(socket_inodes(pid)).values())
