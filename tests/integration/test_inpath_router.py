"""In-path mode on a router in front of a remote LNS (iptables FORWARD), IPv4 and IPv6, with
tshark checking every checksum of what the LNS receives (renumber and strip rewrite packets).
The router loads the iptables rules `l2tpreorder rules` prints for it, verbatim (issue 21: with
the reassembly rule among them, big datagrams split into IP fragments are ordered too; bit
flipped datagrams pass untouched and are never made good nor allowed to move a session).

    [l2rx-lac-PID] 198.18.11.1 fd00:11::1 --veth-- [l2rx-rtr-PID] --veth-- 198.18.12.1 fd00:12::1
                                                    l2tpreorder         [l2rx-lnsx-PID] tcpdump
"""

from __future__ import annotations

import shlex
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2tpreorder.config import config_from_dict
from l2tpreorder.tools.rules import render
from tests.conftest import need_root, need_tool
from tests.engine_helpers import swap_neighbours
from tests.integration.inpath_helpers import (
    InPathDaemon,
    data,
    frame_of,
    metric,
    ns_of,
    quiet,
    receive_all,
)
from tests.netns import NetNs, wait_until

pytestmark = [pytest.mark.integration]

QUEUE = 6
LAC4, LNS4 = "198.18.11.1", "198.18.12.1"
LAC6, LNS6 = "fd00:11::1", "fd00:12::1"


class Router:
    def __init__(self) -> None:
        self.lac = NetNs("lac")
        self.rtr = NetNs("rtr")
        self.lns = NetNs("lnsx")
        pid = self.lac.name.rsplit("-", 1)[1]
        links = (
            (self.lac, f"l2ria{pid}", LAC4, LAC6, f"l2rib{pid}", "198.18.11.2", "fd00:11::2"),
            (self.lns, f"l2ric{pid}", LNS4, LNS6, f"l2rid{pid}", "198.18.12.2", "fd00:12::2"),
        )
        for end, end_if, a4, a6, rtr_if, r4, r6 in links:
            subprocess.run(
                ["ip", "link", "add", end_if, "netns", end.name, "type", "veth",
                 "peer", "name", rtr_if, "netns", self.rtr.name],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            for space, ifname, v4, v6, gw4, gw6 in (
                (end, end_if, a4, a6, r4, r6),
                (self.rtr, rtr_if, r4, r6, None, None),
            ):
                space.run("ip", "addr", "add", f"{v4}/24", "dev", ifname)
                space.run("ip", "-6", "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
                space.run("ip", "link", "set", ifname, "up")
                if gw4 is not None and gw6 is not None:
                    space.run("ip", "route", "add", "default", "via", gw4)
                    space.run("ip", "-6", "route", "add", "default", "via", gw6)
        self.rtr.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.rtr.run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")

    def close(self) -> None:
        for space in (self.lac, self.rtr, self.lns):
            space.close()


def printed_rules(block: str, *, reassembly: bool = True) -> list[list[str]]:
    """The iptables lines of `block` ("A": LNS host, "B": router) that `l2tpreorder rules`
    prints for this lab; without `reassembly`, only the queue rules (what issue 21 found)."""
    config = config_from_dict({"mode": "inpath", "inpath": {"queue": QUEUE}})
    marker = f"# --- {block}."
    text = render(config, lns4=LNS4, lns6=LNS6).split(marker)[1].split(marker)[0]
    lines = [shlex.split(line) for line in text.splitlines() if line.startswith("ip")]
    assert sum("NFQUEUE" in argv for argv in lines) == (2 if block == "B" else 4), lines
    return [argv for argv in lines if reassembly or "NFQUEUE" in argv]


def lab(block: str = "B", *, reassembly: bool = True) -> Iterator[Router]:
    need_root()
    for tool in ("iptables", "ip6tables", "tcpdump", "tshark", "ip", "nstat"):
        need_tool(tool)
    r = Router()
    try:
        for argv in printed_rules(block, reassembly=reassembly):
            (r.rtr if block == "B" else r.lns).run(*argv)
        yield r
    finally:
        r.close()


@pytest.fixture
def router() -> Iterator[Router]:
    yield from lab()


@pytest.fixture
def router_without_reassembly() -> Iterator[Router]:
    yield from lab(reassembly=False)


@pytest.fixture
def lns_host() -> Iterator[Router]:
    """The same namespaces, the rules of block A (LNS on this host) loaded in the LNS's."""
    yield from lab("A")


def tshark_fields(pcap: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(pcap), "-o", "udp.check_checksum:TRUE", "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(
        [*argv, "-Y", "l2tp"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("sequencing", ["renumber", "strip"])
def test_router_forward_rule_orders_and_checksums_are_valid(
    router: Router, tmp_path: Path, sequencing: str
) -> None:
    pcap = tmp_path / "lns.pcap"
    tcpdump_log = tmp_path / "tcpdump.log"
    router.lns.popen(
        ["tcpdump", "-i", "any", "-n", "-U", "-w", str(pcap), "udp port 1701"], tcpdump_log
    )
    wait_until("tcpdump", lambda: "listening on" in tcpdump_log.read_text())
    daemon = InPathDaemon(
        router.rtr, tmp_path, QUEUE, reorder={"timeout_ms": 100, "sequencing": sequencing}
    )
    daemon.start()
    sent = [n for n in range(60) if n not in (20, 21)]  # two lost: renumber closes the gap
    order = swap_neighbours(sent, range(5, len(sent) - 5, 10))
    expected: dict[str, list[int]] = {}
    for lac_addr, lns_addr in ((LAC4, LNS4), (LAC6, LNS6)):
        lns = router.lns.udp(lns_addr, 1701)
        lac = router.lac.udp(lac_addr, 1701)
        for n in order:
            lac.sendto(data(n, tunnel=4 if ":" not in lac_addr else 6), (lns_addr, 1701))
        got = receive_all(lns, len(sent))
        assert [frame_of(d) for d, _ in got] == sent  # in order, nothing lost or doubled
        assert {addr[0] for _, addr in got} == {lac_addr}  # the LAC's real address
        if sequencing == "renumber":
            assert [ns_of(d) for d, _ in got] == list(range(len(sent)))
        else:
            assert all(not d[0] & 0x08 for d, _ in got)  # S bit cleared, no Ns
        expected[lac_addr] = sent
        lns.close()
        lac.close()
    assert daemon.stop() == 0
    wait_until("the capture to hold every datagram", lambda: len(
        tshark_fields(pcap, "udp.checksum.status")) >= 2 * len(sent), timeout=60)
    rows = tshark_fields(pcap, "ip.src", "ipv6.src", "udp.checksum.status", "l2tp.Ns")
    assert len(rows) == 2 * len(sent)
    # tshark's own verdict on each UDP checksum: 1 = good (0 bad, 2 unverified).
    assert {row[2] for row in rows} == {"1"}, rows
    if sequencing == "renumber":
        for src in (LAC4, LAC6):
            ns_seen = [int(r[3]) for r in rows if src in (r[0], r[1])]
            assert ns_seen == list(range(len(sent)))


UDP = socket.IPPROTO_UDP
BIG_BODY = 2990  # + the 10-byte L2TP header (S bit): 3,000 bytes, 3 IP fragments at MTU 1500


def big_or_small(n: int) -> bytes:
    """Even Ns: a 3,000-byte L2TP data message; odd: a small one (same session)."""
    body = b"frame-%05d" % n
    return data(n, body + b"." * (BIG_BODY - len(body)) if n % 2 == 0 else body)


def swapped(count: int) -> list[int]:
    """0..count-1 with a big and the small behind it swapped every 4 (not at the start)."""
    return swap_neighbours(range(count), range(4, count - 1, 4))


def bigs_and_smalls_in_order(lab: Router, count: int) -> list[list[bytes]]:
    """Over IPv4, then IPv6: `count` bigs and smalls of one session (`swapped`) from the LAC
    reach the LNS in order, renumbered contiguous, each once. Returns what it got, by family."""
    got_by_family = []
    for lac_addr, lns_addr in ((LAC4, LNS4), (LAC6, LNS6)):
        lns = lab.lns.udp(lns_addr, 1701)
        lac = lab.lac.udp(lac_addr, 1701)
        try:
            for n in swapped(count):
                lac.sendto(big_or_small(n), (lns_addr, 1701))
            got = [d for d, _ in receive_all(lns, count)]
            assert [frame_of(d) for d in got] == list(range(count)), lac_addr
            assert [ns_of(d) for d in got] == list(range(count)), lac_addr
            assert quiet(lns), "more than one copy of a message"
        finally:
            lns.close()
            lac.close()
        got_by_family.append(got)
    return got_by_family


def test_big_datagrams_split_into_fragments_are_ordered_and_renumbered(
    router: Router, tmp_path: Path
) -> None:
    """Issue 21 (1): with the printed rules (reassembly included) the queue gets each 3,000-byte
    message whole, so bigs and smalls of one session reach the LNS in order, Ns contiguous and
    never repeated; the daemon saw no fragment. The LNS socket gets whole datagrams (its own
    kernel reassembles what the router fragments again)."""
    daemon = InPathDaemon(
        router.rtr, tmp_path, QUEUE, reorder={"timeout_ms": 2000, "sequencing": "renumber"}
    )
    daemon.start()
    for got in bigs_and_smalls_in_order(router, 40):
        assert [len(d) for d in got][:2] == [BIG_BODY + 10, 10 + len(b"frame-00001")]
    text = daemon.scrape()
    passed = "l2tpreorder_inpath_passed_not_ours_total"
    assert metric(text, passed, reason="fragment") == 0
    assert metric(text, passed, reason="not_udp") == 0
    assert daemon.stop() == 0
    assert "fragment of a UDP datagram reached" not in daemon.log.read_text()


def test_lns_host_rules_order_fragmented_datagrams_ipv4_and_ipv6(
    lns_host: Router, tmp_path: Path
) -> None:
    """Block A (INPUT): IPv4 is reassembled before INPUT anyway, IPv6 only thanks to the
    printed raw-table rule. The daemon runs beside the LNS; the same traffic as above."""
    daemon = InPathDaemon(
        lns_host.lns, tmp_path, QUEUE, reorder={"timeout_ms": 2000, "sequencing": "renumber"}
    )
    daemon.start()
    bigs_and_smalls_in_order(lns_host, 24)
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_inpath_passed_not_ours_total", reason="fragment") == 0
    assert daemon.stop() == 0


def test_without_the_reassembly_rule_the_daemon_reports_fragments(
    router_without_reassembly: Router, tmp_path: Path
) -> None:
    """The setup issue 21 found broken (queue rule only, no conntrack on the router): the first
    fragment of each big message reaches the queue. The daemon passes it untouched, counts it
    (passed_not_ours{reason="fragment"}) and logs the fix once."""
    router = router_without_reassembly
    daemon = InPathDaemon(router.rtr, tmp_path, QUEUE, reorder={"sequencing": "renumber"})
    daemon.start()
    lns = router.lns.udp(LNS4, 1701)
    lac = router.lac.udp(LAC4, 1701)
    count = 12
    for n in range(count):
        lac.sendto(big_or_small(n), (LNS4, 1701))
    assert sorted(frame_of(d) for d, _ in receive_all(lns, count)) == list(range(count))
    passed = "l2tpreorder_inpath_passed_not_ours_total"

    def fragments() -> float:
        text = daemon.scrape_or_none()
        return metric(text, passed, reason="fragment") if text is not None else -1

    wait_until("the fragments counted", lambda: fragments() == count // 2)
    assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert log.count("fragment of a UDP datagram reached the queue") == 1, log
    assert "l2tpreorder rules" in log


def udp_segment(src: str, dst: str, payload: bytes, bad_bit: int | None) -> bytes:
    """A UDP header + payload from 1701 to 1701 with its checksum computed over the IPv4 or
    IPv6 pseudo-header; then, with `bad_bit`, that bit of the payload flipped."""
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    s, d = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    udp = bytearray(struct.pack("!HHHH", 1701, 1701, 8 + len(payload), 0) + payload)
    pseudo = s + d + (
        struct.pack("!HH", 17, len(udp)) if family == socket.AF_INET
        else struct.pack("!II", len(udp), 17)
    )  # fmt: skip
    words = pseudo + bytes(udp) + b"\0" * (len(udp) % 2)
    total = sum(struct.unpack(f"!{len(words) // 2}H", words))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", udp, 6, (~total & 0xFFFF) or 0xFFFF)
    if bad_bit is not None:
        udp[8 + bad_bit // 8] ^= 0x80 >> (bad_bit % 8)
    return bytes(udp)


def csum_errors(lns: NetNs) -> dict[str, int]:
    """The LNS kernel's UDP checksum error counters (IPv4, IPv6): the independent judge."""
    out = lns.run("nstat", "-az", "UdpInCsumErrors", "Udp6InCsumErrors").stdout
    found = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:] if line}
    return {name: found.get(name, 0) for name in ("UdpInCsumErrors", "Udp6InCsumErrors")}


@pytest.mark.parametrize("sequencing", ["renumber", "strip"])
def test_bit_flipped_datagrams_pass_untouched_and_move_no_session(
    router: Router, tmp_path: Path, sequencing: str
) -> None:
    """Issue 21 (2): datagrams with a wrong UDP checksum (a flipped payload bit; IPv6 also the
    illegal zero), some with the Ns the next genuine packets carry, one far ahead, in a stream
    with swaps: the LNS gets every genuine message in order with Ns 0.. contiguous (renumber)
    or no Ns (strip), and its kernel counts every corrupt one as a checksum error: none was
    made good (strip used to recompute checksums from scratch), none moved the session."""
    daemon = InPathDaemon(
        router.rtr, tmp_path, QUEUE, reorder={"timeout_ms": 2000, "sequencing": sequencing}
    )
    daemon.start()
    before = csum_errors(router.lns)
    count = 40
    corrupt_sent = {"UdpInCsumErrors": 0, "Udp6InCsumErrors": 0}
    for lac_addr, lns_addr, family, counter in (
        (LAC4, LNS4, socket.AF_INET, "UdpInCsumErrors"),
        (LAC6, LNS6, socket.AF_INET6, "Udp6InCsumErrors"),
    ):
        lns = router.lns.udp(lns_addr, 1701)
        lac = router.lac.udp(lac_addr, 1701)
        raw = router.lac.call(lambda f=family: socket.socket(f, socket.SOCK_RAW, UDP))
        order = swap_neighbours(range(count), range(5, count - 5, 10))
        for i, n in enumerate(order):
            lac.sendto(data(n), (lns_addr, 1701))
            if i % 5 == 2:  # a corrupt copy of a genuine message still to come, and one far ahead
                for ns, bit in ((n + 2, 8 * 20 + 3), (n + 20000, 8 * 12)):
                    body = data(ns, b"CORRUPT-%05d" % ns)
                    raw.sendto(udp_segment(lac_addr, lns_addr, body, bit), (lns_addr, 0))
                    corrupt_sent[counter] += 1
        if family == socket.AF_INET6:  # zero: illegal over IPv6, the LNS drops it
            zero = bytearray(udp_segment(lac_addr, lns_addr, data(count + 1, b"CORRUPT-z"), None))
            zero[6:8] = b"\0\0"
            raw.sendto(bytes(zero), (lns_addr, 0))
            corrupt_sent[counter] += 1
        got = receive_all(lns, count)
        assert [frame_of(d) for d, _ in got] == list(range(count)), lac_addr
        if sequencing == "renumber":
            assert [ns_of(d) for d, _ in got] == list(range(count))
        else:
            assert all(not d[0] & 0x08 for d, _ in got)
        assert quiet(lns), "a corrupt datagram reached the LNS socket"
        for s in (lns, lac, raw):
            s.close()
    expected = {k: before[k] + v for k, v in corrupt_sent.items()}
    wait_until(f"the LNS kernel to count {corrupt_sent} checksum errors",
               lambda: csum_errors(router.lns) == expected)  # fmt: skip
    text = daemon.scrape()
    passed = "l2tpreorder_inpath_passed_not_ours_total"
    assert metric(text, passed, reason="bad_checksum") == sum(corrupt_sent.values())
    assert daemon.stop() == 0


def test_printed_nft_router_block_reassembles_before_the_forward_rule(tmp_path: Path) -> None:
    """Block B's nft form on the router: its prerouting `ct` rule makes the forward rule see a
    3,000-byte message whole (IPv4 3028 bytes, IPv6 3048), not its 1,500-byte first fragment.
    This kernel lacks nft_queue, so the forward rules count (`counter`) instead of queueing,
    as tests/tools/test_rules.py loads them; the match and the reassembly are the kernel's."""
    need_root()
    need_tool("nft")
    config = config_from_dict({"mode": "inpath", "inpath": {"queue": QUEUE}})
    block = render(config, lns4=LNS4, lns6=LNS6).split("# --- B. the same with nft")[1]
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith("nft ")]
    r = Router()
    try:
        for argv in commands:
            if "queue" in argv:
                argv = [*argv[: argv.index("queue")], "counter"]
            r.rtr.run(*argv)
        for lac_addr, lns_addr in ((LAC4, LNS4), (LAC6, LNS6)):
            lac = r.lac.udp(lac_addr, 1701)
            lac.sendto(big_or_small(0), (lns_addr, 1701))
            lac.close()

        def counted() -> list[str]:
            table = ("inet", "l2tpreorder_forward")
            chain = r.rtr.run("nft", "list", "chain", *table, "forward").stdout
            return [line.split("counter ")[1] for line in chain.splitlines() if "counter" in line]

        whole = ["packets 1 bytes 3028", "packets 1 bytes 3048"]
        wait_until(f"the forward rules to count {whole}", lambda: counted() == whole)
    finally:
        r.close()
