"""In-path mode's adapter: packets from an NFQUEUE go through the same Pipeline as the relay's
datagrams, and what the pipeline releases gets its verdict (NF_ACCEPT, with a rewritten packet
when renumber/strip changed it).

Why verdicts instead of sockets: the LNS keeps its port and sees the LAC's real address, and
when nobody reads the queue the rule's bypass lets traffic through unordered. An early packet
simply gets no verdict until the pipeline releases it (gap filled, timeout, caps, session end,
shutdown). What is not a whole L2TPv2 datagram is accepted untouched at once and counted: in
this mode we sit in the path of traffic that is not ours, and must do no harm. A malformed
L2TPv2 datagram is the pipeline's to count: it is made with `MalformedPolicy.PASS`, so such a
datagram comes back out of `take_output()` untouched, in arrival order, and gets its accept
like any other (except a data message whose raw Ns the LNS would read while it sees our
numbering: the pipeline drops it, docs/inpath.md's Length rule).

The verdict messages themselves (and the adapter's counters) are in `verdicts.py`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Hashable
from typing import Final

from l2tpreorder.build import BUILD
from l2tpreorder.config.values import Network
from l2tpreorder.core.checksum import (
    LOW_12_BYTES,
    IpUdp,
    parse_ip_udp,
    udp_checksum_ok,
    udp_fragment,
    with_payload,
)
from l2tpreorder.core.engine_config import Sequencing
from l2tpreorder.core.pipeline import MalformedPolicy, Pipeline
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.daemon.inpath.nfqueue import (
    NF_INET_LOCAL_OUT,
    PACKET_CSUM_NOT_READY,
    PACKET_CSUM_NOT_VERIFIED,
    PACKET_TRUNCATED,
    Queued,
)
from l2tpreorder.daemon.inpath.verdicts import InPathCounters, Verdicts

_DROPPED_DUPLICATE: Final = int(Outcome.DROPPED_DUPLICATE)
_DROPPED_STALE: Final = int(Outcome.DROPPED_STALE)
# Flags that keep a packet off the fast path; an unverified checksum is verified on it.
_NOT_FAST: Final = ~PACKET_CSUM_NOT_VERIFIED
_LOW_12: Final = LOW_12_BYTES  # `udp4_checksum_ok`'s mask, inlined in `_feed`

# Compiled exactly when the build is (l2tpreorder.build): the fast path's flow key.
_NATIVE: Final = BUILD == "compiled"

log = logging.getLogger("l2tpreorder")

# The flow cache's value for a LAC address outside `inpath.allow` (its packets are not ours).
NOT_ALLOWED: Hashable = ("not allowed", 0)

ID_MASK: Final = 0xFFFFFFFF  # packet ids are the kernel's u32 id_sequence
# While sessions wait after a bypass episode, the kernel's queue maxlen is raised to this many
# times `queue_maxlen` (or to twice what awaits a verdict plus queue_maxlen, when more: see
# `InPath._episode`), so that the packets queued after the episode (the witnesses) find room
# while the backlog waits for them; back to the floor (`InPath.floor`) once it is answered.
EPISODE_ROOM: Final = 2
# The most the floor rises to: EPISODE_ROOM_MAX times queue_maxlen, at most EPISODE_MAXLEN_CAP
# (the default queue_maxlen, for which the worker's socket buffer is sized: beyond, our socket
# may fill first), never below queue_maxlen; a raise while an episode is resolved may also go
# to EPISODE_ROOM times queue_maxlen. It bounds the kernel memory and the delay a sustained
# overflow can cause; beyond it the guarantee of `InPath._episode` gives way (docs/inpath.md).
EPISODE_ROOM_MAX: Final = 16
EPISODE_MAXLEN_CAP: Final = 1 << 16
KERNEL_MAXLEN_CAP: Final = 1 << 24
# Seconds between two episode log lines (the counter counts every episode).
EPISODE_LOG_EVERY: Final = 10.0


class InPath:
    """Feeds queued packets into a Pipeline and turns its output into verdicts."""

    def __init__(
        self, pipeline: Pipeline, queue: int, allow: tuple[Network, ...] | None = None
    ) -> None:
        if pipeline.malformed is not MalformedPolicy.PASS:
            raise ValueError("in-path mode passes malformed L2TPv2 untouched: MalformedPolicy.PASS")
        self.pipeline = pipeline
        self.counters = InPathCounters()
        self.verdicts = Verdicts(queue, self.counters)
        # (packed address + port bytes) -> flow (ip text, port): the relay's flows; NOT_ALLOWED
        # for an address outside `allow` (the cache is the allow check's too)
        self._flows: dict[bytes, Hashable] = {}
        # The compiled fast path's: IPv4 address << 16 | port -> flow (the same flows)
        self._flows4: dict[int, Hashable] = {}
        self.allow: tuple[Network, ...] | None = None  # None: every address
        self.set_allow(allow)
        self.last_id: int | None = None  # the newest packet id read (see NfQueue.accept_all)
        # Fail-open episodes (`watch_overflow`): off until the worker says how to reach the
        # kernel. maxlen: the configured queue_maxlen; kernel_maxlen: the kernel's now.
        self.maxlen = 0
        self.kernel_maxlen = 0
        # What the kernel's maxlen goes back to after an episode: queue_maxlen, until an
        # episode makes sessions lead the LAC's numbering (`_episode`); it never goes down.
        self.floor = 0
        self.read_limit = 0
        self._set_kernel_maxlen: Callable[[int], int | None] | None = None
        # After an episode: packets with ids up to this one may have reached the queue before
        # bypassed ones (the backlog); None when none is unread.
        self._boundary: int | None = None
        self._waiting = 0  # sessions the episode made wait (for the log line)
        # Packets the kernel holds that we have not read, as of the last batch whose backlog
        # was known (0: the read was short, nothing left unread); `_settle` counts them.
        self._unread = 0
        # accepted + dropped at the last read: the verdicts sent since drained the queue
        self._answered_at_read = 0
        self._episode_logged_at = float("-inf")
        self._episodes_unlogged = 0

    def watch_overflow(
        self, maxlen: int, set_kernel_maxlen: Callable[[int], int | None], read_limit: int
    ) -> None:
        """Detect fail-open episodes (docs/inpath.md, "Queue full or our socket full").
        `set_kernel_maxlen(n)` sets the queue's maxlen in the kernel and returns its
        id_sequence afterwards (None when unknown); `read_limit`: the most packets one read
        brings (one batch)."""
        self.maxlen = self.kernel_maxlen = self.floor = maxlen
        self.read_limit = read_limit
        self._set_kernel_maxlen = set_kernel_maxlen
        self._answered_at_read = self.counters.accepted + self.counters.dropped

    def handle_queued(
        self, packets: list[Queued], now: float, backlog: int | None = None
    ) -> list[bytes]:
        """Take a batch of queued packets (`NfQueue.read_queued`); returns the verdict messages
        to send now. `backlog`: the kernel's count of packets awaiting a verdict, read after
        this batch (when the read may have left some unread); 0 after a short read (nothing
        unread); None when not known (the last count stands)."""
        c = self.counters
        c.packets += len(packets)
        if packets:
            if self._set_kernel_maxlen is not None:
                self._detect_episode(packets, now, backlog)
            self.last_id = packets[-1].packet_id
        boundary = self._boundary
        if boundary is None:
            self._feed(packets, now, self.pipeline.from_lac)
        else:
            split = 0
            for q in packets:
                if 0 < (q.packet_id - boundary) & ID_MASK < 0x80000000:
                    break  # queued after the episode: the backlog is read
                split += 1
            self._feed(packets[:split], now, self.pipeline.hold_before_bypass)
            if split < len(packets):
                self._boundary = None
                self._feed(packets[split:], now, self.pipeline.from_lac)
        self._release()
        return self.verdicts.take()

    def _feed(self, packets: list[Queued], now: float, from_lac: Callable[..., int]) -> None:
        """The common case (whole IPv4 UDP datagram from the LAC side) is inlined: this loop is
        the per-packet cost of in-path mode; anything else takes `_other`. Per packet it makes
        nothing but the L2TP bytes (and, interpreted, the flow key)."""
        c = self.counters
        verdicts = self.verdicts
        order = verdicts.order
        flows = self._flows
        flows4 = self._flows4
        native = _NATIVE
        from_bytes = int.from_bytes
        when: object = now  # boxed once: the pipeline's door takes it as an object
        fast = 0
        for q in packets:
            pkt = q.pkt
            flags = q.flags
            order.append(q)  # verdicts.add, inlined
            verdicts.held += 1
            n = len(pkt)
            if (
                flags & _NOT_FAST
                or q.hook == NF_INET_LOCAL_OUT
                or n < 30
                or pkt[0] != 0x45
                or pkt[9] != 17
                or (pkt[6] & 0x3F)
                or pkt[7]
                or ((pkt[2] << 8) | pkt[3]) != n
                or ((pkt[24] << 8) | pkt[25]) != n - 20
                or pkt[29] & 0x0F != 2
                # the kernel has not verified its UDP checksum: `udp4_checksum_ok` inlined
                or (
                    flags
                    and (pkt[26] | pkt[27])
                    and ((x := from_bytes(pkt, "little")) % 0xFFFF + ((n - 3) << 8) - (x & _LOW_12))
                    % 0xFFFF
                )
            ):
                self._other(q, now, from_lac)
                continue
            if native:  # the source address and port as one machine int: no bytes made
                key4 = (
                    (pkt[12] << 40) | (pkt[13] << 32) | (pkt[14] << 24) | (pkt[15] << 16)
                    | (pkt[20] << 8) | pkt[21]
                )  # fmt: skip
                flow = flows4.get(key4)
                if flow is None:
                    flow = self._new_flow4(key4, pkt[12:16] + pkt[20:22])
            else:  # interpreted, two slices cost less than six subscripts
                key = pkt[12:16] + pkt[20:22]
                flow = flows.get(key)
                if flow is None:
                    flow = self._new_flow(key)
            if flow is NOT_ALLOWED:
                self._not_allowed(q)
                continue
            fast += 1
            q.l2tp = l2tp = pkt[28:]
            outcome = from_lac(l2tp, flow, when, q)
            if _DROPPED_DUPLICATE <= outcome <= _DROPPED_STALE:  # duplicate, late, stale
                self._dropped(q)
        c.from_lac += fast

    # --- fail-open episodes --------------------------------------------------------------------

    def _detect_episode(self, packets: list[Queued], now: float, backlog: int | None) -> None:
        """Did packets pass us untouched since the last batch? The kernel counts none of these
        passes. Socket full: the kernel numbered the packet and could not deliver it, so the
        ids we read skip one (exact). Queue full: it numbers nothing, so we judge by
        occupancy: what awaits a verdict (ours pending, this batch, the unread `backlog`) plus
        the verdicts sent since the last read (they may have drained a queue that filled in
        between: an upper bound of the occupancy since) at the queue's maxlen means the queue
        may have been full (docs/inpath.md)."""
        c = self.counters
        read = waiting = self.verdicts.held + len(packets)
        if backlog is not None:
            self._unread = backlog - waiting if backlog > waiting else 0
        answered = c.accepted + c.dropped
        since = answered - self._answered_at_read
        self._answered_at_read = answered
        first, last = packets[0].packet_id, packets[-1].packet_id
        before = self.last_id
        if (before is not None and (first - before - 1) & ID_MASK) or (
            (last - first) & ID_MASK != len(packets) - 1
        ):
            c.episodes_socket_full += 1
            self._episode("our socket was full", now, last, read, waiting + self._unread)
            return
        if backlog is not None and backlog > waiting:
            waiting = backlog
        if waiting + since >= self.kernel_maxlen:
            c.episodes_queue_full += 1
            self._episode(
                f"the queue was full ({waiting} awaiting a verdict, {since} answered since the "
                "last read)",
                now,
                last,
                read,
                waiting,
            )

    def _episode(self, why: str, now: float, last: int, read: int, occupancy: int) -> None:
        """Packets may have passed with the LAC's Ns: every session waits for its witness
        (core/ahead.py); the backlog up to the kernel's id_sequence is held; the kernel's maxlen
        is raised so that the witnesses find room in the queue, and more: the held frames
        (up to what awaits a verdict, `occupancy`) will go out numbered just above the
        witness's Ns (core/ahead.py), so until their verdicts reach the kernel the packets
        queued after the witness must outnumber them, or a new overflow would pass the LAC's
        Ns we are about to give them: twice the occupancy, plus queue_maxlen (renumber mode;
        in preserve and strip twice queue_maxlen, room for the packets after it). (In a
        sustained overflow the queue is full of backlog again when the next episode moves the
        boundary on: with the old fixed room no witness could be queued at all, and the
        sessions held it all for the witness wait, a second.)

        The floor: once its witness comes, a session's held frames go out numbered above it,
        so our Ns lead the LAC's by up to what was held: what we had read and not answered
        (`read`) plus the backlog up to the boundary. A later overflow passes the LAC's Ns of
        the packets that found the queue full: those are above every Ns we sent only if the
        queue then holds more than our lead, so the kernel's maxlen never goes back below it
        (plus what may be in flight then: those verdicts were decided before it). The raise
        stops at `_raise_cap()`, the floor at `_floor_cap()`."""
        assert self._set_kernel_maxlen is not None
        renumber = self._renumbers()
        room = max(self.maxlen * EPISODE_ROOM, 2 * occupancy + self.maxlen if renumber else 0)
        room = max(min(room, self._raise_cap()), self.kernel_maxlen)
        seq = self._set_kernel_maxlen(room)
        self.kernel_maxlen = room
        boundary = last if seq is None or (seq - last) & ID_MASK >= 0x80000000 else seq
        if self._boundary is None:
            waiting = self.pipeline.note_bypass(now)
            self._waiting = waiting
        else:  # the backlog of the last one is not read yet: its sessions wait already
            self.pipeline.extend_bypass(now)  # from now on, not mid-backlog
            waiting = self._waiting
        if renumber:
            # (a session the backlog starts waits too: `waiting` does not count it)
            # what may be in flight when the queue fills: a batch, and the held ones a gap's
            # end releases at once (at most half of queue_maxlen, `_release`)
            margin = self.read_limit + self.maxlen // 2 + 1
            self._raise_floor(read + ((boundary - last) & ID_MASK) + margin)
        self._boundary = boundary
        self._episodes_unlogged += 1
        if now >= self._episode_logged_at + EPISODE_LOG_EVERY:
            self._episode_logged_at = now
            self._log_episode(why, waiting, renumber)

    def _log_episode(self, why: str, waiting: int, renumber: bool) -> None:
        after = (
            f"{self.floor} after (queue_maxlen {self.maxlen}: the queue must outnumber what "
            "was held, or a later overflow would pass Ns we sent)"
            if renumber
            else f"queue_maxlen {self.maxlen} after"
        )
        log.warning(
            "NFQUEUE %d: %s, so packets passed unordered with the LAC's own Ns (fail-open; "
            "%d such episode(s) since the last line); %d session(s) hold what they have "
            "until their first packet queued after it, then renumber above the Ns that "
            "passed; kernel queue maxlen %d until then, %s. Size inpath.queue_maxlen and the "
            "workers so that this does not happen",
            self.verdicts.queue, why, self._episodes_unlogged, waiting, self.kernel_maxlen,
            after,
        )  # fmt: skip
        self._episodes_unlogged = 0

    def _renumbers(self) -> bool:
        return self.pipeline.config.sequencing is Sequencing.RENUMBER

    def _floor_cap(self) -> int:
        """The floor stays: EPISODE_ROOM_MAX x queue_maxlen, at most EPISODE_MAXLEN_CAP
        (never below queue_maxlen)."""
        cap = min(self.maxlen * EPISODE_ROOM_MAX, EPISODE_MAXLEN_CAP)
        return min(max(self.maxlen, cap), KERNEL_MAXLEN_CAP)

    def _raise_cap(self) -> int:
        """The raise while an episode is resolved: the floor's cap, or EPISODE_ROOM x
        queue_maxlen when more."""
        return min(max(self.maxlen * EPISODE_ROOM, self._floor_cap()), KERNEL_MAXLEN_CAP)

    def _raise_floor(self, floor: int) -> None:
        """The floor up to `floor` (capped), and the kernel's maxlen with it when below."""
        self.floor = min(max(self.floor, floor), self._floor_cap())
        if self.floor > self.kernel_maxlen and self._set_kernel_maxlen is not None:
            self._set_kernel_maxlen(self.floor)
            self.kernel_maxlen = self.floor

    def restore_floor(self, floor: int) -> None:
        """After a restart with the state file: the sessions keep their numbering, so their
        lead over the LAC's Ns, and the floor that protects it (`_episode`) comes back too."""
        if self._set_kernel_maxlen is not None and self._renumbers():
            self._raise_floor(floor)

    def _settle(self) -> None:
        """The kernel's maxlen back to the floor once the backlog is read and what awaits a
        verdict fits well below it: ours unanswered, the kernel's unread, and the verdicts
        given since the last read (this is called before they are sent: the kernel still
        holds those packets, and may have held them all along). With only ours counted, the
        raised maxlen could still be full right after the witness, so every new packet would
        pass and make a new episode, and so on."""
        c = self.counters
        answered = c.accepted + c.dropped - self._answered_at_read
        target = self.floor if self._renumbers() else self.maxlen  # preserve, strip: no lead
        if (
            self.kernel_maxlen > target
            and self._boundary is None
            and self.verdicts.held + self._unread + answered < target // 2
            and self._set_kernel_maxlen is not None
        ):
            self._set_kernel_maxlen(target)
            self.kernel_maxlen = target

    def set_allow(self, allow: tuple[Network, ...] | None) -> None:
        """`inpath.allow` (at start and on reload). Sessions of addresses no longer allowed
        are left to end on their own (idle timeout): their packets pass untouched from now on,
        so nothing is held for them past the timeout. None: every address (the caller says
        so when the setting lets everything in: `Config.inpath_allows_everything`)."""
        self.allow = allow
        self._flows.clear()
        self._flows4.clear()

    def _new_flow(self, key: bytes) -> Hashable:
        family = socket.AF_INET if len(key) == 6 else socket.AF_INET6
        address = key[:-2]
        flow: Hashable = (socket.inet_ntop(family, address), (key[-2] << 8) | key[-1])
        allow = self.allow
        if allow is not None:
            ip = ipaddress.ip_address(address)
            if not any(ip in net for net in allow):
                flow = NOT_ALLOWED
        if len(self._flows) >= 65536:
            self._flows.clear()
        self._flows[key] = flow
        return flow

    def _new_flow4(self, key4: int, key: bytes) -> Hashable:
        flow = self._flows.get(key)
        if flow is None:
            flow = self._new_flow(key)
        if len(self._flows4) >= 65536:
            self._flows4.clear()
        self._flows4[key4] = flow
        return flow

    def _not_allowed(self, q: Queued) -> None:
        self.counters.not_allowed += 1
        self._accept_untouched(q)

    def _dropped(self, q: Queued) -> None:
        """The pipeline dropped it (duplicate, late, stale; or malformed with a raw Ns the LNS
        would read among renumbered ones, issue 21): NF_DROP. Any other malformed datagram
        comes back out of the pipeline (MalformedPolicy.PASS)."""
        self.counters.dropped += 1
        self.verdicts.drop(q)

    def _other(self, q: Queued, now: float, from_lac: Callable[..., int]) -> None:
        """Everything but the IPv4 fast path: IPv6, IP options, the LNS side, not ours."""
        c = self.counters
        pkt = q.pkt
        flags = q.flags
        where = None if flags & PACKET_TRUNCATED else parse_ip_udp(pkt)
        if where is None:
            if flags & PACKET_TRUNCATED:
                c.truncated += 1
            elif udp_fragment(pkt):
                self._fragment()
            else:
                c.not_udp += 1
            self._accept_untouched(q)
            return
        lns_side = q.hook == NF_INET_LOCAL_OUT
        if lns_side:
            flow = self._flow_of(where.dst, where.dport)
        else:
            flow = self._flow_of(where.src, where.sport)
        if flow is NOT_ALLOWED:
            self._not_allowed(q)
            return
        l2tp = pkt[where.payload_at : where.end]
        if len(l2tp) < 2 or l2tp[1] & 0x0F != 2:  # L2TPv3 over UDP, or not L2TP at all
            c.not_l2tpv2 += 1
            self._accept_untouched(q)
            return
        if not _checksum_ok(pkt, where, flags):
            c.bad_checksum += 1
            self._accept_untouched(q)
            return
        q.l2tp = l2tp
        if lns_side:
            c.from_lns += 1
            outcome = self.pipeline.from_lns(l2tp, flow, now, q)
        else:
            c.from_lac += 1
            outcome = from_lac(l2tp, flow, now, q)
        if _DROPPED_DUPLICATE <= outcome <= _DROPPED_STALE:
            self._dropped(q)

    def _fragment(self) -> None:
        c = self.counters
        c.fragments_seen += 1
        if c.fragments_seen == 1:
            log.warning(
                "NFQUEUE %d: an IP fragment of a UDP datagram reached the queue, so the kernel "
                "does not reassemble before the queue rule and in-path mode cannot order the "
                "datagram it belongs to (passed untouched). Load the reassembly rule that "
                "`l2tpreorder rules` prints (raw PREROUTING -j CT, or nft's ct rule) in this "
                'network namespace. Counted in inpath_passed_not_ours{reason="fragment"}; '
                "logged once",
                self.verdicts.queue,
            )

    def _flow_of(self, address: bytes, port: int) -> Hashable:
        key = address + bytes(((port >> 8), port & 0xFF))
        flow = self._flows.get(key)
        return flow if flow is not None else self._new_flow(key)

    def release(self) -> list[bytes]:
        """Verdict messages for what the pipeline released (after an expiry, a reload)."""
        self._release()
        return self.verdicts.take()

    def expire(self, now: float) -> list[bytes]:
        self.pipeline.expire(now)
        return self.release()

    def accept_pending(self) -> list[bytes]:
        """Shutdown, after the pipeline's flush: accept whatever still has no verdict (nothing
        should be left; never strand one)."""
        for q in self.verdicts.waiting():
            self.verdicts.accept(q)
            self.counters.accepted += 1
        return self.verdicts.take()

    def flush(self, now: float) -> list[bytes]:
        """Shutdown: everything held is accepted, in order."""
        self.pipeline.flush(now)
        self._release()
        return self.accept_pending()

    def _accept_untouched(self, q: Queued) -> None:
        self.counters.accepted += 1
        self.verdicts.accept(q)

    def _release(self) -> None:
        """Verdicts for everything the pipeline has released, in its order.

        `Verdicts.accept` inlined for the common case (unchanged, at the head of the queue:
        it joins the batch run); everything else goes through the method."""
        pipeline = self.pipeline
        # Held packets alone must never fill the queue: at most half of it (watched only).
        if self.maxlen and self._boundary is None:
            pipeline.hold_budget(self.maxlen // 2)
        out = pipeline.take_output()
        if not out:
            if self.kernel_maxlen > self.maxlen:
                self._settle()
            return
        verdicts = self.verdicts
        order = verdicts.order
        c = self.counters
        accepted = 0
        for o in out:
            q = o.tag
            if not isinstance(q, Queued) or q.done:  # not ours (cannot be: every one has a tag)
                continue
            accepted += 1  # counted here: a skipped one gets no verdict, so no outcome of ours
            data = o.data
            if data is q.l2tp or data == q.l2tp:
                head = verdicts.head
                if head < len(order) and order[head] is q:
                    q.done = True
                    verdicts.held -= 1
                    verdicts._advance(head + 1)
                    verdicts.run_last = q.packet_id
                    verdicts.run_len += 1
                else:
                    verdicts.accept(q)
            else:
                c.accepted_rewritten += 1
                pkt = q.pkt
                where = parse_ip_udp(pkt)
                assert where is not None  # it was parsed on the way in
                verdicts.accept(q, with_payload(pkt, where, data))
        c.accepted += accepted
        if self.kernel_maxlen > self.maxlen:
            self._settle()

    @property
    def held(self) -> int:
        """Packets read and still without a verdict."""
        return self.verdicts.held


def _checksum_ok(pkt: bytes, where: IpUdp, flags: int) -> bool:
    """False when the LNS's kernel would drop this datagram for its UDP checksum.

    The kernel tells us (NFQA_SKB_INFO) which packets neither the NIC nor itself verified; the
    others are known good or were computed locally, so only those are summed here. An IPv6
    zero checksum is illegal whatever the NIC said. A checksum still to be filled in (only
    with NFQA_CFG_F_GSO, never set) is not judged."""
    u = where.udp_at
    if where.version == 6 and not (pkt[u + 6] | pkt[u + 7]):
        return False
    if flags & PACKET_CSUM_NOT_VERIFIED and not flags & PACKET_CSUM_NOT_READY:
        return udp_checksum_ok(pkt, where)
    return True
