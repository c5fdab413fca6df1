"""Drop reports: one warning line per drop reason per interval, in both modes.

Generated from the counter rows with a `report` word (engine rows per direction, the mode's own
rows), so a flood cannot fill the disk and nothing is counted silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from l2tpreorder.core import counters
from l2tpreorder.core.views import DirectionView
from l2tpreorder.daemon.metrics import CounterTable

log = logging.getLogger("l2tpreorder")


class DropReporter:
    """What grew since the last report, per reason, once per interval (and once at stop)."""

    def __init__(
        self,
        engines: Callable[[], Mapping[str, DirectionView]],
        tables: Callable[[], Sequence[CounterTable]],
        interval: float,
        detail: Callable[[str], str | None] = lambda key: None,
        *,
        malformed_passed: bool = False,
    ) -> None:
        self._engines = engines
        # In-path mode passes a malformed datagram on untouched: the report must not call it
        # dropped (its count is the engine's `malformed` row, whatever the policy).
        self._malformed_word = "malformed, passed on untouched" if malformed_passed else "dropped"
        self._tables = tables
        self._detail = detail
        self.interval = interval
        self._last = self.snapshot()
        self._next_at: float | None = None

    def set_interval(self, interval: float) -> None:
        """A reloaded interval applies from now, not after the old (maybe hour-long) one."""
        if interval != self.interval:
            self.interval = interval
            self._next_at = None

    def snapshot(self) -> dict[str, int]:
        """Every `report` row: the daemon's as their word, the engines' prefixed by direction."""
        snap: dict[str, int] = {}
        for rows, obj, _ in self._tables():
            snap.update(counters.drop_report(obj, rows))
        for direction, engine in self._engines().items():
            snap.update(
                counters.drop_report(engine.counters, counters.Source.ENGINE, f"{direction}:")
            )
        return snap

    def tick(self, now: float, final: bool = False) -> list[str]:
        """Log what grew since the last report, if the interval is up (or `final`: at stop,
        the last, partial interval); returns the lines."""
        if self._next_at is None:
            self._next_at = now + self.interval
        if now < self._next_at and not final:
            return []
        self._next_at = now + self.interval
        snap = self.snapshot()
        lines = []
        period = "before stopping" if final else f"in the last {self.interval:g} s"
        for key, value in snap.items():
            grown = value - self._last.get(key, 0)
            if grown > 0:
                what = "sequence numbers given up" if ":gave_up_ns:" in key else "dropped"
                if ":malformed:" in key:
                    what = self._malformed_word
                line = f"{grown} {what} {period} (reason {key}, {value} total)"
                detail = self._detail(key)
                if detail:
                    line += f"; {detail}"
                lines.append(line)
        self._last = snap
        for line in lines:
            log.warning("%s", line)
        return lines
