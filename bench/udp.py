"""Batched UDP I/O for the harness: recvmmsg/sendmmsg through ctypes, UDP GSO, socket drop counts.

The load generator and the sink must not be the bottleneck, and per-datagram syscalls from Python
would make them one: they move up to hundreds of datagrams per syscall instead. Linux only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import subprocess
import time
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int

MSG_DONTWAIT = 0x40
MSG_WAITFORONE = 0x10000
SO_TIMESTAMPNS = 35  # x86_64 / aarch64 (asm-generic) value; SCM_TIMESTAMPNS has the same
SO_RXQ_OVFL = 40
SO_RCVBUFFORCE = 33
SOL_UDP = 17
UDP_SEGMENT = 103

# struct iovec {void *base; size_t len}; struct msghdr (56 bytes on LP64); struct mmsghdr (64)
IOVEC = struct.Struct("PN")
MSGHDR = struct.Struct("PI4xPNPNi4x")  # name, namelen, iov, iovlen, control, controllen, flags
MMSGHDR_SIZE = 64
MSG_LEN_OFFSET = 56
# cmsghdr {size_t len; int level; int type} then data, 8-byte aligned
CMSG_HDR = struct.Struct("Nii")
TIMESPEC = struct.Struct("qq")
CTRL_SLOT = 64  # room for SCM_TIMESTAMPNS (32 bytes) + SO_RXQ_OVFL (24 bytes)


def _address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


class MmsgRing:
    """`count` fixed slots of `slot_size` bytes with pre-built iovecs and mmsghdrs.

    Slot i's data lives at data[i*slot_size:]; its received length is `length(i)`.
    """

    def __init__(self, count: int, slot_size: int, control: bool = False) -> None:
        self.count = count
        self.slot_size = slot_size
        self.data = bytearray(count * slot_size)
        self.iov = bytearray(count * IOVEC.size)
        self.hdrs = bytearray(count * MMSGHDR_SIZE)
        self.ctrl = bytearray(count * CTRL_SLOT if control else 0)
        data_addr = _address(self.data)
        iov_addr = _address(self.iov)
        ctrl_addr = _address(self.ctrl) if control else 0
        for i in range(count):
            IOVEC.pack_into(self.iov, i * IOVEC.size, data_addr + i * slot_size, slot_size)
            MSGHDR.pack_into(
                self.hdrs, i * MMSGHDR_SIZE, 0, 0, iov_addr + i * IOVEC.size, 1,
                ctrl_addr + i * CTRL_SLOT if control else 0, CTRL_SLOT if control else 0, 0,
            )
        # recvmmsg overwrites msg_controllen/msg_flags/msg_len: restore from this copy per batch.
        self.pristine = bytes(self.hdrs)
        self.hdrs_addr = _address(self.hdrs)

    def set_length(self, i: int, length: int) -> None:
        """Datagram length for sending slot i (iov_len)."""
        IOVEC.pack_into(self.iov, i * IOVEC.size, _address(self.data) + i * self.slot_size, length)

    def recv(self, fd: int, flags: int = MSG_WAITFORONE) -> int:
        """recvmmsg into all slots; returns how many arrived (0 on timeout/EAGAIN/EINTR)."""
        used = self.count * MMSGHDR_SIZE
        self.hdrs[:used] = self.pristine
        n: int = _recvmmsg(fd, self.hdrs_addr, self.count, flags, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, f"recvmmsg: {os.strerror(err)}")
        return n

    def send(self, fd: int, first: int, count: int) -> int:
        """sendmmsg slots first..first+count-1 (connected socket); returns how many were sent."""
        sent = 0
        while sent < count:
            n = _sendmmsg(fd, self.hdrs_addr + (first + sent) * MMSGHDR_SIZE, count - sent, 0)
            if n < 0:
                err = ctypes.get_errno()
                if err in (errno.EINTR, errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED):
                    continue  # ECONNREFUSED reports an earlier datagram; this one is retried
                raise OSError(err, f"sendmmsg: {os.strerror(err)}")
            sent += n
        return sent


def big_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for `size` bytes of receive buffer (SO_RCVBUFFORCE as root); returns what was granted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def gso_supported() -> bool:
    """Whether this kernel accepts UDP_SEGMENT (Linux >= 4.18)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.setsockopt(SOL_UDP, UDP_SEGMENT, 100)
        except OSError:
            return False
    return True


def udp_socket_stats(port: int) -> list[dict[str, int]]:
    """Kernel counters of every IPv4 UDP socket bound to local `port` (from /proc/net/udp).

    `drops` is what the kernel threw away because that socket's receive buffer was full: the
    harness uses it to say *where* loss happened (relay ingress vs sink), not just how much.
    By port, with the queue length: what the bench knows of a relay it did not write
    (l2tpreorder.daemon.relay.sockets.udp_drops reads the same file by socket inode).
    """
    found = []
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port:
                rx_queue = int(fields[4].split(":")[1], 16)
                found.append({"port": port, "rx_queue": rx_queue, "drops": int(fields[-1]),
                              "inode": int(fields[9])})
    return found


def port_is_bound(port: int) -> bool:
    return bool(udp_socket_stats(port))


def wait_until_bound(port: int, proc: subprocess.Popen[Any], timeout: float = 15.0) -> bool:
    """Poll until something binds UDP `port` (the relay `proc` just started); False when `proc`
    exits first or `timeout` seconds pass. Bound means ready: sends before that are lost."""
    limit = time.monotonic() + timeout
    while not port_is_bound(port):
        if proc.poll() is not None or time.monotonic() > limit:
            return False
        time.sleep(0.02)
    return True


def free_udp_port() -> int:
    """A port the kernel just gave out on 127.0.0.1 (released again at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
