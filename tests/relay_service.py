"""A relay-mode service in process, for tests that drive the `Relay` adapter directly: the one
service's I/O half (its timer, transmit, final flush) without signals, metrics or control."""

from __future__ import annotations

from l2tpreorder.config import Config
from l2tpreorder.daemon.relay.adapter import Relay
from l2tpreorder.daemon.sdnotify import Notifier
from l2tpreorder.daemon.service import Service


def relay_service(relay: Relay, config: Config | None = None) -> Service:
    """The service around `relay` (bind it first; then `start_io()`, and `stop_io()` at the
    end: stop reading, deliver what is held, close every socket)."""
    config = config or relay.config
    return Service(config, relay, lambda: config, notifier=Notifier(environ={}))
