"""In-path mode's adapter: packets from an NFQUEUE go through the same Pipeline as the relay's
datagrams, and what the pipeline releases gets its verdict (NF_ACCEPT, with a rewritten packet
when renumber/strip changed it).

Why verdicts instead of sockets: the LNS keeps its port and sees the LAC's real address, and
when nobody reads the queue the rule's bypass lets traffic through unordered. An early packet
simply gets no verdict until the pipeline releases it (gap filled, timeout, caps, session end,
shutdown). What is not a whole L2TPv2 datagram is accepted untouched at once and counted: in
this mode we sit in the path of traffic that is not ours, and must do no harm.

The kernel applies verdicts per packet id; a batch verdict covers every queued id up to the one
given, so `Verdicts` uses one only for a run that is exactly the oldest still queued.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Hashable

from l2tpreorder.core.checksum import IpUdp, parse_ip_udp, with_payload
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.daemon.nfqueue import (
    NF_ACCEPT,
    NF_DROP,
    NF_INET_LOCAL_OUT,
    Packet,
    batch_verdict_message,
    verdict_message,
)

_DROPPED_DUPLICATE = int(Outcome.DROPPED_DUPLICATE)
_DROPPED_LATE = int(Outcome.DROPPED_LATE)
_DROPPED_MALFORMED = int(Outcome.DROPPED_MALFORMED)


class InPathCounters:
    """Plain-int counters of the in-path adapter (read by the metrics collector)."""

    __slots__ = (
        "accepted",
        "accepted_rewritten",
        "batch_verdicts",
        "dropped",
        "from_lac",
        "from_lns",
        "not_l2tpv2",
        "not_udp",
        "packets",
        "truncated",
        "verdict_messages",
    )

    def __init__(self) -> None:
        self.packets = 0  # packets read from the queue
        self.from_lac = 0  # of those, handed to the pipeline as LAC -> LNS
        self.from_lns = 0  # of those, handed to the pipeline as LNS -> LAC (OUTPUT hook)
        self.not_udp = 0  # not one whole UDP datagram (other protocol, fragment): accepted
        self.truncated = 0  # copy shorter than the packet: accepted untouched
        self.not_l2tpv2 = 0  # UDP but not usable L2TPv2 (L2TPv3, other UDP): accepted
        self.accepted = 0  # NF_ACCEPT verdicts (every packet but `dropped` ends here)
        self.accepted_rewritten = 0  # of those, with a rewritten packet (renumber, strip)
        self.dropped = 0  # NF_DROP verdicts: duplicates and late packets
        self.verdict_messages = 0  # netlink verdict messages sent (single + batch)
        self.batch_verdicts = 0  # of those, NFQNL_MSG_VERDICT_BATCH

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Verdicts:
    """Verdict messages for one queue, in decision order, with in-order runs batched."""

    __slots__ = ("_run_last", "_run_len", "counters", "messages", "pending", "queue")

    def __init__(self, queue: int, counters: InPathCounters) -> None:
        self.queue = queue
        self.counters = counters
        # Packet id -> None for every packet read and not yet given a verdict, oldest first:
        # the kernel's own queue order.
        self.pending: OrderedDict[int, None] = OrderedDict()
        self.messages: list[bytes] = []
        self._run_last = -1
        self._run_len = 0

    def add(self, packet_id: int) -> None:
        self.pending[packet_id] = None

    def accept(self, packet_id: int, payload: bytes | None = None) -> None:
        pending = self.pending
        if payload is None and self._front() == packet_id:
            pending.popitem(last=False)
            self._run_last = packet_id
            self._run_len += 1
            return
        self._end_run()
        del pending[packet_id]
        self.messages.append(verdict_message(self.queue, packet_id, NF_ACCEPT, payload))
        self.counters.verdict_messages += 1

    def drop(self, packet_id: int) -> None:
        self._end_run()
        del self.pending[packet_id]
        self.messages.append(verdict_message(self.queue, packet_id, NF_DROP))
        self.counters.verdict_messages += 1

    def take(self) -> list[bytes]:
        """The messages decided so far (the open run included); clears them."""
        self._end_run()
        messages, self.messages = self.messages, []
        return messages

    def _front(self) -> int | None:
        for packet_id in self.pending:
            return packet_id
        return None

    def _end_run(self) -> None:
        n = self._run_len
        if not n:
            return
        c = self.counters
        c.verdict_messages += 1
        if n == 1:
            self.messages.append(verdict_message(self.queue, self._run_last, NF_ACCEPT))
        else:
            c.batch_verdicts += 1
            self.messages.append(batch_verdict_message(self.queue, self._run_last, NF_ACCEPT))
        self._run_len = 0


class _Held:
    """A packet the pipeline has (or will release): the IP packet and its L2TP slice."""

    __slots__ = ("l2tp", "packet", "where")

    def __init__(self, packet: bytes, where: IpUdp, l2tp: bytes) -> None:
        self.packet = packet
        self.where = where
        self.l2tp = l2tp


class InPath:
    """Feeds queued packets into a Pipeline and turns its output into verdicts."""

    def __init__(self, pipeline: Pipeline, queue: int) -> None:
        self.pipeline = pipeline
        self.counters = InPathCounters()
        self.verdicts = Verdicts(queue, self.counters)
        self._inflight: dict[int, _Held] = {}  # packet id -> what the pipeline was given
        self._addresses: dict[bytes, str] = {}  # packed address -> text (flows are (ip, port))

    def handle(self, packets: list[Packet], now: float) -> list[bytes]:
        """Take a batch of queued packets; returns the verdict messages to send now."""
        for p in packets:
            self._one(p, now)
        self._release()
        return self.verdicts.take()

    def expire(self, now: float) -> list[bytes]:
        self.pipeline.expire(now)
        self._release()
        return self.verdicts.take()

    def flush(self, now: float) -> list[bytes]:
        """Shutdown: everything held is accepted, in order."""
        self.pipeline.flush(now)
        self._release()
        for packet_id in list(self.verdicts.pending):  # nothing should be left; never strand one
            self.verdicts.accept(packet_id)
            self.counters.accepted += 1
        return self.verdicts.take()

    def _one(self, p: Packet, now: float) -> None:
        c = self.counters
        c.packets += 1
        packet_id = p.packet_id
        self.verdicts.add(packet_id)
        where = None if p.truncated else parse_ip_udp(p.payload)
        if where is None:
            if p.truncated:
                c.truncated += 1
            else:
                c.not_udp += 1
            self._accept_untouched(packet_id)
            return
        l2tp = p.payload[where.payload_at : where.end]
        if len(l2tp) < 2 or l2tp[1] & 0x0F != 2:  # L2TPv3 over UDP, or not L2TP at all
            c.not_l2tpv2 += 1
            self._accept_untouched(packet_id)
            return
        self._inflight[packet_id] = _Held(p.payload, where, l2tp)
        if p.hook == NF_INET_LOCAL_OUT:
            c.from_lns += 1
            outcome = self.pipeline.from_lns(l2tp, self._flow(where, False), now, packet_id)
        else:
            c.from_lac += 1
            outcome = self.pipeline.from_lac(l2tp, self._flow(where, True), now, packet_id)
        if outcome == _DROPPED_MALFORMED:  # not usable L2TPv2: not ours to judge, pass it
            del self._inflight[packet_id]
            c.not_l2tpv2 += 1
            self._accept_untouched(packet_id)
        elif outcome in (_DROPPED_DUPLICATE, _DROPPED_LATE):
            del self._inflight[packet_id]
            c.dropped += 1
            self.verdicts.drop(packet_id)

    def _accept_untouched(self, packet_id: int) -> None:
        self.counters.accepted += 1
        self.verdicts.accept(packet_id)

    def _flow(self, where: IpUdp, from_lac: bool) -> Hashable:
        """The LAC peer: (ip text, port), the same flow as relay mode uses."""
        raw, port = (where.src, where.sport) if from_lac else (where.dst, where.dport)
        text = self._addresses.get(raw)
        if text is None:
            family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
            text = socket.inet_ntop(family, raw)
            if len(self._addresses) > 65536:
                self._addresses.clear()
            self._addresses[raw] = text
        return (text, port)

    def _release(self) -> None:
        """Verdicts for everything the pipeline has released, in its order."""
        out = self.pipeline.take_output()
        if not out:
            return
        inflight = self._inflight
        verdicts = self.verdicts
        c = self.counters
        for o in out:
            tag = o.tag
            if not isinstance(tag, int):
                continue
            held = inflight.pop(tag, None)
            if held is None:
                continue
            c.accepted += 1
            if o.data is held.l2tp or o.data == held.l2tp:
                verdicts.accept(tag)
            else:
                c.accepted_rewritten += 1
                verdicts.accept(tag, with_payload(held.packet, held.where, o.data))

    @property
    def held(self) -> int:
        """Packets read and still without a verdict."""
        return len(self.verdicts.pending)
