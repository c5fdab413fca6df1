"""The engine's settings: `EngineConfig` and the choices it takes (`Sequencing`, `Late`), with
the ranges declared once (`LIMITS`: EngineConfig checks them, config.SETTINGS builds the file's
keys from them). Apart from the engine so that the configuration layer and the tools read them
without the engine's per-packet code, and `core/engine.py` stays about the packets."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Sequencing(StrEnum):
    """What the LNS sees in the Ns field of sequenced data (see README: choosing a mode)."""

    RENUMBER = "renumber"  # contiguous Ns, even across gaps we gave up on
    PRESERVE = "preserve"  # the LAC's Ns, untouched
    STRIP = "strip"  # no Ns/Nr at all (S cleared, Length fixed)


class Late(StrEnum):
    """What becomes of a packet whose Ns was given up and never delivered (core/behind.py)."""

    AUTO = "auto"  # deliver in renumber and strip mode, drop in preserve mode
    DELIVER = "deliver"  # at once, with the session's next Ns: a reordering, not a loss
    DROP = "drop"  # counted `late` (what every other reorderer does)


# The engine's ranges, declared once: EngineConfig checks them, and config.SETTINGS builds
# the file's keys from them (times here in seconds; the file speaks milliseconds).
LIMITS: dict[str, tuple[float, float | None]] = {
    "reorder_timeout": (0, 60),
    "min_timeout": (0, 60),
    "max_held_per_session": (1, 32767),
    "max_held_bytes": (1, None),
    "resync_after": (2, 1000),
    "max_sessions": (1, 10_000_000),
    "session_idle_timeout": (0, 86_400),
}
LOW_OPEN = frozenset({"min_timeout"})  # the floor of an adaptive timeout cannot be 0


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine's knobs. Times in seconds; the YAML file speaks milliseconds."""

    reorder_timeout: float = 0.1  # longest a packet is held waiting for a gap; 0 = never hold
    sequencing: Sequencing = Sequencing.RENUMBER
    max_held_per_session: int = 256
    max_held_bytes: int = 32 * 1024 * 1024
    resync_after: int = 4  # consecutive far-behind packets that mean "the peer restarted Ns"
    max_sessions: int = 100_000  # session table cap; the longest-silent session goes first
    # A session silent this long is forgotten (its numbering is remembered); 0 = never.
    session_idle_timeout: float = 300.0
    adaptive: bool = False  # per-session timeout learnt in [min_timeout, reorder_timeout]
    min_timeout: float = 0.002  # the adaptive timeout's floor (the cap wins if it is lower)
    late: Late = Late.AUTO  # DELIVER in preserve mode is refused by config (drops here)

    def __post_init__(self) -> None:
        if not isinstance(self.sequencing, Sequencing):
            raise ValueError(f"sequencing={self.sequencing!r}: expected renumber|preserve|strip")
        if not isinstance(self.late, Late):
            raise ValueError(f"late={self.late!r}: expected auto|deliver|drop")
        for name, (lo, hi) in LIMITS.items():
            value = getattr(self, name)
            low_ok = value > lo if name in LOW_OPEN else value >= lo
            if not (low_ok and (hi is None or value <= hi)):
                above = f"> {lo}" if name in LOW_OPEN else f">= {lo}"
                upto = "" if hi is None else f" and <= {hi}"
                raise ValueError(f"{name}={value!r}: expected {above}{upto}")
