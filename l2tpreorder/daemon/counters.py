"""The service's own counters (reloads), and the families both modes export rows into.

Each mode declares its rows beside its code (`relay/counters.py`, `inpath/counters.py`); what
they share (the datagrams read and written per direction) is declared once here, so a dashboard
panel reads the same family in either mode.
"""

from __future__ import annotations

import time

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
LAST_RELOAD_OK = family(
    "config_last_reload_successful",
    "1 when the last load of the configuration file succeeded (at start, or the last reload); "
    "0 while it fails to load and the previous configuration runs.",
    kind=Kind.GAUGE,
)
LAST_RELOAD_OK_AT = family(
    "config_last_reload_success_timestamp_seconds",
    "When the configuration file was last loaded successfully (start or reload), Unix time.",
    kind=Kind.GAUGE,
)
LOAD_FAILING = family(  # deprecated: kept one release (NEWS.md)
    "config_load_failing",
    "Deprecated: use l2tpreorder_config_last_reload_successful (1 = good). 1 while the "
    "configuration file fails to load; 0 after a successful reload.",
    kind=Kind.GAUGE,
)


class ServiceCounters:
    """Counted by the service in both modes. The configuration was loaded once when this is
    made (the service starts with a loaded file): successful, now."""

    __slots__ = (
        "config_last_reload_success_timestamp",
        "config_last_reload_successful",
        "config_reloads_failed",
        "config_reloads_ok",
    )

    def __init__(self) -> None:
        self.config_reloads_ok = 0
        self.config_reloads_failed = 0
        self.config_last_reload_successful = 1  # gauge: 0 while the file's last reload failed
        self.config_last_reload_success_timestamp = time.time()  # gauge, Unix seconds

    def config_loaded(self, ok: bool) -> None:
        """A reload read the file: `ok` if it loaded (then it is the running configuration)."""
        self.config_last_reload_successful = int(ok)
        if ok:
            self.config_last_reload_success_timestamp = time.time()

    @property
    def config_load_failing(self) -> int:
        """The deprecated gauge's value: the reverse of `config_last_reload_successful`."""
        return 1 - self.config_last_reload_successful


SERVICE_ROWS: tuple[Counter, ...] = (
    Counter(Source.DAEMON, "config_reloads_ok", RELOADS, ("success",)),
    Counter(Source.DAEMON, "config_reloads_failed", RELOADS, ("failure",)),
    Counter(Source.DAEMON, "config_last_reload_successful", LAST_RELOAD_OK),
    Counter(Source.DAEMON, "config_last_reload_success_timestamp", LAST_RELOAD_OK_AT),
    Counter(Source.DAEMON, "config_load_failing", LOAD_FAILING),
)
