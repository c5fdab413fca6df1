"""core.checksum against a from-scratch RFC 768/791/8200 computation (a word loop, no tricks)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from l2tpreorder.core.checksum import (
    parse_ip_udp,
    udp4_checksum_ok,
    udp_checksum_ok,
    udp_fragment,
    with_payload,
)


def word_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def verify_udp(packet: bytes) -> bool:
    """True when the UDP checksum (or IPv4 'no checksum') of `packet` is valid."""
    where = parse_ip_udp(packet)
    assert where is not None
    udp = packet[where.udp_at : where.end]
    if where.version == 4 and udp[6:8] == b"\0\0":
        return True
    if where.version == 4:
        pseudo = where.src + where.dst + struct.pack("!BBH", 0, 17, len(udp))
    else:
        pseudo = where.src + where.dst + struct.pack("!IBBBB", len(udp), 0, 0, 0, 17)
    return word_sum(pseudo + udp) == 0xFFFF


def build(version: int, src: bytes, dst: bytes, payload: bytes, zero_csum: bool) -> bytes:
    udp = struct.pack("!HHHH", 40000, 1701, 8 + len(payload), 0) + payload
    if version == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
    else:
        pseudo = src + dst + struct.pack("!IBBBB", len(udp), 0, 0, 0, 17)
    if not (version == 4 and zero_csum):
        c = ~word_sum(pseudo + udp) & 0xFFFF
        udp = udp[:6] + struct.pack("!H", c or 0xFFFF) + udp[8:]
    if version == 4:
        fields = (0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
        h = bytearray(struct.pack("!BBHHHBBH4s4s", *fields))
        struct.pack_into("!H", h, 10, ~word_sum(bytes(h)) & 0xFFFF)
        return bytes(h) + udp
    return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, src, dst) + udp


packets = st.tuples(
    st.sampled_from((4, 6)),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=8, max_size=300),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(packets, st.integers(0, 299), st.binary(min_size=1, max_size=4))
def test_same_length_rewrite_keeps_a_valid_checksum(p, at, new) -> None:  # type: ignore[no-untyped-def]
    version, src, dst, payload, zero = p
    src, dst = (src[:4], dst[:4]) if version == 4 else (src, dst)
    packet = build(version, src, dst, payload, zero)
    where = parse_ip_udp(packet)
    assert where is not None and packet[where.payload_at :] == payload
    at %= len(payload)
    changed = (payload[:at] + new + payload[at:])[: len(payload)]
    out = with_payload(packet, where, changed)
    assert out[where.payload_at :] == changed and len(out) == len(packet)
    assert verify_udp(out)
    # Identical to building the rewritten packet from scratch (incremental == full).
    assert out == build(version, src, dst, changed, zero)


@settings(max_examples=300, deadline=None)
@given(packets, st.integers(0, 8))
def test_shorter_payload_fixes_lengths_and_checksums(p, cut) -> None:  # type: ignore[no-untyped-def]
    version, src, dst, payload, zero = p
    src, dst = (src[:4], dst[:4]) if version == 4 else (src, dst)
    packet = build(version, src, dst, payload, zero)
    where = parse_ip_udp(packet)
    assert where is not None
    shorter = payload[: max(0, len(payload) - cut)]
    out = with_payload(packet, where, shorter)
    assert out == build(version, src, dst, shorter, zero)
    assert verify_udp(out)
    if version == 4:
        assert word_sum(out[:20]) == 0xFFFF


def test_not_ours_is_none() -> None:
    good = build(4, b"\x7f\0\0\1", b"\x7f\0\0\2", b"x" * 20, False)
    assert parse_ip_udp(good) is not None
    tcp = bytearray(good)
    tcp[9] = 6
    assert parse_ip_udp(bytes(tcp)) is None
    fragment = bytearray(good)
    fragment[6] = 0x20  # more fragments
    assert parse_ip_udp(bytes(fragment)) is None
    assert parse_ip_udp(good[:30]) is None  # truncated copy: total length beyond the bytes
    assert parse_ip_udp(b"\x00" * 40) is None


def with_trailer(packet: bytes, trailer: bytes) -> bytes:
    """`packet` with `trailer` after its UDP datagram, inside the IP length (IPv4 padding, an
    IPv6 payload longer than the UDP datagram): not ours, kept byte for byte."""
    out = bytearray(packet + trailer)
    if out[0] >> 4 == 4:
        struct.pack_into("!H", out, 2, len(out))
        struct.pack_into("!H", out, 10, 0)
        struct.pack_into("!H", out, 10, ~word_sum(bytes(out[:20])) & 0xFFFF)
    else:
        struct.pack_into("!H", out, 4, len(out) - 40)
    return bytes(out)


@settings(max_examples=400, deadline=None)
@given(packets, st.binary(min_size=1, max_size=16), st.integers(0, 8), st.integers(0, 299))
def test_bytes_after_the_udp_datagram_are_kept_and_lengths_agree(  # type: ignore[no-untyped-def]
    p, trailer, cut, at
) -> None:
    """Same length (renumber) and shorter (strip): the trailing bytes stay, the IP length
    still covers them, and the result is what building it from scratch gives."""
    version, src, dst, payload, zero = p
    src, dst = (src[:4], dst[:4]) if version == 4 else (src, dst)
    packet = with_trailer(build(version, src, dst, payload, zero), trailer)
    where = parse_ip_udp(packet)
    assert where is not None and packet[where.end :] == trailer
    at %= len(payload)
    same = payload[:at] + bytes([payload[at] ^ 0x5A]) + payload[at + 1 :]
    shorter = payload[: max(0, len(payload) - cut)]
    for new in (payload, same, shorter):
        out = with_payload(packet, where, new)
        assert out == with_trailer(build(version, src, dst, new, zero), trailer)
        out_where = parse_ip_udp(out)
        assert out_where is not None and out[out_where.end :] == trailer
        assert out[out_where.payload_at : out_where.end] == new
        assert verify_udp(out)
        if version == 4:
            assert word_sum(out[:20]) == 0xFFFF


def flip(packet: bytes, bit: int) -> bytes:
    out = bytearray(packet)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


@settings(max_examples=500, deadline=None)
@given(packets, st.integers(0, 10**6), st.booleans())
def test_verify_is_the_reference_computation_and_a_bit_flip_is_caught(  # type: ignore[no-untyped-def]
    p, bit, odd
) -> None:
    """udp_checksum_ok agrees with the word-loop reference on good packets and on every
    one-bit flip in the UDP datagram (header or payload), which it always reports bad (a
    one-bit flip changes one word by a power of two: never 0 mod 0xFFFF). The fast-path form
    agrees with the general one on its shape (IPv4, 20-byte header)."""
    version, src, dst, payload, zero = p
    src, dst = (src[:4], dst[:4]) if version == 4 else (src, dst)
    payload = payload[:-1] if odd and len(payload) > 8 else payload
    packet = build(version, src, dst, payload, zero)
    where = parse_ip_udp(packet)
    assert where is not None
    assert udp_checksum_ok(packet, where)
    if version == 4:
        assert udp4_checksum_ok(packet)
    if version == 4 and zero:
        return  # no checksum: nothing to verify (a flip is the LNS's problem, as without us)
    # Any bit from the checksum field on (a flipped port or length reads as another datagram).
    bit = where.udp_at * 8 + 48 + bit % ((len(packet) - where.udp_at) * 8 - 48)
    bad = flip(packet, bit)
    bad_where = parse_ip_udp(bad)
    assert bad_where is not None
    if version == 4:
        assert udp_checksum_ok(bad, bad_where) == verify_udp(bad)
    # A flip in the checksum field may make it zero: on IPv4 that reads "no checksum" (good,
    # as the kernel takes it); on IPv6 zero is illegal (bad). Every other flip is caught.
    if not (version == 4 and bad[where.udp_at + 6 : where.udp_at + 8] == b"\0\0"):
        assert not udp_checksum_ok(bad, bad_where), bit
        if version == 4:
            assert not udp4_checksum_ok(bad)


def test_ipv6_zero_checksum_is_bad_ipv4_zero_is_none() -> None:
    for version, src, dst in ((4, bytes(4), bytes([1]) * 4), (6, bytes(16), bytes([1]) * 16)):
        packet = bytearray(build(version, src, dst, b"\x02\x02abc", False))
        where = parse_ip_udp(bytes(packet))
        assert where is not None
        packet[where.udp_at + 6 : where.udp_at + 8] = b"\0\0"
        assert udp_checksum_ok(bytes(packet), where) is (version == 4)


@settings(max_examples=400, deadline=None)
@given(packets, st.integers(0, 4), st.integers(1, 0xFFFE))
def test_rewrite_keeps_an_existing_error(p, ns_at, error) -> None:  # type: ignore[no-untyped-def]
    """A datagram whose checksum is off by `error` comes out of a rewrite (renumber: same
    length; strip: 4 header bytes removed) off by exactly as much: never made good."""
    version, src, dst, payload, zero = p
    if version == 4 and zero:
        return
    src, dst = (src[:4], dst[:4]) if version == 4 else (src, dst)
    payload = payload + bytes(8)  # room for an L2TP-like header edit
    packet = build(version, src, dst, payload, False)
    where = parse_ip_udp(packet)
    assert where is not None
    u = where.udp_at
    csum = (packet[u + 6] << 8) | packet[u + 7]
    wrong = csum + error
    wrong = (wrong & 0xFFFF) + (wrong >> 16)
    if wrong in (csum, 0xFFFF, 0):  # +0/-0: the same checksum, or "none"
        return
    bad = packet[: u + 6] + bytes([wrong >> 8, wrong & 0xFF]) + packet[u + 8 :]
    at = 2 * ns_at
    renumbered = payload[:at] + bytes([payload[at] ^ 0xFF, payload[at + 1]]) + payload[at + 2 :]
    stripped = payload[:at] + payload[at + 4 :]
    for new in (renumbered, stripped):
        out = with_payload(bad, where, new)
        good = with_payload(packet, where, new)
        assert out[: u + 6] == good[: u + 6] and out[u + 8 :] == good[u + 8 :]
        assert verify_udp(good) and not verify_udp(out)
        out_where = parse_ip_udp(out)
        assert out_where is not None and not udp_checksum_ok(out, out_where)


def test_fragments_of_udp_are_recognised() -> None:
    whole4 = build(4, b"\x7f\0\0\1", b"\x7f\0\0\2", b"x" * 20, False)
    assert not udp_fragment(whole4)
    for flags in (b"\x20\x00", b"\x00\xb9", b"\x20\xb9"):  # MF; offset only; both
        frag = whole4[:6] + flags + whole4[8:]
        assert udp_fragment(frag)
        assert not udp_fragment(frag[:9] + b"\x06" + frag[10:])  # TCP: not ours to count
    whole6 = build(6, bytes(15) + b"\1", bytes(15) + b"\2", b"x" * 20, False)
    assert not udp_fragment(whole6)
    for offset_flags in (b"\x00\x01", b"\x05\x38"):  # first (M set), a later one (offset)
        fh = bytes([17, 0]) + offset_flags + b"\0\0\0\7"
        frag6 = whole6[:6] + bytes([44]) + whole6[7:40] + fh + whole6[40:]
        assert udp_fragment(frag6)
        hop = bytes([44, 0]) + bytes(6)  # hop-by-hop options in front of the fragment header
        assert udp_fragment(whole6[:6] + bytes([0]) + whole6[7:40] + hop + fh + whole6[40:])
    assert not udp_fragment(b"\x45" + bytes(10))


def reference_udp4(packet: bytes) -> bool:
    """The word loop over pseudo-header and segment, for any bytes of the fast path's shape
    (20-byte IPv4 header, the UDP datagram to the packet's end): no parsing, no shortcuts."""
    if packet[26:28] == b"\0\0":
        return True
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, len(packet) - 20)
    return word_sum(pseudo + packet[20:]) == 0xFFFF


def with_valid_checksum(packet: bytes) -> bytes:
    zeroed = packet[:26] + b"\0\0" + packet[28:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, len(packet) - 20)
    c = ~word_sum(pseudo + zeroed[20:]) & 0xFFFF
    return zeroed[:26] + struct.pack("!H", c or 0xFFFF) + zeroed[28:]


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=28, max_size=1600), st.integers(0, 10**6), st.booleans())
def test_little_endian_fast_form_equals_the_word_loop(raw: bytes, bit: int, fix: bool) -> None:
    """udp4_checksum_ok reads the packet as one little-endian number (no segment copy, no odd
    padding): on arbitrary bytes (odd and even lengths, any header bytes, mostly bad sums), on
    the same bytes with a valid checksum, and on those with any one bit flipped, it decides as
    the big-endian word loop does."""
    packet = with_valid_checksum(raw) if fix else raw
    assert udp4_checksum_ok(packet) == reference_udp4(packet)
    if fix:
        assert udp4_checksum_ok(packet)
    flipped = flip(packet, bit % (len(packet) * 8))
    assert udp4_checksum_ok(flipped) == reference_udp4(flipped)
