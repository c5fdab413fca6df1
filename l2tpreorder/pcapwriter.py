"""Writing classic pcap files of UDP datagrams (replay `-o`, `impair`).

Output is LINKTYPE_RAW (bare IPv4/IPv6, no link layer): the input's link layer, VLAN tags and
fragmentation are not what these files are about, and every reader (tshark, tcpdump, dpkt, ours)
decodes raw IP. The IP and UDP headers are rebuilt for each datagram with correct lengths and
checksums, so a payload whose size changed (Ns added or stripped) is still a valid packet.
"""

from __future__ import annotations

import os
import socket
import struct
from types import TracebackType
from typing import BinaryIO

LINKTYPE_RAW = 101
_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
MAGIC_MICRO = 0xA1B2C3D4
MAGIC_NANO = 0xA1B23C4D


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_udp_ip(
    src: str, sport: int, dst: str, dport: int, payload: bytes, ident: int = 0, ttl: int = 64
) -> bytes:
    """An IPv4 or IPv6 packet (by the address family of `src`) carrying one UDP datagram."""
    udp_len = 8 + len(payload)
    if ":" in src:
        s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        pseudo = s + d + struct.pack("!I3xB", udp_len, 17)
        udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
        csum = _checksum(pseudo + udp) or 0xFFFF  # 0 is not allowed over IPv6
        udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
        return struct.pack("!IHBB", 6 << 28, udp_len, 17, ttl) + s + d + udp
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    pseudo = s + d + struct.pack("!xBH", 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0, ttl, 17, 0, s, d
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


class PcapWriter:
    """Little-endian classic pcap, micro- or nanosecond timestamps."""

    def __init__(
        self,
        f: BinaryIO,
        linktype: int = LINKTYPE_RAW,
        nanosecond: bool = False,
        snaplen: int = 262144,
    ) -> None:
        self._f = f
        self._scale = 1_000_000_000 if nanosecond else 1_000_000
        f.write(
            _FILE_HEADER.pack(
                MAGIC_NANO if nanosecond else MAGIC_MICRO, 2, 4, 0, 0, snaplen, linktype
            )
        )
        self._ident = 0
        self.frames = 0

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], linktype: int = LINKTYPE_RAW, nanosecond: bool = False
    ) -> PcapWriter:
        return cls(open(path, "wb"), linktype, nanosecond)

    def write_frame(self, ts: float, frame: bytes, orig_len: int | None = None) -> None:
        ticks = round(ts * self._scale)  # round once, then split: never 1,000,000 usec
        sec, frac = divmod(ticks, self._scale)
        self._f.write(_RECORD.pack(sec & 0xFFFFFFFF, frac, len(frame), orig_len or len(frame)))
        self._f.write(frame)
        self.frames += 1

    def write_udp(
        self, ts: float, src: str, sport: int, dst: str, dport: int, payload: bytes
    ) -> None:
        self._ident = (self._ident + 1) & 0xFFFF
        self.write_frame(ts, build_udp_ip(src, sport, dst, dport, payload, self._ident))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
