"""The 20-byte trailer the load generator puts at the end of every datagram, and the sink reads.

It sits at the *end* so that a relay that rewrites or strips the L2TP header (Ns renumbering,
STRIP sequencing) does not move it. `seq` is the generator's own per-session counter (Ns before
it wraps at 2**16), so order is checked even when the relay renumbers Ns.
"""

from __future__ import annotations

import struct
from enum import IntEnum

MAGIC = 0xB3C7
# magic, kind, (pad), session index, per-session sequence, send time (CLOCK_REALTIME ns)
TRAILER = struct.Struct("!HBxIIQ")
TRAILER_SIZE = TRAILER.size  # 20
SEQ_FROM_END = 12  # byte offset of `seq` counted back from the end of the datagram
TX_FROM_END = 8


class Kind(IntEnum):
    """What a reorder relay is expected to do with the packet; the sink splits latency by it."""

    NORMAL = 0  # arrives in order: forwarded at once (in-order latency is measured on these)
    EARLY = 1  # sent before its predecessor (a swap): held until the predecessor arrives
    LATE = 2  # the predecessor of an EARLY packet: fills the gap, releases both
    AFTER_GAP = 3  # first packet after a deliberately lost one: held until its deadline
    BEHIND_GAP = 4  # further packets of that session inside the hold window: queued behind it
    WARMUP = 5  # one per session before the measured phase, so sessions exist when timing starts


def tunnel_session(index: int, base_tunnel: int = 1) -> tuple[int, int]:
    """(tunnel_id, session_id) of generator session `index`: 65535 sessions per tunnel."""
    return base_tunnel + index // 65535, index % 65535 + 1
