"""Counters the relay keeps outside the engine (socket layer, access control, reloads).

Plain ints like the engine's, read by the Prometheus collector at scrape time. The daemon owns
the instance; the collector only reads it.
"""

from __future__ import annotations


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
