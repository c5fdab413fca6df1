"""In-path mode on a router in front of a remote LNS (iptables FORWARD), IPv4 and IPv6, with
tshark checking every checksum of what the LNS receives (renumber and strip rewrite packets).

    [l2rx-lac-PID] 198.18.11.1 fd00:11::1 --veth-- [l2rx-rtr-PID] --veth-- 198.18.12.1 fd00:12::1
                                                    l2tpreorder         [l2rx-lnsx-PID] tcpdump
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_root, need_tool
from tests.integration.inpath_helpers import InPathDaemon, data, frame_of, ns_of, receive_all
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


@pytest.fixture
def router() -> Iterator[Router]:
    need_root()
    for tool in ("iptables", "ip6tables", "tcpdump", "tshark", "ip"):
        need_tool(tool)
    r = Router()
    try:
        for tool, lns in (("iptables", LNS4), ("ip6tables", LNS6)):
            r.rtr.run(
                tool, "-A", "FORWARD", "-p", "udp", "-d", lns, "--dport", "1701",
                "-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass",
            )  # fmt: skip
        yield r
    finally:
        r.close()


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
    order = list(sent)
    for i in range(5, len(order) - 5, 10):
        order[i], order[i + 1] = order[i + 1], order[i]
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
