"""Prometheus `/metrics`: a custom collector that reads the engines' plain ints at scrape time.

Nothing Prometheus-specific runs per packet: the engine and the relay bump plain ints, and this
collector turns them into metric families only when Prometheus asks. The HTTP server runs in
prometheus-client's own thread; a scrape holds the GIL only while it copies numbers, plus (with
`per_session`) one pass over the sessions, which `bench/metrics_bench.py` measures at 10,000.

Series are low-cardinality by default: `direction` (lac_to_lns, lns_to_lac) and a reason or kind
label. Per-session series are opt-in and capped to the top N sessions by packets, because session
IDs can number in the tens of thousands.
"""

from __future__ import annotations

import heapq
import platform
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from l2tpreorder import __version__
from l2tpreorder.config import MetricsConfig as MetricsConfig  # the `metrics:` section
from l2tpreorder.core import reasons
from l2tpreorder.core.engine import Histogram, ReorderEngine, Session
from l2tpreorder.daemon.metrics_http import serve_metrics
from l2tpreorder.daemon.relay_stats import RelayCounters

PREFIX = "l2tpreorder_"
LAC_TO_LNS = "lac_to_lns"
LNS_TO_LAC = "lns_to_lac"


class MetricsSource(Protocol):
    """What the collector reads: one engine per direction and the relay's socket counters."""

    @property
    def engines(self) -> Mapping[str, ReorderEngine]: ...

    @property
    def relay(self) -> RelayCounters: ...


def _peer_label(flow: Hashable) -> str:
    """`host:port` for the daemon's (host, port) flows; anything else as str()."""
    if isinstance(flow, tuple) and len(flow) >= 2:
        host, port = flow[0], flow[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(flow)


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    counts = list(hist.counts)  # one atomic copy: _count is derived from it (the +Inf bucket)
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, n in zip(hist.bounds, counts, strict=False):
        cumulative += n
        buckets.append((repr(float(bound)), cumulative))
    cumulative += counts[-1]
    buckets.append(("+Inf", cumulative))
    family.add_metric(labels, buckets, hist.total)


class RelayCollector(Collector):
    """Builds every l2tpreorder_* family from plain ints at scrape time."""

    def __init__(self, source: MetricsSource, config: MetricsConfig) -> None:
        self._source = source
        self._config = config

    def describe(self) -> list[Metric]:
        # Returning nothing keeps registration from running a full collect at start-up.
        return []

    def collect(self) -> Iterator[Metric]:
        engines = dict(self._source.engines)
        relay = self._source.relay
        # One copy of each session table per scrape, for the gauges and the per-session series.
        live = {direction: engine.sessions_snapshot() for direction, engine in engines.items()}
        yield from self._engine_families(engines, live, relay)
        yield from self._relay_families(relay)
        if self._config.per_session:
            yield from self._session_families(live, self._config.per_session_top_n)
        build = GaugeMetricFamily(
            PREFIX + "build_info",
            "Always 1; labels carry the l2tpreorder and Python versions.",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build

    def _engine_families(
        self,
        engines: Mapping[str, ReorderEngine],
        live_sessions: Mapping[str, list[Session]],
        relay: RelayCounters,
    ) -> Iterator[Metric]:
        d = ["direction"]
        received = CounterMetricFamily(
            PREFIX + "received_packets",
            "Datagrams the reorder engine received, by kind.",
            labels=[*d, "kind"],
        )
        malformed = CounterMetricFamily(
            PREFIX + "malformed_packets",
            "Datagrams dropped as not usable L2TPv2, by reason.",
            labels=[*d, "reason"],
        )
        forwarded = CounterMetricFamily(
            PREFIX + "forwarded_packets",
            "Datagrams passed on at once (not held), by kind.",
            labels=[*d, "kind"],
        )
        released = CounterMetricFamily(
            PREFIX + "released_packets",
            "Data packets that arrived early, were held, then released in order (reordered).",
            labels=d,
        )
        dropped = CounterMetricFamily(
            PREFIX + "dropped_packets",
            "Datagrams dropped, by reason (late: its Ns was already given up; see timeout).",
            labels=[*d, "reason"],
        )
        skipped = CounterMetricFamily(
            PREFIX + "skipped_sequence_numbers",
            "Ns values given up without the packet arriving (lost before us), by reason.",
            labels=[*d, "reason"],
        )
        resyncs = CounterMetricFamily(
            PREFIX + "resyncs",
            "Times a peer restarted its Ns numbering and the session followed.",
            labels=d,
        )
        started = CounterMetricFamily(PREFIX + "sessions_started", "Sessions first seen.", labels=d)
        ended = CounterMetricFamily(
            PREFIX + "sessions_ended", "Sessions ended (CDN, StopCCN, peer idle).", labels=d
        )
        evicted = CounterMetricFamily(
            PREFIX + "sessions_evicted",
            "Sessions evicted because the table was full (max_sessions), by whether the control"
            " channel had established them (those go last).",
            labels=[*d, "confirmed"],
        )
        continued = CounterMetricFamily(
            PREFIX + "sessions_continued",
            "Sessions recreated with the same IDs whose Ns went on where the ended one stopped"
            " (a CDN the LNS did not act on, an eviction, an idle peer back): renumbering kept.",
            labels=d,
        )
        hold = HistogramMetricFamily(
            PREFIX + "hold_time_seconds",
            "How long released packets were held waiting for a gap to fill.",
            labels=d,
        )
        displacement = HistogramMetricFamily(
            PREFIX + "reorder_displacement_packets",
            "How many Ns positions early an out-of-order packet arrived.",
            labels=d,
        )
        held = GaugeMetricFamily(
            PREFIX + "held_packets", "Packets held now, waiting for a gap.", labels=d
        )
        held_bytes = GaugeMetricFamily(
            PREFIX + "held_bytes", "Bytes held now, waiting for a gap.", labels=d
        )
        held_bytes_limit = GaugeMetricFamily(
            PREFIX + "held_limit_bytes",
            "Configured cap on held bytes (reorder.max_held_bytes); over it the oldest gap is "
            "closed.",
            labels=d,
        )
        held_session_max = GaugeMetricFamily(
            PREFIX + "session_held_packets_max",
            "Held packets of the fullest session now.",
            labels=d,
        )
        held_session_limit = GaugeMetricFamily(
            PREFIX + "session_held_packets_limit",
            "Configured cap on held packets per session (reorder.max_held_per_session).",
            labels=d,
        )
        timeout = GaugeMetricFamily(
            PREFIX + "reorder_timeout_seconds",
            "Configured reorder timeout (reorder.timeout_ms): the longest a packet is held.",
            labels=d,
        )
        sessions = GaugeMetricFamily(PREFIX + "sessions", "Sessions now.", labels=d)
        sessions_limit = GaugeMetricFamily(
            PREFIX + "sessions_limit", "Configured session table cap (max_sessions).", labels=d
        )
        for direction, engine in engines.items():
            c = engine.counters
            cfg = engine.config
            received.add_metric([direction, "control"], c.rx_control)
            received.add_metric([direction, "data_with_ns"], c.rx_data_seq)
            received.add_metric([direction, "data_without_ns"], c.rx_data_unseq)
            received.add_metric([direction, "malformed"], c.rx_malformed)
            for reason, n in list(c.malformed.items()):
                malformed.add_metric([direction, reason], n)
            forwarded.add_metric([direction, "control"], c.forwarded_control)
            forwarded.add_metric([direction, "data_without_ns"], c.forwarded_unsequenced)
            forwarded.add_metric([direction, "data_in_order"], c.forwarded_in_order)
            forwarded.add_metric([direction, "data_out_of_order"], c.forwarded_out_of_order)
            released.add_metric([direction], c.released)
            dropped.add_metric([direction, "duplicate"], c.dropped_duplicate)
            dropped.add_metric([direction, "late"], c.dropped_late)
            dropped.add_metric([direction, "malformed"], c.rx_malformed)
            for reason in reasons.SKIP_REASONS:
                skipped.add_metric([direction, reason], c.skipped.get(reason, 0))
            resyncs.add_metric([direction], c.resyncs)
            started.add_metric([direction], c.sessions_started)
            ended.add_metric([direction], c.sessions_ended)
            evicted.add_metric([direction, "no"], c.sessions_evicted - c.sessions_evicted_confirmed)
            evicted.add_metric([direction, "yes"], c.sessions_evicted_confirmed)
            continued.add_metric([direction], c.sessions_continued)
            _histogram(hold, [direction], c.hold_time)
            _histogram(displacement, [direction], c.displacement)
            held.add_metric([direction], c.held_packets)
            held_bytes.add_metric([direction], c.held_bytes)
            held_bytes_limit.add_metric([direction], cfg.max_held_bytes)
            live = live_sessions[direction]
            held_session_max.add_metric([direction], max((len(s.held) for s in live), default=0))
            held_session_limit.add_metric([direction], cfg.max_held_per_session)
            timeout.add_metric([direction], cfg.reorder_timeout)
            sessions.add_metric([direction], len(live))
            sessions_limit.add_metric([direction], cfg.max_sessions)
        # Drops before the engine: the relay's access control and peer cap, by direction.
        dropped.add_metric([LAC_TO_LNS, "not_allowed"], relay.dropped_not_allowed)
        dropped.add_metric([LAC_TO_LNS, "peer_limit"], relay.dropped_peer_limit)
        dropped.add_metric([LNS_TO_LAC, "not_from_lns"], relay.dropped_not_from_lns)
        yield from (
            received, malformed, forwarded, released, dropped, skipped, resyncs, started,
            ended, evicted, continued, hold, displacement, held, held_bytes, held_bytes_limit,
            held_session_max, held_session_limit, timeout, sessions, sessions_limit,
        )  # fmt: skip

    def _relay_families(self, relay: RelayCounters) -> Iterator[Metric]:
        d = ["direction"]
        rx = CounterMetricFamily(
            PREFIX + "socket_received_datagrams",
            "Datagrams read from the sockets facing where the direction starts.",
            labels=d,
        )
        rx.add_metric([LAC_TO_LNS], relay.rx_datagrams_lac)
        rx.add_metric([LNS_TO_LAC], relay.rx_datagrams_lns)
        tx = CounterMetricFamily(
            PREFIX + "socket_sent_datagrams",
            "Datagrams written to the sockets facing where the direction ends.",
            labels=d,
        )
        tx.add_metric([LAC_TO_LNS], relay.tx_datagrams_lns)
        tx.add_metric([LNS_TO_LAC], relay.tx_datagrams_lac)
        rx_bytes = CounterMetricFamily(
            PREFIX + "socket_received_bytes", "UDP payload bytes read, by direction.", labels=d
        )
        rx_bytes.add_metric([LAC_TO_LNS], relay.rx_bytes_lac)
        rx_bytes.add_metric([LNS_TO_LAC], relay.rx_bytes_lns)
        tx_bytes = CounterMetricFamily(
            PREFIX + "socket_sent_bytes", "UDP payload bytes written, by direction.", labels=d
        )
        tx_bytes.add_metric([LAC_TO_LNS], relay.tx_bytes_lns)
        tx_bytes.add_metric([LNS_TO_LAC], relay.tx_bytes_lac)
        yield from (rx, tx, rx_bytes, tx_bytes)
        yield CounterMetricFamily(
            PREFIX + "send_errors",
            "Datagrams lost because sendto failed.",
            value=relay.tx_errors,
        )
        yield CounterMetricFamily(
            PREFIX + "socket_receive_drops",
            "Datagrams the kernel dropped on a full receive queue of the relay's sockets "
            "(the drops column of /proc/net/udp, what SO_RXQ_OVFL counts).",
            value=relay.socket_rx_drops,
        )
        yield GaugeMetricFamily(
            PREFIX + "peers", "LAC peers with an upstream socket now.", value=relay.peers
        )
        yield CounterMetricFamily(
            PREFIX + "peers_removed_idle",
            "LAC peers forgotten after peer_idle_timeout_ms of silence (upstream socket closed).",
            value=relay.peers_removed_idle,
        )
        yield CounterMetricFamily(
            PREFIX + "lns_icmp_errors",
            "ICMP errors (port/host unreachable...) for datagrams the relay sent to the LNS.",
            value=relay.lns_icmp_errors,
        )
        yield GaugeMetricFamily(
            PREFIX + "lns_unresponsive",
            "1 while the LNS does not answer: ICMP errors, or LAC traffic in and nothing back "
            "from the LNS for 90 s; 0 once it is heard again.",
            value=relay.lns_unresponsive,
        )
        reloads = CounterMetricFamily(
            PREFIX + "config_reloads",
            "Configuration reloads (SIGHUP), by result.",
            labels=["result"],
        )
        reloads.add_metric(["success"], relay.config_reloads_ok)
        reloads.add_metric(["failure"], relay.config_reloads_failed)
        yield reloads
        yield GaugeMetricFamily(
            PREFIX + "config_load_failing",
            "1 while the configuration file fails to load (the last reload was refused and "
            "the old configuration runs); 0 after a successful reload.",
            value=relay.config_load_failing,
        )

    def _session_families(
        self, live_sessions: Mapping[str, list[Session]], top_n: int
    ) -> Iterator[Metric]:
        labels = ["direction", "peer", "tunnel_id", "session_id"]
        packets = CounterMetricFamily(
            PREFIX + "session_received_packets",
            "Sequenced data packets of one session (top sessions by packets only).",
            labels=labels,
        )
        released = CounterMetricFamily(
            PREFIX + "session_released_packets",
            "Packets of one session released after being held (reordered).",
            labels=labels,
        )
        dropped = CounterMetricFamily(
            PREFIX + "session_dropped_packets",
            "Packets of one session dropped, by reason.",
            labels=[*labels, "reason"],
        )
        skipped = CounterMetricFamily(
            PREFIX + "session_skipped_sequence_numbers",
            "Ns values of one session given up (lost before us).",
            labels=labels,
        )
        held = GaugeMetricFamily(
            PREFIX + "session_held_packets", "Packets of one session held now.", labels=labels
        )
        omitted = GaugeMetricFamily(
            PREFIX + "session_series_omitted",
            "Sessions left out of the per-session series by metrics.per_session_top_n.",
            labels=["direction"],
        )
        for direction, live in live_sessions.items():
            top: Iterable[Session] = heapq.nlargest(top_n, live, key=_packets)
            omitted.add_metric([direction], max(0, len(live) - top_n))
            for s in top:
                key = [direction, _peer_label(s.flow), str(s.tunnel_id), str(s.session_id)]
                packets.add_metric(key, s.packets)
                released.add_metric(key, s.released)
                dropped.add_metric([*key, "duplicate"], s.dropped_duplicate)
                dropped.add_metric([*key, "late"], s.dropped_late)
                skipped.add_metric(key, s.skipped)
                held.add_metric(key, len(s.held))
        yield from (packets, released, dropped, skipped, held, omitted)


def _packets(s: Session) -> int:
    return s.packets


def build_registry(config: MetricsConfig, source: MetricsSource) -> CollectorRegistry:
    """A private registry (never the global one): our collector, process and platform info."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(source, config))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsServer:
    """The running `/metrics` listener; `close()` stops it and frees the port."""

    def __init__(self, config: MetricsConfig, registry: CollectorRegistry) -> None:
        self._httpd, self._thread = serve_metrics(
            config.listen, config.port, registry, config.tls_cert, config.tls_key
        )
        self.port: int = self._httpd.server_port

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(config: MetricsConfig, source: MetricsSource) -> MetricsServer:
    """Serve `/metrics` for `source` on `config.listen:config.port` (TLS when configured)."""
    return MetricsServer(config, build_registry(config, source))
