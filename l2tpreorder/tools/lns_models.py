"""Reference models of what today's LNS data paths do with sequenced L2TPv2 data (`--compare`).

Operators run one of two receive paths; both are written here from measured facts about their
code (read, never copied: both are GPL), as small sans-IO state machines fed (Ns, item, now):

* `KernelSession`: Linux l2tp_core (pppol2tp), with `reorder_timeout` = pppol2tp_reorderto.
  - A session starts with nr = 0 and reorder_skip set, so the first packet's Ns is taken.
  - Window: Ns is accepted only if (Ns - nr) mod 65536 < 32767, else dropped; that check uses
    nr = 0 even while reorder_skip is set, so a session whose first Ns is >= 32767 loses packets.
  - reorder_timeout 0 (the default): Ns == nr is delivered, anything else dropped; a run of more
    than 4 out-of-sequence packets each one above the previous (the run counter is not reset by
    in-sequence packets) sets reorder_skip, and the packet that did it re-bases nr. One adjacent
    swap therefore costs 5 packets.
  - reorder_timeout N > 0: packets are inserted before the first held packet whose Ns is
    numerically larger (no modulo, so 0 goes ahead of 65535), each expires N after its arrival,
    expiry is checked only when a packet of the same session arrives, an expired packet is dropped
    and sets reorder_skip so the next held packet re-bases nr; a held duplicate sits at the head
    until it expires.
* `Xl2tpdSession`: xl2tpd's userspace path (`expand_payload`): `rec` is the last accepted Ns.
  Ns behind rec (by less than 32768) is dropped as already seen; Ns <= rec + 2 (plain integer
  compare) is accepted and becomes rec; anything further ahead is dropped without moving rec, so
  two consecutive losses stall the session until Ns comes round again to rec itself (Ns == rec
  passes the `<= rec + 2` test), one full 16-bit cycle after the last accepted packet.
  (xl2tpd first compares Ns with its own *send* counter; when those happen to be equal it
  increments rec instead. That coincidence is not modelled.)

`item` is whatever the caller wants back (a packet index, a datagram); the models never look at
it. `receive` returns a `Step`: what was delivered now, in delivery order, and what was dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

SEQ_MOD = 65536
KERNEL_WINDOW = 32767  # nr_window_size = nr_max / 2 for L2TPv2's 16-bit Ns
KERNEL_OOS_COUNT_MAX = 4  # nr_oos_count_max
XL2TPD_FUDGE = 2  # PAYLOAD_FUDGE

# Drop reasons (stable strings for reports).
OUTSIDE_WINDOW = "outside_window"
OUT_OF_SEQUENCE = "out_of_sequence"
EXPIRED = "expired"
PURGED = "purged_at_close"
ALREADY_SEEN = "already_seen"
TOO_FAR_AHEAD = "too_far_ahead"


@dataclass(slots=True)
class Step(Generic[T]):
    delivered: list[T] = field(default_factory=list)
    dropped: list[tuple[T, str]] = field(default_factory=list)


class _Held(Generic[T]):
    __slots__ = ("expires", "item", "ns")

    def __init__(self, ns: int | None, item: T, expires: float) -> None:
        self.ns = ns
        self.item = item
        self.expires = expires


class KernelSession(Generic[T]):
    """One pppol2tp session's receive side in l2tp_core."""

    __slots__ = ("nr", "nr_oos", "nr_oos_count", "queue", "reorder_skip", "reorder_timeout")

    def __init__(self, reorder_timeout: float = 0.0, start_ns: int | None = None) -> None:
        self.reorder_timeout = reorder_timeout
        # The kernel starts at nr = 0. `start_ns` puts the model in step with a capture that
        # begins in the middle of a session, where the real kernel had been following along.
        self.nr = 0 if start_ns is None else start_ns
        self.reorder_skip = True
        self.nr_oos = 0
        self.nr_oos_count = 0
        self.queue: deque[_Held[T]] = deque()

    def receive(self, ns: int | None, item: T, now: float) -> Step[T]:
        step: Step[T] = Step()
        # Held packets expire `reorder_timeout` after arrival (1 s when not reordering; the
        # queue is then always empty between calls, so that never matters).
        held = _Held(ns, item, now + (self.reorder_timeout or 1.0))
        if ns is None:
            self.queue.append(held)
        elif (ns - self.nr) % SEQ_MOD >= KERNEL_WINDOW:
            step.dropped.append((item, OUTSIDE_WINDOW))
            return step
        elif self.reorder_timeout > 0:
            self._insert_numeric(held)
        elif ns == self.nr:
            self.queue.append(held)
        else:
            if ns == (self.nr_oos + 1) % SEQ_MOD:
                self.nr_oos_count += 1
            else:
                self.nr_oos_count = 0
            self.nr_oos = ns
            if self.nr_oos_count > KERNEL_OOS_COUNT_MAX:
                self.reorder_skip = True
            if not self.reorder_skip:
                step.dropped.append((item, OUT_OF_SEQUENCE))
                return step
            self.queue.append(held)
        self._dequeue(now, step)
        return step

    def _insert_numeric(self, held: _Held[T]) -> None:
        assert held.ns is not None
        for i, other in enumerate(self.queue):
            if other.ns is not None and other.ns > held.ns:
                self.queue.insert(i, held)
                return
        self.queue.append(held)

    def _dequeue(self, now: float, step: Step[T]) -> None:
        queue = self.queue
        i = 0
        while i < len(queue):
            held = queue[i]
            if now > held.expires:
                del queue[i]
                self.reorder_skip = True
                step.dropped.append((held.item, EXPIRED))
                continue
            if held.ns is not None:
                if self.reorder_skip:
                    self.reorder_skip = False
                    self.nr = held.ns
                if held.ns != self.nr:
                    return
                self.nr = (self.nr + 1) % SEQ_MOD
            del queue[i]
            step.delivered.append(held.item)
            i = 0  # the kernel restarts its walk after each delivery

    @property
    def held(self) -> list[int | None]:
        """Ns of the held packets, in queue order (for tests and reports)."""
        return [h.ns for h in self.queue]

    def close(self) -> Step[T]:
        """Session deleted (CDN/StopCCN/end of capture): the reorder queue is purged."""
        step: Step[T] = Step(dropped=[(h.item, PURGED) for h in self.queue])
        self.queue.clear()
        return step


class Xl2tpdSession(Generic[T]):
    """One call's payload receive side in xl2tpd (`expand_payload`)."""

    __slots__ = ("rec",)

    def __init__(self, rec: int | None = None) -> None:
        # xl2tpd starts at 0 (new call); None starts in step with the first packet seen, for a
        # capture that begins in the middle of a session.
        self.rec = rec

    def receive(self, ns: int | None, item: T, now: float) -> Step[T]:
        step: Step[T] = Step()
        if ns is None:  # no Ns in the packet: xl2tpd fills in rec, which is always accepted
            step.delivered.append(item)
            return step
        if self.rec is None:
            self.rec = ns
        rec = self.rec
        if ns < rec and rec - ns < 32768:
            step.dropped.append((item, ALREADY_SEEN))
        elif ns <= rec + XL2TPD_FUDGE:
            self.rec = ns
            step.delivered.append(item)
        else:
            step.dropped.append((item, TOO_FAR_AHEAD))
        return step

    def close(self) -> Step[T]:
        return Step()


# --- outcome bookkeeping shared by the models and l2tpreorder in `--compare` --------------------


@dataclass(slots=True)
class DeliveryStats:
    """Per-session outcome of one receiver: what `--compare` shows side by side.

    `order` of an item is its position in the sender's sequence (unwrapped Ns), so "out of order"
    means delivered after something the sender sent later. A stall is a span during which data
    arrived but nothing was delivered; it ends at the next delivery.
    """

    arrived: int = 0
    delivered: int = 0
    dropped: int = 0
    out_of_order: int = 0
    # Given up, then delivered when it came (l2tpreorder's reorder.late; every model drops it).
    late_delivered: int = 0
    stalled_total: float = 0.0
    stalled_max: float = 0.0
    drop_reasons: dict[str, int] = field(default_factory=dict)
    _max_order: int = -1
    _stall_start: float | None = None

    def on_arrival(self) -> None:
        self.arrived += 1

    def on_delivered(self, order: int | None, now: float) -> None:
        """`order` None: the receiver counts its own out-of-order deliveries (l2tpreorder)."""
        self.delivered += 1
        if order is not None:
            if order < self._max_order:
                self.out_of_order += 1
            else:
                self._max_order = order
        self._end_stall(now)

    def on_dropped(self, reason: str) -> None:
        self.dropped += 1
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + 1

    def on_waiting(self, now: float) -> None:
        """A packet arrived and was not delivered at once (dropped or held)."""
        if self._stall_start is None:
            self._stall_start = now

    def _end_stall(self, now: float) -> None:
        if self._stall_start is not None:
            span = max(0.0, now - self._stall_start)
            self.stalled_total += span
            self.stalled_max = max(self.stalled_max, span)
            self._stall_start = None

    def finish(self, now: float) -> None:
        """End of capture: a stall still open lasts until the last packet seen."""
        self._end_stall(now)

    def as_dict(self) -> dict[str, object]:
        return {
            "arrived": self.arrived,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "out_of_order": self.out_of_order,
            "late_delivered": self.late_delivered,
            "stalled_total_s": round(self.stalled_total, 6),
            "stalled_max_s": round(self.stalled_max, 6),
            "drop_reasons": dict(sorted(self.drop_reasons.items())),
        }


class ModelRunner:
    """Feeds one session's sequenced data to a model and keeps its `DeliveryStats`.

    Items are (order, arrival time) pairs; `order` is the sender's position (unwrapped Ns).
    """

    __slots__ = ("model", "stats")

    def __init__(self, model: KernelSession[int] | Xl2tpdSession[int]) -> None:
        self.model = model
        self.stats = DeliveryStats()

    def receive(self, ns: int | None, order: int, now: float) -> Step[int]:
        self.stats.on_arrival()
        step = self.model.receive(ns, order, now)
        self._account(step, order, now)
        return step

    def _account(self, step: Step[int], arrived: int | None, now: float) -> None:
        stats = self.stats
        for _item, reason in step.dropped:
            stats.on_dropped(reason)
        for item in step.delivered:
            stats.on_delivered(item, now)
        if arrived is not None and arrived not in step.delivered:
            stats.on_waiting(now)  # after the deliveries: this packet's wait starts now

    def close(self, now: float) -> None:
        self._account(self.model.close(), None, now)
        self.stats.finish(now)
