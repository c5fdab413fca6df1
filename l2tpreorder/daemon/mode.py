"""What a mode (relay, in-path) provides to the one service (`daemon/service.py`).

The service owns everything both modes share, written once: signals, the state file (both
directions), metrics, the control socket, privilege drop, sd_notify and the watchdog,
housekeeping, drop reports, debug lines, reload, and the ONE timer at
`pipeline.next_deadline()`. A mode owns its I/O only: how packets come in (sockets, a netlink
queue), how the pipeline's output leaves (sendmsg, verdicts), its own counters and status.

The boundary is small on purpose (as hypercorn's asyncio/trio backends, aioquic's `transmit()`):
a mode reads a batch, hands it to the pipeline, and calls `on_batch()`; the service then calls
`transmit()` and re-arms the timer. Nothing in a mode imports the other mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from prometheus_client.registry import Collector

from l2tpreorder.config import Config
from l2tpreorder.core.counters import Counter
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.daemon.debug_log import DebugEvents
from l2tpreorder.daemon.status import StatusQuery

# One counters object as metrics and drop reports read it: its rows, the object whose
# attributes they read, and values for the leading labels the rows leave open (e.g. queue).
CounterTable = tuple[Sequence[Counter], object, dict[str, str]]
HousekeepingStep = tuple[str, Callable[[float], object]]


class BindError(Exception):
    """A mode could not bind what it reads from; the message is one line for the log."""


class Mode(Protocol):
    """A mode adapter: its I/O around the service's pipeline."""

    name: str  # "relay" or "inpath": the status JSON's `mode`
    pipeline: Pipeline
    clock: Callable[[], float]  # the clock packets are stamped with (the timer's too)
    keep_capabilities: tuple[int, ...]  # kept across the privilege drop
    # Traffic passes untouched while the daemon is down (in-path's fail-open bypass): restored
    # sessions then follow the Ns the LNS saw meanwhile (core/ahead.py).
    fails_open: bool
    refused_why: str  # how a refused reload key is explained ("needs new sockets")
    # Set by the service while debug lines are on (the pipeline records events meanwhile; the
    # service drains them after every batch). A mode may log its own lines through it
    # (`debug.refused`: the relay's refused sources); it always calls `pipeline.from_lac`.
    debug: DebugEvents | None

    def bind(self) -> None:
        """Open what the mode reads from; raises BindError (nothing left open)."""

    def start_reading(self, on_batch: Callable[[], None]) -> None:
        """Read from now on; after each batch handed to the pipeline, call `on_batch()`."""

    def stop_reading(self) -> None:
        """Take no new packets (first step of a stop)."""

    def drain_for_stop(self, now: float) -> None:
        """At a stop: what already waits may still be read and ordered (bounded), or not."""

    def transmit(self) -> None:
        """Send (or give verdicts for) what `pipeline.take_output()` returns."""

    def close(self) -> None:
        """After the final flush and the state save: release everything (idempotent)."""

    def reconfigure(self, new: Config) -> list[str]:
        """Apply a reloaded config (the pipeline's part is done by the service); returns the
        config attributes refused (they keep their running value)."""

    def counter_tables(self) -> list[CounterTable]:
        """The mode's counter rows with what they read (metrics, drop reports)."""

    def collectors(self) -> Iterable[Collector]:
        """Extra metric families that are not counter rows (e.g. the kernel's queue stats)."""

    def report_detail(self, key: str) -> str | None:
        """Extra words for a drop report line of `key` (e.g. the top refused sources)."""

    def status_fields(self, now: float, query: StatusQuery) -> dict[str, Any]:
        """The mode's part of the status JSON: `peers` (with the sessions `query` selects) and
        its own."""

    def housekeeping_steps(self) -> list[HousekeepingStep]:
        """The mode's steps of the one-second housekeeping tick."""

    def state_extra(self) -> tuple[dict[str, Any], str]:
        """What the state file keeps for this mode besides the sessions, and the words the
        `saved state of N sessions...` line adds for it."""

    def restore_extra(self, extra: dict[str, Any], now: float) -> str:
        """Restore `state_extra()` of a saved file (before reading); returns a log phrase."""

    def status_line(self) -> str:
        """One line: what this daemon does (READY status, the start and reload log lines)."""

    def final_line(self) -> str:
        """The last log line's numbers (`stopped: ...`)."""
