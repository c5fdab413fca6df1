"""In-path mode's verdicts and counters: what the adapter decided, as netlink verdict messages.

The kernel applies verdicts per packet id; a batch verdict covers every queued id up to the one
given, so `Verdicts` uses one only for a run that is exactly the oldest still queued. Apart from
the adapter (adapter.py) so that each stays a file a newcomer reads at once; compiled with it.
"""

from __future__ import annotations

from typing import Final

from l2tpreorder.daemon.inpath.nfqueue import (
    NF_ACCEPT,
    NF_DROP,
    Queued,
    batch_verdict_message,
    verdict_message,
)

# InPathCounters' fields, also what `as_dict` reports: a compiled class (l2tpreorder.build) has
# no `__slots__` to read at run time.
COUNTER_NAMES: Final = (
    "accepted",
    "accepted_rewritten",
    "bad_checksum",
    "batch_verdicts",
    "dropped",
    "episodes_queue_full",
    "episodes_socket_full",
    "fragments_seen",
    "from_lac",
    "from_lns",
    "not_allowed",
    "not_l2tpv2",
    "not_udp",
    "packets",
    "truncated",
    "verdict_messages",
)


class InPathCounters:
    """Plain-int counters of the in-path adapter (read by the metrics collector)."""

    __slots__ = COUNTER_NAMES

    def __init__(self) -> None:
        self.packets = 0  # packets read from the queue
        self.from_lac = 0  # of those, handed to the pipeline as LAC -> LNS
        self.from_lns = 0  # of those, handed to the pipeline as LNS -> LAC (OUTPUT hook)
        self.not_udp = 0  # not one whole UDP datagram (other protocol, fragment): accepted
        self.truncated = 0  # copy shorter than the packet: accepted untouched
        self.not_l2tpv2 = 0  # UDP but not usable L2TPv2 (L2TPv3, other UDP): accepted
        # a fragment of a UDP datagram: the kernel did not reassemble before the queue rule
        # (the rules `l2tpreorder rules` prints make it); accepted untouched, logged once
        self.fragments_seen = 0
        # L2TPv2 whose UDP checksum is wrong (IPv6: or zero): accepted untouched, never fed
        # to the engine nor rewritten; the LNS's kernel drops it, as it would without us
        self.bad_checksum = 0
        # the LAC address (source LAC -> LNS, destination LNS -> LAC) is outside
        # `inpath.allow`: accepted untouched, never fed to the engine (no session)
        self.not_allowed = 0
        self.accepted = 0  # NF_ACCEPT verdicts (every packet but `dropped` ends here)
        self.accepted_rewritten = 0  # of those, with a rewritten packet (renumber, strip)
        self.dropped = 0  # NF_DROP verdicts: duplicate, late and stale packets
        self.verdict_messages = 0  # netlink verdict messages sent (single + batch)
        self.batch_verdicts = 0  # of those, NFQNL_MSG_VERDICT_BATCH
        # fail-open episodes seen (packets may have passed us untouched): the queue full (what
        # awaits a verdict reached its maxlen), or our socket full (a gap in the packet ids)
        self.episodes_queue_full = 0
        self.episodes_socket_full = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_NAMES}

    @property
    def passed_not_ours(self) -> int:
        """Every packet accepted at once as not ours (inpath/counters.py's PASSED_NOT_OURS)."""
        return (
            self.not_udp
            + self.truncated
            + self.not_l2tpv2
            + self.fragments_seen
            + self.bad_checksum
            + self.not_allowed
        )

    @property
    def accepted_untouched(self) -> int:
        return self.accepted - self.accepted_rewritten

    @property
    def single_verdicts(self) -> int:
        return self.verdict_messages - self.batch_verdicts


class Verdicts:
    """Verdict messages for one queue, in decision order, with in-order runs batched.

    The packets awaiting a verdict are `order[head:]` minus those marked `done` (answered out of
    order, left in place until the head passes them or they outnumber what waits): the kernel's
    own queue order, and the head is found by index, not by a lookup. `held` counts them."""

    __slots__ = (
        "accept_prefix",
        "batch_prefix",
        "counters",
        "drop_prefix",
        "head",
        "held",
        "messages",
        "order",
        "queue",
        "run_last",
        "run_len",
    )

    def __init__(self, queue: int, counters: InPathCounters) -> None:
        self.queue = queue
        self.counters = counters
        self.order: list[Queued] = []
        self.head = 0  # order[head] awaits a verdict, or head == len(order)
        self.held = 0
        self.messages: list[bytes] = []
        self.run_last = -1
        self.run_len = 0
        # The messages without a payload differ only in their last 4 bytes (the packet id).
        self.accept_prefix = verdict_message(queue, 0, NF_ACCEPT)[:-4]
        self.drop_prefix = verdict_message(queue, 0, NF_DROP)[:-4]
        self.batch_prefix = batch_verdict_message(queue, 0, NF_ACCEPT)[:-4]

    def add(self, q: Queued) -> None:
        self.order.append(q)
        self.held += 1

    def waiting(self) -> list[Queued]:
        return [q for q in self.order[self.head :] if not q.done]

    def accept(self, q: Queued, payload: bytes | None = None) -> None:
        order = self.order
        head = self.head
        if payload is None and head < len(order) and order[head] is q:
            q.done = True
            self.held -= 1
            self._advance(head + 1)
            self.run_last = q.packet_id
            self.run_len += 1
            return
        self._end_run()
        self._answer(q)
        if payload is None:
            self.messages.append(self.accept_prefix + q.packet_id.to_bytes(4, "big"))
        else:
            self.messages.append(verdict_message(self.queue, q.packet_id, NF_ACCEPT, payload))
        self.counters.verdict_messages += 1

    def drop(self, q: Queued) -> None:
        self._end_run()
        self._answer(q)
        self.messages.append(self.drop_prefix + q.packet_id.to_bytes(4, "big"))
        self.counters.verdict_messages += 1

    def _answer(self, q: Queued) -> None:
        if q.done:
            raise KeyError(q.packet_id)  # a second verdict for one packet: a bug of ours
        q.done = True
        self.held -= 1
        head = self.head
        order = self.order
        if head < len(order) and order[head] is q:
            self._advance(head + 1)
        elif len(order) > 2 * self.held + 1024:
            # Answered behind a head that still waits (a gap held up to the reorder timeout,
            # a second after a fail-open episode), and before it: let them go now, or they
            # would pile up with their packets' bytes while the head waits. Each pass removes
            # over half the list: amortised O(1) per answer. order[head] waits: it goes first.
            order[:] = [e for e in order[head:] if not e.done]
            self.head = 0

    def _advance(self, at: int) -> None:
        """The head to the first packet from `at` on that awaits a verdict; the answered ones
        before it are let go (all of them once nothing awaits one)."""
        order = self.order
        n = len(order)
        while at < n and order[at].done:
            at += 1
        if at == n:
            order.clear()
            at = 0
        elif at >= 1024 and 2 * at >= n:
            del order[:at]
            at = 0
        self.head = at

    def take(self) -> list[bytes]:
        """The messages decided so far (the open run included); clears them."""
        self._end_run()
        messages, self.messages = self.messages, []
        return messages

    def _end_run(self) -> None:
        n = self.run_len
        if not n:
            return
        c = self.counters
        c.verdict_messages += 1
        last = self.run_last.to_bytes(4, "big")
        if n == 1:
            self.messages.append(self.accept_prefix + last)
        else:
            c.batch_verdicts += 1
            self.messages.append(self.batch_prefix + last)
        self.run_len = 0
