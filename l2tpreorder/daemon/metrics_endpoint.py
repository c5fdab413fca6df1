"""The one `/metrics` listener of a process, and how a reload moves it.

Written once for every process that serves metrics: the service (relay, an in-path worker)
and the in-path supervisor, which serves its workers' families on the configured address.
What each serves differs (the `open_server` they pass); how a `metrics:` change is applied
does not: a new address is bound before the old listener closes, so a taken port keeps the
old one serving (issue 24), and a listener that had to close first is reopened on the old
settings when the new ones cannot be served.
"""

from __future__ import annotations

from collections.abc import Callable

from l2tpreorder.config import MetricsConfig, format_address
from l2tpreorder.daemon.metrics import MetricsServer, listen_failure

# Opens the listener for `settings`: None when the section is off, OSError when it cannot
# listen (the caller decides whether that is fatal: at start it is).
OpenServer = Callable[[MetricsConfig], MetricsServer | None]


class MetricsEndpoint:
    """The running listener (`server`, None when off) and its reload rule."""

    __slots__ = ("_open", "server")

    def __init__(self, open_server: OpenServer) -> None:
        self._open = open_server
        self.server: MetricsServer | None = None

    def start(self, settings: MetricsConfig) -> None:
        """Serve `settings`; raises OSError when it cannot listen (a failed start)."""
        self.server = self._open(settings)

    def move(self, old: MetricsConfig, new: MetricsConfig) -> str | None:
        """Serve `new` in place of `old`; returns why `new` is not served, or None."""
        running = self.server
        same_address = (old.listen, old.port) == (new.listen, new.port) and old.port != 0
        if running is not None and (same_address or not new.enabled):
            running.close()  # its port is the one the new listener needs (or none is wanted)
            running = self.server = None
        try:
            fresh = self._open(new)
        except OSError as e:
            why = f"{listen_failure(new, e)}; the metrics: section is not applied"
            if running is None:  # the old listener is gone: serve the old settings again
                try:
                    self.server = self._open(old)
                except OSError:
                    return f"{why}, and the old endpoint could not be reopened either"
            if self.server is None:
                return why
            return f"{why}; still serving on {format_address((old.listen, self.server.port))}"
        if running is not None:
            running.close()
        self.server = fresh
        return None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
