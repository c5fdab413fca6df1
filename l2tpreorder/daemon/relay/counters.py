"""Counters the relay keeps outside the engine (socket layer, access control, reloads).

Plain ints like the engine's, read by the Prometheus collector at scrape time. The daemon owns
the instance; the collector only reads it.
"""

from __future__ import annotations

MAX_SOURCES = 1024  # distinct refused sources counted per report interval


class RelayCounters:
    """Per-process relay counters and gauges; one instance per daemon."""

    __slots__ = (
        "config_load_failing",
        "config_reloads_failed",
        "config_reloads_ok",
        "dropped_not_allowed",
        "dropped_not_from_lns",
        "dropped_peer_limit",
        "lns_icmp_errors",
        "lns_unresponsive",
        "not_allowed_sources",
        "peers",
        "peers_removed_idle",
        "rx_bytes_lac",
        "rx_bytes_lns",
        "rx_datagrams_lac",
        "rx_datagrams_lns",
        "socket_rx_drops",
        "tx_bytes_lac",
        "tx_bytes_lns",
        "tx_datagrams_lac",
        "tx_datagrams_lns",
        "tx_errors",
    )

    def __init__(self) -> None:
        self.rx_datagrams_lac = 0  # datagrams read from LAC-facing sockets
        self.rx_datagrams_lns = 0  # datagrams read from LNS-facing (upstream) sockets
        self.tx_datagrams_lac = 0
        self.tx_datagrams_lns = 0
        self.rx_bytes_lac = 0  # UDP payload bytes of those datagrams (throughput panels)
        self.rx_bytes_lns = 0
        self.tx_bytes_lac = 0
        self.tx_bytes_lns = 0
        self.tx_errors = 0  # sendto failures (counted, logged rate-limited)
        self.dropped_not_allowed = 0  # source outside the allowed LAC prefixes
        self.dropped_not_from_lns = 0  # upstream datagram whose source is not the LNS
        self.dropped_peer_limit = 0  # new LAC peer refused: max_peers reached or no socket left
        self.socket_rx_drops = 0  # kernel receive-queue drops (sk_drops, as SO_RXQ_OVFL counts)
        self.peers = 0  # gauge: LAC peers with an upstream socket
        self.peers_removed_idle = 0  # peers forgotten after peer_idle_timeout without traffic
        self.config_reloads_ok = 0
        self.config_reloads_failed = 0
        self.config_load_failing = 0  # gauge: 1 while the file's last reload failed
        self.lns_icmp_errors = 0  # ICMP errors for datagrams sent to the LNS (lns_health)
        self.lns_unresponsive = 0  # gauge: 1 while the LNS does not answer (lns_health)
        # not_allowed drops by source IP since the last drop report (bounded; the report
        # names the top ones and clears it).
        self.not_allowed_sources: dict[str, int] = {}

    def count_not_allowed_source(self, ip: str) -> None:
        sources = self.not_allowed_sources
        if ip in sources or len(sources) < MAX_SOURCES:
            sources[ip] = sources.get(ip, 0) + 1
        else:
            sources["other"] = sources.get("other", 0) + 1

    def top_not_allowed(self, n: int = 3) -> str:
        """`a x12, b x3, ...` for the report line, then start counting afresh."""
        top = sorted(self.not_allowed_sources.items(), key=lambda kv: -kv[1])[:n]
        self.not_allowed_sources = {}
        return ", ".join(f"{ip} x{count}" for ip, count in top)
