"""IPv4/IPv6 + UDP around an L2TP payload: find it, and put a rewritten payload back validly.

Why: in in-path mode the kernel hands us whole IP packets and reinjects what we give back, so a
renumbered Ns (same length) or a stripped header (4 bytes shorter) must come with a correct UDP
checksum and, for strip, correct UDP/IP lengths and IPv4 header checksum, or the LNS's kernel
drops the packet. Pure functions, stdlib only.

Ones-complement sums use the identity sum(16-bit words) mod 0xFFFF == int(bytes) mod 0xFFFF
(2^16 == 1 mod 0xFFFF), so one C-speed big-int conversion replaces a Python loop.

Checksums are verified before a datagram may move a session (`udp_checksum_ok`) and every
rewrite is an incremental update (RFC 1624): a checksum that was wrong on arrival stays exactly
as wrong, so nothing we rewrite can turn a corrupt datagram into one the LNS accepts.
"""

from __future__ import annotations

import struct
from typing import Final

UDP: Final = 17
# IPv6 extension headers we step over to find UDP (hop-by-hop, routing, destination options).
# A fragment header (44) means this packet is not a whole datagram: not ours.
_IPV6_SKIPPABLE = (0, 43, 60)
_IPV6_FRAGMENT: Final = 44


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


def udp_checksum_ok(packet: bytes, where: IpUdp) -> bool:
    """Whether the UDP checksum of `packet` verifies, as the receiving kernel judges it.

    IPv4: zero means "no checksum" (RFC 768): good. IPv6: zero is illegal (RFC 8200 8.1) and
    the LNS's kernel drops it: bad. Otherwise the ones-complement sum over pseudo-header and
    segment, checksum included, must be -0, i.e. 0 mod 0xFFFF (it is never +0: the protocol
    number alone is non-zero)."""
    u, end = where.udp_at, where.end
    if not (packet[u + 6] | packet[u + 7]):
        return where.version == 4
    segment = int.from_bytes(packet[u:end], "big")
    if (end - u) & 1:
        segment <<= 8  # an odd segment is padded with a zero byte
    addresses = int.from_bytes(where.src + where.dst, "big")
    # The pseudo-header's length and next-header words; an IPv6 length's high word is zero.
    return (addresses + segment + UDP + (end - u)) % 0xFFFF == 0


LOW_12_BYTES: Final = (1 << 96) - 1  # of a packet read little-endian: its first 12 bytes


def udp4_checksum_ok(packet: bytes) -> bool:
    """`udp_checksum_ok` for the in-path fast path's shape only: IPv4 with a 20-byte header and
    the UDP datagram filling the packet (addresses, then the segment, to its end).

    Summed as a little-endian number, without copying the segment out: read little-endian,
    every 16-bit word counts byte-swapped, which is the big-endian sum times 256 mod 0xFFFF
    (256 * 256 == 1 mod 0xFFFF, so the factor is invertible and "== 0" is unchanged), and an odd
    last byte needs no padding (it sits at an even offset: weight 1, a high byte swapped). The
    12 bytes before the addresses, the number's low 96 bits, are taken out again; the
    pseudo-header's protocol 17 plus the UDP length n - 20 is n - 3, times 256. Reducing the
    whole packet first keeps the arithmetic after it on small ints. The in-path fast path
    inlines this (adapter.py `_feed`)."""
    if not (packet[26] | packet[27]):
        return True
    n = len(packet)
    x = int.from_bytes(packet, "little")
    return (x % 0xFFFF + ((n - 3) << 8) - (x & LOW_12_BYTES)) % 0xFFFF == 0


def udp_fragment(packet: bytes) -> bool:
    """Whether `packet` is one fragment of a fragmented UDP datagram: IPv4 with MF set or a
    fragment offset, or IPv6 with a fragment header whose next header is UDP. Every fragment
    says UDP (the IPv4 protocol field, the IPv6 fragment header), only the first has ports.

    Why: the queue rule should only ever hand us whole datagrams (the kernel reassembles when
    the rules `l2tpreorder rules` prints are loaded); a fragment here means it does not."""
    n = len(packet)
    if n < 20:
        return False
    version = packet[0] >> 4
    if version == 4:
        return packet[9] == UDP and bool(((packet[6] << 8) | packet[7]) & 0x3FFF)
    if version != 6 or n < 48:
        return False
    nxt, at = packet[6], 40
    while nxt in _IPV6_SKIPPABLE and at + 8 <= n:
        nxt, at = packet[at], at + (packet[at + 1] + 1) * 8
    return nxt == _IPV6_FRAGMENT and at + 8 <= n and packet[at] == UDP


def ones_sum(data: bytes) -> int:
    """Ones-complement sum of `data` as big-endian 16-bit words (odd length: zero-padded)."""
    if len(data) & 1:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return s if s or not any(data) else 0xFFFF


def ipv4_header_checksum(header: bytes) -> int:
    return ~ones_sum(header[:10] + b"\0\0" + header[12:]) & 0xFFFF


def with_payload(packet: bytes, where: IpUdp, payload: bytes) -> bytes:
    """`packet` with its UDP payload replaced by `payload`, lengths and checksums fixed.

    The UDP checksum is always updated incrementally (RFC 1624, eqn. 3) over what changed: the
    changed bytes and, for another length (strip), the UDP length word, which the pseudo-header
    repeats. So a checksum wrong on arrival stays wrong by the same amount (we never make a
    corrupt datagram good), and only the changed words are summed. An IPv4 checksum of zero
    ("none") stays zero; the IPv4 header checksum is recomputed (the kernel verified it before
    any hook). Bytes after the UDP datagram (IPv4 padding inside the total length, an IPv6
    payload longer than the UDP datagram) are not ours: kept, and the IP length covers them."""
    old = packet[where.payload_at : where.end]
    trailer = packet[where.end :]
    head = bytearray(packet[: where.payload_at])
    u = where.udp_at
    old_csum = (head[u + 6] << 8) | head[u + 7]
    grown = len(payload) - len(old)  # the IP length changes by as much: the trailer stays in it
    if grown:
        old_len = (head[u + 4] << 8) | head[u + 5]
        struct.pack_into("!H", head, u + 4, old_len + grown)
        if where.version == 4:
            struct.pack_into("!H", head, 2, ((head[2] << 8) | head[3]) + grown)
            struct.pack_into("!H", head, 10, 0)
            struct.pack_into("!H", head, 10, ipv4_header_checksum(bytes(head[:u])))
        else:
            struct.pack_into("!H", head, 4, ((head[4] << 8) | head[5]) + grown)
    elif old == payload:
        return packet
    if where.version == 4 and old_csum == 0:
        return bytes(head) + payload + trailer
    first, old_end, new_end = _changed_words(old, payload)
    # ~HC + ~m + m' (RFC 1624 eqn. 3), summed as plain ints and folded once at the end
    hc = (~old_csum & 0xFFFF) + (~ones_sum(old[first:old_end]) & 0xFFFF)
    hc += ones_sum(payload[first:new_end])
    if grown:  # the UDP length word, in the header and again in the pseudo-header
        hc += 2 * ((~old_len & 0xFFFF) + old_len + grown)
    while hc >> 16:
        hc = (hc & 0xFFFF) + (hc >> 16)
    csum = ~hc & 0xFFFF
    struct.pack_into("!H", head, u + 6, csum or 0xFFFF)  # RFC 768: zero is sent as all ones
    return bytes(head) + payload + trailer


def _changed_words(old: bytes, new: bytes) -> tuple[int, int, int]:
    """(first, old_end, new_end): old[first:old_end] became new[first:new_end], the rest is the
    same bytes at the same 16-bit word alignment (a common prefix, and a common suffix that
    moved by an even number of bytes). Strip removes 4 header bytes: a few short compares."""
    first = _first_difference(old, new) & ~1  # the payload starts word-aligned in the segment
    shift = len(old) - len(new)
    if shift == 0:  # same length (renumber): the last differing byte bounds the change
        last = _last_difference(old, new) + 1
        return first, last + (last & 1), last + (last & 1)
    if shift & 1:  # an odd shift misaligns everything after the change: sum to the end
        return first, len(old), len(new)
    at = first
    while at < len(new) and not old.endswith(new[at:]):
        at += 2
        if at > first + _SUFFIX_SEARCH:  # not a header edit: sum to the end
            return first, len(old), len(new)
    return first, at + shift, at


_SUFFIX_SEARCH: Final = 64  # bytes past the first change where a common tail is looked for


def _first_difference(a: bytes, b: bytes) -> int:
    """Index of the first byte where `a` and `b` differ (the shorter one's length if one is a
    prefix of the other). A header edit differs early: a short loop; past that, one XOR of
    the two as big integers (C speed) instead of a Python loop over the packet."""
    n = min(len(a), len(b))
    i = 0
    while i < n and i < 16 and a[i] == b[i]:
        i += 1
    if i < 16 or i == n:
        return i
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n if not x else n - (x.bit_length() + 7) // 8


def _last_difference(a: bytes, b: bytes) -> int:
    """Index of the last differing byte of two different strings of the same length: the
    lowest set bit of their XOR. (A Python loop from the end cost ~100 us for a renumbered
    1,400-byte packet, whose only change is the Ns near the start.)"""
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return len(a) - 1 - ((x & -x).bit_length() - 1) // 8
