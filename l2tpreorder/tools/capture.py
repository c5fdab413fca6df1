"""Streaming reader for packet captures: frames in, L2TP-port UDP datagrams out.

Operators arrive with whatever `tcpdump -w` or Wireshark gave them: classic pcap (micro or
nanosecond, either byte order) or pcapng, on Ethernet (VLAN/QinQ, PPPoE), Linux cooked SLL/SLL2
(`tcpdump -i any`), raw IP or BSD loopback. dpkt reads the file header and pcapng blocks; pcap
records and the link, IP and UDP layers are decoded here with `struct` because we need exact
control over fragments, truncation and the reasons we give for what we cannot read (and because
it is several times faster than building dpkt objects for every layer).

Memory stays bounded whatever the capture size: frames are read one at a time and the only state
is the table of incomplete IP fragment reassemblies, which is capped in entries, bytes and age.

Every frame has exactly one outcome, counted in `CaptureStats`: it yields a `UdpDatagram`, it was
consumed as a fragment of a datagram yielded later, or it yields an `Unreadable` with a reason.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import dpkt
import dpkt.pcap
import dpkt.pcapng

from l2tpreorder.tools.capture_input import STDIN, UnreadableInput, open_capture

# --- reasons a frame could not be read (stable strings: they appear in reports and JSON) -------
TRUNCATED = "truncated"  # captured length shorter than the packet (snaplen)
ENCRYPTED = "ipsec_esp"  # ESP, in IP or in UDP 4500 (NAT-T): L2TP/IPsec, cannot be decrypted
IKE = "ipsec_ike"  # ISAKMP/IKE negotiation and NAT-T keepalives around an L2TP/IPsec tunnel
L2TPV3_IP = "l2tpv3_over_ip"  # IP protocol 115: L2TPv3 without UDP, not L2TPv2
OTHER_UDP = "other_udp"  # UDP on ports other than the L2TP ports
OTHER_IP_PROTOCOL = "other_ip_protocol"  # TCP, ICMP, OSPF, GRE, ...
NOT_IP = "not_ip"  # ARP, LLDP, loopback test frames, ...
MALFORMED = "malformed"  # a header that contradicts itself (bad IHL, UDP length < 8, ...)
FRAGMENT_INCOMPLETE = "fragment_incomplete"  # a fragment whose datagram never completed
UNSUPPORTED_LINKTYPE = "unsupported_linktype"
TRUNCATED_FILE = "truncated_file"  # the capture file ends in the middle of a record/block
CORRUPT_FILE = "corrupt_file"  # a record/block that cannot be parsed: the rest is not read

REASON_TEXT: dict[str, str] = {
    TRUNCATED: "truncated by the capture's snaplen",
    ENCRYPTED: "encrypted (ESP / NAT-T: L2TP over IPsec cannot be read from outside)",
    IKE: "IKE/ISAKMP key exchange or NAT-T keepalive",
    L2TPV3_IP: "L2TPv3 over IP (protocol 115), not L2TPv2",
    OTHER_UDP: "UDP on other ports",
    OTHER_IP_PROTOCOL: "other IP protocols",
    NOT_IP: "not IP (ARP, LLDP, ...)",
    MALFORMED: "malformed link/IP/UDP header",
    FRAGMENT_INCOMPLETE: "IP fragments whose datagram never completed",
    UNSUPPORTED_LINKTYPE: "unsupported link layer",
    TRUNCATED_FILE: "capture file ends inside a record",
    CORRUPT_FILE: "capture file corrupt from here on (the rest was not read)",
}

L2TP_PORT = 1701
NAT_T_PORT = 4500
IKE_PORT = 500

# link-layer header types (www.tcpdump.org/linktypes.html); the file's value, not the OS DLT_.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_RAW_OS_DLTS = (12, 14)  # DLT_RAW on OpenBSD / other BSDs, seen in some old files

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_PPPOE_SESSION = 0x8864
_ETH_VLAN_TAGS = (0x8100, 0x88A8, 0x9100, 0x9200)
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

IPPROTO_UDP = 17
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_L2TP = 115
_IPV6_EXT_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options (length in 8 octets)
IPV6_FRAGMENT = 44
IPV6_NO_NEXT = 59

_U16 = struct.Struct("!H")
_U32_BE = struct.Struct(">I")
_IPV4_FIXED = struct.Struct("!BBHHHBB2x4s4s")
_IPV6_FIXED = struct.Struct("!4xHBB16s16s")
_UDP = struct.Struct("!HHH2x")
_IPV6_FRAG = struct.Struct("!BxHI")


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """One UDP datagram on an L2TP port, after outer fragment reassembly."""

    frame: int  # 1-based number of the frame that completed it (tshark's frame.number)
    ts: float  # capture timestamp, seconds since the epoch
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A frame that yields no L2TP datagram, and why."""

    frame: int
    ts: float
    reason: str


@dataclass(slots=True)
class CaptureStats:
    """What the reader saw; `frames == datagrams + fragments + sum(unreadable.values())`."""

    frames: int = 0
    datagrams: int = 0
    fragments: int = 0  # frames consumed into a reassembled datagram (or still pending)
    reassembled: int = 0  # datagrams that were put together from fragments
    unreadable: dict[str, int] = field(default_factory=dict)
    linktypes: set[int] = field(default_factory=set)
    file_format: str = ""
    file_error: str | None = None  # where and why the file stopped being readable, if it did

    def count(self, reason: str) -> None:
        self.unreadable[reason] = self.unreadable.get(reason, 0) + 1


def describe_unreadable(stats: CaptureStats) -> list[str]:
    """Report lines for what could not be read, most frequent first (replay's and impair's)."""
    lines = []
    for reason, n in sorted(stats.unreadable.items(), key=lambda kv: -kv[1]):
        lines.append(f"  not read: {n:,} frames {REASON_TEXT.get(reason, reason)}")
    if stats.file_error:
        lines.append(f"    -> {stats.file_error}; everything before it was read")
    if stats.unreadable.get(ENCRYPTED):
        lines.append(
            "    -> this is L2TP over IPsec: capture inside the tunnel (after decryption, e.g. on "
            "the LNS's L2TP port 1701) to see the L2TP traffic."
        )
    return lines


class CaptureFormatError(ValueError):
    """The file is neither pcap nor pcapng (this one is fatal: there is nothing to read)."""


class FileEndsEarly(Exception):
    """Raised by the format iterators where the file stops being readable (cut off or corrupt):
    the reader counts it as one unreadable frame with `reason` and ends there, keeping what it
    read before."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --- file formats -------------------------------------------------------------------------------

RawFrame = tuple[float, int, bytes]  # (timestamp, linktype, frame bytes)

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x34\xcd\xb2\xa1",
    b"\xa1\xb2\xcd\x34",
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def _iter_pcap(f: BinaryIO) -> Iterator[RawFrame]:
    name = getattr(f, "name", "capture")
    size = os.fstat(f.fileno()).st_size
    magic = _U32_BE.unpack(f.read(4))[0]
    f.seek(0)
    try:
        reader = dpkt.pcap.Reader(f)
    except (ValueError, dpkt.NeedData, dpkt.UnpackError) as e:
        raise CaptureFormatError(f"{name}: bad pcap header: {e}") from e
    # The upper bits may carry an FCS length (libpcap's LT_FCS_*): a trailing FCS is cut off
    # anyway by the IP total length, so only the link type proper matters.
    linktype = int(reader.datalink()) & 0xFFFF
    # Records are read here, not by dpkt's iterator: it hands back a record cut off by the end of
    # the file as if it were complete, which would then look like a snaplen cut (TRUNCATED).
    record = dpkt.pcap.MAGIC_TO_PKT_HDR[magic]
    nano = magic in (dpkt.pcap.TCPDUMP_MAGIC_NANO, dpkt.pcap.PMUDPCT_MAGIC_NANO)
    while True:
        at = f.tell()
        head = f.read(record.__hdr_len__)
        if not head:
            return
        if len(head) < record.__hdr_len__:
            raise FileEndsEarly(TRUNCATED_FILE, f"{name}: ends inside a record header at byte {at}")
        hdr = record(head)
        have = size - at - len(head)  # checked before reading: a corrupt caplen may say 4 GB
        if hdr.caplen > have:
            raise FileEndsEarly(
                TRUNCATED_FILE, f"{name}: record at byte {at} has {have} of its {hdr.caplen} bytes"
            )
        buf = f.read(hdr.caplen)
        if nano:  # correctly rounded, as float(Decimal) would be
            yield ((hdr.tv_sec * 1_000_000_000 + hdr.tv_usec) / 1_000_000_000, linktype, buf)
        else:
            yield (hdr.tv_sec + hdr.tv_usec / 1e6, linktype, buf)


@dataclass(slots=True)
class _Interface:
    linktype: int
    divisor: float
    offset: int


def _iter_pcapng(f: BinaryIO) -> Iterator[RawFrame]:
    """pcapng with any number of sections and interfaces (dpkt's own Reader knows only the first
    interface; Wireshark captures on several interfaces have several, each with its link type
    and timestamp resolution). A block that is cut off or that dpkt cannot parse ends the read
    (FileEndsEarly): what came before it is kept."""
    name = getattr(f, "name", "capture")
    size = os.fstat(f.fileno()).st_size
    interfaces: list[_Interface] = []
    le = True
    last_ts = 0.0
    while True:
        at = f.tell()
        head = f.read(8)
        if not head:
            return
        if len(head) < 8:
            raise FileEndsEarly(TRUNCATED_FILE, f"{name}: ends inside a block header at byte {at}")
        if head[:4] == _PCAPNG_MAGIC:
            bom = f.read(4)
            if bom == b"\x4d\x3c\x2b\x1a":
                le = True
            elif bom == b"\x1a\x2b\x3c\x4d":
                le = False
            elif at == 0:
                raise CaptureFormatError(
                    f"{name}: pcapng section header with an unknown byte-order mark {bom.hex()}"
                )
            else:
                raise FileEndsEarly(
                    CORRUPT_FILE,
                    f"{name}: pcapng section header at byte {at} has an unknown byte-order mark",
                )
            blen = struct.unpack("<I" if le else ">I", head[4:8])[0]
            _check_block_length(name, at, blen, size, "section header")
            f.seek(at + blen)
            interfaces = []  # interface ids are per section
            continue
        btype, blen = struct.unpack("<II" if le else ">II", head)
        _check_block_length(name, at, blen, size, f"block of type {btype:#x}")
        buf = head + f.read(blen - 8)
        try:
            frame = _pcapng_block(btype, blen, buf, le, interfaces, last_ts)
        except (dpkt.UnpackError, struct.error, ValueError, IndexError) as e:
            # dpkt's block parsers raise UnpackError/NeedData on a block that contradicts itself
            raise FileEndsEarly(
                CORRUPT_FILE, f"{name}: pcapng block of type {btype:#x} at byte {at}: {e}"
            ) from e
        if frame is not None:
            last_ts = frame[0]
            yield frame


def _check_block_length(name: str, at: int, blen: int, size: int, what: str) -> None:
    """A pcapng block length that is impossible (corrupt) or runs past the end (cut off); checked
    before reading, so a corrupt 4 GB length is never allocated."""
    if blen < 12 or blen % 4:
        raise FileEndsEarly(CORRUPT_FILE, f"{name}: pcapng {what} at byte {at} has length {blen}")
    if at + blen > size:
        raise FileEndsEarly(
            TRUNCATED_FILE,
            f"{name}: pcapng {what} at byte {at} has {size - at} of its {blen} bytes",
        )


def _pcapng_block(
    btype: int, blen: int, buf: bytes, le: bool, interfaces: list[_Interface], last_ts: float
) -> RawFrame | None:
    """One non-section block: a frame, or None (interface descriptions are added to
    `interfaces`; name resolution, statistics and custom blocks carry nothing for us)."""
    if btype == dpkt.pcapng.PCAPNG_BT_IDB:
        idb = (
            dpkt.pcapng.InterfaceDescriptionBlockLE(buf)
            if le
            else dpkt.pcapng.InterfaceDescriptionBlock(buf)
        )
        divisor, offset = 1e6, 0
        for opt in idb.opts:
            if opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL and opt.data:
                resol = opt.data[0]
                divisor = float((2 if resol & 0x80 else 10) ** (resol & 0x7F))
            elif opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSOFFSET and len(opt.data) >= 8:
                offset = struct.unpack("<q" if le else ">q", opt.data[:8])[0]
        interfaces.append(_Interface(int(idb.linktype), divisor, offset))
        return None
    if btype in (dpkt.pcapng.PCAPNG_BT_EPB, dpkt.pcapng.PCAPNG_BT_PB):
        # EPB and the obsolete PB share the layout we need (PB has a 16-bit interface id).
        if btype == dpkt.pcapng.PCAPNG_BT_EPB:
            epb = (
                dpkt.pcapng.EnhancedPacketBlockLE(buf)
                if le
                else dpkt.pcapng.EnhancedPacketBlock(buf)
            )
        else:
            epb = dpkt.pcapng.PacketBlockLE(buf) if le else dpkt.pcapng.PacketBlock(buf)
        iface_id = int(epb.iface_id)
        if iface_id >= len(interfaces):
            raise ValueError(f"packet on undeclared interface {iface_id}")
        iface = interfaces[iface_id]
        ts = iface.offset + ((epb.ts_high << 32) | epb.ts_low) / iface.divisor
        return (ts, iface.linktype, bytes(epb.pkt_data))
    if btype == dpkt.pcapng.PCAPNG_BT_SPB:
        # Simple Packet Block: interface 0, no timestamp (keep the previous one).
        if not interfaces:
            raise ValueError("simple packet block before any interface")
        caplen = min(struct.unpack("<I" if le else ">I", buf[8:12])[0], blen - 16)
        return (last_ts, interfaces[0].linktype, buf[12 : 12 + caplen])
    return None


def open_frames(f: BinaryIO) -> tuple[str, Iterator[RawFrame]]:
    """Sniff the format from the first bytes; returns ("pcap"|"pcapng", frame iterator)."""
    magic = f.read(4)
    f.seek(0)
    if not magic:
        raise CaptureFormatError(f"{getattr(f, 'name', 'capture')}: empty, no capture in it")
    if magic in _PCAP_MAGICS:
        return "pcap", _iter_pcap(f)
    if magic == _PCAPNG_MAGIC:
        return "pcapng", _iter_pcapng(f)
    raise CaptureFormatError(
        f"{getattr(f, 'name', 'capture')}: not a pcap or pcapng file (magic {magic.hex()})"
    )


# --- IP fragment reassembly with bounded state --------------------------------------------------

FragKey = tuple[object, ...]


# What one fragment frame costs in the byte budget on top of its data: its (frame, ts) record.
# Without it, duplicate or zero-length fragments grew an entry without limit for free.
FRAGMENT_FRAME_COST = 64


class _Reassembly:
    __slots__ = ("complete_len", "first_ts", "frames", "have", "next_header", "pieces")

    def __init__(self, ts: float) -> None:
        self.first_ts = ts
        self.pieces: dict[int, bytes] = {}  # offset -> bytes (later duplicates win)
        self.complete_len: int | None = None  # known once the last fragment (MF=0) arrives
        self.next_header: int | None = None  # upper protocol, from the offset-0 fragment
        self.frames: list[tuple[int, float]] = []
        self.have = 0

    @property
    def cost(self) -> int:
        return self.have + FRAGMENT_FRAME_COST * len(self.frames)

    def add(self, offset: int, data: bytes, more: bool) -> None:
        old = self.pieces.get(offset)
        if old is not None:
            self.have -= len(old)
        self.pieces[offset] = data
        self.have += len(data)
        if not more:
            self.complete_len = offset + len(data)

    def assemble(self) -> bytes | None:
        if self.complete_len is None or self.next_header is None:
            return None
        if self.have < self.complete_len:
            return None
        out = bytearray(self.complete_len)
        covered = 0
        for offset in sorted(self.pieces):
            data = self.pieces[offset]
            if offset > covered:
                return None  # a hole (overlaps made `have` look big enough)
            end = min(offset + len(data), self.complete_len)
            out[offset:end] = data[: end - offset]
            covered = max(covered, end)
        return bytes(out) if covered >= self.complete_len else None


class Reassembler:
    """Outer IPv4/IPv6 fragment reassembly. Bounded: at most `max_pending` datagrams and
    `max_bytes` buffered; an entry older than `timeout` seconds of capture time is given up
    (Linux's ipfrag_time is 30 s). Given-up frames are reported as FRAGMENT_INCOMPLETE."""

    def __init__(
        self, max_pending: int = 1024, max_bytes: int = 16 * 1024 * 1024, timeout: float = 30.0
    ) -> None:
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._pending: OrderedDict[FragKey, _Reassembly] = OrderedDict()
        self._bytes = 0
        self.given_up: list[tuple[int, float]] = []  # frames to report, drained by the reader

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes charged against `max_bytes`: fragment data plus FRAGMENT_FRAME_COST a frame."""
        return self._bytes

    def add(
        self,
        key: FragKey,
        frame: int,
        ts: float,
        offset: int,
        data: bytes,
        more: bool,
        next_header: int | None,
    ) -> tuple[bytes, int, list[tuple[int, float]]] | None:
        """Returns (payload, upper protocol, frames used) when the datagram is complete."""
        entry = self._pending.get(key)
        if entry is None:
            entry = _Reassembly(ts)
            self._pending[key] = entry
        before = entry.cost
        entry.add(offset, data, more)
        if next_header is not None:
            entry.next_header = next_header
        entry.frames.append((frame, ts))
        self._bytes += entry.cost - before
        whole = entry.assemble()
        if whole is not None:
            del self._pending[key]
            self._bytes -= entry.cost
            assert entry.next_header is not None
            return whole, entry.next_header, entry.frames
        self._enforce_bounds(ts)
        return None

    def _give_up(self, key: FragKey) -> None:
        entry = self._pending.pop(key)
        self._bytes -= entry.cost
        self.given_up.extend(entry.frames)

    def _enforce_bounds(self, now: float) -> None:
        while self._pending and (
            len(self._pending) > self.max_pending or self._bytes > self.max_bytes
        ):
            self._give_up(next(iter(self._pending)))
        for key in [k for k, e in self._pending.items() if now - e.first_ts > self.timeout]:
            self._give_up(key)

    def expire(self, now: float) -> None:
        """Give up entries older than the timeout (called as capture time advances)."""
        if self._pending:
            first = next(iter(self._pending.values()))
            if now - first.first_ts > self.timeout:
                self._enforce_bounds(now)

    def flush(self) -> None:
        for key in list(self._pending):
            self._give_up(key)


# --- the reader ---------------------------------------------------------------------------------

Item = UdpDatagram | Unreadable


def _then(
    frames: Iterator[RawFrame], name: str, gzip_problem: str | None
) -> Iterator[RawFrame]:
    """`frames`, then the gzip stream's early end as the file's (the frames read so far kept):
    where the cut fell inside a record, the reader's own message gets the reason in front."""
    try:
        yield from frames
    except FileEndsEarly as e:
        if gzip_problem:
            raise FileEndsEarly(e.reason, f"{e.detail} ({gzip_problem})") from e
        raise
    if gzip_problem:
        raise FileEndsEarly(TRUNCATED_FILE, f"{name}: {gzip_problem}")


class CaptureReader:
    """Iterate a capture file as `UdpDatagram | Unreadable`, one frame at a time.

    `path` may be "-" (standard input), and the capture gzip'd (found by its magic bytes): both
    are copied to a temporary file first (`open_capture`). `ports`: UDP ports that carry L2TP
    (either side). `stats` is filled as iteration goes; `position`/`size` let a caller draw a
    progress bar.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        ports: tuple[int, ...] = (L2TP_PORT,),
        reassembler: Reassembler | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = "<stdin>" if os.fspath(path) == STDIN else os.fspath(path)  # for reports
        self.ports = frozenset(ports)
        self.stats = CaptureStats()
        self.reassembler = reassembler or Reassembler()
        try:
            self._f, self._gzip_problem = open_capture(path)
        except UnreadableInput as e:
            raise CaptureFormatError(str(e)) from e
        self.size = os.fstat(self._f.fileno()).st_size

    @property
    def position(self) -> int:
        return self._f.tell() if not self._f.closed else self.size

    def __iter__(self) -> Iterator[Item]:
        """Once: the file is closed at the end (a temporary copy is then deleted)."""
        with self._f as f:
            fmt, frames = open_frames(f)
            self.stats.file_format = fmt
            yield from self._decode_all(_then(frames, self.name, self._gzip_problem))

    def close(self) -> None:
        """For a reader that is not iterated to the end."""
        self._f.close()

    def _decode_all(self, frames: Iterator[RawFrame]) -> Iterator[Item]:
        stats = self.stats
        reasm = self.reassembler
        number = 0
        max_ts = last_ts = float("-inf")
        while True:
            try:
                ts, linktype, buf = next(frames)
            except StopIteration:
                break
            except FileEndsEarly as e:
                number += 1
                stats.frames += 1
                stats.count(e.reason)
                stats.file_error = e.detail
                yield Unreadable(number, max(last_ts, 0.0), e.reason)
                break
            last_ts = ts
            number += 1
            stats.frames += 1
            stats.linktypes.add(linktype)
            if ts > max_ts:
                max_ts = ts
                reasm.expire(ts)
            item = self._decode(number, ts, linktype, buf)
            if reasm.given_up:
                yield from self._drain_given_up()
            if item is None:
                continue
            if isinstance(item, Unreadable):
                stats.count(item.reason)
            else:
                stats.datagrams += 1
            yield item
        reasm.flush()
        yield from self._drain_given_up()

    def _drain_given_up(self) -> Iterator[Item]:
        reasm = self.reassembler
        for frame, ts in reasm.given_up:
            self.stats.fragments -= 1
            self.stats.count(FRAGMENT_INCOMPLETE)
            yield Unreadable(frame, ts, FRAGMENT_INCOMPLETE)
        reasm.given_up.clear()

    # Each layer returns an Item, or None when the frame was consumed as a fragment.
    def _decode(self, n: int, ts: float, linktype: int, buf: bytes) -> Item | None:
        if linktype == LINKTYPE_ETHERNET:
            return self._ethernet(n, ts, buf, 0)
        if linktype == LINKTYPE_LINUX_SLL:
            if len(buf) < 16:
                return Unreadable(n, ts, TRUNCATED)
            return self._ethertype(n, ts, buf, 16, _U16.unpack_from(buf, 14)[0])
        if linktype == LINKTYPE_LINUX_SLL2:
            if len(buf) < 20:
                return Unreadable(n, ts, TRUNCATED)
            return self._ethertype(n, ts, buf, 20, _U16.unpack_from(buf, 0)[0])
        if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, *_RAW_OS_DLTS):
            return self._ip(n, ts, buf, 0)
        if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            return self._loopback(n, ts, buf, linktype)
        if linktype == LINKTYPE_PPP:
            return self._ppp(n, ts, buf, 0)
        return Unreadable(n, ts, UNSUPPORTED_LINKTYPE)

    def _ethernet(self, n: int, ts: float, buf: bytes, off: int) -> Item | None:
        if len(buf) < off + 14:
            return Unreadable(n, ts, TRUNCATED)
        off += 12
        etype = _U16.unpack_from(buf, off)[0]
        off += 2
        while etype in _ETH_VLAN_TAGS:  # 802.1Q / 802.1ad QinQ: 4 bytes each
            if len(buf) < off + 4:
                return Unreadable(n, ts, TRUNCATED)
            etype = _U16.unpack_from(buf, off + 2)[0]
            off += 4
        if etype <= 1500:  # 802.3 length field: LLC/SNAP frames (STP, CDP, ...)
            return Unreadable(n, ts, NOT_IP)
        return self._ethertype(n, ts, buf, off, etype)

    def _ethertype(self, n: int, ts: float, buf: bytes, off: int, etype: int) -> Item | None:
        if etype in (ETH_IPV4, ETH_IPV6):
            return self._ip(n, ts, buf, off)
        if etype == ETH_PPPOE_SESSION:
            # PPPoE session header: ver/type, code, session id, length; then the PPP protocol.
            if len(buf) < off + 6:
                return Unreadable(n, ts, TRUNCATED)
            return self._ppp(n, ts, buf, off + 6)
        if etype in _ETH_VLAN_TAGS:  # SLL carrying a still-tagged frame
            if len(buf) < off + 4:
                return Unreadable(n, ts, TRUNCATED)
            return self._ethertype(n, ts, buf, off + 4, _U16.unpack_from(buf, off + 2)[0])
        return Unreadable(n, ts, NOT_IP)

    def _ppp(self, n: int, ts: float, buf: bytes, off: int) -> Item | None:
        if len(buf) >= off + 2 and buf[off] == 0xFF and buf[off + 1] == 0x03:
            off += 2  # HDLC address/control (DLT_PPP captures)
        if len(buf) < off + 1:
            return Unreadable(n, ts, TRUNCATED)
        if buf[off] & 1:  # protocol field compressed to one byte
            proto, off = buf[off], off + 1
        else:
            if len(buf) < off + 2:
                return Unreadable(n, ts, TRUNCATED)
            proto, off = _U16.unpack_from(buf, off)[0], off + 2
        if proto in (PPP_IPV4, PPP_IPV6):
            return self._ip(n, ts, buf, off)
        return Unreadable(n, ts, NOT_IP)

    def _loopback(self, n: int, ts: float, buf: bytes, linktype: int) -> Item | None:
        if len(buf) < 4:
            return Unreadable(n, ts, TRUNCATED)
        family = _U32_BE.unpack_from(buf, 0)[0]
        if linktype == LINKTYPE_NULL and family > 0xFFFF:
            family = struct.unpack_from("<I", buf, 0)[0]  # DLT_NULL is in the writer's order
        # AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD/OpenBSD), 28, 30 (macOS).
        if family in (2, 10, 24, 28, 30):
            return self._ip(n, ts, buf, 4)
        return Unreadable(n, ts, NOT_IP)

    def _ip(self, n: int, ts: float, buf: bytes, off: int) -> Item | None:
        if len(buf) < off + 1:
            return Unreadable(n, ts, TRUNCATED)
        version = buf[off] >> 4
        if version == 4:
            return self._ipv4(n, ts, buf, off)
        if version == 6:
            return self._ipv6(n, ts, buf, off)
        return Unreadable(n, ts, NOT_IP)

    def _ipv4(self, n: int, ts: float, buf: bytes, off: int) -> Item | None:
        if len(buf) < off + 20:
            return Unreadable(n, ts, TRUNCATED)
        vihl, _tos, total, ident, frag, _ttl, proto, src_b, dst_b = _IPV4_FIXED.unpack_from(
            buf, off
        )
        ihl = (vihl & 0x0F) * 4
        if ihl < 20 or total < ihl:
            return Unreadable(n, ts, MALFORMED)
        if len(buf) < off + total:
            return Unreadable(n, ts, TRUNCATED)
        src, dst = socket.inet_ntoa(src_b), socket.inet_ntoa(dst_b)
        payload = buf[off + ihl : off + total]  # drops Ethernet padding after the IP packet
        more = bool(frag & 0x2000)
        frag_offset = (frag & 0x1FFF) * 8
        if more or frag_offset:
            self.stats.fragments += 1
            done = self.reassembler.add(
                (4, src_b, dst_b, proto, ident),
                n,
                ts,
                frag_offset,
                payload,
                more,
                proto if frag_offset == 0 else None,
            )
            if done is None:
                return None
            payload = done[0]
            self.stats.fragments -= 1  # the completing frame is counted as the datagram
            self.stats.reassembled += 1
        return self._transport(n, ts, proto, src, dst, payload)

    def _ipv6(self, n: int, ts: float, buf: bytes, off: int) -> Item | None:
        if len(buf) < off + 40:
            return Unreadable(n, ts, TRUNCATED)
        plen, nh, _hlim, src_b, dst_b = _IPV6_FIXED.unpack_from(buf, off)
        end = off + 40 + plen
        if len(buf) < end:
            return Unreadable(n, ts, TRUNCATED)
        src = socket.inet_ntop(socket.AF_INET6, src_b)
        dst = socket.inet_ntop(socket.AF_INET6, dst_b)
        pos = off + 40
        while True:
            if nh in _IPV6_EXT_HEADERS or nh == IPPROTO_AH:
                if end < pos + 8:
                    return Unreadable(n, ts, MALFORMED)
                size = (buf[pos + 1] + 2) * 4 if nh == IPPROTO_AH else (buf[pos + 1] + 1) * 8
                nh, pos = buf[pos], pos + size
                if pos > end:
                    return Unreadable(n, ts, MALFORMED)
                continue
            if nh == IPV6_FRAGMENT:
                if end < pos + 8:
                    return Unreadable(n, ts, MALFORMED)
                frag_nh, offm, ident = _IPV6_FRAG.unpack_from(buf, pos)
                frag_offset, more = offm & 0xFFF8, bool(offm & 1)
                data = buf[pos + 8 : end]
                if frag_offset == 0 and not more:  # atomic fragment (RFC 6946)
                    nh, pos = frag_nh, pos + 8
                    continue
                self.stats.fragments += 1
                done = self.reassembler.add(
                    (6, src_b, dst_b, ident),
                    n,
                    ts,
                    frag_offset,
                    data,
                    more,
                    frag_nh if frag_offset == 0 else None,
                )
                if done is None:
                    return None
                self.stats.fragments -= 1
                self.stats.reassembled += 1
                whole, nh = done[0], done[1]
                # extension headers may follow in the reassembled fragmentable part
                return self._ipv6_upper(n, ts, nh, src, dst, whole)
            return self._ipv6_upper(n, ts, nh, src, dst, buf[pos:end])

    def _ipv6_upper(self, n: int, ts: float, nh: int, src: str, dst: str, data: bytes) -> Item:
        pos = 0
        while nh in _IPV6_EXT_HEADERS or nh == IPPROTO_AH:
            if len(data) < pos + 8:
                return Unreadable(n, ts, MALFORMED)
            size = (data[pos + 1] + 2) * 4 if nh == IPPROTO_AH else (data[pos + 1] + 1) * 8
            nh, pos = data[pos], pos + size
        if pos > len(data):
            return Unreadable(n, ts, MALFORMED)
        return self._transport(n, ts, nh, src, dst, data[pos:] if pos else data)

    def _transport(self, n: int, ts: float, proto: int, src: str, dst: str, seg: bytes) -> Item:
        if proto == IPPROTO_UDP:
            if len(seg) < 8:
                return Unreadable(n, ts, MALFORMED)
            sport, dport, ulen = _UDP.unpack_from(seg, 0)
            if ulen < 8 or ulen > len(seg):
                # IPv6 jumbograms put 0 here; nothing of ours is that big.
                return Unreadable(n, ts, MALFORMED)
            if sport in self.ports or dport in self.ports:
                return UdpDatagram(n, ts, src, sport, dst, dport, seg[8:ulen])
            if NAT_T_PORT in (sport, dport):
                body = seg[8:ulen]
                if body == b"\xff":  # NAT-keepalive
                    return Unreadable(n, ts, IKE)
                if body[:4] == b"\x00\x00\x00\x00":  # non-ESP marker: IKE on 4500
                    return Unreadable(n, ts, IKE)
                return Unreadable(n, ts, ENCRYPTED)
            if IKE_PORT in (sport, dport):
                return Unreadable(n, ts, IKE)
            return Unreadable(n, ts, OTHER_UDP)
        if proto == IPPROTO_ESP:
            return Unreadable(n, ts, ENCRYPTED)
        if proto == IPPROTO_L2TP:
            return Unreadable(n, ts, L2TPV3_IP)
        return Unreadable(n, ts, OTHER_IP_PROTOCOL)

