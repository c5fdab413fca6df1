"""Names for every way a packet can end: outcomes, drop reasons, malformed reasons, skip reasons.

They are plain strings so they serve directly as Prometheus label values, JSON keys and log words.
"""

from __future__ import annotations

from enum import IntEnum

# Why a datagram is not a usable L2TPv2 message (checked in this order by both parsers).
TOO_SHORT = "too_short"
BAD_VERSION = "bad_version"
L2TPV3 = "l2tpv3"
CONTROL_WITHOUT_LENGTH_OR_SEQUENCE = "control_without_length_or_sequence"
CONTROL_WITH_OFFSET = "control_with_offset"
LENGTH_EXCEEDS_DATAGRAM = "length_exceeds_datagram"
LENGTH_BELOW_HEADER = "length_below_header"
OFFSET_BEYOND_END = "offset_beyond_end"
# Control message whose AVP list is broken (AVP length < 6 or running past the message end).
BAD_AVP = "bad_avp"

MALFORMED_REASONS: tuple[str, ...] = (
    TOO_SHORT,
    BAD_VERSION,
    L2TPV3,
    CONTROL_WITHOUT_LENGTH_OR_SEQUENCE,
    CONTROL_WITH_OFFSET,
    LENGTH_EXCEEDS_DATAGRAM,
    LENGTH_BELOW_HEADER,
    OFFSET_BEYOND_END,
    BAD_AVP,
)

# Why sequence numbers were given up (the missing Ns never reached the LNS).
SKIP_TIMEOUT = "timeout"  # waited reorder_timeout for the gap to fill
SKIP_CAP = "cap"  # a held-packet or held-byte cap forced the oldest gap closed early
SKIP_RESYNC = "resync"  # the peer restarted its numbering; what was held was released first
SKIP_END = "session_end"  # the session ended (CDN, StopCCN, shutdown) with gaps still open
SKIP_EVICTED = "evicted"  # the session table was full and this session was evicted, gaps open
# The socket layer reported kernel receive-queue drops: gaps that may be those were given up
# at once (or after a 2 ms grace when the session already held packets) instead of after the
# timeout (see ReorderEngine.note_kernel_drops).
SKIP_SOCKET_DROP = "socket_overflow"
# A session restored from the state file got, as its first packet, one ahead of the saved
# numbering: the Ns between passed us while the daemon was down (the in-path fail-open bypass)
# or were lost then (relay mode), so they are given up at once, not waited for (core/ahead.py).
SKIP_RESTART = "restart"
# In-path mode: the kernel's queue was full (or our socket was), so packets passed us untouched
# with the LAC's Ns (fail-open). A session's first packet that arrived after that episode gives
# up the Ns before it at once: the bypassed ones were among them (core/ahead.py `_bypassed`);
# with no such packet within the wait (BYPASS_WITNESS_WAIT, 1 s, or the reorder timeout if longer),
# what it held goes out, its gaps skipped in our numbering too.
SKIP_BYPASS = "bypass"
# In-path mode: what all sessions held reached half the queue's maxlen, so the oldest gap was
# closed early, before held packets alone could fill the queue (ReorderEngine.hold_budget).
SKIP_QUEUE_BUDGET = "queue_budget"
SKIP_REASONS: tuple[str, ...] = (
    SKIP_TIMEOUT,
    SKIP_CAP,
    SKIP_RESYNC,
    SKIP_END,
    SKIP_EVICTED,
    SKIP_SOCKET_DROP,
    SKIP_RESTART,
    SKIP_BYPASS,
    SKIP_QUEUE_BUDGET,
)

# Why a session ended (events.SessionEnded, which the debug lines read). "_reverse": the control
# message came from the receiver of this direction's data (the LNS, for LAC to LNS).
END_CDN = "cdn"
END_CDN_REVERSE = "cdn_reverse"
END_STOPCCN = "stopccn"
END_STOPCCN_REVERSE = "stopccn_reverse"
END_EVICTED = "evicted"  # the table was at max_sessions: the longest-silent session went
END_IDLE = "idle"  # silent for session_idle_timeout
END_PEER = "peer_gone"  # the adapter forgot the peer (end_flow)
END_REPLACED = "replaced"  # a restored session took its place


class Outcome(IntEnum):
    """What `ReorderEngine.receive` did with one datagram. Exactly one per datagram."""

    FORWARDED_CONTROL = 0  # control message, passed at once, untouched
    FORWARDED_UNSEQUENCED = 1  # data without Ns, passed at once, untouched
    FORWARDED_IN_ORDER = 2  # data with the expected Ns, passed at once
    FORWARDED_OUT_OF_ORDER = 3  # timeout 0 ("no holding"): a late packet passed in arrival order
    # its Ns was given up and never delivered: passed at once with the session's next Ns
    # (renumber, strip; `reorder.late`): a reordering of the payload, not a loss
    FORWARDED_LATE = 4
    HELD = 5  # early data, held until the gap fills or its deadline (later counted as released)
    # The drops are DROPPED_DUPLICATE..DROPPED_STALE (adapters test that range, so a new drop goes
    # inside it; FORWARDED_MALFORMED came later and is not a drop).
    DROPPED_DUPLICATE = 6  # its Ns was already delivered or is held
    DROPPED_LATE = 7  # its Ns was already given up (skipped), and late: drop (or preserve mode)
    DROPPED_MALFORMED = 8  # not a usable L2TPv2 message; the reason is counted separately
    # further ahead of the next expected Ns than the window W, and not (yet) confirmed by the
    # packets after it: one stray datagram (spoofed, a bit flip) must not move the session
    # (core/ahead.py); `resync_after` of them in a row are a real jump and the session follows
    DROPPED_FAR_AHEAD = 9
    # further behind the next expected Ns than the session's window (W = max(max_held, 64)):
    # whether it was delivered or given up is no longer known (e.g. a restarting peer's first
    # packets before the resync, or a packet delayed by more than W, or beyond what a window
    # grown by reload has tracked yet)
    DROPPED_STALE = 10
    # not a usable L2TPv2 message, passed on untouched (MalformedPolicy.PASS: in-path mode, which
    # must do no harm to traffic it sits in the path of); counted by reason like a dropped one
    FORWARDED_MALFORMED = 11
