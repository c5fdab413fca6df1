"""Numbering memory: which Ns a session gave up, and where recently ended sessions stopped.

Two promises rest on it. A packet behind the next expected Ns is classified exactly (`late`: it
was given up; `duplicate`: it was delivered or is held) within a per-session window of W Ns
(W = max(reorder.max_held_per_session, 64)); the window is a bitmap, W bits (32 bytes at the
default W = 256), so memory per session stays bounded whatever the loss pattern. And a session
ended on our side only (a spoofed CDN, an eviction, an idle expiry) whose data then carries on
within the window continues its renumbering exactly where it stopped, so the LNS never sees its
Ns jump or go back.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator

# How long the numbering of an ended session is remembered: longer than L2TP's 60 s hello
# interval, so a spoofed CDN or StopCCN the LNS ignored, or an eviction, costs no data.
ENDED_MEMORY = 120.0
# A session forgotten after `session_idle_timeout` of silence may simply resume much later (PPP
# without LCP echoes can be silent for as long as its user is): remembered this long.
IDLE_MEMORY = 3600.0
# Bound on each memory (a flood of ends cannot grow it): the oldest entry goes first.
ENDED_KEPT = 16384


class Ended:
    """Where a session stopped: enough for the next one with its IDs to carry on exactly."""

    __slots__ = ("at", "confirmed", "expected", "gaps", "gaps_end", "out_ns", "passed")

    def __init__(
        self,
        expected: int,
        out_ns: int,
        gaps: int,
        gaps_end: int,
        at: float,
        confirmed: bool,
        passed: bool = False,
    ) -> None:
        self.expected = expected
        self.out_ns = out_ns
        self.gaps = gaps
        self.gaps_end = gaps_end
        self.at = at
        self.confirmed = confirmed
        # Restored after a restart during which traffic may have passed untouched (in-path):
        # a session continuing from it takes its first packet like a restored one (ahead.py).
        self.passed = passed


class ContinuationMemory:
    """Ended sessions by (flow, session key), purged by age and by count.

    Two tables, because they age differently: sessions ended by a control message or an eviction
    (ENDED_MEMORY) and sessions that went idle (IDLE_MEMORY). Each is in insertion order, which is
    time order (the engine's clock never runs back), so purging pops from the front only.
    """

    __slots__ = ("_idle", "_short", "idle_memory", "short_memory")

    def __init__(self) -> None:
        self._short: dict[tuple[Hashable, int], Ended] = {}
        self._idle: dict[tuple[Hashable, int], Ended] = {}
        self.short_memory = ENDED_MEMORY
        self.idle_memory = IDLE_MEMORY

    def __len__(self) -> int:
        return len(self._short) + len(self._idle)

    def remember(self, flow: Hashable, key: int, ended: Ended, *, idle: bool = False) -> None:
        table = self._idle if idle else self._short
        other = self._short if idle else self._idle
        other.pop((flow, key), None)
        table.pop((flow, key), None)  # re-inserted at the end: the table stays in time order
        if len(table) >= ENDED_KEPT:
            del table[next(iter(table))]
        table[(flow, key)] = ended
        self.purge(ended.at)

    def take(self, flow: Hashable, key: int, now: float) -> Ended | None:
        """Pop the memory of session `key` of `flow` if it is still fresh."""
        for table, memory in ((self._short, self.short_memory), (self._idle, self.idle_memory)):
            ended = table.pop((flow, key), None)
            if ended is not None:
                return ended if now - ended.at <= memory else None
        return None

    def forget(self, flow: Hashable, key: int) -> None:
        """A new call was set up with these IDs: it starts afresh."""
        self._short.pop((flow, key), None)
        self._idle.pop((flow, key), None)

    def purge(self, now: float) -> None:
        """Drop what is too old to matter."""
        for table, memory in ((self._short, self.short_memory), (self._idle, self.idle_memory)):
            while table:
                first = next(iter(table))
                if now - table[first].at <= memory:
                    break
                del table[first]

    def items(self) -> Iterator[tuple[Hashable, int, Ended, bool]]:
        """(flow, key, record, idle) of everything remembered (for the state file)."""
        for (flow, key), ended in self._short.items():
            yield flow, key, ended, False
        for (flow, key), ended in self._idle.items():
            yield flow, key, ended, True
