"""UDP socket plumbing for the relay: batched reads and sends, source-address caches, /proc.

`UdpSocket` is the only code that reads or writes datagrams (`read`, `send`, `send_many`):
recvmmsg batches and UDP GSO runs through `mmsg` (ctypes), plain calls where unavailable. It knows
nothing of L2TP, peers or the pipeline; `relay` does.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
from typing import Any

from l2tpreorder.config import Address, format_address
from l2tpreorder.daemon import mmsg
from l2tpreorder.daemon.mode import BindError as ModeBindError

# Datagrams read per readiness callback before the batch is processed (bounds latency and lets
# other sockets and the timer run under a flood).
BATCH = 64
RECV_SIZE = 65535
# Linux socket option numbers Python's socket module lacks on some builds.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IPV6_PKTINFO_SIZE = 20  # struct in6_pktinfo: address + interface index
_ANC_SIZE = socket.CMSG_SPACE(20)
IN_PKTINFO = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
# Raw source sockaddrs remembered with their decoded (ip, port) (cleared when full).
SOURCE_CACHE = 65536


class BindError(ModeBindError):
    """A listen address could not be bound; the message tells the operator what to do."""

    def __init__(self, address: Address, err: OSError) -> None:
        self.address = address
        self.errno = err.errno
        where = format_address(address)
        if err.errno in (errno.EACCES, errno.EPERM):
            fix = (
                f"cannot bind {where}: permission denied (ports below 1024 need root or "
                "CAP_NET_BIND_SERVICE); run it via systemd (systemd/l2tpreorder.service) or "
                "as root, or use an unprivileged port, e.g. --listen 127.0.0.1:11701"
            )
        elif err.errno == errno.EADDRINUSE:
            fix = (
                f"cannot bind {where}: address already in use (is xl2tpd still listening on "
                "it? move xl2tpd to the LNS address with `listen-addr`/`port`, see README)"
            )
        elif err.errno == errno.EADDRNOTAVAIL:
            fix = f"cannot bind {where}: no local interface has this address"
        else:
            fix = f"cannot bind {where}: {err.strerror}"
        super().__init__(fix)


class UdpSocket:
    """A non-blocking UDP socket and its datagram I/O; the swap point for batched syscalls.

    `read` drains up to a batch with one recvmmsg (`mmsg`), or a recvfrom/recvmsg loop where
    that is unavailable, and returns parallel lists: datagrams, sources (ip, port) and, on
    PKTINFO sockets, the cmsg that makes a reply leave from the address the LAC sent to. Source
    addresses are decoded once per distinct raw sockaddr (cached), not per datagram.
    `send_many` sends a run for one destination with UDP GSO where sizes allow.
    SO_RXQ_OVFL makes every datagram carry the socket's kernel drop count: `drops` is the
    latest one seen, so the relay learns of receive-queue overflows within a batch.
    """

    __slots__ = (
        "_full",
        "_names",
        "_sources",
        "drops",
        "family",
        "fd",
        "gso",
        "inode",
        "pktinfo",
        "sock",
    )

    def __init__(self, sock: socket.socket, pktinfo: bool = False, gso: bool = False) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.pktinfo = pktinfo
        self.inode = os.fstat(self.fd).st_ino
        self.gso = gso and mmsg.GSO_AVAILABLE
        self.drops = 0
        self._sources: dict[bytes, tuple[str, int]] = {}
        self._full: dict[tuple[str, int], Any] = {}  # IPv6 source -> (host, port, flow info, scope)
        self._names: dict[int, struct.Struct] = {}
        if pktinfo:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, mmsg.SO_RXQ_OVFL, 1)

    @classmethod
    def bind(cls, address: Address, buffer_bytes: int) -> UdpSocket:
        host, port = address
        ip = ipaddress.ip_address(host)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            if family == socket.AF_INET6:
                # One address family per socket: `[::]:1701` next to `0.0.0.0:1701` must work.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            set_buffers(sock, buffer_bytes)
            sock.bind((host, port))
            return cls(sock, pktinfo=ip.is_unspecified)
        except OSError:
            sock.close()
            raise

    def read(
        self, limit: int = BATCH
    ) -> tuple[list[bytes], list[tuple[str, int]], list[Any] | None]:
        """Up to `limit` datagrams waiting now (never blocks): (datagrams, sources, cmsgs).

        `cmsgs` is None on sockets without PKTINFO. ICMP errors reported on the socket
        (ECONNREFUSED...) or a transient failure end the batch; the rest waits for the next
        wake-up.
        """
        if not mmsg.AVAILABLE:
            return self._read_loop(limit)
        ring = mmsg.ring()
        try:
            n = ring.recv(self.fd, limit)
        except OSError:
            return [], [], None
        if not n:
            return [], [], None
        lengths = ring.lengths(n)
        mem = ring.mem
        datas = [mem[o : o + m] for o, m in zip(ring.offsets, lengths[1::2], strict=False)]
        st = self._names.get(n)
        if st is None:
            shape = "2x6s24x" if self.family == socket.AF_INET else "2x26s4x"
            st = self._names[n] = struct.Struct(shape * n)
        cache = self._sources
        found = [cache.get(raw) or self._decode(raw) for raw in st.unpack_from(mem, ring.names_at)]
        cmsgs = None
        if self.pktinfo:
            cmsgs = [_pktinfo_reply(ring.control(i, lengths[2 * i])) for i in range(n)]
        last = lengths[2 * n - 2]
        if last:
            count = mmsg.drops_in(ring.control(n - 1, last))
            if count is not None:
                self.drops = count
        return datas, found, cmsgs

    def _decode(self, raw: bytes) -> tuple[str, int]:
        """A raw sockaddr (without its family) as the (ip, port) recvfrom would give."""
        port = (raw[0] << 8) | raw[1]
        if self.family == socket.AF_INET:
            source = (socket.inet_ntop(socket.AF_INET, raw[2:6]), port)
        else:
            flowinfo, scope = struct.unpack_from("=I16xI", raw, 2)
            host = socket.inet_ntop(socket.AF_INET6, raw[6:22])
            if scope:  # link-local: the host string names the scope, as recvfrom does
                host = socket.getnameinfo(
                    (host, port, flowinfo, scope), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
                )[0]
            source = (host, port)
        if len(self._sources) >= SOURCE_CACHE:
            # Clear before storing: clearing after would drop the scope id just learned.
            self._sources.clear()
            self._full.clear()
        if self.family != socket.AF_INET:
            self._full[source] = (source[0], port, flowinfo, scope)
        self._sources[raw] = source
        return source

    def address_of(self, source: tuple[str, int]) -> Any:
        """The address to send to for a source (IPv6: with flow info and scope id)."""
        return self._full.get(source, source)

    def _read_loop(self, limit: int) -> tuple[list[bytes], list[tuple[str, int]], list[Any] | None]:
        datas: list[bytes] = []
        sources: list[tuple[str, int]] = []
        cmsgs: list[Any] | None = [] if self.pktinfo else None
        try:
            if cmsgs is None:
                recvfrom = self.sock.recvfrom
                for _ in range(limit):
                    data, addr = recvfrom(RECV_SIZE)
                    datas.append(data)
                    sources.append(self._source_of(addr))
            else:
                recvmsg = self.sock.recvmsg
                for _ in range(limit):
                    data, anc, _flags, addr = recvmsg(RECV_SIZE, _ANC_SIZE)
                    datas.append(data)
                    sources.append(self._source_of(addr))
                    cmsgs.append(_reply_cmsg(anc))
        except OSError:  # BlockingIOError ends every drain
            pass
        return datas, sources, cmsgs

    def _source_of(self, addr: Any) -> tuple[str, int]:
        source: tuple[str, int] = addr[:2]
        if len(addr) > 2:
            self._full[source] = addr
        return source

    def send(self, data: bytes, addr: Any, cmsg: Any = None) -> bool:
        try:
            if cmsg is None:
                self.sock.sendto(data, addr)
            else:
                self.sock.sendmsg([data], cmsg, 0, addr)
        except OSError:
            return False
        return True

    def send_many(self, datas: list[bytes], addr: Any) -> int:
        """Send `datas` to `addr` in order; returns how many the kernel took.

        One sendmmsg per 64 datagrams (`mmsg.SendRing`). With `gso` (config `udp_gso`), runs
        of equal-size datagrams (the last may be shorter) go as one UDP GSO send instead, which
        the kernel splits into datagrams; cheaper still, but a capture on the sending host sees
        the unsplit super-datagram. A GSO refusal (no offload on the route's device) turns GSO
        off for this socket and the run goes the other way.
        """
        n = len(datas)
        if n == 1 or not mmsg.AVAILABLE:
            return self._send_each(datas, addr)
        if not self.gso:
            return self._send_mmsg(datas, addr)
        sent = i = 0
        sendmsg = self.sock.sendmsg
        while i < n:
            size = len(datas[i])
            stop = min(n, i + mmsg.gso_segments(size))
            j = i + 1
            while j < stop and len(datas[j]) == size:
                j += 1
            if j < stop and len(datas[j]) < size:
                j += 1  # a shorter last segment is allowed
            if j - i == 1:
                sent += self._send_each(datas[i:j], addr)
            else:
                try:
                    sendmsg([b"".join(datas[i:j])], _gso_cmsg(size), 0, addr)
                    sent += j - i
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED, errno.EINTR):
                        pass  # counted as send errors by the caller, like a failed sendto
                    else:
                        self.gso = False
                        sent += self._send_mmsg(datas[i:j], addr)
            i = j
        return sent

    def _send_mmsg(self, datas: list[bytes], addr: Any) -> int:
        name = _sockaddrs.get(addr)
        if name is None:
            name = mmsg.sockaddr(addr)
            if name is None:
                return self._send_each(datas, addr)
            if len(_sockaddrs) >= SOURCE_CACHE:
                _sockaddrs.clear()
            _sockaddrs[addr] = name
        ring = mmsg.send_ring()
        sent = 0
        step = ring.slots
        for i in range(0, len(datas), step):
            chunk = datas[i : i + step]
            done = ring.send(self.fd, chunk, name)
            sent += done
            if done < len(chunk):
                # The kernel refused one (full buffer, ICMP error pending): the rest one by one.
                sent += self._send_each(chunk[done + 1 :], addr)
        return sent

    def _send_each(self, datas: list[bytes], addr: Any) -> int:
        sent = 0
        sendto = self.sock.sendto
        for data in datas:
            try:
                sendto(data, addr)
                sent += 1
            except OSError:
                pass
        return sent

    def close(self) -> None:
        self.sock.close()


_gso_cmsgs: dict[int, list[tuple[int, int, bytes]]] = {}
_sockaddrs: dict[Any, bytes] = {}


def _gso_cmsg(size: int) -> list[tuple[int, int, bytes]]:
    cmsg = _gso_cmsgs.get(size)
    if cmsg is None:
        cmsg = _gso_cmsgs[size] = mmsg.gso_cmsg(size)
    return cmsg


_pktinfo_replies: dict[bytes, Any] = {}


def _pktinfo_reply(raw: bytes) -> Any:
    """The reply cmsg for a received control buffer, cached by its PKTINFO bytes.

    PKTINFO is the last item the kernel writes (after SO_RXQ_OVFL), so it sits at a fixed
    distance from the end: the key (its type and data, not the padding the kernel leaves
    unwritten) skips the changing drop counter. A miss is parsed in full.
    """
    tail = raw[-28:-4]
    reply = _pktinfo_replies.get(tail)
    if reply is None:
        reply = _reply_cmsg(mmsg.walk_control(raw))
        if reply is not None:
            if len(_pktinfo_replies) >= SOURCE_CACHE:
                _pktinfo_replies.clear()
            _pktinfo_replies[tail] = reply
    return reply


def _reply_cmsg(anc: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]] | None:
    """Turn a received PKTINFO into the one that makes a reply leave from that address."""
    for level, kind, value in anc:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
            _ifindex, _spec_dst, dst = IN_PKTINFO.unpack_from(value)
            return [(socket.IPPROTO_IP, IP_PKTINFO, IN_PKTINFO.pack(0, dst, b"\0\0\0\0"))]
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 20:
            # in6_pktinfo: address + interface index (kept: link-local addresses need it).
            return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, bytes(value[:20]))]
    return None


def set_buffers(sock: socket.socket, size: int) -> None:
    """Ask for big socket buffers (the kernel caps them at net.core.[rw]mem_max)."""
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, size)


def udp_drops(inodes: set[int]) -> dict[int, int]:
    """Kernel receive-queue drops per socket inode, from /proc/net/udp{,6} (read once a tick)."""
    found: dict[int, int] = {}
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) >= 13:
                        inode = int(fields[9])
                        if inode in inodes:
                            found[inode] = int(fields[12])
        except (OSError, ValueError):
            continue
    return found
