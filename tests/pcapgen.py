"""Build capture files of every shape the reader must handle, byte by byte.

Independent of l2tpreorder.tools.pcapwriter on purpose (except for the plain IP/UDP builder): the
files are written here in both byte orders, micro/nanosecond pcap and pcapng with several
interfaces, and every link layer, so the reader is tested against formats it did not produce
itself. tshark reads them too in the tests, which checks that these generated files are valid.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from l2tpreorder.tools.pcapwriter import build_udp_ip

ETHERNET, RAW, NULL, LOOP, SLL, SLL2, IPV4, IPV6, PPP = 1, 101, 0, 108, 113, 276, 228, 229, 9

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def l2tp_data(tunnel_id: int, session_id: int, ppp: bytes, ns: int | None = None) -> bytes:
    """An L2TPv2 data message (with Ns/Nr when `ns` is given)."""
    if ns is None:
        return struct.pack("!HHH", 0x0002, tunnel_id, session_id) + ppp
    return struct.pack("!HHHHH", 0x0802, tunnel_id, session_id, ns, 0) + ppp


def udp_ip(src: str, dst: str, payload: bytes, sport: int = 1701, dport: int = 1701) -> bytes:
    return build_udp_ip(src, sport, dst, dport, payload)


def eth(ip: bytes, vlans: Sequence[tuple[int, int]] = (), etype: int | None = None) -> bytes:
    """Ethernet II; `vlans` = [(tpid, vid), ...] outermost first (QinQ: 0x88a8 then 0x8100)."""
    if etype is None:
        etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in vlans)
    frame = MAC_A + MAC_B + tags + struct.pack("!H", etype) + ip
    return frame + b"\0" * max(0, 60 - len(frame))  # minimum frame: padding the reader must cut


def pppoe(ip: bytes, session: int = 0x1234) -> bytes:
    proto = 0x0057 if ip[0] >> 4 == 6 else 0x0021
    body = struct.pack("!H", proto) + ip
    return eth(struct.pack("!BBHH", 0x11, 0, session, len(body)) + body, etype=0x8864)


def sll(ip: bytes) -> bytes:
    proto = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\0\0", proto) + ip


def sll2(ip: bytes, ifindex: int = 1) -> bytes:
    proto = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHIHBB8s", proto, 0, ifindex, 1, 0, 6, MAC_A + b"\0\0") + ip


def null(ip: bytes, family: int | None = None, order: str = "<") -> bytes:
    if family is None:
        family = 30 if ip[0] >> 4 == 6 else 2
    return struct.pack(f"{order}I", family) + ip


def loop(ip: bytes) -> bytes:
    return null(ip, 24 if ip[0] >> 4 == 6 else 2, ">")


def ppp_hdlc(ip: bytes) -> bytes:
    return b"\xff\x03" + struct.pack("!H", 0x0057 if ip[0] >> 4 == 6 else 0x0021) + ip


def fragment_ipv4(packet: bytes, size: int) -> list[bytes]:
    """Split an IPv4 packet into fragments carrying `size` bytes (multiple of 8) each."""
    assert size % 8 == 0
    ihl = (packet[0] & 0x0F) * 4
    header, body = packet[:ihl], packet[ihl:]
    frags = []
    for off in range(0, len(body), size):
        chunk = body[off : off + size]
        more = off + size < len(body)
        h = bytearray(header)
        struct.pack_into("!H", h, 2, ihl + len(chunk))
        struct.pack_into("!H", h, 6, (0x2000 if more else 0) | (off // 8))
        struct.pack_into("!H", h, 10, 0)
        frags.append(bytes(h) + chunk)
    return frags


def fragment_ipv6(packet: bytes, size: int, ident: int = 0x1234) -> list[bytes]:
    """Split an IPv6 packet (no extension headers) with Fragment headers."""
    assert size % 8 == 0
    fixed, body = packet[:40], packet[40:]
    nh = fixed[6]
    frags = []
    for off in range(0, len(body), size):
        chunk = body[off : off + size]
        more = off + size < len(body)
        h = bytearray(fixed)
        struct.pack_into("!H", h, 4, 8 + len(chunk))
        h[6] = 44
        frag = struct.pack("!BxHI", nh, off | (1 if more else 0), ident)
        frags.append(bytes(h) + frag + chunk)
    return frags


def ipv6_with_ext(packet: bytes) -> bytes:
    """Insert a hop-by-hop and a destination-options header (8 bytes each) into an IPv6 packet."""
    fixed, body = bytearray(packet[:40]), packet[40:]
    upper = fixed[6]
    hbh = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # next: dest opts; PadN
    dst = bytes([upper, 0]) + b"\x01\x04\0\0\0\0"
    fixed[6] = 0
    struct.pack_into("!H", fixed, 4, len(body) + 16)
    return bytes(fixed) + hbh + dst + body


def ipv4_proto(src: str, dst: str, proto: int, body: bytes) -> bytes:
    return (
        struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(body), 1, 0, 64, proto, 0)
        + socket.inet_aton(src)
        + socket.inet_aton(dst)
        + body
    )


Frame = tuple[float, bytes]


def write_pcap(
    path: Path,
    frames: Iterable[Frame],
    linktype: int,
    nano: bool = False,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> Path:
    """Classic pcap; frames longer than `snaplen` are cut, with the original length recorded."""
    o = ">" if big_endian else "<"
    scale = 10**9 if nano else 10**6
    with open(path, "wb") as f:
        f.write(
            struct.pack(
                f"{o}IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype
            )
        )
        for ts, frame in frames:
            sec, frac = divmod(round(ts * scale), scale)
            cut = frame[:snaplen]
            f.write(struct.pack(f"{o}IIII", sec, frac, len(cut), len(frame)) + cut)
    return path


def _block(o: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(f"{o}II", btype, n) + body + struct.pack(f"{o}I", n)


def write_pcapng(
    path: Path,
    interfaces: Sequence[tuple[int, int]],
    packets: Iterable[tuple[int, float, bytes]],
    big_endian: bool = False,
) -> Path:
    """pcapng: `interfaces` = [(linktype, tsresol exponent of 10), ...], packets on any of them."""
    o = ">" if big_endian else "<"
    with open(path, "wb") as f:
        f.write(_block(o, 0x0A0D0D0A, struct.pack(f"{o}IHHq", 0x1A2B3C4D, 1, 0, -1)))
        for linktype, resol in interfaces:
            opts = struct.pack(f"{o}HHB3x", 9, 1, resol) + struct.pack(f"{o}HH", 0, 0)
            f.write(_block(o, 1, struct.pack(f"{o}HHI", linktype, 0, 262144) + opts))
        for iface, ts, frame in packets:
            ticks = round(ts * 10 ** interfaces[iface][1])
            body = (
                struct.pack(
                    f"{o}IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
                )
                + frame
            )
            f.write(_block(o, 6, body))
    return path
