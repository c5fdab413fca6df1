"""The service's own counters (reloads), and the families both modes export rows into.

Each mode declares its rows beside its code (`relay/counters.py`, `inpath/counters.py`); what
they share (the datagrams read and written per direction) is declared once here, so a dashboard
panel reads the same family in either mode.
"""

from __future__ import annotations

from l2tpreorder.core.counters import Counter, D, Kind, Source, family

SOCKET_RX = family(
    "socket_received_datagrams",
    "Datagrams read from the sockets facing where the direction starts.",
    D,
)
SOCKET_TX = family(
    "socket_sent_datagrams", "Datagrams written to the sockets facing where the direction ends.", D
)
RELOADS = family("config_reloads", "Configuration reloads (SIGHUP), by result.", "result")
LOAD_FAILING = family(
    "config_load_failing",
    "1 while the configuration file fails to load (the last reload was refused and "
    "the old configuration runs); 0 after a successful reload.",
    kind=Kind.GAUGE,
)


class ServiceCounters:
    """Counted by the service in both modes."""

    __slots__ = ("config_load_failing", "config_reloads_failed", "config_reloads_ok")

    def __init__(self) -> None:
        self.config_reloads_ok = 0
        self.config_reloads_failed = 0
        self.config_load_failing = 0  # gauge: 1 while the file's last reload failed


SERVICE_ROWS: tuple[Counter, ...] = (
    Counter(Source.DAEMON, "config_reloads_ok", RELOADS, ("success",)),
    Counter(Source.DAEMON, "config_reloads_failed", RELOADS, ("failure",)),
    Counter(Source.DAEMON, "config_load_failing", LOAD_FAILING),
)
