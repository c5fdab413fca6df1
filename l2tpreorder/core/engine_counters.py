"""The engine's counters: every outcome and event as a plain int, and its two histograms.

Kept apart from engine.py (the per-packet logic) to keep each module a readable size; the
engine re-exports both names. What each counter is exported as is declared in core/counters.py.
"""

from __future__ import annotations

from bisect import bisect_left

from l2tpreorder.core import reasons

HOLD_TIME_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
DISPLACEMENT_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 16, 32, 64, 128, 256, 1024)


class Histogram:
    """Cumulative-friendly bucket counts kept as plain ints (exported at scrape time)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last bucket is +Inf; their sum is the count
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class EngineCounters:
    """Every outcome and event as a plain int: an increment costs ~15 ns, not ~240 ns."""

    __slots__ = (
        "adaptive_grows",
        "displacement",
        "dropped_duplicate",
        "dropped_far_ahead",
        "dropped_late",
        "dropped_stale",
        "forwarded_control",
        "forwarded_in_order",
        "forwarded_late",
        "forwarded_malformed",
        "forwarded_out_of_order",
        "forwarded_unsequenced",
        "held_bytes",
        "held_packets",
        "hold_time",
        "malformed",
        "released",
        "resyncs",
        "rx_control",
        "rx_data_unseq",
        "rx_malformed",
        "sessions_confirmed",
        "sessions_continued",
        "sessions_ended",
        "sessions_evicted",
        "sessions_evicted_active",
        "sessions_evicted_confirmed",
        "sessions_idle_expired",
        "sessions_started",
        "skipped",
    )

    def __init__(self) -> None:
        self.rx_control = 0
        self.rx_data_unseq = 0
        self.rx_malformed = 0
        self.malformed: dict[str, int] = dict.fromkeys(reasons.MALFORMED_REASONS, 0)
        self.forwarded_control = 0
        self.forwarded_unsequenced = 0
        self.forwarded_in_order = 0
        self.forwarded_out_of_order = 0
        # Malformed datagrams passed on untouched (MalformedPolicy.PASS, in-path mode): counted
        # in rx_malformed and by reason like dropped ones, their outcome is forwarded.
        self.forwarded_malformed = 0
        self.forwarded_late = 0  # given up, then delivered on arrival (reorder.late: deliver)
        self.released = 0
        self.dropped_duplicate = 0
        self.dropped_late = 0
        self.dropped_stale = 0  # further behind than the window: delivered or not is unknown
        self.dropped_far_ahead = 0  # further ahead than the window, not confirmed (core/ahead.py)
        self.skipped: dict[str, int] = dict.fromkeys(reasons.SKIP_REASONS, 0)
        self.resyncs = 0
        self.sessions_started = 0
        self.sessions_ended = 0  # includes evicted ones: active = started - ended
        self.sessions_evicted = 0  # the session table was full (max_sessions)
        self.sessions_evicted_confirmed = 0  # of those, established by the control channel
        self.sessions_evicted_active = 0  # of those, active lately: the cap is too small
        self.sessions_idle_expired = 0  # silent for session_idle_timeout (counted in ended too)
        self.sessions_continued = 0  # recreated sessions whose stream went on
        self.sessions_confirmed = 0  # sessions the control channel established (ICCN, ICRP...)
        self.held_packets = 0  # gauge
        self.held_bytes = 0  # gauge
        self.hold_time = Histogram(HOLD_TIME_BUCKETS)
        self.displacement = Histogram(DISPLACEMENT_BUCKETS)
        self.adaptive_grows = 0  # late arrivals that grew a session's adaptive timeout

    @property
    def rx_data_seq(self) -> int:
        """Sequenced data received: derived from its outcomes, so the hot path skips a count."""
        return (
            self.forwarded_in_order
            + self.forwarded_out_of_order
            + self.forwarded_late
            + self.released
            + self.held_packets
            + self.dropped_duplicate
            + self.dropped_late
            + self.dropped_stale
            + self.dropped_far_ahead
        )

    @property
    def sessions_evicted_unconfirmed(self) -> int:
        return self.sessions_evicted - self.sessions_evicted_confirmed

    @property
    def received(self) -> int:
        return self.rx_control + self.rx_data_seq + self.rx_data_unseq + self.rx_malformed

    @property
    def forwarded(self) -> int:
        return (
            self.forwarded_control
            + self.forwarded_unsequenced
            + self.forwarded_in_order
            + self.forwarded_out_of_order
            + self.forwarded_malformed
            + self.forwarded_late
        )

    @property
    def dropped_malformed(self) -> int:
        """Malformed datagrams dropped (MalformedPolicy.DROP): those not passed on."""
        return self.rx_malformed - self.forwarded_malformed

    @property
    def dropped(self) -> int:
        return (
            self.dropped_duplicate
            + self.dropped_late
            + self.dropped_stale
            + self.dropped_far_ahead
            + self.dropped_malformed
        )

    @property
    def accounted(self) -> int:
        """Outcomes so far; equals `received` at all times (the engine's invariant)."""
        return self.forwarded + self.released + self.dropped + self.held_packets
