"""The nfnetlink_queue client against the real kernel (a network namespace of our own)."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2tpreorder.daemon.inpath import nfqueue as nq
from l2tpreorder.daemon.inpath.nfqueue import (
    NF_ACCEPT,
    NfQueue,
    QueueWaiting,
    read_queue_stats,
    verdict_message,
)
from tests.conftest import need_root, need_tool
from tests.inpath_packets import Packet, parse_messages, read
from tests.netns import NetNs

QUEUE = 9
PORT = 41701


@pytest.fixture
def ns() -> Iterator[NetNs]:
    need_root()
    need_tool("iptables")
    space = NetNs("nfq")
    try:
        space.run(
            "iptables", "-A", "INPUT", "-p", "udp", "--dport", str(PORT),
            "-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass",
        )  # fmt: skip
        yield space
    finally:
        space.close()


def read_n(q: NfQueue, n: int) -> list[Packet]:
    got: list[Packet] = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        select.select([q], [], [], 0.5)
        got += read(q, n - len(got))
    assert len(got) == n, got
    return got


def received(sock: socket.socket, n: int) -> list[bytes]:
    out = []
    sock.settimeout(5)
    try:
        while len(out) < n + 1:  # one more than expected: proves nothing extra came
            out.append(sock.recv(100))
    except TimeoutError:
        pass
    return out


def test_verdict_order_is_delivery_order(ns: NetNs) -> None:
    q = ns.call(lambda: NfQueue(QUEUE))
    try:
        lns = ns.udp("127.0.0.1", PORT)
        lac = ns.udp("127.0.0.2")
        for m in (b"one", b"two", b"three"):
            lac.sendto(m, ("127.0.0.1", PORT))
        packets = read_n(q, 3)
        assert [p[2][28:] for p in packets] == [b"one", b"two", b"three"]
        assert {p[1] for p in packets} == {1}  # NF_INET_LOCAL_IN
        # /proc/net follows the reading thread's namespace only through thread-self.
        path = "/proc/thread-self/net/netfilter/nfnetlink_queue"
        stats = ns.call(lambda: read_queue_stats(path))[QUEUE]
        assert stats.waiting == 3 and stats.copy_mode == 2
        two, one, three = packets[1][0], packets[0][0], packets[2][0]
        q.send([verdict_message(QUEUE, i, NF_ACCEPT) for i in (two, one, three)])
        assert received(lns, 3) == [b"two", b"one", b"three"]
    finally:
        q.close()


def test_a_bind_under_traffic_loses_nothing(ns: NetNs) -> None:
    """The queue is live from the bind on: a packet queued while the setup still waited for the
    kernel's answer was read there and thrown away, so it never got a verdict and the unbind
    dropped it (a restart under traffic lost packets). Bound in the middle of a flood, every
    datagram reaches the receiver: by the bypass before the bind, by our verdicts after."""
    lns = ns.udp("127.0.0.1", PORT)
    lac = ns.udp("127.0.0.2")
    total = 6000
    half = threading.Event()

    def flood() -> None:
        for i in range(total):
            lac.sendto(b"n%05d" % i, ("127.0.0.1", PORT))
            if i == total // 3:
                half.set()

    sender = threading.Thread(target=flood)
    sender.start()
    q = None
    try:
        assert half.wait(10)
        q = ns.call(lambda: NfQueue(QUEUE))  # while the flood goes on
        answered = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (sender.is_alive() or waiting(ns)):
            select.select([q], [], [], 0.05)
            packets = read(q, 64)
            q.send([verdict_message(QUEUE, p[0], NF_ACCEPT) for p in packets])
            answered += len(packets)
        sender.join(10)
        assert answered > 0, "the bind came after the flood: nothing was queued"
        got = set(received(lns, total))
    finally:
        sender.join(10)
        if q is not None:
            q.close()
    missing = sorted(set(range(total)) - {int(m[1:]) for m in got})
    assert not missing, f"{len(missing)} never delivered, first {missing[:5]}"


def test_unbind_drops_what_waits_unless_accept_all(ns: NetNs) -> None:
    """The kernel drops queued packets when the reader unbinds: accept_all hands them on first
    (read or not). This is what lets SIGTERM lose nothing under a backlog."""
    lns = ns.udp("127.0.0.1", PORT)
    lac = ns.udp("127.0.0.2")
    q = ns.call(lambda: NfQueue(QUEUE))
    for i in range(10):
        lac.sendto(b"dropped-%d" % i, ("127.0.0.1", PORT))
    read_n(q, 2)  # some read, some not: neither kind gets a verdict
    q.close()
    assert received(lns, 0) == []
    q = ns.call(lambda: NfQueue(QUEUE))
    for i in range(10):
        lac.sendto(b"kept-%d" % i, ("127.0.0.1", PORT))
    first = read_n(q, 3)
    q.accept_all(first[-1][0])
    q.close()
    assert sorted(received(lns, 10)) == sorted(b"kept-%d" % i for i in range(10))


def waiting(ns: NetNs) -> int:
    """The kernel's backlog of our queue in `ns` (/proc/net follows a thread's namespace only
    through thread-self)."""
    path = "/proc/thread-self/net/netfilter/nfnetlink_queue"
    return ns.call(lambda: read_queue_stats(path))[QUEUE].waiting


def test_the_kept_open_count_follows_the_kernels_backlog(ns: NetNs) -> None:
    """QueueWaiting reads the same /proc file through one descriptor opened once (in the
    namespace it was opened in): each read is the kernel's count now, not the first one's,
    and equals what `read_queue_stats` says; a queue not bound there reads None."""
    path = "/proc/thread-self/net/netfilter/nfnetlink_queue"
    lns = ns.udp("127.0.0.1", PORT)
    lac = ns.udp("127.0.0.2")
    q = ns.call(lambda: NfQueue(QUEUE))
    count, other = QueueWaiting(QUEUE, path), QueueWaiting(QUEUE + 1, path)
    try:
        assert ns.call(count) == 0 and ns.call(other) is None
        fd = count.fd
        for i in range(4):
            lac.sendto(b"w-%d" % i, ("127.0.0.1", PORT))
        packets = read_n(q, 4)
        assert count() == 4 == waiting(ns)  # read but no verdict yet: still waiting
        q.send([verdict_message(QUEUE, p[0], NF_ACCEPT) for p in packets[:3]])
        assert count() == 1 == waiting(ns) and count.fd == fd  # the same descriptor
        q.send([verdict_message(QUEUE, packets[3][0], NF_ACCEPT)])
        assert count() == 0
        assert sorted(received(lns, 4)) == sorted(b"w-%d" % i for i in range(4))
    finally:
        count.close()
        other.close()
        q.close()
    assert count.fd == -1


def test_maxlen_0_with_fail_open_bypasses_new_packets_and_keeps_the_queued(ns: NetNs) -> None:
    """Issue 21 (4), the kernel's behaviour the shutdown relies on: after `stop_queueing`
    (queue maxlen 0, fail-open) every new packet passes at once, unread and unqueued, while
    the packets queued before still wait for their verdict; accept_all hands those on, so the
    unbind finds nothing to drop even with traffic going on."""
    lns = ns.udp("127.0.0.1", PORT)
    lac = ns.udp("127.0.0.2")
    q = ns.call(lambda: NfQueue(QUEUE))
    try:
        for i in range(5):
            lac.sendto(b"queued-%d" % i, ("127.0.0.1", PORT))
        first = read_n(q, 2)  # two read, three still unread: all five await a verdict
        assert received(lns, 0) == []
        assert q.stop_queueing()
        for i in range(20):
            lac.sendto(b"bypass-%d" % i, ("127.0.0.1", PORT))
        assert received(lns, 20) == [b"bypass-%d" % i for i in range(20)]  # at once, in order
        assert waiting(ns) == 5  # the queued ones still wait
        q.accept_all(first[-1][0])
        assert sorted(received(lns, 5)) == sorted(b"queued-%d" % i for i in range(5))
        assert waiting(ns) == 0
    finally:
        q.close()


def id_sequence(ns: NetNs) -> int:
    path = "/proc/thread-self/net/netfilter/nfnetlink_queue"
    return ns.call(lambda: read_queue_stats(path))[QUEUE].id_sequence


def test_queue_full_fail_open_numbers_nothing_and_set_maxlen_makes_room(ns: NetNs) -> None:
    """Issue 21 (4), the kernel fact in-path mode's episode detection rests on: a packet that
    finds the queue full passes at once (fail-open) without a packet id and uncounted, so the
    ids we read have no gap and only occupancy tells. `set_maxlen` applies at once (no ACK
    awaited): the next packets are queued again."""
    lns = ns.udp("127.0.0.1", PORT)
    lac = ns.udp("127.0.0.2")
    q = ns.call(lambda: NfQueue(QUEUE, maxlen=4))
    try:
        for i in range(10):
            lac.sendto(b"burst-%d" % i, ("127.0.0.1", PORT))
        assert received(lns, 6) == [b"burst-%d" % i for i in range(4, 10)]  # passed at once
        assert id_sequence(ns) == 4  # the six numbered nothing
        ns.call(lambda: q.set_maxlen(6))
        for i in range(3):
            lac.sendto(b"after-%d" % i, ("127.0.0.1", PORT))
        assert received(lns, 1) == [b"after-2"]  # two found room, the third the queue full
        packets = read_n(q, 6)
        assert [p[0] for p in packets] == list(range(packets[0][0], packets[0][0] + 6))
        assert [p[2][28:] for p in packets][-2:] == [b"after-0", b"after-1"]
        stats = ns.call(lambda: read_queue_stats("/proc/thread-self/net/netfilter/nfnetlink_queue"))
        assert stats[QUEUE].queue_dropped == stats[QUEUE].user_dropped == 0
        q.accept_all(packets[-1][0])
        assert len(received(lns, 6)) == 6
    finally:
        q.close()


def test_socket_full_fail_open_skips_a_packet_id(ns: NetNs) -> None:
    """The other fail-open: the queue has room but our socket is full. The kernel numbers the
    packet before it fails to deliver it, so the ids we read skip it (the exact signal the
    in-path worker uses), and nothing counts it either (user_dropped stays 0)."""
    lns = ns.udp("127.0.0.1", PORT)
    lac = ns.udp("127.0.0.2")
    q = ns.call(lambda: NfQueue(QUEUE, rcvbuf=4096))
    try:
        for i in range(40):
            lac.sendto(b"x" * 1000 + b"%d" % i, ("127.0.0.1", PORT))
        bypassed = received(lns, 40)
        assert bypassed  # some found the socket full and passed at once
        assert id_sequence(ns) == 40  # yet every one was numbered
        got: list[Packet] = []
        while len(got) + len(bypassed) < 40:
            select.select([q], [], [], 2)
            more = read(q)
            assert more, (len(got), len(bypassed))
            got += more
        ids = [p[0] for p in got]
        assert len(ids) + len(bypassed) == 40
        path = "/proc/thread-self/net/netfilter/nfnetlink_queue"
        assert ns.call(lambda: read_queue_stats(path))[QUEUE].user_dropped == 0
        q.accept_all(ids[-1])
        assert len(received(lns, len(ids))) == len(ids)
        lac.sendto(b"next", ("127.0.0.1", PORT))
        (after,) = read_n(q, 1)
        assert after[0] == 41  # the ids we read skip the 37 that passed: 1..3, then 41
        q.accept_all(after[0])
    finally:
        q.close()


def test_skb_info_and_cap_len_become_packet_flags() -> None:
    """NFQA_SKB_INFO's flags (big-endian u32) and NFQA_CAP_LEN land in a packet's flags, so the
    adapter knows which checksums the kernel left unverified and which copies are short."""
    def message(packet_id: int, *attrs: bytes) -> bytes:
        hdr = nq._attr(nq.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 1) + b"\0")
        body = hdr + b"".join(attrs) + nq._attr(nq.NFQA_PAYLOAD, b"E" + bytes(27))
        return nq._message(nq.NFQNL_MSG_PACKET, 0, body, 0)

    info = nq._attr(nq.NFQA_SKB_INFO, struct.pack("!I", nq.NFQA_SKB_CSUM_NOTVERIFIED))
    cap = nq._attr(nq.NFQA_CAP_LEN, struct.pack("!I", 9000))
    buf = message(1) + message(2, info) + message(3, cap, info)
    out: list[Packet] = []
    parse_messages(buf, 0, len(buf), out)
    assert [(p[0], p[3]) for p in out] == [
        (1, 0),
        (2, nq.PACKET_CSUM_NOT_VERIFIED),
        (3, nq.PACKET_CSUM_NOT_VERIFIED | nq.PACKET_TRUNCATED),
    ]



def test_the_kept_open_count_reads_a_long_file_whole(tmp_path: Path) -> None:
    """~1,000 bound queues make the /proc file longer than one read: the rest is read through
    the same descriptor (the path may be closed to the worker once it dropped privileges; the
    old fallback reopened it), and the line cut at a read's end is read whole."""
    path = tmp_path / "nfnetlink_queue"
    lines = [f"{q:5d} 1234 {q % 7:5d} 2 65531 0 0 {q * 3:10d} 1" for q in range(4000)]
    path.write_text("\n".join(lines) + "\n")
    text = path.read_bytes()
    assert len(text) > 2 * (1 << 16)
    cut = text[: 1 << 16].rsplit(b"\n", 1)[1].split()[0]  # the queue whose line is cut
    assert QueueWaiting(4000, str(path))() is None  # not listed
    counts = [QueueWaiting(queue, str(path)) for queue in (int(cut), 3999)]
    try:
        assert [count() for count in counts] == [int(cut) % 7, 3999 % 7]  # opened now
        path.unlink()  # the path gone (as if closed to us): the descriptors still read
        assert [count() for count in counts] == [int(cut) % 7, 3999 % 7]
    finally:
        for count in counts:
            count.close()
