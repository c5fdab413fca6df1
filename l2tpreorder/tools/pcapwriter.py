"""Writing classic pcap files of UDP datagrams (replay `-o`, `impair`).

Output is LINKTYPE_RAW (bare IPv4/IPv6, no link layer): the input's link layer, VLAN tags and
fragmentation are not what these files are about, and every reader (tshark, tcpdump, dpkt, ours)
decodes raw IP. The IP and UDP headers are rebuilt for each datagram with correct lengths and
checksums, so a payload whose size changed (Ns added or stripped) is still a valid packet.

A file is written under a temporary name in the same directory and renamed into place by
`close()`, so a run that fails leaves no partial output (and no earlier file is clobbered), and
`refuse_input_as_output` stops `-o` from truncating the capture that is about to be read.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
from types import TracebackType
from typing import BinaryIO

LINKTYPE_RAW = 101
_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
MAGIC_MICRO = 0xA1B2C3D4
SNAPLEN = 262144


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


class OutputIsInput(ValueError):
    """The output path names the capture being read: writing it would truncate the input."""


def refuse_input_as_output(input_path: str, output_path: str, output_flag: str) -> None:
    """Raise OutputIsInput when `output_path` is the same file as `input_path` (also through
    a symlink or another spelling of the path)."""
    try:
        same = os.path.samefile(input_path, output_path)
    except OSError:  # either does not exist: they cannot be the same file
        return
    if same:
        raise OutputIsInput(
            f"{output_flag} {output_path} is the input capture {input_path}: writing it would "
            "destroy the capture before it is read; choose another output file"
        )


def _open_temporary(path: str | os.PathLike[str]) -> tuple[BinaryIO, str]:
    """A new file beside `path` (same directory, so the final rename is atomic)."""
    directory, base = os.path.split(os.fspath(path))
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), tmp


class PcapWriter:
    """Little-endian classic pcap, microsecond timestamps, LINKTYPE_RAW."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        # set by create(): close() renames the temporary file to the final path
        self._paths: tuple[str, str] | None = None
        f.write(_FILE_HEADER.pack(MAGIC_MICRO, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW))
        self._ident = 0
        self.frames = 0

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> PcapWriter:
        f, tmp = _open_temporary(path)
        try:
            writer = cls(f)
        except BaseException:
            f.close()
            os.unlink(tmp)
            raise
        writer._paths = (tmp, os.fspath(path))
        return writer

    def write_frame(self, ts: float, frame: bytes) -> None:
        ticks = round(ts * 1_000_000)  # round once, then split: never 1,000,000 usec
        sec, frac = divmod(ticks, 1_000_000)
        self._f.write(_RECORD.pack(sec & 0xFFFFFFFF, frac, len(frame), len(frame)))
        self._f.write(frame)
        self.frames += 1

    def write_udp(
        self, ts: float, src: str, sport: int, dst: str, dport: int, payload: bytes
    ) -> None:
        self._ident = (self._ident + 1) & 0xFFFF
        self.write_frame(ts, build_udp_ip(src, sport, dst, dport, payload, self._ident))

    def close(self) -> None:
        """Finish the file: a temporary file is renamed into place only now."""
        if self._f.closed:
            return
        self._f.close()
        if self._paths is not None:
            os.replace(*self._paths)

    def abort(self) -> None:
        """Give up: the temporary file is removed and nothing appears at the output path."""
        if self._f.closed:
            return
        self._f.close()
        if self._paths is not None:
            os.unlink(self._paths[0])

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
