"""In-path mode (issue 15) with real parts: the kernel's NFQUEUE behind a real iptables rule, a
real `l2tpreorder run` (mode: inpath) and real UDP sockets in a network namespace named with the
pid. The test is the LAC (several loopback addresses) and the LNS (a socket on 1701 that the
daemon never touches: it sees the LAC's own address)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2tpreorder import wire
from tests.engine_helpers import never_steps_back, randomly_swapped
from tests.integration.inpath_helpers import (
    InPathDaemon,
    Received,
    bound_queues,
    data,
    frame_of,
    metric,
    ns_of,
    queued_namespace,
    quiet,
    receive_all,
)
from tests.netns import NetNs, wait_until

pytestmark = [pytest.mark.integration]

QUEUE = 3
LNS = ("127.0.0.1", 1701)


@pytest.fixture
def ns() -> Iterator[NetNs]:
    with queued_namespace("inpath", QUEUE) as space:
        yield space


def test_swaps_arrive_in_order_from_the_lacs_real_address(ns: NetNs, tmp_path: Path) -> None:
    daemon = InPathDaemon(ns, tmp_path, QUEUE)
    daemon.start()
    # inpath.allow left at its default: the start-up warning relay mode gives for its allow
    assert "`inpath.allow` accepts every source" in daemon.log.read_text()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40001)
    order = randomly_swapped(400)
    assert order != sorted(order)
    for n in order:
        lac.sendto(data(n), LNS)
    got = receive_all(lns, 400)
    assert [ns_of(d) for d, _ in got] == list(range(400))
    assert {addr for _, addr in got} == {("127.0.0.2", 40001)}  # the LAC, not 127.0.0.1:port
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_inpath_queued_packets_total", queue=str(QUEUE)) == 400
    assert metric(text, "l2tpreorder_received_packets_total", direction="lac_to_lns") == 400
    assert daemon.stop() == 0


def test_displacement_and_loss_renumbered_with_valid_checksums(ns: NetNs, tmp_path: Path) -> None:
    """Displacement 4 and two lost packets: the LNS gets contiguous Ns (renumber rewrites the
    packets: the kernel checks the UDP checksum of a rewritten packet, so every one arriving
    proves it valid)."""
    daemon = InPathDaemon(ns, tmp_path, QUEUE, reorder={"timeout_ms": 100})
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.3", 1701)
    sent = [n for n in range(200) if n not in (50, 51)]
    order = list(sent)
    for i in range(10, len(order) - 10, 20):  # packet i arrives after the 4 behind it
        order[i : i + 5] = [*order[i + 1 : i + 5], order[i]]
    for n in order:
        lac.sendto(data(n), LNS)
    got = receive_all(lns, len(sent))
    assert [ns_of(d) for d, _ in got] == list(range(len(sent)))  # renumbered over the loss
    assert [frame_of(d) for d, _ in got] == sent  # in the LAC's order, nothing lost or doubled
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_inpath_verdicts_total", verdict="accept_rewritten") > 0
    assert daemon.stop() == 0


def test_duplicates_dropped_and_counted(ns: NetNs, tmp_path: Path) -> None:
    daemon = InPathDaemon(ns, tmp_path, QUEUE)
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40002)
    for n in (0, 1, 2, 1, 3, 2):
        lac.sendto(data(n), LNS)
    got = receive_all(lns, 4)
    assert [ns_of(d) for d, _ in got] == [0, 1, 2, 3]
    assert quiet(lns)
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_inpath_verdicts_total", verdict="drop") == 2
    assert daemon.stop() == 0


def test_a_stray_far_ahead_is_dropped_and_the_session_does_not_move(
    ns: NetNs, tmp_path: Path
) -> None:
    """Issue 21, point 5, through the kernel's queue: one datagram at Ns +20000 among genuine
    ones gets NF_DROP; every genuine one reaches the LNS in order with contiguous Ns."""
    daemon = InPathDaemon(ns, tmp_path, QUEUE)
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40008)
    for n in (*range(10), 20010, *range(10, 40)):
        lac.sendto(data(n), LNS)
    got = receive_all(lns, 40)
    assert [(ns_of(d), frame_of(d)) for d, _ in got] == [(n, n) for n in range(40)]
    assert quiet(lns)
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_dropped_packets_total", reason="far_ahead") == 1
    assert metric(text, "l2tpreorder_inpath_verdicts_total", verdict="drop") == 1
    assert daemon.stop() == 0


def test_not_ours_passes_untouched(ns: NetNs, tmp_path: Path) -> None:
    """L2TPv3 over UDP, other UDP, control messages and data without Ns: accepted at once,
    byte for byte, even while a session holds an early packet."""
    daemon = InPathDaemon(ns, tmp_path, QUEUE)
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40003)
    lac.sendto(data(0), LNS)
    lac.sendto(data(2), LNS)  # held: 1 is missing
    assert ns_of(receive_all(lns, 1)[0][0]) == 0
    l2tpv3 = struct.pack("!HHI", 0x0003, 0, 0x1234) + b"v3 data"
    other = b"\x00\x01 not l2tp at all"
    control = wire.build_control(7, 0, 5, 0, [wire.avp_message_type(6)])  # HELLO
    unsequenced = wire.build_data(7, 9, b"no-ns")
    malformed = b"\x02\x02"  # L2TPv2 version bits, too short: accepted, counted once
    sent = [l2tpv3, other, control, unsequenced, malformed]
    for d in sent:
        lac.sendto(d, LNS)
    got = [d for d, _ in receive_all(lns, len(sent), timeout=5)]
    # Passed-not-ours are accepted while the batch is read, what the pipeline releases after it:
    # within one batch the order across the two may differ; every byte must arrive.
    assert sorted(got) == sorted(sent)
    lac.sendto(data(1), LNS)
    assert [ns_of(d) for d, _ in receive_all(lns, 2)] == [1, 2]
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_inpath_passed_not_ours_total", reason="not_l2tpv2") == 2
    # The malformed one is the core's to count (MalformedPolicy.PASS): once, as passed on.
    forwarded = "l2tpreorder_forwarded_packets_total"
    assert metric(text, forwarded, direction="lac_to_lns", kind="malformed") == 1
    assert metric(text, "l2tpreorder_malformed_packets_total", reason="too_short") == 1
    assert metric(text, "l2tpreorder_dropped_packets_total", reason="malformed") == 0
    assert daemon.stop() == 0


def test_sigterm_accepts_what_is_held_and_restart_continues_numbering(
    ns: NetNs, tmp_path: Path
) -> None:
    daemon = InPathDaemon(ns, tmp_path, QUEUE, reorder={"timeout_ms": 30000})
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40004)
    for n in (0, 1, 3, 4):  # 3 and 4 wait for 2 (30 s)
        lac.sendto(data(n), LNS)
    assert [ns_of(d) for d, _ in receive_all(lns, 2)] == [0, 1]
    assert quiet(lns)
    assert daemon.stop(signal.SIGTERM) == 0
    # Released at shutdown, in order, renumbered over the gap given up.
    assert [(ns_of(d), frame_of(d)) for d, _ in receive_all(lns, 2)] == [(2, 3), (3, 4)]
    assert (tmp_path / "state.json").exists()
    daemon.start()
    lac.sendto(data(5), LNS)
    lac.sendto(data(6), LNS)
    got = receive_all(lns, 2)
    assert [(ns_of(d), frame_of(d)) for d, _ in got] == [(4, 5), (5, 6)]  # no Ns jump
    assert daemon.stop() == 0


def test_kill_9_fails_open_and_restart_resumes_ordering(ns: NetNs, tmp_path: Path) -> None:
    daemon = InPathDaemon(ns, tmp_path, QUEUE)
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40005)
    for n in (0, 2, 1):
        lac.sendto(data(n), LNS)
    assert [ns_of(d) for d, _ in receive_all(lns, 3)] == [0, 1, 2]
    daemon.stop(signal.SIGKILL)
    wait_until("the queue unbound after kill -9", lambda: QUEUE not in bound_queues(ns))
    for n in (3, 5, 4):  # nobody reads the queue: the rule's bypass passes them, unordered
        lac.sendto(data(n), LNS)
    assert [ns_of(d) for d, _ in receive_all(lns, 3)] == [3, 5, 4]
    daemon.start()
    for n in (6, 8, 7):
        lac.sendto(data(n), LNS)
    assert [ns_of(d) for d, _ in receive_all(lns, 3)] == [6, 7, 8]
    assert daemon.stop() == 0


def test_restart_with_traffic_in_the_downtime_never_steps_the_lns_back(
    ns: NetNs, tmp_path: Path
) -> None:
    """Issue 21, point 3: `systemctl restart` while the LAC sends. Our Ns lag the LAC's (a gap
    given up), the bypass passes the LAC's own Ns while we are down, and the restored session
    must not go back to its saved numbering: it goes on from the Ns the LNS saw, and its first
    packet is not held for the (30 s) timeout."""
    daemon = InPathDaemon(ns, tmp_path, QUEUE, reorder={"timeout_ms": 30000})
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40006)
    for n in (0, 1, *range(3, 13)):  # 2 lost: 3..12 wait for it
        lac.sendto(data(n), LNS)
    seen = [ns_of(d) for d, _ in receive_all(lns, 2)]
    assert daemon.stop(signal.SIGTERM) == 0
    got = receive_all(lns, 10)
    assert [frame_of(d) for d, _ in got] == list(range(3, 13))
    seen += [ns_of(d) for d, _ in got]  # renumbered over the gap: Ns 2..11
    wait_until("the queue unbound after the stop", lambda: QUEUE not in bound_queues(ns))
    for n in range(13, 23):  # the downtime: the rule's bypass passes the LAC's own Ns
        lac.sendto(data(n), LNS)
    got = receive_all(lns, 10)
    assert [ns_of(d) for d, _ in got] == list(range(13, 23))
    seen += [ns_of(d) for d, _ in got]
    daemon.start()
    after = [24, 23, 25, 26, 27, 28]  # a swap right after the bind
    for n in after:
        lac.sendto(data(n), LNS)
    got = receive_all(lns, len(after), timeout=10.0)  # the first one is not held 30 s
    assert sorted(frame_of(d) for d, _ in got) == sorted(after)  # none lost
    seen += [ns_of(d) for d, _ in got]
    never_steps_back(seen)
    assert seen[-len(after):] == list(range(24, 30))  # the LAC's numbering from the restart on
    assert daemon.stop() == 0


def test_restart_under_steady_traffic_the_lns_never_sees_ns_step_back(
    ns: NetNs, tmp_path: Path
) -> None:
    """The issue's run, scaled down: the LAC sends steadily (about 1,000 pps) through SIGTERM,
    the bypass, and the start; our Ns lagged the LAC's by 10 before. Whatever the kernel passed
    or we ordered, the LNS never sees an Ns step back or repeat, and ordering resumes."""
    daemon = InPathDaemon(ns, tmp_path, QUEUE, reorder={"timeout_ms": 50})
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40007)
    for n in range(100):
        if not 40 <= n < 50:  # lost: given up after 50 ms, so our Ns lag the LAC's by 10
            lac.sendto(data(n), LNS)
    seen = [ns_of(d) for d, _ in receive_all(lns, 90)]
    stop = threading.Event()
    sent = [100]

    def send() -> None:
        while not stop.is_set() and sent[0] < 60000:
            lac.sendto(data(sent[0]), LNS)
            sent[0] += 1
            time.sleep(0.001)  # pacing the traffic, not synchronising

    def receive() -> None:
        lns.settimeout(0.2)
        while not stop.is_set():
            try:
                seen.append(ns_of(lns.recvfrom(65535)[0]))
            except TimeoutError:
                continue

    threads = [threading.Thread(target=send), threading.Thread(target=receive)]
    for thread in threads:
        thread.start()
    try:
        mark = len(seen)
        wait_until("traffic flows", lambda: len(seen) > mark + 200)
        assert daemon.stop(signal.SIGTERM) == 0
        wait_until("the queue unbound after the stop", lambda: QUEUE not in bound_queues(ns))
        mark = len(seen)
        wait_until("the bypass passes the traffic", lambda: len(seen) > mark + 200)
        daemon.start()
        mark = len(seen)
        wait_until("ordered traffic after the start", lambda: len(seen) > mark + 300)
        text = daemon.scrape_or_none()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    never_steps_back(seen)
    assert text is not None
    assert metric(text, "l2tpreorder_skipped_sequence_numbers_total", reason="restart") >= 1
    assert daemon.stop() == 0


def worker_pid(ns: NetNs, queue: int) -> int:
    for pid in ns.run("ip", "netns", "pids", ns.name).stdout.split():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--inpath-worker" in argv and argv[argv.index(b"--inpath-worker") + 1] == b"%d" % queue:
            return int(pid)
    raise AssertionError(f"no worker for queue {queue}")


@pytest.fixture
def ns2() -> Iterator[NetNs]:
    with queued_namespace("inpath2", "4-5") as space:
        yield space


def test_two_workers_share_the_lacs_and_survive_each_other(ns2: NetNs, tmp_path: Path) -> None:
    daemon = InPathDaemon(ns2, tmp_path, "4-5", reorder={"timeout_ms": 30000})
    daemon.start()
    lns = ns2.udp(*LNS)
    lacs = [ns2.udp(f"127.0.0.{i}", 1701) for i in range(2, 14)]
    queue_of: dict[int, str] = {}
    daemon.scrape()  # /metrics serves before the traffic (raises if not)
    for i, lac in enumerate(lacs):  # one in-order packet each; see which queue counted it
        lac.sendto(data(0, tunnel=i + 1), LNS)
        receive_all(lns, 1)

        def counted(i: int = i) -> bool:
            text = daemon.scrape_or_none() or ""
            for q in ("4", "5"):
                try:
                    n = metric(text, "l2tpreorder_inpath_queued_packets_total", queue=q)
                except AssertionError:
                    n = 0
                if n > sum(1 for v in queue_of.values() if v == q):
                    queue_of[i] = q
                    return True
            return False

        wait_until(f"LAC {i} counted by a worker", counted)
    assert set(queue_of.values()) == {"4", "5"}, queue_of  # both workers have LACs
    text = daemon.scrape()
    # Metrics add up: every packet counted once, by one worker, in both families.
    assert metric(text, "l2tpreorder_inpath_queued_packets_total") == len(lacs)
    assert metric(text, "l2tpreorder_received_packets_total", direction="lac_to_lns") == len(lacs)
    victim = next(i for i, q in queue_of.items() if q == "4")
    survivor = next(i for i, q in queue_of.items() if q == "5")
    lacs[survivor].sendto(data(2, tunnel=survivor + 1), LNS)  # held by worker 5: 1 missing
    assert quiet(lns)
    old_pid = worker_pid(ns2, 4)
    os.kill(old_pid, 9)

    def restarted() -> bool:
        try:
            return worker_pid(ns2, 4) != old_pid and 4 in bound_queues(ns2)
        except AssertionError:
            return False

    wait_until("worker 4 restarted by the supervisor", restarted)
    # Worker 5's session was untouched: its held packet is still held and released in order.
    lacs[survivor].sendto(data(1, tunnel=survivor + 1), LNS)
    assert [ns_of(d) for d, _ in receive_all(lns, 2)] == [1, 2]
    # A fresh worker 4 (kill -9 saved nothing): a new session, ordering resumed.
    wait_until("worker 4 serving", lambda: daemon.scrape_or_none() is not None)
    for n in (2, 4, 3):
        lacs[victim].sendto(data(n, tunnel=victim + 1), LNS)
    assert [frame_of(d) for d, _ in receive_all(lns, 3)] == [2, 3, 4]
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_inpath_worker_restarts_total", queue="4") == 1
    assert daemon.stop() == 0


def test_user_drops_to_an_unprivileged_user_keeping_only_net_admin(
    ns: NetNs, tmp_path: Path
) -> None:
    """The kernel checks CAP_NET_ADMIN on every verdict: a plain setuid would leave every queued
    packet waiting. With `user`, the worker keeps that one capability and nothing else."""
    tmp_path.chmod(0o777)  # the state file is written as that user
    daemon = InPathDaemon(ns, tmp_path, QUEUE, user="nobody")
    daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid

    def field(name: str) -> str:
        status = Path(f"/proc/{pid}/status").read_text()
        return next(line.split()[1] for line in status.splitlines() if line.startswith(name))

    # /metrics answers just before the switch: wait for it (bounded), then check what is left.
    wait_until("the worker to switch user", lambda: field("Uid:") != "0")
    cap_eff = field("CapEff:")
    assert int(cap_eff, 16) == 1 << 12  # CAP_NET_ADMIN only
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40006)
    for n in (0, 2, 1, 3):
        lac.sendto(data(n), LNS)
    assert [ns_of(d) for d, _ in receive_all(lns, 4)] == [0, 1, 2, 3]
    # The kernel's counters are root's file (0440): read through the descriptor the worker
    # kept from before the switch, they still reach /metrics (they vanished before).
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_inpath_kernel_queue_waiting", queue=str(QUEUE)) == 0
    assert metric(text, "l2tpreorder_inpath_kernel_queue_drops_total", queue=str(QUEUE)) == 0
    assert daemon.stop() == 0


def test_queue_overflow_fails_open_nothing_dropped(ns: NetNs, tmp_path: Path) -> None:
    """A stopped (or overwhelmed) reader: beyond queue_maxlen the kernel passes packets on
    unordered (fail-open) instead of dropping them; the queued ones follow once it reads."""
    daemon = InPathDaemon(ns, tmp_path, QUEUE, inpath={"queue": QUEUE, "queue_maxlen": 32})
    daemon.start()
    assert daemon.proc is not None
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40007)
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        for n in range(300):
            lac.sendto(data(n), LNS)
        passed = receive_all(lns, 300 - 32)  # fail-open: past the 32 the queue holds
        assert sorted(frame_of(d) for d, _ in passed) == list(range(32, 300))
        assert quiet(lns)  # the 32 queued wait for the stopped reader: none dropped
        stats = ns.run("cat", "/proc/net/netfilter/nfnetlink_queue").stdout.split()
        assert stats[2] == "32" and stats[5] == "0" and stats[6] == "0"  # waiting, no drops
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    late = receive_all(lns, 32)
    assert sorted(frame_of(d) for d, _ in late) == list(range(32))  # nothing lost
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_inpath_queued_packets_total", queue=str(QUEUE)) == 32
    assert metric(text, "l2tpreorder_inpath_kernel_queue_drops_total", queue=str(QUEUE)) == 0
    assert daemon.stop() == 0


def test_lns_control_through_the_output_rule_ends_a_session(ns: NetNs, tmp_path: Path) -> None:
    """With the optional OUTPUT rule from `l2tpreorder rules` (u32: T bit set), the LNS's
    control messages pass through us untouched, and its CDN ends our session at once: the
    packet held for it is released without waiting for the timeout."""
    from l2tpreorder.config import config_from_dict
    from l2tpreorder.tools.rules import render

    rules = render(config_from_dict({"mode": "inpath", "inpath": {"queue": QUEUE}}))
    output_rule = next(
        line for line in rules.splitlines() if line.startswith("iptables  -I OUTPUT 1")
    )
    import shlex

    ns.run(*shlex.split(output_rule))
    daemon = InPathDaemon(ns, tmp_path, QUEUE, reorder={"timeout_ms": 30000})
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40008)
    lac.sendto(data(0), LNS)
    lac.sendto(data(2), LNS)  # held for 30 s: 1 is missing
    assert ns_of(receive_all(lns, 1)[0][0]) == 0
    unsequenced = wire.build_data(100, 55, b"lns data")  # not queued (T bit clear)
    lns.sendto(unsequenced, ("127.0.0.2", 40008))
    assert receive_all(lac, 1)[0][0] == unsequenced
    cdn = wire.build_control(100, 55, 3, 4, [
        wire.avp_message_type(wire.MessageType.CDN),
        wire.avp_result_code(3),
        wire.avp_assigned_session_id(9),  # the LNS's session ID: the one the LAC's data uses
    ])  # fmt: skip
    lns.sendto(cdn, ("127.0.0.2", 40008))
    assert receive_all(lac, 1)[0][0] == cdn  # passed untouched
    held = receive_all(lns, 1, timeout=10)  # released by the CDN, long before the 30 s
    assert frame_of(held[0][0]) == 2
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_socket_received_datagrams_total", direction="lns_to_lac") == 1
    assert daemon.stop() == 0


def test_sigterm_under_backlog_loses_nothing(ns: NetNs, tmp_path: Path) -> None:
    """SIGTERM with thousands of packets queued behind a stopped reader: none lost (the unbind
    itself would drop what still waits: tests/daemon/test_nfqueue.py shows that part)."""
    daemon = InPathDaemon(ns, tmp_path, QUEUE)
    daemon.start()
    assert daemon.proc is not None
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40009)
    total = 6000  # more than the shutdown drain reads (64 x 64)
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        for n in range(total):
            lac.sendto(data(n & 0xFFFF, tunnel=1 + n // 1000), LNS)
        assert quiet(lns)  # all queued behind the stopped reader
        daemon.proc.send_signal(signal.SIGTERM)
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert daemon.proc.wait(timeout=30) == 0
    daemon.proc = None
    got = receive_all(lns, total, timeout=30)
    assert sorted(frame_of(d) for d, _ in got) == sorted(n & 0xFFFF for n in range(total))
    assert quiet(lns)


def test_sigterm_at_a_steady_rate_loses_nothing(ns: NetNs, tmp_path: Path) -> None:
    """Issue 21 (4): a LAC sends at a steady 1,000 pps (with swaps, so packets are held) and
    the daemon gets SIGTERM while it does: every packet reaches the LNS socket exactly once,
    the ones before the stop, those held, queued or arriving during the shutdown (the queue
    stops taking new ones first: maxlen 0 with fail-open), and the bypass after it."""
    daemon = InPathDaemon(ns, tmp_path, QUEUE, reorder={"timeout_ms": 100})
    daemon.start()
    assert daemon.proc is not None
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40010)
    total, rate = 4000, 1000.0
    order = randomly_swapped(total, seed=4)
    stop_at = threading.Event()

    def send() -> None:
        start = time.monotonic()
        for i, n in enumerate(order):
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the rate, not waiting for anything
            lac.sendto(data(n), LNS)
            if i == 1000:
                stop_at.set()

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert stop_at.wait(30)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
        stopped_while_sending = sender.is_alive()
        daemon.proc = None
        got = receive_all(lns, total, timeout=60)
    finally:
        sender.join()
    assert stopped_while_sending  # the stop happened under traffic
    assert sorted(frame_of(d) for d, _ in got) == list(range(total))  # none lost, none twice
    assert quiet(lns)


def overflow_with_a_held_packet(
    ns: NetNs, daemon: InPathDaemon, lns: socket.socket, lac: socket.socket
) -> Received:
    """Ns 0 delivered, Ns 2 held (1 never comes), the worker stalled (SIGSTOP) while 3..40
    arrive: the held one and 3..33 fill the queue (maxlen 32), 34..40 find it full and pass
    at once with the LAC's Ns (fail-open). Returns what the LNS got by then."""
    assert daemon.proc is not None
    lac.sendto(data(0), LNS)
    lac.sendto(data(2), LNS)  # held: Ns 1 never comes
    got = receive_all(lns, 1)
    assert [ns_of(d) for d, _ in got] == [0]

    def awaiting() -> float:
        text = daemon.scrape_or_none()
        return -1 if text is None else metric(text, "l2tpreorder_inpath_awaiting_verdict")

    wait_until("Ns 2 held", lambda: awaiting() == 1)
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        for n in range(3, 41):
            lac.sendto(data(n), LNS)
        bypassed = receive_all(lns, 7)
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert [(frame_of(d), ns_of(d)) for d, _ in bypassed] == [(n, n) for n in range(34, 41)]
    return got + bypassed


def test_queue_overflow_the_lns_never_sees_an_ns_twice_or_step_back(
    ns: NetNs, tmp_path: Path
) -> None:
    """Issue 21 (4): with `renumber`, what was queued when the queue overflowed must not be
    numbered into the Ns the bypassed packets already carried (the old code released 2..33 as
    1..32 after the timeout: a step back, then 34..37 twice). The worker sees the episode,
    holds the backlog until the first packet queued after it (41), and numbers from there:
    the LNS sees one forward jump, no Ns twice, every frame once. The 30 s timeout shows that
    no timeout is involved."""
    daemon = InPathDaemon(
        ns, tmp_path, QUEUE, inpath={"queue": QUEUE, "queue_maxlen": 32},
        reorder={"timeout_ms": 30000},
    )  # fmt: skip
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40011)
    seen = overflow_with_a_held_packet(ns, daemon, lns, lac)

    def episodes() -> float:
        text = daemon.scrape_or_none()
        return -1 if text is None else metric(text, "l2tpreorder_inpath_fail_open_episodes_total")

    wait_until("the episode seen", lambda: episodes() >= 1)
    assert quiet(lns)  # the backlog waits: none of it numbered below the bypassed Ns
    for n in range(41, 46):  # queued: the episode raised the kernel's maxlen to make room
        lac.sendto(data(n), LNS)
    after = receive_all(lns, 32 + 5)
    # from just above the witness's Ns (41 + 1 + BYPASS_STRADDLE): a swap straddling the
    # episode's end cannot meet a passed Ns
    assert [(frame_of(d), ns_of(d)) for d, _ in after] == [(n, n + 41) for n in range(2, 34)] + [
        (n, n + 34) for n in range(41, 46)
    ]
    seen += after
    ns_seen = [ns_of(d) for d, _ in seen]
    never_steps_back(ns_seen)
    assert sorted(frame_of(d) for d, _ in seen) == [0, *range(2, 46)]  # each frame once
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_inpath_fail_open_episodes_total", cause="queue_full") >= 1
    assert metric(text, "l2tpreorder_skipped_sequence_numbers_total", reason="bypass") == 8
    assert metric(text, "l2tpreorder_inpath_awaiting_verdict") == 0
    assert metric(text, "l2tpreorder_inpath_kernel_queue_drops_total") == 0
    assert daemon.stop() == 0
    assert "NFQUEUE 3: the queue was full" in daemon.log.read_text()


def test_queue_overflow_with_preserve_the_bypass_overtakes_the_queue(
    ns: NetNs, tmp_path: Path
) -> None:
    """With `preserve` the LNS judges the LAC's own Ns: we renumber nothing, so nothing waits
    for a witness. What it sees is the bypass delivering newer frames ahead of the queued ones
    (inherent to fail-open): 0, 34..40, then 2..33 once Ns 1 is given up, and 41.. in order."""
    daemon = InPathDaemon(
        ns, tmp_path, QUEUE, inpath={"queue": QUEUE, "queue_maxlen": 32},
        reorder={"timeout_ms": 100, "sequencing": "preserve"},
    )  # fmt: skip
    daemon.start()
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40012)
    seen = overflow_with_a_held_packet(ns, daemon, lns, lac)
    seen += receive_all(lns, 32)
    for n in range(41, 46):
        lac.sendto(data(n), LNS)
    seen += receive_all(lns, 5)
    assert [(frame_of(d), ns_of(d)) for d, _ in seen] == [
        (n, n) for n in (0, *range(34, 41), *range(2, 34), *range(41, 46))
    ]
    assert daemon.stop() == 0
