"""What the core tells an adapter besides the datagrams to send: typed events (h11's style).

`Pipeline.take_events()` hands them out next to `take_output()`; each is plain data with the
direction it happened in (`counters.LAC_TO_LNS` / `LNS_TO_LAC`). They are recorded only while an
adapter asked for them (`Pipeline.record_events`): the debug lines want drops, malformed
datagrams and session ends; `replay pcap` wants every hold time. Nothing is recorded otherwise,
so the per-packet path pays nothing for them.

Events are a view of what the counters already counted, never a second count: a datagram's one
outcome is its `Outcome` and its counter. Buffers are bounded (a flood between two reads must
not grow memory); what did not fit is said by one `Missed` event per direction and kind.
Order is kept within one kind and direction, not across them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

# Events of each kind kept per direction between two `take_events()` calls; more are counted.
EVENTS_KEPT = 4096
# Hold samples kept per direction between two reads: replay reads after every datagram, so only
# a shutdown flush of a huge table could release more at once.
HOLD_SAMPLES_KEPT = 1 << 20

SessionKey = tuple[Hashable, int, int]  # (flow, tunnel_id, session_id)


@dataclass(frozen=True, slots=True)
class Dropped:
    """A sequenced datagram dropped as late, duplicate or stale (`outcome`: its `Outcome`)."""

    direction: str
    flow: Hashable
    outcome: int
    tunnel_id: int
    session_id: int
    ns: int


@dataclass(frozen=True, slots=True)
class Malformed:
    """A datagram that is not usable L2TPv2 (`reason`: reasons.MALFORMED_REASONS): dropped, or
    passed on untouched under `MalformedPolicy.PASS` (`passed`)."""

    direction: str
    flow: Hashable
    reason: str
    passed: bool


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """A session ended (`why`: reasons.END_*); what it held was delivered first."""

    direction: str
    flow: Hashable
    tunnel_id: int
    session_id: int
    why: str


@dataclass(frozen=True, slots=True)
class HoldSample:
    """One released packet's time held, in seconds (`key`: its session)."""

    direction: str
    key: SessionKey
    waited: float


@dataclass(frozen=True, slots=True)
class Missed:
    """`count` events of `kind` ("dropped", "ended", "hold") were not itemised: the buffer was
    full (see EVENTS_KEPT, HOLD_SAMPLES_KEPT). The counters still counted them."""

    direction: str
    kind: str
    count: int


Event = Dropped | Malformed | SessionEnded | HoldSample | Missed
