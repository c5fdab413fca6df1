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

import errno
import heapq
import platform
from bisect import bisect_left
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from l2tpreorder import BUILD, __version__
from l2tpreorder.config import MetricsConfig as MetricsConfig  # the `metrics:` section
from l2tpreorder.config import format_address
from l2tpreorder.core import counters
from l2tpreorder.core.views import DirectionView, Histogram, Session
from l2tpreorder.daemon.metrics_http import serve_metrics

PREFIX = "l2tpreorder_"


# One counters object: its rows, the object they read, values of the labels its rows leave
# open (e.g. `queue`). Also `daemon.mode.CounterTable`.
CounterTable = tuple[Sequence[counters.Counter], object, dict[str, str]]


class MetricsSource(Protocol):
    """What the collector reads: one engine per direction, and the daemon's counter tables
    (the service's and its mode's rows)."""

    @property
    def engines(self) -> Mapping[str, DirectionView]: ...

    def counter_tables(self) -> Sequence[CounterTable]: ...


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


class DaemonCollector(Collector):
    """Builds every l2tpreorder_* family from plain ints at scrape time."""

    def __init__(self, source: MetricsSource, config: MetricsConfig) -> None:
        self._source = source
        self._config = config

    def describe(self) -> list[Metric]:
        # Returning nothing keeps registration from running a full collect at start-up.
        return []

    def collect(self) -> Iterator[Metric]:
        engines = dict(self._source.engines)
        tables = self._source.counter_tables()
        # One copy of each session table per scrape, for the gauges and the per-session series.
        live = {direction: engine.sessions_snapshot() for direction, engine in engines.items()}
        yield from self._engine_families(engines, live, tables)
        if self._config.per_session:
            yield from self._session_families(live, self._config.per_session_top_n)
        build = GaugeMetricFamily(
            PREFIX + "build_info",
            "Always 1; labels carry the l2tpreorder and Python versions and the build "
            "(compiled: the mypyc hot path; pure: Python only).",
            labels=["version", "python_version", "build"],
        )
        build.add_metric([__version__, platform.python_version(), BUILD], 1)
        yield build

    def _engine_families(
        self,
        engines: Mapping[str, DirectionView],
        live_sessions: Mapping[str, list[Session]],
        tables: Sequence[CounterTable],
    ) -> Iterator[Metric]:
        """The engine rows, then the daemon's tables (one family may take rows of both: the
        relay's drop reasons share `dropped_packets`), then the histograms and config gauges."""
        families: dict[str, Metric] = {}
        for direction, engine in engines.items():
            for row in _ENGINE_ROWS:
                _add(families, row, [direction], getattr(engine.counters, row.attribute))
        for rows, obj, labels in tables:
            for row in rows:
                if row.family is not None:
                    _add(families, row, _open_labels(row, labels), getattr(obj, row.attribute))
        yield from families.values()
        yield from self._config_families(engines, live_sessions)
        yield _session_timeouts(engines, live_sessions)

    def _config_families(
        self, engines: Mapping[str, DirectionView], live_sessions: Mapping[str, list[Session]]
    ) -> Iterator[Metric]:
        d = ["direction"]
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
        # A cap is named after the gauge it caps, plus `_limit` (node_exporter's
        # `nf_conntrack_entries` / `nf_conntrack_entries_limit`).
        held_bytes_limit = GaugeMetricFamily(
            PREFIX + "held_bytes_limit",
            "Configured cap on held bytes (reorder.max_held_bytes); over it the oldest gap is "
            "closed.",
            labels=d,
        )
        held_limit_bytes = GaugeMetricFamily(  # deprecated: kept one release (NEWS.md)
            PREFIX + "held_limit_bytes",
            "Deprecated: use l2tpreorder_held_bytes_limit (same value).",
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
            PREFIX + "sessions_limit",
            "Configured session table cap (reorder.max_sessions).",
            labels=d,
        )
        for direction, engine in engines.items():
            c = engine.counters
            cfg = engine.config
            _histogram(hold, [direction], c.hold_time)
            _histogram(displacement, [direction], c.displacement)
            held_bytes_limit.add_metric([direction], cfg.max_held_bytes)
            held_limit_bytes.add_metric([direction], cfg.max_held_bytes)
            live = live_sessions[direction]
            held_session_max.add_metric([direction], max((len(s.held) for s in live), default=0))
            held_session_limit.add_metric([direction], cfg.max_held_per_session)
            timeout.add_metric([direction], cfg.reorder_timeout)
            sessions.add_metric([direction], len(live))
            sessions_limit.add_metric([direction], cfg.max_sessions)
        yield from (
            hold, displacement, held_bytes_limit, held_limit_bytes, held_session_max,
            held_session_limit, timeout, sessions, sessions_limit,
        )  # fmt: skip

    def _session_families(
        self, live_sessions: Mapping[str, list[Session]], top_n: int
    ) -> Iterator[Metric]:
        labels = ["direction", "peer", "tunnel_id", "session_id"]
        families: dict[str, Metric] = {}
        for row in _SESSION_ROWS:  # every family, even with no session
            _family(families, row)
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
                for row in _SESSION_ROWS:
                    _add(families, row, key, getattr(s, row.attribute))
                held.add_metric(key, len(s.held))
        yield from families.values()
        yield from (held, omitted)


_ENGINE_ROWS = tuple(r for r in counters.of(counters.Source.ENGINE) if r.family is not None)
_SESSION_ROWS = tuple(r for r in counters.of(counters.Source.SESSION) if r.family is not None)


def _family(families: dict[str, Metric], row: counters.Counter) -> Metric:
    f = row.family
    assert f is not None
    family = families.get(f.name)
    if family is None:
        kind = CounterMetricFamily if f.kind is counters.Kind.COUNTER else GaugeMetricFamily
        family = families[f.name] = kind(PREFIX + f.name, f.help, labels=list(f.labels))
    return family


def _open_labels(row: counters.Counter, values: dict[str, str]) -> list[str]:
    """Values of the family's leading labels that the row does not fix (e.g. `queue`)."""
    assert row.family is not None
    names = row.family.labels
    fixed = len(row.labels)
    return [values[name] for name in names[: len(names) - fixed] if name in values]


def _add(
    families: dict[str, Metric], row: counters.Counter, labels: list[str], value: object
) -> None:
    """One table row's sample(s); a dict value gives one per key (the last label)."""
    family = _family(families, row)
    assert isinstance(family, CounterMetricFamily | GaugeMetricFamily)
    if isinstance(value, dict):
        for key, n in list(value.items()):
            family.add_metric([*labels, *row.labels, key], n)
    else:
        assert isinstance(value, int | float)
        family.add_metric([*labels, *row.labels], value)


# Bucket bounds of the current per-session timeouts, seconds (reorder.adaptive).
SESSION_TIMEOUT_BUCKETS: tuple[float, ...] = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
)  # fmt: skip


def _session_timeouts(
    engines: Mapping[str, DirectionView], live_sessions: Mapping[str, list[Session]]
) -> GaugeHistogramMetricFamily:
    """The current reorder timeout of every session (adaptive: learnt; fixed: the configured
    one) as a gauge histogram; how often a late arrival grew one is a counters-table row."""
    timeouts = GaugeHistogramMetricFamily(
        PREFIX + "session_timeout_seconds",
        "Sessions by their current reorder timeout (reorder.adaptive: learnt per session, "
        "within [min_timeout_ms, timeout_ms]; else the configured timeout).",
        labels=["direction"],
    )
    for direction, engine in engines.items():
        live = live_sessions[direction]
        # Fixed timeouts are all one value: no per-session pass (a scrape holds the GIL).
        by_value = (
            Counter(engine.timeout_of(s) for s in live)
            if engine.adaptive_timeouts
            else Counter({engine.timeout_of(live[0]): len(live)} if live else {})
        )
        counts = [0] * (len(SESSION_TIMEOUT_BUCKETS) + 1)
        for v, n in by_value.items():
            counts[bisect_left(SESSION_TIMEOUT_BUCKETS, v)] += n
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, n in zip(SESSION_TIMEOUT_BUCKETS, counts, strict=False):
            cumulative += n
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", len(live)))
        timeouts.add_metric([direction], buckets, sum(v * n for v, n in by_value.items()))
    return timeouts


def _packets(s: Session) -> int:
    return s.packets


def build_registry(
    config: MetricsConfig, source: MetricsSource, extra: Iterable[Collector] = ()
) -> CollectorRegistry:
    """A private registry (never the global one): our collector and a mode's `extra` ones,
    process and platform info."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(source, config))
    for collector in extra:
        registry.register(collector)
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


def listen_failure(config: MetricsConfig, error: OSError) -> str:
    """Why `metrics:` could not be served, naming the setting to change (one line)."""
    where = format_address((config.listen, config.port))
    reason = error.strerror or str(error)
    if error.errno in (errno.EADDRINUSE, errno.EACCES):
        fix = "set metrics.port to a free port (or metrics.enabled: false)"
    elif error.errno == errno.EADDRNOTAVAIL:
        fix = "set metrics.listen to an address of this host"
    else:
        fix = "check metrics.tls_cert and metrics.tls_key"
    return f"metrics: cannot listen on {where}: {reason}; {fix}"


def start_metrics_server(
    config: MetricsConfig, source: MetricsSource, extra: Iterable[Collector] = ()
) -> MetricsServer:
    """Serve `/metrics` for `source` on `config.listen:config.port` (TLS when configured)."""
    return MetricsServer(config, build_registry(config, source, extra))
