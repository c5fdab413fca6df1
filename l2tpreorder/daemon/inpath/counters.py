"""In-path mode's counter rows: the adapter's `InPathCounters` and the worker's own numbers,
with the families they are exported under (each labelled by queue).

The queue label's value is the worker's (`CounterTable` labels); the supervisor of several
workers keeps it when it merges their families.
"""

from __future__ import annotations

from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC, Counter, Kind, Source, family
from l2tpreorder.daemon.counters import SOCKET_RX, SOCKET_TX

Q = "queue"
PASSED_NOT_OURS = family(
    "inpath_passed_not_ours",
    "Queued packets accepted untouched at once because they are not whole L2TPv2 "
    "datagrams (not_udp: other protocol; truncated: copy shorter than the packet; "
    "not_l2tpv2: L2TPv3 or other UDP; fragment: an IP fragment, the reassembly rule is "
    "missing; bad_checksum: L2TPv2 with a wrong UDP checksum, never fed to the engine; "
    "not_allowed: the LAC address is outside inpath.allow, never fed to the engine). "
    "Malformed L2TPv2 is the engine's: "
    'l2tpreorder_forwarded_packets{kind="malformed"}.',
    Q,
    "reason",
)
VERDICTS = family(
    "inpath_verdicts",
    "Verdicts given: accept (untouched), accept_rewritten (renumber/strip), drop "
    "(duplicate, late and stale packets).",
    Q,
    "verdict",
)
QUEUED = family("inpath_queued_packets", "Packets read from the queue.", Q)
MESSAGES = family(
    "inpath_verdict_messages",
    "Netlink verdict messages sent (batch: one for a run of packets).",
    Q,
    "kind",
)
AWAITING = family(
    "inpath_awaiting_verdict",
    "Packets read and held back (no verdict yet).",
    Q,
    kind=Kind.GAUGE,
)
KERNEL_MAXLEN = family(
    "inpath_kernel_queue_maxlen",
    "The kernel's maxlen for this queue now: queue_maxlen, raised while a fail-open episode "
    "is resolved, and after one (renumber) the floor: what was held plus what may be in "
    "flight, capped (docs/inpath.md).",
    Q,
    kind=Kind.GAUGE,
)
EPISODES = family(
    "inpath_fail_open_episodes",
    "Times packets may have passed us untouched (fail-open) while the worker ran: "
    "queue_full (what awaits a verdict reached the queue's maxlen) or socket_full (a gap in "
    "the packet ids: the kernel could not deliver one to us). Each makes the sessions renumber "
    "above the Ns that passed (docs/inpath.md).",
    Q,
    "cause",
)
VERDICT_ERRORS = family(
    "inpath_verdict_errors",
    "Verdicts the kernel refused (logged; e.g. EPERM without CAP_NET_ADMIN).",
    Q,
)

A = Source.DAEMON
# Rows of `InPathCounters` (inpath/verdicts.py).
ADAPTER_ROWS: tuple[Counter, ...] = (
    Counter(A, "not_udp", PASSED_NOT_OURS, ("not_udp",)),
    Counter(A, "truncated", PASSED_NOT_OURS, ("truncated",)),
    Counter(A, "not_l2tpv2", PASSED_NOT_OURS, ("not_l2tpv2",)),
    Counter(A, "fragments_seen", PASSED_NOT_OURS, ("fragment",)),
    Counter(A, "bad_checksum", PASSED_NOT_OURS, ("bad_checksum",)),
    Counter(A, "not_allowed", PASSED_NOT_OURS, ("not_allowed",)),
    Counter(A, "accepted_untouched", VERDICTS, ("accept",)),
    Counter(A, "accepted_rewritten", VERDICTS, ("accept_rewritten",)),
    Counter(A, "dropped", VERDICTS, ("drop",)),
    Counter(A, "packets", QUEUED),
    Counter(A, "single_verdicts", MESSAGES, ("single",)),
    Counter(A, "batch_verdicts", MESSAGES, ("batch",)),
    Counter(A, "episodes_queue_full", EPISODES, ("queue_full",)),
    Counter(A, "episodes_socket_full", EPISODES, ("socket_full",)),
    # What relay mode counts at its sockets, from the queue: read per direction; every
    # accept verdict is a datagram sent on.
    Counter(A, "from_lac", SOCKET_RX, (LAC_TO_LNS,)),
    Counter(A, "from_lns", SOCKET_RX, (LNS_TO_LAC,)),
    Counter(A, "accepted", SOCKET_TX, (LAC_TO_LNS,)),
)
# Rows of the worker (`InPathMode`): what the kernel did with our verdicts and what waits.
WORKER_ROWS: tuple[Counter, ...] = (
    Counter(A, "held", AWAITING),
    Counter(A, "kernel_maxlen", KERNEL_MAXLEN),
    Counter(A, "verdict_errors", VERDICT_ERRORS),
)
