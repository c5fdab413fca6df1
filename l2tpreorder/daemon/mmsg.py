"""Batched datagram syscalls for the relay: recvmmsg, UDP GSO, a precise timer (Linux, ctypes).

Why: from Python a `recvfrom` + `sendto` pair costs more than the reorder work itself. One
`recvmmsg` moves up to 64 datagrams into a preallocated ring and one GSO `sendmsg` hands the
kernel a run of equal-size datagrams for one destination, so the syscall cost is paid per batch.
Everything here degrades to plain per-datagram calls (`AVAILABLE` False) on other platforms or
C libraries without these calls; the relay works the same either way, only slower.

The receive ring lives in an anonymous mmap: slicing it gives `bytes` in one copy, and its 4 MiB
of 64 KiB slots only become resident where datagrams are written (a 100-byte packet touches one
page per slot). One ring per thread: a read's datagrams are copied out before the call returns,
so every socket of an event loop can share it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import socket
import struct
import sys
import threading
from itertools import accumulate, chain
from typing import Any

MSG_DONTWAIT = 0x40
SO_RXQ_OVFL = 40  # asm-generic value (x86_64, aarch64): each datagram carries sk_drops
SO_RCVBUFFORCE = 33
SOL_UDP = 17
UDP_SEGMENT = 103
# Linux accepts up to 64 segments per GSO send (UDP_MAX_SEGMENTS; 128 on newer kernels), and the
# whole super-datagram must fit one IP packet.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000

RING_SLOTS = 64
SLOT_SIZE = 65536  # any UDP payload fits: never truncated
NAME_SIZE = 32  # sockaddr_in6 (28) rounded up
CTRL_SIZE = 64  # SO_RXQ_OVFL (24) + IPV6_PKTINFO (40)
MMSGHDR_SIZE = 64
# struct msghdr (LP64): name, namelen, (pad), iov, iovlen, control, controllen, flags, (pad)
_MSGHDR = struct.Struct("PI4xPNPNi4x")
_IOVEC = struct.Struct("PN")
_CMSGHDR = struct.Struct("Nii")  # cmsg_len, cmsg_level, cmsg_type; data 8-byte aligned after
_U32 = struct.Struct("=I")
CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


def _load() -> ctypes.CDLL | None:
    if sys.platform != "linux" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None  # the struct layouts above are LP64 Linux
    if os.environ.get("L2TPREORDER_PLAIN_IO"):
        return None  # operator/test switch: the per-datagram fallback path
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.recvmmsg.argtypes = [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p
        ]
        libc.recvmmsg.restype = ctypes.c_int
        libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        libc.sendmmsg.restype = ctypes.c_int
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p
        ]
        libc.timerfd_settime.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load()
AVAILABLE = _libc is not None
_lengths: dict[int, struct.Struct] = {}


def _gso_works() -> bool:
    if not AVAILABLE or os.environ.get("L2TPREORDER_NO_GSO"):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.setsockopt(SOL_UDP, UDP_SEGMENT, 1000)
        except OSError:
            return False
    return True


GSO_AVAILABLE = _gso_works()


class RecvRing:
    """RING_SLOTS receive slots with their iovecs and mmsghdrs built once."""

    def __init__(self, slots: int = RING_SLOTS) -> None:
        self.slots = slots
        data_size = slots * SLOT_SIZE
        self.names_at = data_size
        self.ctrl_at = data_size + slots * NAME_SIZE
        self.mem = mmap.mmap(-1, self.ctrl_at + slots * CTRL_SIZE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.mem))
        self.iov = ctypes.create_string_buffer(slots * _IOVEC.size)
        self.hdrs = ctypes.create_string_buffer(slots * MMSGHDR_SIZE)
        iov_base = ctypes.addressof(self.iov)
        for i in range(slots):
            _IOVEC.pack_into(self.iov, i * _IOVEC.size, base + i * SLOT_SIZE, SLOT_SIZE)
            _MSGHDR.pack_into(
                self.hdrs,
                i * MMSGHDR_SIZE,
                base + self.names_at + i * NAME_SIZE,
                NAME_SIZE,
                iov_base + i * _IOVEC.size,
                1,
                base + self.ctrl_at + i * CTRL_SIZE,
                CTRL_SIZE,
                0,
            )
        # recvmmsg overwrites namelen/controllen/flags/msg_len: restored before every call.
        self.pristine = self.hdrs.raw
        self.hdrs_addr = ctypes.addressof(self.hdrs)
        self.offsets = [i * SLOT_SIZE for i in range(slots)]
        self.name_offsets = [self.names_at + i * NAME_SIZE for i in range(slots)]

    def recv(self, fd: int, limit: int) -> int:
        """Datagrams now waiting on `fd`, up to `limit`, into slots 0..n-1; 0 when none."""
        assert _libc is not None
        ctypes.memmove(self.hdrs_addr, self.pristine, limit * MMSGHDR_SIZE)
        n: int = _libc.recvmmsg(fd, self.hdrs_addr, limit, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        return n

    def lengths(self, n: int) -> tuple[int, ...]:
        """(controllen, msg_len) of slots 0..n-1, flattened, in one struct call."""
        st = _lengths.get(n)
        if st is None:
            st = _lengths[n] = struct.Struct("=" + "40xQ8xI4x" * n)
        lengths: tuple[int, ...] = st.unpack_from(self.hdrs)
        return lengths

    def control(self, i: int, length: int) -> bytes:
        at = self.ctrl_at + i * CTRL_SIZE
        return self.mem[at : at + length]


class SendRing:
    """One sendmmsg call's worth of datagrams for one destination, without per-datagram
    syscalls: the run is joined into one buffer (a C memcpy), and the iovecs that cut it back
    into datagrams are packed with one struct call. Unlike a GSO send, every datagram is its own
    packet from the start, so a capture on the sending host (tcpdump on lo) shows them as sent.
    """

    def __init__(self, slots: int = RING_SLOTS) -> None:
        self.slots = slots
        self.mem = mmap.mmap(-1, slots * SLOT_SIZE + NAME_SIZE)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.mem))
        self.name_at = slots * SLOT_SIZE
        self.iov = ctypes.create_string_buffer(slots * _IOVEC.size)
        self.hdrs = ctypes.create_string_buffer(slots * MMSGHDR_SIZE)
        iov_base = ctypes.addressof(self.iov)
        templates = {}
        for namelen in (16, 28):
            for i in range(slots):
                _MSGHDR.pack_into(
                    self.hdrs,
                    i * MMSGHDR_SIZE,
                    self.base + self.name_at,
                    namelen,
                    iov_base + i * _IOVEC.size,
                    1,
                    0,
                    0,
                    0,
                )
            templates[namelen] = self.hdrs.raw
        self.templates = templates
        self.hdrs_addr = ctypes.addressof(self.hdrs)
        self._iov_structs: dict[int, struct.Struct] = {}

    def send(self, fd: int, datas: list[bytes], name: bytes) -> int:
        """sendmmsg `datas` (at most `slots`, total < 4 MiB) to sockaddr `name`; returns how
        many the kernel took (stops at the first refusal: EAGAIN, ENOBUFS...)."""
        assert _libc is not None
        n = len(datas)
        lens = list(map(len, datas))
        blob = b"".join(datas)
        self.mem[: len(blob)] = blob
        self.mem[self.name_at : self.name_at + len(name)] = name
        st = self._iov_structs.get(n)
        if st is None:
            st = self._iov_structs[n] = struct.Struct("=" + "QQ" * n)
        starts = accumulate(lens[:-1], initial=self.base)
        st.pack_into(self.iov, 0, *chain.from_iterable(zip(starts, lens, strict=True)))
        ctypes.memmove(self.hdrs_addr, self.templates[len(name)], n * MMSGHDR_SIZE)
        sent = 0
        while sent < n:
            r: int = _libc.sendmmsg(fd, self.hdrs_addr + sent * MMSGHDR_SIZE, n - sent, 0)
            if r < 0:
                if ctypes.get_errno() == errno.EINTR:
                    continue
                break
            sent += r
        return sent


def sockaddr(address: tuple[Any, ...]) -> bytes | None:
    """The raw sockaddr for an (ip, port[, flowinfo, scope_id]) tuple; None if not numeric."""
    host, port = address[0], address[1]
    try:
        if ":" in host:
            if "%" in host:
                return None  # a named scope: leave it to the socket module
            flowinfo = address[2] if len(address) > 2 else 0
            scope = address[3] if len(address) > 3 else 0
            raw = socket.inet_pton(socket.AF_INET6, host)
            return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, flowinfo) + (
                raw + struct.pack("=I", scope)
            )
        raw = socket.inet_pton(socket.AF_INET, host)
    except (OSError, TypeError):
        return None
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + raw + bytes(8)


_local = threading.local()


def ring() -> RecvRing:
    """This thread's receive ring (created on first use)."""
    r: RecvRing | None = getattr(_local, "ring", None)
    if r is None:
        r = _local.ring = RecvRing()
    return r


def send_ring() -> SendRing:
    """This thread's send ring (created on first use)."""
    r: SendRing | None = getattr(_local, "send_ring", None)
    if r is None:
        r = _local.send_ring = SendRing()
    return r


def walk_control(raw: bytes) -> list[tuple[int, int, bytes]]:
    """The (level, type, data) items of a received control buffer."""
    items = []
    pos = 0
    hdr = _CMSGHDR.size
    while pos + hdr <= len(raw):
        length, level, kind = _CMSGHDR.unpack_from(raw, pos)
        if length < hdr:
            break
        items.append((level, kind, raw[pos + hdr : pos + length]))
        pos += (length + 7) & ~7
    return items


def drops_in(raw: bytes) -> int | None:
    """The SO_RXQ_OVFL counter in a control buffer (absent until the socket's first drop)."""
    for level, kind, value in walk_control(raw):
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
            count: int = _U32.unpack_from(value)[0]
            return count
    return None


def gso_cmsg(size: int) -> list[tuple[int, int, bytes]]:
    return [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]


def gso_segments(size: int) -> int:
    """How many datagrams of `size` bytes one GSO send may carry."""
    return max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // max(size, 1)))


class TimerFd:
    """A CLOCK_MONOTONIC timerfd armed at absolute times: wakes the event loop's poll at the
    deadline itself (microsecond precision), where loop timers tick in whole milliseconds from a
    cached clock and can fire early. `time.monotonic()` reads the same clock."""

    def __init__(self) -> None:
        assert _libc is not None
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd: int = fd
        self._spec = ctypes.create_string_buffer(32)  # itimerspec: interval, value
        self._addr = ctypes.addressof(self._spec)

    def arm(self, when: float | None) -> None:
        """Fire once at monotonic time `when` (past: at once); None disarms."""
        assert _libc is not None
        if when is None:
            sec = nsec = 0
        else:
            ns = max(int(when * 1e9), 1)
            sec, nsec = divmod(ns, 1_000_000_000)
        struct.pack_into("=qqqq", self._spec, 0, 0, 0, sec, nsec)
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._addr, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def clear(self) -> None:
        """Consume the expiry count so the fd stops being readable."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)
