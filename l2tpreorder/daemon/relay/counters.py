"""Counters the relay keeps outside the engine (socket layer, access control, LNS health),
and their rows: the families and drop-report words they are exported under.

Plain ints like the engine's, read by the Prometheus collector at scrape time. The relay owns
the instance; the collector only reads it. The reload counters are the service's
(`daemon/counters.py`), in both modes.
"""

from __future__ import annotations

from l2tpreorder.core.counters import (
    DROPPED,
    LAC_TO_LNS,
    LNS_TO_LAC,
    Counter,
    Kind,
    Source,
    family,
)
from l2tpreorder.daemon.counters import SOCKET_RX, SOCKET_TX

MAX_SOURCES = 1024  # distinct refused sources counted per report interval


class RelayCounters:
    """Per-process relay counters and gauges; one instance per daemon."""

    __slots__ = (
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


SOCKET_RX_BYTES = family(
    "socket_received_bytes", "UDP payload bytes read, by direction.", "direction"
)
SOCKET_TX_BYTES = family(
    "socket_sent_bytes", "UDP payload bytes written, by direction.", "direction"
)
SEND_ERRORS = family("send_errors", "Datagrams lost because sendto failed.")
SOCKET_DROPS = family(
    "socket_receive_drops",
    "Datagrams the kernel dropped on a full receive queue of the relay's sockets "
    "(the drops column of /proc/net/udp, what SO_RXQ_OVFL counts).",
)
PEERS = family("peers", "LAC peers with an upstream socket now.", kind=Kind.GAUGE)
PEERS_IDLE = family(  # named like sessions_idle_expired
    "peers_idle_expired",
    "LAC peers forgotten after relay.peer_idle_timeout_ms of silence (upstream socket closed).",
)
PEERS_REMOVED_IDLE = family(  # deprecated: kept one release (NEWS.md)
    "peers_removed_idle", "Deprecated: use l2tpreorder_peers_idle_expired_total (same value)."
)
LNS_ICMP = family(
    "lns_icmp_errors",
    "ICMP errors (port/host unreachable...) for datagrams the relay sent to the LNS.",
)
LNS_UNRESPONSIVE = family(
    "lns_unresponsive",
    "1 while the LNS does not answer: ICMP errors, or LAC traffic in and nothing back "
    "from the LNS for 90 s; 0 once it is heard again.",
    kind=Kind.GAUGE,
)

R = Source.DAEMON
# The relay's sockets and peers; the rows carry their own direction.
RELAY_ROWS: tuple[Counter, ...] = (
    Counter(R, "dropped_not_allowed", DROPPED, (LAC_TO_LNS, "not_allowed"), report="not_allowed"),
    Counter(
        R, "dropped_not_from_lns", DROPPED, (LNS_TO_LAC, "not_from_lns"), report="not_from_lns"
    ),
    Counter(R, "dropped_peer_limit", DROPPED, (LAC_TO_LNS, "peer_limit"), report="peer_limit"),
    Counter(R, "tx_errors", SEND_ERRORS, report="send_error"),
    Counter(R, "socket_rx_drops", SOCKET_DROPS, report="socket_overflow"),
    Counter(R, "rx_datagrams_lac", SOCKET_RX, (LAC_TO_LNS,)),
    Counter(R, "rx_datagrams_lns", SOCKET_RX, (LNS_TO_LAC,)),
    Counter(R, "tx_datagrams_lns", SOCKET_TX, (LAC_TO_LNS,)),
    Counter(R, "tx_datagrams_lac", SOCKET_TX, (LNS_TO_LAC,)),
    Counter(R, "rx_bytes_lac", SOCKET_RX_BYTES, (LAC_TO_LNS,)),
    Counter(R, "rx_bytes_lns", SOCKET_RX_BYTES, (LNS_TO_LAC,)),
    Counter(R, "tx_bytes_lns", SOCKET_TX_BYTES, (LAC_TO_LNS,)),
    Counter(R, "tx_bytes_lac", SOCKET_TX_BYTES, (LNS_TO_LAC,)),
    Counter(R, "peers", PEERS),
    Counter(R, "peers_removed_idle", PEERS_IDLE),
    Counter(R, "peers_removed_idle", PEERS_REMOVED_IDLE),
    Counter(R, "lns_icmp_errors", LNS_ICMP),
    Counter(R, "lns_unresponsive", LNS_UNRESPONSIVE),
)
