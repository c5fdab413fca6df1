"""The one timer at the pipeline's earliest deadline, for both modes.

Where packets are stamped with `time.monotonic()` (always, except tests that inject a clock) a
CLOCK_MONOTONIC timerfd wakes the loop's poll at the deadline itself: exact wake-ups, never
early. Otherwise a loop timer, which ticks in whole, cached milliseconds (libuv) and so can
fire before the deadline: it then waits the rest (at least 1 ms) instead of spinning through
zero-delay timers. The timer is touched only when the deadline moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from l2tpreorder.daemon import mmsg


class DeadlineTimer:
    """Calls `on_due()` once the deadline given to `arm` has passed."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        next_deadline: Callable[[], float | None],
        on_due: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._next_deadline = next_deadline
        self._on_due = on_due
        self._when: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._timerfd: mmsg.TimerFd | None = None
        if mmsg.AVAILABLE and clock is time.monotonic:
            with contextlib.suppress(OSError):
                self._timerfd = mmsg.TimerFd()
                loop.add_reader(self._timerfd.fd, self._on_timerfd)

    def arm(self, deadline: float | None) -> None:
        """Wake at `deadline` (None: not at all); a no-op when it did not move."""
        if deadline == self._when:
            return
        self._when = deadline
        if self._timerfd is not None:
            self._timerfd.arm(deadline)
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if deadline is not None:
            delay = max(0.0, deadline - self._clock())
            self._handle = self._loop.call_later(delay, self._on_loop_timer)

    def _on_timerfd(self) -> None:
        assert self._timerfd is not None
        self._timerfd.clear()
        self._when = None
        self._on_due()

    def _on_loop_timer(self) -> None:
        self._handle = None
        self._when = None
        now = self._clock()
        deadline = self._next_deadline()
        if deadline is not None and deadline > now:
            self._when = deadline
            self._handle = self._loop.call_later(max(deadline - now, 0.001), self._on_loop_timer)
            return
        self._on_due()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = None
        if self._timerfd is not None:
            self._loop.remove_reader(self._timerfd.fd)
            self._timerfd.close()
            self._timerfd = None
