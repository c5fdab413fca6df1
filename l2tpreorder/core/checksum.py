"""IPv4/IPv6 + UDP around an L2TP payload: find it, and put a rewritten payload back validly.

Why: in in-path mode the kernel hands us whole IP packets and reinjects what we give back, so a
renumbered Ns (same length) or a stripped header (4 bytes shorter) must come with a correct UDP
checksum and, for strip, correct UDP/IP lengths and IPv4 header checksum, or the LNS's kernel
drops the packet. Pure functions, stdlib only.

Ones-complement sums use the identity sum(16-bit words) mod 0xFFFF == int(bytes) mod 0xFFFF
(2^16 == 1 mod 0xFFFF), so one C-speed big-int conversion replaces a Python loop.
"""

from __future__ import annotations

import struct

UDP = 17
# IPv6 extension headers we step over to find UDP (hop-by-hop, routing, destination options).
# A fragment header (44) means this packet is not a whole datagram: not ours.
_IPV6_SKIPPABLE = (0, 43, 60)


class IpUdp:
    """Where the parts of one IP/UDP packet are (byte offsets into the packet)."""

    __slots__ = ("dport", "dst", "end", "payload_at", "sport", "src", "udp_at", "version")

    def __init__(
        self, version: int, udp_at: int, end: int, src: bytes, sport: int, dst: bytes, dport: int
    ) -> None:
        self.version = version
        self.udp_at = udp_at
        self.payload_at = udp_at + 8
        self.end = end  # end of the UDP datagram (IP padding after it is not ours)
        self.src = src
        self.sport = sport
        self.dst = dst
        self.dport = dport


def parse_ip_udp(packet: bytes) -> IpUdp | None:
    """The IP/UDP layout of `packet`, or None when it is not one whole UDP datagram."""
    if len(packet) < 28:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        total = (packet[2] << 8) | packet[3]
        frag = ((packet[6] << 8) | packet[7]) & 0x3FFF  # MF flag + fragment offset
        if ihl < 20 or packet[9] != UDP or frag or total > len(packet) or total < ihl + 8:
            return None
        udp_at, end, src, dst = ihl, total, packet[12:16], packet[16:20]
    elif version == 6:
        if len(packet) < 48:
            return None
        end = 40 + ((packet[4] << 8) | packet[5])
        nxt, at = packet[6], 40
        while nxt in _IPV6_SKIPPABLE and at + 8 <= len(packet):
            nxt, at = packet[at], at + (packet[at + 1] + 1) * 8
        if nxt != UDP or end > len(packet) or at + 8 > end:
            return None
        udp_at, src, dst = at, packet[8:24], packet[24:40]
    else:
        return None
    udp_len = (packet[udp_at + 4] << 8) | packet[udp_at + 5]
    if udp_len < 8 or udp_at + udp_len > end:
        return None
    sport = (packet[udp_at] << 8) | packet[udp_at + 1]
    dport = (packet[udp_at + 2] << 8) | packet[udp_at + 3]
    return IpUdp(version, udp_at, udp_at + udp_len, src, sport, dst, dport)


def ones_sum(data: bytes) -> int:
    """Ones-complement sum of `data` as big-endian 16-bit words (odd length: zero-padded)."""
    if len(data) & 1:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return s if s or not any(data) else 0xFFFF


def _fold_add(a: int, b: int) -> int:
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def udp_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    """The UDP checksum field for this segment (checksum bytes in `udp` taken as zero)."""
    segment = udp[:6] + b"\0\0" + udp[8:]
    pseudo = src + dst + struct.pack("!HH", UDP, len(udp)) if len(src) == 4 else (
        src + dst + struct.pack("!IxxxB", len(udp), UDP)
    )
    c = ~_fold_add(ones_sum(pseudo), ones_sum(segment)) & 0xFFFF
    return c or 0xFFFF  # RFC 768: a computed zero is sent as all ones


def ipv4_header_checksum(header: bytes) -> int:
    return ~ones_sum(header[:10] + b"\0\0" + header[12:]) & 0xFFFF


def with_payload(packet: bytes, where: IpUdp, payload: bytes) -> bytes:
    """`packet` with its UDP payload replaced by `payload`, lengths and checksums fixed.

    Same length (renumber): the UDP checksum is updated incrementally (RFC 1624, eqn. 3) over the
    changed words only; an IPv4 checksum of zero ("none") stays zero. Other lengths (strip): UDP
    and IP lengths are rewritten and the checksums computed afresh. Bytes after the UDP datagram
    (IPv4 padding inside the total length, an IPv6 payload longer than the UDP datagram) are not
    ours: kept byte for byte, and the IP length still covers them."""
    old = packet[where.payload_at : where.end]
    trailer = packet[where.end :]
    head = bytearray(packet[: where.payload_at])
    u = where.udp_at
    old_csum = (head[u + 6] << 8) | head[u + 7]
    if len(payload) == len(old):
        if where.version == 4 and old_csum == 0:
            return bytes(head) + payload + trailer
        first = _first_difference(old, payload)
        if first < 0:
            return packet
        last = _last_difference(old, payload) + 1
        first &= ~1  # the payload starts at an even offset of the segment: stay word-aligned
        last += last & 1
        hc = ~old_csum & 0xFFFF
        hc = _fold_add(hc, ~ones_sum(old[first:last]) & 0xFFFF)
        hc = _fold_add(hc, ones_sum(payload[first:last]))
        csum = ~hc & 0xFFFF
        struct.pack_into("!H", head, u + 6, csum or 0xFFFF)
        return bytes(head) + payload + trailer
    udp_len = 8 + len(payload)
    grown = len(payload) - len(old)  # the IP length changes by as much: the trailer stays in it
    struct.pack_into("!H", head, u + 4, udp_len)
    if where.version == 4:
        struct.pack_into("!H", head, 2, ((head[2] << 8) | head[3]) + grown)
        struct.pack_into("!H", head, 10, 0)
        struct.pack_into("!H", head, 10, ipv4_header_checksum(bytes(head[:u])))
    else:
        struct.pack_into("!H", head, 4, ((head[4] << 8) | head[5]) + grown)
    if where.version == 6 or old_csum != 0:
        udp = bytes(head[u:]) + payload
        struct.pack_into("!H", head, u + 6, udp_checksum(where.src, where.dst, udp))
    else:
        struct.pack_into("!H", head, u + 6, 0)
    return bytes(head) + payload + trailer


def _first_difference(a: bytes, b: bytes) -> int:
    if a == b:
        return -1
    i = 0
    while a[i] == b[i]:
        i += 1
    return i


def _last_difference(a: bytes, b: bytes) -> int:
    i = len(a) - 1
    while a[i] == b[i]:
        i -= 1
    return i
