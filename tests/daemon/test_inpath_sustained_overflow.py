"""Sustained queue overflow (issue 21, point 4), sans-IO: the adapter against a model of the
kernel's queue with fail-open: bursts that fill a small queue again and again while the worker
answers (then it catches up), and an overload it cannot. What the LNS receives is judged: no
Ns twice (the floor, daemon/inpath/adapter.py `InPath._episode`), nothing lost.

The model keeps to what the real kernel does (proven against it in test_nfqueue.py and, whole,
in tests/integration/test_inpath_overflow_burst.py): a packet that finds `maxlen` packets
awaiting a verdict passes at once, untouched, with no id; the others get the next id and wait
until a verdict (a batch verdict answers every queued id up to its own). The worker reads up to
`read` packets per step and tells the adapter the kernel's backlog after a full read."""

from __future__ import annotations

import random
import struct
from collections import OrderedDict, deque
from itertools import pairwise

import pytest

from l2tpreorder import wire
from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.daemon.inpath.adapter import InPath
from l2tpreorder.daemon.inpath.nfqueue import NF_ACCEPT, NF_INET_LOCAL_IN
from tests.daemon.test_inpath_verdicts import inpath_pipeline
from tests.inpath_packets import Packet, handle
from tests.pcapgen import udp_ip

NLMSG_HEADER = 20  # nlmsghdr + nfgenmsg
PAYLOAD_AT = NLMSG_HEADER + 4 + 8 + 4  # after the verdict header attribute, the payload's
# frames still to send (of 3000) while a burst lasts
BURSTS = range(2000, 3001), range(300, 1000)
READ = 10  # packets per read
SPIKE = 300  # packets at once when a burst starts (a LAC's queue let go, a link back up)
BYPASS, VERDICT, OVERTAKEN = "bypass", "verdict", "overtaken"


def datagram(session: int, ns: int) -> bytes:
    return udp_ip("192.0.2.1", "192.0.2.2", wire.build_data(7, session, b"x", ns=ns))


def key_ns(pkt: bytes) -> tuple[int, int]:
    """(session_id, Ns) of an IPv4 UDP L2TP data datagram with Ns (the test's own format)."""
    parsed = wire.parse_header_reference(pkt[28:])
    assert isinstance(parsed, dict), parsed
    return int(parsed["session_id"]), int(parsed["ns"])


class KernelQueue:
    """One NFQUEUE with fail-open, as far as the adapter can tell."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self.id_sequence = 0
        self.waiting: OrderedDict[int, bytes] = OrderedDict()  # awaiting a verdict
        self.unread: deque[int] = deque()
        self.lns: list[tuple[int, int, str]] = []  # (session, Ns, BYPASS / VERDICT / OVERTAKEN)
        self.dropped: list[tuple[int, int]] = []
        self.passed_since_verdicts = 0

    def set_maxlen(self, maxlen: int) -> int:
        self.maxlen = maxlen
        return self.id_sequence

    def arrive(self, pkt: bytes) -> None:
        if len(self.waiting) >= self.maxlen:
            self.lns.append((*key_ns(pkt), BYPASS))
            self.passed_since_verdicts += 1
            return
        self.id_sequence += 1
        self.waiting[self.id_sequence] = pkt
        self.unread.append(self.id_sequence)

    def read(self, limit: int) -> tuple[list[Packet], int]:
        batch: list[Packet] = []
        while self.unread and len(batch) < limit:
            i = self.unread.popleft()
            batch.append((i, NF_INET_LOCAL_IN, self.waiting[i], 0))
        return batch, (len(self.waiting) if len(batch) == limit else 0)

    def verdicts(self, messages: list[bytes]) -> None:
        """Verdicts decided before some packets passed (the adapter could not know of them)
        are OVERTAKEN: the LNS may see them behind the passed ones."""
        how = OVERTAKEN if self.passed_since_verdicts else VERDICT
        self.passed_since_verdicts = 0
        for m in messages:
            length, kind = struct.unpack_from("=IH", m)
            verdict, packet_id = struct.unpack_from("!II", m, NLMSG_HEADER + 4)
            if verdict != NF_ACCEPT:  # dropped (late or duplicate: counted by the adapter)
                assert kind == 0x301
                self.dropped.append(key_ns(self.waiting.pop(packet_id)))
                continue
            if kind == 0x303:  # batch: every queued id up to this one
                for i in [i for i in self.waiting if i <= packet_id]:
                    self.lns.append((*key_ns(self.waiting.pop(i)), how))
            else:
                pkt = self.waiting.pop(packet_id)
                if length > PAYLOAD_AT:
                    pkt = m[PAYLOAD_AT:length]
                self.lns.append((*key_ns(pkt), how))


def lac_order(sessions: int, per_session: int, rng: random.Random) -> list[tuple[int, int]]:
    """Round-robin over the sessions, each with adjacent swaps (the small half overtaking)."""
    order = [(s, ns) for ns in range(per_session) for s in range(1, sessions + 1)]
    for i in range(0, len(order) - sessions, 2 * sessions):
        if rng.random() < 0.3:
            order[i], order[i + sessions] = order[i + sessions], order[i]
    return order


def run(
    sessions: int, maxlen: int, seed: int, pace: tuple[int, int], restart: bool = False
) -> KernelQueue:
    """Two bursts, each SPIKE packets at once then `pace` packets per step (the worker reads
    READ), each followed by a slow spell long enough for the queue to settle; with `restart`,
    the worker is stopped in the spell between them and started again from its state."""
    rng = random.Random(seed)
    kernel = KernelQueue(maxlen)
    inpath = watched(InPath(inpath_pipeline(EngineConfig(reorder_timeout=0.1)), 3), kernel)
    sending = deque(lac_order(sessions, 3000 // sessions, rng))
    now = 0.0
    in_flight: list[bytes] = []  # verdicts sent, not yet at the kernel
    while sending or kernel.waiting or in_flight:
        now += 0.001
        if restart and len(sending) == 1200:  # the slow spell: a SIGTERM, then a start
            restart = False
            kernel.verdicts(in_flight + inpath.flush(now))
            in_flight = []
            assert not kernel.waiting
            state, floor = inpath.pipeline.snapshot(), inpath.floor
            pipeline = inpath_pipeline(EngineConfig(reorder_timeout=0.1))
            pipeline.restore(state, now, 0.0, passed=True)
            kernel.maxlen = maxlen  # a new bind: queue_maxlen
            inpath = watched(InPath(pipeline, 3), kernel)
            inpath.restore_floor(floor)
        # the packets arrive before our last verdicts reach the kernel (it may fill meanwhile)
        busy = any(len(sending) in burst for burst in BURSTS)
        spike = SPIKE if len(sending) in (burst.stop - 1 for burst in BURSTS) else 0
        for _ in range(min(spike + (rng.randint(*pace) if busy else 2), len(sending))):
            kernel.arrive(datagram(*sending.popleft()))
        kernel.verdicts(in_flight)
        batch, backlog = kernel.read(READ)
        in_flight = handle(inpath, batch, now, backlog)
        deadline = inpath.pipeline.next_deadline()
        if deadline is not None and deadline <= now:
            in_flight += inpath.expire(now)
        assert now < 60, "the queue never drained"
    assert inpath.held == 0
    return kernel


def watched(inpath: InPath, kernel: KernelQueue) -> InPath:
    inpath.watch_overflow(kernel.maxlen, kernel.set_maxlen, READ)
    return inpath


def every_frame_once(kernel: KernelQueue, sessions: int, ns_once: bool = True) -> None:
    """Every frame reached the LNS once but a late one that came while its session waited,
    which is dropped (counted; docs/inpath.md); `ns_once`: no Ns twice."""
    assert len(kernel.dropped) <= 2
    for s in range(1, sessions + 1):
        seen = [ns for session, ns, _ in kernel.lns if session == s]
        dropped = sum(1 for session, _ in kernel.dropped if session == s)
        assert len(seen) + dropped == 3000 // sessions
        assert not ns_once or len(seen) == len(set(seen)), ("an Ns twice", s)


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
@pytest.mark.parametrize("sessions", [1, 4])
@pytest.mark.parametrize("seed", range(3))
def test_sustained_overflow_never_gives_the_lns_an_ns_twice(
    sessions: int, seed: int, restart: bool
) -> None:
    """Bursts the worker can catch up with (a spike, then about its pace), within the raise's
    cap (16 times queue_maxlen). Restarted: the sessions keep their lead, and the floor with
    them."""
    kernel = run(sessions, 16, seed, (8, 12), restart)
    passed = sum(1 for *_, how in kernel.lns if how == BYPASS)
    assert passed > 40  # the queue did overflow, in both bursts
    every_frame_once(kernel, sessions)
    for s in range(1, sessions + 1):
        # A step back only where the bypass passed the LAC's own swap, or overtook verdicts
        # already decided (in flight) when it happened: below the bypassed Ns, never equal.
        stream = [(ns, how) for session, ns, how in kernel.lns if session == s]
        back = [
            (a, b, how)
            for (a, a_how), (b, how) in pairwise(stream)
            if b <= a and not (a_how == BYPASS and how in (BYPASS, OVERTAKEN))
        ]
        assert back == [], back[:10]


@pytest.mark.parametrize("seed", range(3))
def test_beyond_the_cap_nothing_is_lost(seed: int) -> None:
    """Overload, the LAC three to five times faster than the worker for a while: what the
    sessions hold fills the queue faster than the witnesses can be read, each new episode
    moves the boundary on, the raise reaches its cap, no witness finds room, and everything
    else passes until the witness wait ends (as with the old fixed raise); then what was held
    goes out keeping our offset, below Ns that passed, and some of ours may equal theirs
    (docs/inpath.md). The kernel's maxlen stays within the cap, and nothing is lost."""
    kernel = run(1, 16, seed, (30, 50))
    assert kernel.maxlen <= 16 * 16
    every_frame_once(kernel, 1, ns_once=False)
