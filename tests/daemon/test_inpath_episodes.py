"""The in-path adapter's fail-open episodes (issue 21, point 4), sans-IO: which batches reveal
one, how the backlog is split from what came after, and the kernel's maxlen raised and put
back. The kernel side (what fail-open does to packet ids, set_maxlen) is proven against the
real kernel in test_nfqueue.py, the whole in a namespace in
tests/integration/test_inpath.py::test_queue_overflow_the_lns_never_sees_an_ns_twice_or_step_back.
Here the kernel's config call is a function that records what it was asked."""

from __future__ import annotations

from l2tpreorder import wire
from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.core.engine_config import Sequencing
from l2tpreorder.daemon.inpath.adapter import InPath
from l2tpreorder.daemon.inpath.nfqueue import NF_ACCEPT, NF_INET_LOCAL_IN
from l2tpreorder.daemon.inpath.worker import READ_LIMIT, STATS_EVERY, BacklogProbe
from tests.daemon.test_inpath_verdicts import decode, inpath_pipeline
from tests.inpath_packets import Packet, handle
from tests.pcapgen import udp_ip


def packet(packet_id: int, ns: int) -> Packet:
    return (
        packet_id,
        NF_INET_LOCAL_IN,
        udp_ip("192.0.2.1", "192.0.2.2", wire.build_data(7, 9, b"x", ns=ns)),
        0,
    )


READ = 2  # packets one read brings, as the adapter is told (the worker's is READ_LIMIT)


class Kernel:
    """What the adapter asks of the kernel: maxlen changes; answers with an id_sequence."""

    def __init__(self, id_sequence: int) -> None:
        self.id_sequence = id_sequence
        self.maxlens: list[int] = []

    def set_maxlen(self, maxlen: int) -> int | None:
        self.maxlens.append(maxlen)
        return self.id_sequence


def watched(maxlen: int, kernel: Kernel, timeout: float = 1.0) -> InPath:
    inpath = InPath(inpath_pipeline(EngineConfig(reorder_timeout=timeout)), 3)
    inpath.watch_overflow(maxlen, kernel.set_maxlen, READ)
    return inpath


def test_a_full_queue_holds_the_backlog_until_a_packet_queued_after_it() -> None:
    """maxlen 4: Ns 2 held (1 lost), three more read fill the queue: an episode. Those are
    the backlog (ids up to the kernel's id_sequence, 6 here: 5 and 6 are still unread), held;
    the first id after it is the witness, and the held ones go out renumbered from its Ns."""
    kernel = Kernel(id_sequence=6)
    inpath = watched(4, kernel)
    assert decode(handle(inpath, [packet(1, 0), packet(2, 2)], 0.0)) == [
        ("single", NF_ACCEPT, 1, False)
    ]
    assert handle(inpath, [packet(3, 3), packet(4, 4), packet(5, 5)], 0.01) == []
    assert inpath.counters.episodes_queue_full == 1
    # room for the witnesses, and for more packets after them than the 4 awaiting a verdict
    # (they go out numbered from the witness's Ns on): 2 * 4 + 4
    assert kernel.maxlens == [12]
    assert handle(inpath, [packet(6, 6)], 0.02) == []  # still the backlog
    # Ns 7..19 passed us; a short read (backlog 0): the kernel holds nothing unread
    got = decode(handle(inpath, [packet(7, 20)], 0.03, backlog=0))
    assert [(i, payload) for _, _, i, payload in got] == [
        (2, True),
        (3, True),
        (4, True),
        (5, True),
        (6, True),
        (7, True),
    ]
    assert inpath.held == 0
    # not yet: the kernel holds the 6 until their verdicts, sent after this call, reach it
    assert kernel.maxlens == [12]
    assert len(decode(handle(inpath, [packet(8, 21)], 0.04, backlog=0))) == 1
    # back once the backlog is answered, to the floor: our Ns now lead the LAC's by the 5
    # held frames (4 read at the episode, 1 unread up to the boundary), so a queue of 4 could
    # pass Ns we sent; plus what may be in flight when it fills: a read (2), the held ones
    # a gap's end releases (at most 4 // 2), and 1
    assert kernel.maxlens == [12, 10]
    assert inpath.floor == 10
    c = inpath.pipeline.directions()["lac_to_lns"].counters
    assert c.skipped["bypass"] == 1 + 13


def test_maxlen_stays_raised_while_the_kernel_holds_unread_packets() -> None:
    """maxlen 8, raised to 24 by an episode (twice the 8 awaiting a verdict, plus 8). The
    witness read fills its limit and the kernel still holds 4 packets unread (13 awaited a
    verdict): a maxlen below that now would leave the queue full at once, the next packets
    would pass and make a new episode, and so on (it oscillated). It goes back, to the floor,
    once a short read shows nothing unread and what awaits a verdict is below half of it."""
    kernel = Kernel(id_sequence=9)
    inpath = watched(8, kernel)
    handle(inpath, [packet(1, 0), packet(2, 2)], 0.0)  # Ns 1 lost: 2 held
    handle(inpath, [packet(i, i) for i in range(3, 10)], 0.01)  # 8 await a verdict: full
    assert kernel.maxlens == [24]
    got = decode(handle(inpath, [packet(10, 30)], 0.02, backlog=13))  # 11..14 unread
    assert [i for _, _, i, _ in got] == list(range(2, 11))
    assert kernel.maxlens == [24]
    # 11..14, then 15 and 16 that came meanwhile: 6 await a verdict, and with the 9 answered
    # since the last read at most 15 were queued: below the raised 24
    got = decode(handle(inpath, [packet(i, 20 + i) for i in range(11, 17)], 0.03, backlog=0))
    assert [i for _, _, i, _ in got] == list(range(11, 17))
    # back to the floor (8 held, margin 2 + 8 // 2 + 1): what the kernel may still hold, the
    # 6 whose verdicts are not sent yet, is below half of it
    assert kernel.maxlens == [24, 15]
    assert len(decode(handle(inpath, [packet(17, 37)], 0.04, backlog=0))) == 1
    assert inpath.counters.episodes_queue_full == 1
    assert kernel.maxlens == [24, 15]


def test_a_gap_in_the_packet_ids_is_a_socket_full_episode() -> None:
    kernel = Kernel(id_sequence=12)
    inpath = watched(1000, kernel)
    handle(inpath, [packet(1, 0), packet(2, 1)], 0.0)
    # ids 3..11 passed us: what this batch brings waits with the rest (taken as backlog: the
    # socket may still be full), the next id is the witness
    assert handle(inpath, [packet(12, 2), packet(13, 3)], 0.01) == []
    assert inpath.counters.episodes_socket_full == 1
    assert inpath.counters.episodes_queue_full == 0
    assert [i for _, _, i, _ in decode(handle(inpath, [packet(14, 13)], 0.02))] == [12, 13, 14]


def test_the_kernels_backlog_counts_what_is_not_read_yet() -> None:
    """A read that filled its limit: the worker passes the kernel's count of what awaits a
    verdict; at the maxlen the queue is full even though little of it is read."""
    kernel = Kernel(id_sequence=2)
    inpath = watched(64, kernel)
    handle(inpath, [packet(1, 0)], 0.0, backlog=10)
    assert inpath.counters.episodes_queue_full == 0
    handle(inpath, [packet(2, 1)], 0.0, backlog=64)
    assert inpath.counters.episodes_queue_full == 1


def test_verdicts_sent_between_two_reads_count_as_occupancy() -> None:
    """maxlen 8: reads of 3, then 4, then 4, each answered at once. No read sees more than 4
    awaiting a verdict, yet if the last 4 came before the verdicts of the 4 before them left,
    8 were queued: the queue was full in between and a packet may have passed (4 + 4 >= 8).
    After the 3 (4 + 3 < 8) it cannot have been."""
    kernel = Kernel(id_sequence=9)
    inpath = watched(8, kernel)
    assert len(handle(inpath, [packet(i, i - 1) for i in range(1, 4)], 0.0, backlog=0)) == 1
    handle(inpath, [packet(i, i - 1) for i in range(4, 8)], 0.01, backlog=0)
    assert inpath.counters.episodes_queue_full == 0
    assert kernel.maxlens == []
    handle(inpath, [packet(i, i - 1) for i in range(8, 12)], 0.02, backlog=0)  # 4 answered
    assert inpath.counters.episodes_queue_full == 1


def test_unwatched_the_adapter_sees_no_episode() -> None:
    """Without `watch_overflow` (offline use, the verdict tests) ids and occupancy are not
    judged."""
    inpath = InPath(inpath_pipeline(EngineConfig()), 3)
    handle(inpath, [packet(1, 0)], 0.0)
    handle(inpath, [packet(9, 1)], 0.0)
    assert inpath.counters.episodes_socket_full == inpath.counters.episodes_queue_full == 0


def test_held_packets_alone_never_fill_the_queue() -> None:
    """maxlen 8: at most 4 held in all; beyond, the oldest gap is closed early
    (`queue_budget`) so that new packets still find room instead of passing unordered."""
    kernel = Kernel(id_sequence=0)
    inpath = watched(8, kernel)
    handle(inpath, [packet(1, 0)], 0.0)
    got = decode(handle(inpath, [packet(i, i) for i in range(2, 8)], 0.01))  # Ns 1 lost
    assert [i for _, _, i, _ in got] == [2, 3, 4, 5, 6, 7]  # 6 held > 4: the gap closed
    assert inpath.counters.episodes_queue_full == 0
    c = inpath.pipeline.directions()["lac_to_lns"].counters
    assert c.skipped["queue_budget"] == 1


def test_an_episode_while_the_backlog_is_unread_moves_the_boundary_on() -> None:
    """Another fill before the backlog of the first is read (sustained overload): the sessions
    wait already, the backlog now reaches the new id_sequence."""
    kernel = Kernel(id_sequence=5)
    inpath = watched(4, kernel)
    handle(inpath, [packet(1, 0), packet(2, 2)], 0.0)  # Ns 1 lost: 2 held
    handle(inpath, [packet(3, 3), packet(4, 4), packet(5, 5)], 0.01)  # 4 await a verdict: full
    kernel.id_sequence = 10
    assert handle(inpath, [packet(10, 10)], 0.02) == []  # ids 6..9 passed (socket): backlog
    assert inpath.counters.episodes_queue_full == inpath.counters.episodes_socket_full == 1
    got = decode(handle(inpath, [packet(11, 30)], 0.03))
    assert [i for _, _, i, _ in got] == [2, 3, 4, 5, 10, 11]


class Proc:
    """/proc's count of what awaits a verdict, and how often it was read."""

    def __init__(self) -> None:
        self.waiting = 0
        self.reads = 0

    def count(self) -> int | None:
        self.reads += 1
        return self.waiting


def test_the_kernels_count_is_read_at_most_once_a_millisecond_while_far_from_full() -> None:
    proc, clock = Proc(), [0.0]
    probe = BacklogProbe(proc.count, lambda: clock[0])
    assert probe(10, 0, 1024) == 0 and proc.reads == 0  # short read: nothing unread
    proc.waiting = 100
    assert probe(READ_LIMIT, 0, 1024) == 100 and proc.reads == 1
    clock[0] += STATS_EVERY / 2
    assert probe(READ_LIMIT, 50, 1024) is None and proc.reads == 1  # low: the last count
    clock[0] += STATS_EVERY
    proc.waiting = 600
    assert probe(READ_LIMIT, 50, 1024) == 600 and proc.reads == 2
    # 536 unread at the last count: near half the maxlen every full read asks
    assert probe(READ_LIMIT, 50, 1024) == 600 and proc.reads == 3


def test_a_full_queue_is_seen_however_soon_the_next_full_read() -> None:
    """Episode detection through the probe: a queue filling from the last count's unread part
    is asked about on the very next full read, whatever the clock."""
    proc = Proc()
    probe = BacklogProbe(proc.count, lambda: 0.0)
    inpath = watched(256, Kernel(id_sequence=200))
    batch = [packet(i, i) for i in range(1, READ_LIMIT + 1)]
    proc.waiting = 200  # 136 unread
    handle(inpath, batch, 0.0, probe(READ_LIMIT, inpath.held, inpath.kernel_maxlen))
    assert inpath.counters.episodes_queue_full == 0
    proc.waiting = 256
    batch = [packet(i, i) for i in range(READ_LIMIT + 1, 2 * READ_LIMIT + 1)]
    handle(inpath, batch, 0.0, probe(READ_LIMIT, inpath.held, inpath.kernel_maxlen))
    assert proc.reads == 2
    assert inpath.counters.episodes_queue_full == 1


def test_the_floor_only_rises_where_we_renumber() -> None:
    """preserve: our Ns are the LAC's, nothing leads, the queue goes back to queue_maxlen."""
    kernel = Kernel(id_sequence=6)
    inpath = InPath(
        inpath_pipeline(EngineConfig(reorder_timeout=1.0, sequencing=Sequencing.PRESERVE)), 3
    )
    inpath.watch_overflow(4, kernel.set_maxlen, READ)
    handle(inpath, [packet(1, 0), packet(2, 1)], 0.0)
    handle(inpath, [packet(3, 2), packet(4, 3), packet(5, 4)], 0.01)  # with the 2 answered: 5
    assert inpath.counters.episodes_queue_full == 1
    handle(inpath, [packet(6, 5)], 0.02)
    handle(inpath, [packet(7, 20)], 0.03, backlog=0)
    handle(inpath, [packet(8, 21)], 0.04, backlog=0)
    assert inpath.floor == 4
    assert kernel.maxlens == [8, 4]  # room for the packets after it; no lead to protect
