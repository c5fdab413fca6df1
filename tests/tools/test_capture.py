"""The capture reader: real third-party captures, every file format and link layer, fragments,
truncation and the reasons it gives for what it cannot read. tshark is the referee."""

from __future__ import annotations

import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from l2tpreorder.tools import capture
from l2tpreorder.tools.capture import CaptureReader, Reassembler, UdpDatagram, Unreadable
from tests import pcapgen as g
from tests.conftest import need_tool, shared_pcap

SHARED_EXPECTED: dict[str, tuple[int, int, dict[str, int]]] = {
    # file: (frames, L2TP-port datagrams, unreadable reasons)
    "jnetpcap_test-l2tp.pcap": (168, 168, {}),
    "tcpdump_l2tp-avp-overflow.pcap": (20, 0, {capture.TRUNCATED: 20}),
    "packetnet_l2tp.pcap": (1, 1, {}),
    "xdp2_l7_l2tp.pcap": (4, 4, {}),
    "xdp2_l2tp.pcap": (
        38,
        0,
        {capture.L2TPV3_IP: 25, capture.OTHER_IP_PROTOCOL: 6, capture.NOT_IP: 7},
    ),
    "flowcontainer_l2tp.pcap": (2350, 0, {capture.ENCRYPTED: 2342, capture.IKE: 8}),
}


def read_all(path: Path, **kw: object) -> tuple[list[UdpDatagram], list[Unreadable], CaptureReader]:
    reader = CaptureReader(path, **kw)  # type: ignore[arg-type]
    items = list(reader)
    stats = reader.stats
    assert stats.frames == stats.datagrams + stats.fragments + sum(stats.unreadable.values())
    return (
        [i for i in items if isinstance(i, UdpDatagram)],
        [i for i in items if isinstance(i, Unreadable)],
        reader,
    )


def tshark(path: Path, fields: list[str], display_filter: str = "") -> list[list[str]]:
    exe = need_tool("tshark")
    cmd = [exe, "-r", str(path), "-n", "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    if display_filter:
        cmd += ["-Y", display_filter]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


# --- real captures ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHARED_EXPECTED))
def test_shared_capture_counts(name: str) -> None:
    frames, datagrams, reasons = SHARED_EXPECTED[name]
    dgrams, _, reader = read_all(shared_pcap(name))
    assert reader.stats.frames == frames
    assert len(dgrams) == reader.stats.datagrams == datagrams
    assert reader.stats.unreadable == reasons


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(SHARED_EXPECTED))
def test_shared_capture_agrees_with_tshark(name: str) -> None:
    path = shared_pcap(name)
    dgrams, unreadable, _ = read_all(path)
    rows = tshark(
        path,
        ["frame.number", "udp.srcport", "udp.dstport", "udp.payload", "frame.len", "frame.cap_len"],
        "udp.port == 1701",
    )
    whole = {int(r[0]): r for r in rows if r[4] == r[5]}
    ours = {d.frame: d for d in dgrams}
    assert sorted(ours) == sorted(whole)
    for number, d in ours.items():
        r = whole[number]
        assert (d.sport, d.dport) == (int(r[1]), int(r[2]))
        assert d.payload.hex() == r[3]
    # what tshark calls cut short by the snaplen is what we report as truncated
    cut = tshark(path, ["frame.number"], "frame.cap_len < frame.len")
    assert sorted(int(r[0]) for r in cut) == sorted(
        u.frame for u in unreadable if u.reason == capture.TRUNCATED
    )


@pytest.mark.integration
def test_encrypted_capture_agrees_with_tshark_on_esp() -> None:
    path = shared_pcap("flowcontainer_l2tp.pcap")
    _, unreadable, _ = read_all(path)
    esp = {int(r[0]) for r in tshark(path, ["frame.number"], "esp")}
    assert esp == {u.frame for u in unreadable if u.reason == capture.ENCRYPTED}


# --- generated: file formats --------------------------------------------------------------------

T0 = 1_700_000_000.0


def sample_ips() -> list[bytes]:
    return [
        g.udp_ip("192.0.2.1", "198.51.100.7", g.l2tp_data(1, 2, b"\xff\x03\x00\x21" + bytes([i])))
        for i in range(5)
    ] + [g.udp_ip("2001:db8::1", "2001:db8::2", g.l2tp_data(3, 4, b"v6" * 20), 40000, 1701)]


def check_sample(path: Path, step: float, tolerance: float) -> None:
    dgrams, unreadable, _ = read_all(path)
    assert not unreadable
    assert [d.frame for d in dgrams] == list(range(1, 7))
    for i, d in enumerate(dgrams):
        assert abs(d.ts - (T0 + i * step)) <= tolerance, (d.ts, T0 + i * step)
    assert dgrams[0].payload == g.l2tp_data(1, 2, b"\xff\x03\x00\x21\x00")
    assert (dgrams[5].src, dgrams[5].sport, dgrams[5].dst) == ("2001:db8::1", 40000, "2001:db8::2")


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_micro_and_nano_both_byte_orders(tmp_path: Path, nano: bool, big_endian: bool) -> None:
    step = 0.000000123 if nano else 0.000123
    frames = [(T0 + i * step, g.eth(ip)) for i, ip in enumerate(sample_ips())]
    path = g.write_pcap(tmp_path / "x.pcap", frames, g.ETHERNET, nano=nano, big_endian=big_endian)
    # float seconds at today's epoch hold ~0.24 us: enough to keep nanosecond steps ordered
    check_sample(path, step, 3e-7 if nano else 1e-6)


@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_several_interfaces_link_types_and_resolutions(
    tmp_path: Path, big_endian: bool
) -> None:
    ips = sample_ips()
    step = 0.001
    packets = [
        (i % 3, T0 + i * step, [g.eth, g.sll2, lambda ip: ip][i % 3](ip))
        for i, ip in enumerate(ips)
    ]
    path = g.write_pcapng(
        tmp_path / "x.pcapng", [(g.ETHERNET, 6), (g.SLL2, 9), (g.RAW, 3)], packets, big_endian
    )
    check_sample(path, step, 1e-6)
    _, _, reader = read_all(path)
    assert reader.stats.file_format == "pcapng"
    assert reader.stats.linktypes == {g.ETHERNET, g.SLL2, g.RAW}


@pytest.mark.integration
def test_generated_files_are_valid_for_tshark(tmp_path: Path) -> None:
    frames = [(T0 + i, g.eth(ip)) for i, ip in enumerate(sample_ips())]
    files = [
        g.write_pcap(tmp_path / "be_nano.pcap", frames, g.ETHERNET, nano=True, big_endian=True),
        g.write_pcapng(
            tmp_path / "be.pcapng",
            [(g.ETHERNET, 6), (g.SLL2, 9)],
            [(i % 2, ts, f if i % 2 == 0 else g.sll2(f[14:])) for i, (ts, f) in enumerate(frames)],
            big_endian=True,
        ),
    ]
    for path in files:
        rows = tshark(path, ["frame.number", "l2tp.tunnel", "l2tp.session"], "l2tp")
        assert [(r[1], r[2]) for r in rows] == [("1", "2")] * 5 + [("3", "4")]


# --- generated: link layers ---------------------------------------------------------------------


LINK_CASES = {
    "ethernet": (g.ETHERNET, g.eth),
    "vlan": (g.ETHERNET, lambda ip: g.eth(ip, [(0x8100, 10)])),
    "qinq": (g.ETHERNET, lambda ip: g.eth(ip, [(0x88A8, 100), (0x8100, 10)])),
    "pppoe": (g.ETHERNET, g.pppoe),
    "vlan_pppoe": (
        g.ETHERNET,
        lambda ip: g.eth(g.pppoe(ip)[14:], [(0x8100, 7)], etype=0x8864),
    ),
    "sll": (g.SLL, g.sll),
    "sll2": (g.SLL2, g.sll2),
    "raw": (g.RAW, lambda ip: ip),
    "ipv4_or_ipv6_linktype": (None, lambda ip: ip),
    "null_le": (g.NULL, g.null),
    "null_be": (g.NULL, lambda ip: g.null(ip, order=">")),
    "loop": (g.LOOP, g.loop),
    "ppp": (g.PPP, g.ppp_hdlc),
}


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("case", sorted(LINK_CASES))
def test_link_layers(tmp_path: Path, case: str, family: str) -> None:
    linktype, wrap = LINK_CASES[case]
    src, dst = ("10.1.1.1", "10.2.2.2") if family == "ipv4" else ("fd00::1", "fd00::2")
    payload = g.l2tp_data(7, 9, b"\xff\x03\x00\x21hello", ns=5)
    ip = g.udp_ip(src, dst, payload, 1701, 33000)
    if linktype is None:
        linktype = g.IPV4 if family == "ipv4" else g.IPV6
    path = g.write_pcap(tmp_path / "x.pcap", [(T0, wrap(ip))], linktype)
    dgrams, unreadable, _ = read_all(path)
    assert not unreadable
    assert [(d.src, d.sport, d.dst, d.dport, d.payload) for d in dgrams] == [
        (src, 1701, dst, 33000, payload)
    ]


def test_ipv6_extension_headers_are_walked(tmp_path: Path) -> None:
    payload = g.l2tp_data(1, 1, b"ext")
    ip = g.ipv6_with_ext(g.udp_ip("fd00::1", "fd00::2", payload))
    dgrams, unreadable, _ = read_all(g.write_pcap(tmp_path / "x.pcap", [(T0, g.eth(ip))], 1))
    assert not unreadable and dgrams[0].payload == payload


def test_configured_ports(tmp_path: Path) -> None:
    ips = [g.udp_ip("10.0.0.1", "10.0.0.2", b"\x00\x02abcd", 5000, 1701 + i) for i in range(3)]
    path = g.write_pcap(tmp_path / "x.pcap", [(T0, g.eth(ip)) for ip in ips], g.ETHERNET)
    dgrams, unreadable, _ = read_all(path, ports=(1702,))
    assert [d.dport for d in dgrams] == [1702]
    assert [u.reason for u in unreadable] == [capture.OTHER_UDP] * 2


# --- generated: fragments -----------------------------------------------------------------------


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_outer_fragments_are_reassembled_in_any_order_and_interleaved(
    tmp_path: Path, family: str
) -> None:
    src, dst = ("10.1.1.1", "10.2.2.2") if family == "ipv4" else ("fd00::1", "fd00::2")
    big1 = g.l2tp_data(1, 1, bytes(range(256)) * 12, ns=1)
    big2 = g.l2tp_data(1, 1, bytes(reversed(range(256))) * 9, ns=2)
    if family == "ipv4":
        ip1, ip2 = g.udp_ip(src, dst, big1), g.udp_ip(src, dst, big2)
        ip2 = ip2[:4] + b"\x00\x02" + ip2[6:]  # a different IP identification
        f1, f2 = g.fragment_ipv4(ip1, 1200), g.fragment_ipv4(ip2, 1200)
    else:
        f1 = g.fragment_ipv6(g.udp_ip(src, dst, big1), 1200, ident=1)
        f2 = g.fragment_ipv6(g.udp_ip(src, dst, big2), 1200, ident=2)
    assert len(f1) == 3 and len(f2) == 2
    order = [f1[2], f2[1], f1[0], f2[0], f1[1]]  # last first, interleaved
    frames = [(T0 + i * 0.001, g.eth(p)) for i, p in enumerate(order)]
    dgrams, unreadable, reader = read_all(g.write_pcap(tmp_path / "f.pcap", frames, g.ETHERNET))
    assert not unreadable
    assert [d.payload for d in dgrams] == [big2, big1]
    assert [d.frame for d in dgrams] == [4, 5]  # the frame that completed each one
    assert reader.stats.reassembled == 2 and reader.stats.fragments == 3


def test_incomplete_fragments_are_reported_not_fatal(tmp_path: Path) -> None:
    ip = g.udp_ip("10.1.1.1", "10.2.2.2", g.l2tp_data(1, 1, b"x" * 3000))
    frags = g.fragment_ipv4(ip, 1200)
    whole = g.udp_ip("10.1.1.1", "10.2.2.2", g.l2tp_data(1, 1, b"small"))
    frames = [(T0, g.eth(frags[0])), (T0 + 0.1, g.eth(frags[2])), (T0 + 0.2, g.eth(whole))]
    dgrams, unreadable, _ = read_all(g.write_pcap(tmp_path / "f.pcap", frames, g.ETHERNET))
    assert len(dgrams) == 1
    assert sorted((u.frame, u.reason) for u in unreadable) == [
        (1, capture.FRAGMENT_INCOMPLETE),
        (2, capture.FRAGMENT_INCOMPLETE),
    ]


def test_fragment_state_is_bounded_in_entries_and_age(tmp_path: Path) -> None:
    frames = []
    for i in range(50):  # 50 datagrams whose last fragment never comes
        ip = g.udp_ip("10.1.1.1", "10.2.2.2", g.l2tp_data(1, 1, b"y" * 2000))
        ip = ip[:4] + i.to_bytes(2, "big") + ip[6:]
        frames.append((T0 + i * 0.01, g.eth(g.fragment_ipv4(ip, 1200)[0])))
    path = g.write_pcap(tmp_path / "f.pcap", frames, g.ETHERNET)
    reasm = Reassembler(max_pending=8)
    peak = 0
    reader = CaptureReader(path, reassembler=reasm)
    for _ in reader:
        peak = max(peak, reasm.pending)
    assert peak <= 8
    assert reader.stats.unreadable == {capture.FRAGMENT_INCOMPLETE: 50}
    # age: one fragment, then a packet 31 s later expires it while reading, not at the end
    ip = g.udp_ip("10.1.1.1", "10.2.2.2", g.l2tp_data(1, 1, b"z" * 2000))
    late = g.udp_ip("10.1.1.1", "10.2.2.2", g.l2tp_data(1, 1, b"late"))
    frames = [(T0, g.eth(g.fragment_ipv4(ip, 1200)[0])), (T0 + 31, g.eth(late))]
    reasm = Reassembler()
    seen = []
    for item in CaptureReader(g.write_pcap(tmp_path / "a.pcap", frames, 1), reassembler=reasm):
        seen.append((type(item).__name__, reasm.pending))
    assert seen[0] == ("Unreadable", 0)  # given up before the 31-s-later datagram is yielded
    assert seen[1][0] == "UdpDatagram"


def test_duplicate_and_empty_fragments_count_against_the_byte_cap(tmp_path: Path) -> None:
    # 3,000 copies of one fragment, half of them with no data, of a datagram that never completes:
    # the frames an entry keeps cost bytes too, so it is given up while reading, not at the end.
    ip = g.udp_ip("10.1.1.1", "10.2.2.2", g.l2tp_data(1, 1, b"d" * 2000))
    second = g.fragment_ipv4(ip, 1200)[1]
    empty = second[:2] + (20).to_bytes(2, "big") + second[4:20]
    frames = [(T0 + i * 1e-4, g.eth(second if i % 2 else empty)) for i in range(3000)]
    path = g.write_pcap(tmp_path / "dup.pcap", frames, g.ETHERNET)
    reasm = Reassembler(max_bytes=64 * 1024)
    reader = CaptureReader(path, reassembler=reasm)
    first_given_up_at = None
    for item in reader:
        assert reasm.buffered <= 64 * 1024
        if first_given_up_at is None and isinstance(item, Unreadable):
            first_given_up_at = reader.stats.frames
    assert first_given_up_at is not None and first_given_up_at < 3000
    assert reader.stats.unreadable == {capture.FRAGMENT_INCOMPLETE: 3000}


# --- generated: what cannot be read -------------------------------------------------------------


def test_unreadable_reasons(tmp_path: Path) -> None:
    l2tp = g.udp_ip("10.0.0.1", "10.0.0.2", g.l2tp_data(1, 1, b"p" * 200))
    frames = [
        g.eth(g.ipv4_proto("10.0.0.1", "10.0.0.2", 50, b"\x00\x00\x10\x01" + b"e" * 60)),
        g.eth(g.udp_ip("10.0.0.1", "10.0.0.2", b"\x00\x00\x10\x01" + b"e" * 60, 4500, 4500)),
        g.eth(g.udp_ip("10.0.0.1", "10.0.0.2", b"\0\0\0\0" + b"i" * 60, 4500, 4500)),
        g.eth(g.udp_ip("10.0.0.1", "10.0.0.2", b"\xff", 4500, 4500)),
        g.eth(g.udp_ip("10.0.0.1", "10.0.0.2", b"i" * 60, 500, 500)),
        g.eth(g.ipv4_proto("10.0.0.1", "10.0.0.2", 115, b"\0\0\0\1" + b"v3" * 10)),
        g.eth(g.udp_ip("10.0.0.1", "10.0.0.2", b"dns", 53, 53)),
        g.eth(g.ipv4_proto("10.0.0.1", "10.0.0.2", 6, b"t" * 20)),
        g.eth(b"\0\1" * 14, etype=0x0806),
        g.eth(l2tp)[:60],  # cut by a 60-byte snaplen
    ]
    path = g.write_pcap(tmp_path / "u.pcap", [(T0 + i, f) for i, f in enumerate(frames)], 1)
    dgrams, unreadable, _ = read_all(path)
    assert not dgrams
    assert [u.reason for u in unreadable] == [
        capture.ENCRYPTED,
        capture.ENCRYPTED,
        capture.IKE,
        capture.IKE,
        capture.IKE,
        capture.L2TPV3_IP,
        capture.OTHER_UDP,
        capture.OTHER_IP_PROTOCOL,
        capture.NOT_IP,
        capture.TRUNCATED,
    ]


def test_snaplen_truncation_and_a_file_cut_mid_record(tmp_path: Path) -> None:
    ip = g.udp_ip("10.0.0.1", "10.0.0.2", g.l2tp_data(1, 1, b"q" * 500))
    path = g.write_pcap(tmp_path / "s.pcap", [(T0, g.eth(ip)), (T0 + 1, g.eth(ip))], 1, snaplen=96)
    _, unreadable, _ = read_all(path)
    assert [u.reason for u in unreadable] == [capture.TRUNCATED] * 2
    full = g.write_pcap(tmp_path / "c.pcap", [(T0, g.eth(ip)), (T0 + 1, g.eth(ip))], 1)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(full.read_bytes()[:-100])
    dgrams, unreadable, reader = read_all(cut)
    assert len(dgrams) == 1
    # the last record is cut off by the end of the file, not by a snaplen: what the doc promises
    assert [u.reason for u in unreadable] == [capture.TRUNCATED_FILE]
    assert "cut.pcap: record at byte" in (reader.stats.file_error or "")


def _pcapng_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, length) of each block of a little-endian pcapng file."""
    out, pos = [], 0
    while pos < len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        out.append((pos, btype, blen))
        pos += blen
    return out


@pytest.mark.parametrize("damage", ["trailing_length", "block_length", "interface_id"])
def test_pcapng_corrupt_block_in_the_middle_keeps_what_came_before(
    tmp_path: Path, damage: str
) -> None:
    ips = [g.udp_ip("10.0.0.1", "10.0.0.2", g.l2tp_data(1, 2, bytes([i]) * 20)) for i in range(6)]
    packets = [(0, T0 + i, g.eth(ip)) for i, ip in enumerate(ips)]
    path = g.write_pcapng(tmp_path / "c.pcapng", [(g.ETHERNET, 6)], packets)
    data = bytearray(path.read_bytes())
    at, _, blen = [b for b in _pcapng_blocks(bytes(data)) if b[1] == 6][3]  # the 4th packet
    if damage == "trailing_length":  # dpkt: UnpackError "length fields do not match"
        struct.pack_into("<I", data, at + blen - 4, blen + 4)
    elif damage == "block_length":  # not a multiple of 4
        struct.pack_into("<I", data, at + 4, blen + 1)
    else:  # a packet on an interface the section never declared
        struct.pack_into("<I", data, at + 8, 7)
    path.write_bytes(bytes(data))
    dgrams, unreadable, reader = read_all(path)
    assert [d.frame for d in dgrams] == [1, 2, 3]
    assert [(u.frame, u.reason) for u in unreadable] == [(4, capture.CORRUPT_FILE)]
    assert f"c.pcapng: pcapng block of type 0x6 at byte {at}" in (reader.stats.file_error or "")


def test_unsupported_link_type_and_not_a_capture(tmp_path: Path) -> None:
    path = g.write_pcap(tmp_path / "w.pcap", [(T0, b"\0" * 40)], 105)  # 802.11
    _, unreadable, _ = read_all(path)
    assert [u.reason for u in unreadable] == [capture.UNSUPPORTED_LINKTYPE]
    bogus = tmp_path / "b.pcap"
    bogus.write_bytes(b"not a capture at all")
    with pytest.raises(capture.CaptureFormatError, match="not a pcap or pcapng"):
        list(CaptureReader(bogus))


def test_memory_does_not_grow_with_capture_size(tmp_path: Path) -> None:
    def peak_for(n: int) -> int:
        ip = g.udp_ip("10.0.0.1", "10.0.0.2", g.l2tp_data(1, 1, b"m" * 1000))
        path = g.write_pcap(tmp_path / f"{n}.pcap", ((T0 + i, g.eth(ip)) for i in range(n)), 1)
        tracemalloc.start()
        count = sum(1 for _ in CaptureReader(path))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == n
        return peak

    small, large = peak_for(1_000), peak_for(20_000)  # 1 MB vs 20 MB of capture
    assert large < small * 2 + 200_000, (small, large)


def test_file_ending_inside_a_record_header(tmp_path: Path) -> None:
    ip = g.udp_ip("10.0.0.1", "10.0.0.2", g.l2tp_data(1, 1, b"h" * 50))
    full = g.write_pcap(tmp_path / "c.pcap", [(T0, g.eth(ip)), (T0 + 1, g.eth(ip))], 1)
    one = 24 + 16 + len(g.eth(ip))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(full.read_bytes()[: one + 7])
    dgrams, unreadable, _ = read_all(cut)
    assert len(dgrams) == 1 and [u.reason for u in unreadable] == [capture.TRUNCATED_FILE]
    ng = g.write_pcapng(tmp_path / "c.pcapng", [(g.ETHERNET, 6)], [(0, T0, g.eth(ip))] * 2)
    cut.write_bytes(ng.read_bytes()[:-30])
    dgrams, unreadable, _ = read_all(cut)
    assert len(dgrams) == 1 and [u.reason for u in unreadable] == [capture.TRUNCATED_FILE]


# --- real captures made here: tcpdump -i any (SLL2, nanosecond) and dumpcap (pcapng) ------------

SENDER = r"""
import socket, sys
sizes = [int(x) for x in sys.argv[1:]]
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    rx = socket.socket(family, socket.SOCK_DGRAM); rx.bind((host, 1701))
    tx = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET:
        tx.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
    for i, size in enumerate(sizes):
        body = bytes([0x08, 0x02, 0, 7, 0, 9, 0, i, 0, 0]) + bytes([i]) * size
        tx.sendto(body, (host, 1701))
        rx.recv(65535)
"""


def _expected_payloads(sizes: list[int]) -> list[bytes]:
    one = [
        bytes([0x08, 0x02, 0, 7, 0, 9, 0, i, 0, 0]) + bytes([i]) * s for i, s in enumerate(sizes)
    ]
    return one + one  # IPv4 then IPv6


@pytest.mark.integration
def test_real_captures_sll2_nanosecond_pcapng_ipv6_and_fragments(tmp_path: Path) -> None:
    import os
    import signal
    import sys
    import time

    from tests.conftest import need_root

    need_root()
    ip, tcpdump, dumpcap = need_tool("ip"), need_tool("tcpdump"), need_tool("dumpcap")
    ns = f"l2rpcap{os.getpid()}"
    sizes = [100, 3000, 5000, 40]  # 3000 and 5000 fragment on a 1280-byte MTU
    subprocess.run([ip, "netns", "add", ns], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for args in (["link", "set", "lo", "up"], ["link", "set", "lo", "mtu", "1280"]):
            subprocess.run([ip, "-n", ns, *args], check=True)
        sll2 = tmp_path / "any.pcap"
        ng = tmp_path / "lo.pcapng"
        cmds = [
            [
                tcpdump,
                "-i",
                "any",
                "-y",
                "LINUX_SLL2",
                "--time-stamp-precision=nano",
                "-U",
                "-n",
                "-w",
                str(sll2),
            ],
            [dumpcap, "-i", "lo", "-q", "-w", str(ng)],
        ]
        for cmd in cmds:
            procs.append(subprocess.Popen([ip, "netns", "exec", ns, *cmd], stderr=subprocess.PIPE))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            sll2.exists() and ng.exists() and ng.stat().st_size > 0
        ):
            time.sleep(0.1)
        time.sleep(0.5)
        subprocess.run(
            [ip, "netns", "exec", ns, sys.executable, "-c", SENDER, *map(str, sizes)],
            check=True,
            timeout=30,
        )
        time.sleep(1.0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run([ip, "netns", "del", ns], check=False)
    expected = _expected_payloads(sizes)
    for path, linktype, fmt in ((sll2, g.SLL2, "pcap"), (ng, g.ETHERNET, "pcapng")):
        dgrams, unreadable, reader = read_all(path)
        assert reader.stats.file_format == fmt
        assert linktype in reader.stats.linktypes
        assert not [u for u in unreadable if u.reason != capture.OTHER_IP_PROTOCOL], unreadable
        assert [d.payload for d in dgrams] == expected, path
        assert [d.dst for d in dgrams] == ["127.0.0.1"] * 4 + ["::1"] * 4
        assert reader.stats.reassembled == 4  # 3000 and 5000 bytes, over IPv4 and IPv6
        # tshark reassembles and decodes the same L2TP headers
        rows = tshark(path, ["frame.number", "l2tp.tunnel", "l2tp.session", "l2tp.Ns"], "l2tp")
        assert [(int(r[0]), r[1], r[2], int(r[3])) for r in rows] == [
            (d.frame, "7", "9", i % 4) for i, d in enumerate(dgrams)
        ]
    # the nanosecond file keeps sub-microsecond digits
    assert any(round(d.ts * 1e9) % 1000 for d in read_all(sll2)[0])
