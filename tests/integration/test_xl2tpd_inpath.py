"""In-path mode in front of Debian's real xl2tpd, left on its normal port 1701 with an untouched
config (issue 15): an iptables INPUT rule queues the LAC's datagrams to `l2tpreorder run`.

The lab (xl2tpd_lab.py) runs a real xl2tpd LAC whose data the impairment proxy numbers and
reorders. Witnesses: the frame numbers xl2tpd hands its (fake) pppd, in order, and xl2tpd's own
log (the peer it names; no refused data messages). tcpdump sits before netfilter's INPUT hook, so
its capture shows the impaired order, not ours: it is not a witness here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2tpreorder import wire
from tests.conftest import need_root, need_tool
from tests.integration.inpath_helpers import InPathDaemon, queued_namespace
from tests.integration.xl2tpd_lab import MID_LNS_SIDE, Lab, Scenario, lns_conf
from tests.netns import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRAMES = 1000
REJECTED = "unable to expand payload"


def inpath(sc: Scenario) -> Scenario:
    return dataclasses.replace(sc, inpath=True)


SWAPS = inpath(Scenario("swaps", frames=FRAMES, displace=1, displace_rate=0.1))
DISPLACE4 = inpath(Scenario("displace4", frames=FRAMES, displace=4, displace_rate=0.1))
LOSS2 = inpath(Scenario("loss2", frames=FRAMES, drop=[(300, 2)]))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need_root()
    for tool in ("xl2tpd", "tcpdump", "tshark", "ip", "unshare", "ss", "mount", "iptables"):
        need_tool(tool)
    lab = Lab(Path(tmp_path_factory.mktemp("xl2tpd-inpath-lab")))
    try:
        lab.open()
        yield lab
    finally:
        lab.close()


@pytest.mark.parametrize("sc", [SWAPS, DISPLACE4], ids=lambda s: s.name)
def test_inpath_delivers_reordered_frames_in_order_to_untouched_xl2tpd(
    lab: Lab, sc: Scenario
) -> None:
    o = lab.run(sc)
    assert len(o.frames_of("displaced")) >= 0.05 * FRAMES, o.describe()
    assert o.received == list(range(FRAMES)), o.describe()
    assert REJECTED not in o.lns_log
    # xl2tpd saw the peer's own address (here the proxy's, which plays the LAC's network).
    assert f"Connection established to {MID_LNS_SIDE}, " in o.lns_log, o.lns_log[-2000:]
    assert "127.0.0.1" not in o.lns_log


def test_inpath_renumbers_over_lost_frames(lab: Lab) -> None:
    o = lab.run(LOSS2)
    lost = {300, 301}
    assert o.received == [n for n in range(FRAMES) if n not in lost], o.describe()
    assert REJECTED not in o.lns_log  # renumbered: xl2tpd never saw the gap


def sccrq(tunnel_id: int, host: bytes) -> bytes:
    return wire.build_control(0, 0, 0, 0, [
        wire.avp_message_type(wire.MessageType.SCCRQ),
        wire.AvpValue(2, b"\x01\x00"),  # Protocol Version 1.0
        wire.AvpValue(3, b"\x00\x00\x00\x03"),  # Framing Capabilities
        wire.AvpValue(7, host),  # Host Name
        wire.avp_assigned_tunnel_id(tunnel_id),
    ])  # fmt: skip


def is_sccrp(datagram: bytes) -> bool:
    parsed = wire.parse_control(datagram)
    return not isinstance(parsed, str) and parsed.message_type == wire.MessageType.SCCRP


def test_two_lacs_with_the_same_tunnel_id_both_get_sccrp(tmp_path: Path) -> None:
    """Relay mode shows xl2tpd one address for every LAC, and xl2tpd refuses a second SCCRQ
    for the same tunnel ID from it; in-path, each LAC keeps its own address."""
    need_tool("xl2tpd")
    with queued_namespace("sccrq", 3) as ns:
        conf = tmp_path / "lns.conf"
        (tmp_path / "secrets").write_text("")
        (tmp_path / "lns.ppp").write_text("")
        conf.write_text(lns_conf(tmp_path, "127.0.0.1", 1701))
        log = tmp_path / "xl2tpd.log"
        ns.popen(["xl2tpd", "-D", "-c", str(conf), "-p", str(tmp_path / "x.pid"),
                  "-C", str(tmp_path / "x.control")], log)
        wait_until("xl2tpd listening", lambda: "Listening on IP" in log.read_text())
        daemon = InPathDaemon(ns, tmp_path, 3)
        daemon.start()
        lacs = [ns.udp("127.0.0.2", 1701), ns.udp("127.0.0.3", 1701)]
        for i, lac in enumerate(lacs):
            lac.sendto(sccrq(1, b"lac-%d" % i), ("127.0.0.1", 1701))
        for lac in lacs:
            lac.settimeout(15)
            reply, addr = lac.recvfrom(65535)
            assert addr == ("127.0.0.1", 1701)
            assert is_sccrp(reply), reply
        assert "twice" not in log.read_text()
        assert daemon.stop() == 0
