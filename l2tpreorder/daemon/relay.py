"""The UDP relay: LAC-facing sockets, one upstream socket per LAC peer, the engine in between.

    LAC --(udp 1701)--> [listen socket] --engine--> [peer's upstream socket] --> LNS (1702)
    LAC <-------------- [listen socket] <---------- [peer's upstream socket] <-- LNS

Why one upstream socket per LAC peer: the LNS (xl2tpd) `connect()`s its tunnel socket to the
address:port it first saw, and RFC 2661 wants both ports static for the tunnel's life. So each LAC
(ip, port) gets its own local port towards the LNS, bound once to a fixed source address and kept
until the peer has been silent longer than L2TP's hello interval. Replies from the LNS on that
socket go back to that LAC from the very address the LAC sent to (IP_PKTINFO on wildcard sockets).

Two layers, kept apart on purpose:
- `UdpSocket` is the only code that reads or writes datagrams (`read`, `send`, `send_many`):
  recvmmsg batches and UDP GSO runs through `mmsg` (ctypes), plain calls where unavailable.
- `Relay` feeds batches into the engine, sends `engine.out`, and keeps ONE loop timer armed for
  the engine's earliest deadline, re-armed after each batch only when that deadline moved.

The per-packet path logs nothing and counts with plain ints. It never sends anywhere but the
configured LNS or a LAC that sent to us first: it cannot be used as a UDP reflector.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Hashable
from dataclasses import replace
from itertools import groupby
from operator import itemgetter
from typing import Any

from l2tpreorder.config import REBIND_KEYS, Address, Config, format_address
from l2tpreorder.core.engine import ReorderEngine
from l2tpreorder.daemon import mmsg, state
from l2tpreorder.daemon.debug_log import DebugEvents
from l2tpreorder.daemon.lns_health import LnsHealth, drain_icmp_errors, enable_icmp_errors
from l2tpreorder.daemon.loopback_sources import LoopbackSources, lns_is_ipv4_loopback
from l2tpreorder.daemon.relay_stats import RelayCounters
from l2tpreorder.daemon.upstream_poll import UpstreamPoller

log = logging.getLogger("l2tpreorder.daemon.relay")

# Datagrams read per readiness callback before the batch is processed (bounds latency and lets
# other sockets and the timer run under a flood).
BATCH = 64
# Batches drained per readiness callback while the socket keeps giving full ones: fewer trips
# through the event loop under load, still bounded so the other sockets and the timer run.
DRAIN_BATCHES = 4
RECV_SIZE = 65535
# Linux socket option numbers Python's socket module lacks on some builds.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_ANC_SIZE = socket.CMSG_SPACE(20)
_in_pktinfo = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
# Rejected source addresses remembered so a flood from one does not re-run the ACL per packet.
DENIED_CACHE = 4096
# Raw source sockaddrs remembered with their decoded (ip, port) (cleared when full).
SOURCE_CACHE = 65536

_flow_of = itemgetter(0)


class BindError(Exception):
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
    that is unavailable, and returns parallel lists: datagrams, source keys (ip, port) and, on
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
        self._full: dict[tuple[str, int], Any] = {}  # IPv6 key -> (host, port, flow, scope)
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
        sources = self._sources
        keys = [sources.get(raw) or self._decode(raw) for raw in st.unpack_from(mem, ring.names_at)]
        cmsgs = None
        if self.pktinfo:
            cmsgs = [
                _pktinfo_reply(ring.control(i, lengths[2 * i])) for i in range(n)
            ]
        last = lengths[2 * n - 2]
        if last:
            count = mmsg.drops_in(ring.control(n - 1, last))
            if count is not None:
                self.drops = count
        return datas, keys, cmsgs

    def _decode(self, raw: bytes) -> tuple[str, int]:
        """A raw sockaddr (without its family) as the (ip, port) key recvfrom would give."""
        port = (raw[0] << 8) | raw[1]
        if self.family == socket.AF_INET:
            key = (socket.inet_ntop(socket.AF_INET, raw[2:6]), port)
        else:
            flowinfo, scope = struct.unpack_from("=I16xI", raw, 2)
            host = socket.inet_ntop(socket.AF_INET6, raw[6:22])
            if scope:  # link-local: the host string names the scope, as recvfrom does
                host = socket.getnameinfo(
                    (host, port, flowinfo, scope), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
                )[0]
            key = (host, port)
        if len(self._sources) >= SOURCE_CACHE:
            # Clear before storing: clearing after would drop the scope id just learned.
            self._sources.clear()
            self._full.clear()
        if self.family != socket.AF_INET:
            self._full[key] = (key[0], port, flowinfo, scope)
        self._sources[raw] = key
        return key

    def address_of(self, key: tuple[str, int]) -> Any:
        """The address to send to for a source key (IPv6: with flow info and scope id)."""
        return self._full.get(key, key)

    def _read_loop(
        self, limit: int
    ) -> tuple[list[bytes], list[tuple[str, int]], list[Any] | None]:
        datas: list[bytes] = []
        keys: list[tuple[str, int]] = []
        cmsgs: list[Any] | None = [] if self.pktinfo else None
        try:
            if cmsgs is None:
                recvfrom = self.sock.recvfrom
                for _ in range(limit):
                    data, addr = recvfrom(RECV_SIZE)
                    datas.append(data)
                    keys.append(self._key_of(addr))
            else:
                recvmsg = self.sock.recvmsg
                for _ in range(limit):
                    data, anc, _flags, addr = recvmsg(RECV_SIZE, _ANC_SIZE)
                    datas.append(data)
                    keys.append(self._key_of(addr))
                    cmsgs.append(_reply_cmsg(anc))
        except OSError:  # BlockingIOError ends every drain
            pass
        return datas, keys, cmsgs

    def _key_of(self, addr: Any) -> tuple[str, int]:
        key: tuple[str, int] = addr[:2]
        if len(addr) > 2:
            self._full[key] = addr
        return key

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
            _ifindex, _spec_dst, dst = _in_pktinfo.unpack_from(value)
            return [(socket.IPPROTO_IP, IP_PKTINFO, _in_pktinfo.pack(0, dst, b"\0\0\0\0"))]
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


class Peer:
    """One LAC (source ip, port): where it came in, and its own fixed socket towards the LNS."""

    __slots__ = ("addr", "cmsg", "key", "last_seen", "lsock", "up")

    def __init__(
        self, addr: Any, key: tuple[str, int], lsock: UdpSocket, up: UdpSocket, now: float
    ) -> None:
        self.addr = addr  # as the kernel gave it (IPv6: with flowinfo and scope id) for sending
        self.key = key  # (ip, port): the engine's flow key
        self.lsock = lsock  # LAC-facing socket it sent to; replies leave from it
        self.cmsg: Any = None  # PKTINFO making replies leave from the address the LAC used
        self.up = up
        self.last_seen = now


class SavedPeer:
    """One validated `extra.peers` entry of a state file (what `Relay.save_state` wrote)."""

    __slots__ = ("addr", "cmsg", "family", "key", "listen", "upstream")

    def __init__(
        self,
        addr: tuple[Any, ...],
        listen: tuple[str, int],
        upstream: tuple[str, int],
        cmsg: list[tuple[int, int, bytes]] | None,
    ) -> None:
        self.addr = addr  # as the kernel gave it: (host, port) or (host, port, flowinfo, scope)
        self.key: tuple[str, int] = (addr[0], addr[1])
        v6 = ipaddress.ip_address(addr[0]).version == 6
        self.family = socket.AF_INET6 if v6 else socket.AF_INET
        self.listen = listen
        self.upstream = upstream
        self.cmsg = cmsg


def parse_saved_peers(value: object) -> tuple[list[SavedPeer], list[str]]:
    """`extra.peers` of a state file: the valid entries and one reason per bad one.

    A state file is input like any other (it may be hand-edited, from another version or
    damaged): every field is checked for type and range here, so restoring never raises.
    """
    if value is None:
        return [], []
    if not isinstance(value, list):
        return [], [f"extra.peers = {_short(value)}: expected a list of peer entries"]
    peers: list[SavedPeer] = []
    problems: list[str] = []
    for i, item in enumerate(value):
        try:
            peers.append(_saved_peer(item))
        except ValueError as e:
            problems.append(f"extra.peers[{i}]: {e}")
    return peers, problems


def _saved_peer(item: object) -> SavedPeer:
    if not isinstance(item, dict):
        raise ValueError(f"{_short(item)}: expected an object")
    for name in ("addr", "listen", "upstream"):
        if name not in item:
            raise ValueError(f"missing {name!r}")
    addr = item["addr"]
    if not isinstance(addr, list) or len(addr) not in (2, 4):
        expected = "expected [host, port] or [host, port, flow info, scope id]"
        raise ValueError(f"addr = {_short(addr)}: {expected}")
    host, port = _saved_address("addr", addr[:2])
    if len(addr) == 4:
        if ipaddress.ip_address(host).version != 6:
            raise ValueError(f"addr = {_short(addr)}: flow info and scope id only for IPv6")
        for name, x in zip(("flow info", "scope id"), addr[2:], strict=True):
            if type(x) is not int or not 0 <= x <= 0xFFFFFFFF:
                raise ValueError(f"addr {name} = {_short(x)}: expected an integer 0..4294967295")
    listen = _saved_address("listen", item["listen"])
    upstream = _saved_address("upstream", item["upstream"])
    cmsg = item.get("cmsg")
    if cmsg is not None:
        cmsg = _saved_cmsg(cmsg)
    return SavedPeer((host, port, *addr[2:]), listen, upstream, cmsg)


def _saved_address(name: str, value: object) -> tuple[str, int]:
    expected = "expected [IP literal, port 1..65535]"
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{name} = {_short(value)}: {expected}")
    host, port = value
    if not isinstance(host, str) or type(port) is not int or not 1 <= port <= 0xFFFF:
        raise ValueError(f"{name} = {_short(value)}: {expected}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{name} = {_short(value)}: {expected}") from None
    return host, port


def _saved_cmsg(value: object) -> list[tuple[int, int, bytes]]:
    """Only the one PKTINFO item `_reply_cmsg` makes, with its exact size, is accepted."""
    expected = "expected null or [[level, type, hex]] of an IP_PKTINFO/IPV6_PKTINFO item"
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], list):
        raise ValueError(f"cmsg = {_short(value)}: {expected}")
    item = value[0]
    if len(item) != 3 or not isinstance(item[2], str):
        raise ValueError(f"cmsg = {_short(value)}: {expected}")
    level, kind, text = item
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"cmsg = {_short(value)}: {expected}") from None
    shapes = {
        (socket.IPPROTO_IP, IP_PKTINFO): _in_pktinfo.size,
        (socket.IPPROTO_IPV6, IPV6_PKTINFO): 20,
    }
    if type(level) is not int or type(kind) is not int or shapes.get((level, kind)) != len(data):
        raise ValueError(f"cmsg = {_short(value)}: {expected}")
    return [(level, kind, data)]


def _short(value: object) -> str:
    """A value for a log line, cut so a huge hostile one cannot flood the journal."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Relay:
    """Moves datagrams between LACs and the LNS through the reorder engine(s)."""

    def __init__(
        self,
        config: Config,
        counters: RelayCounters | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.counters = counters if counters is not None else RelayCounters()
        self.loop = loop or asyncio.get_event_loop()
        self.clock = clock
        self.engine_up = ReorderEngine(config.engine)  # LAC -> LNS
        self.engine_down: ReorderEngine | None = (
            ReorderEngine(config.engine) if config.reorder_lns_to_lac else None
        )
        self.listeners: list[UdpSocket] = []
        self.peers: dict[Hashable, Peer] = {}
        self._lns: tuple[str, int] = config.lns
        self._lns_family = (
            socket.AF_INET6 if ipaddress.ip_address(config.lns[0]).version == 6 else socket.AF_INET
        )
        self._upstream_ip = config.upstream_bind or self._route_source()
        # An LNS on loopback sees each LAC from its own 127/8 address (loopback_sources.py).
        self._sources: LoopbackSources | None = None
        if config.upstream_bind is None and lns_is_ipv4_loopback(config.lns[0]):
            # The shared address all peers used before: never handed out, so a peer restored
            # from an older state file keeps it (and its xl2tpd tunnel) without colliding.
            self._sources = LoopbackSources({"127.0.0.0", "127.255.255.255", self._upstream_ip})
        self._allow = config.allow
        self._denied: dict[tuple[str, int], None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        # The engine deadline timer: a timerfd on the monotonic clock when the relay stamps
        # packets with it (exact wake-ups, never early); else a loop timer that re-arms itself
        # when it fires before the deadline (libuv ticks in cached milliseconds).
        self._timerfd: mmsg.TimerFd | None = None
        if mmsg.AVAILABLE and clock is time.monotonic:
            with contextlib.suppress(OSError):
                self._timerfd = mmsg.TimerFd()
        self._timerfd_reading = False
        self._drops_seen: dict[int, int] = {}  # socket fd -> SO_RXQ_OVFL count last acted on
        self._reading = False
        self._closed_socket_drops = 0
        self._socket_drops: dict[int, int] = {}
        self.health = LnsHealth(config.lns, self.counters)
        # --log-level debug: a logging wrapper around engine_up.receive (debug_log.py); None =
        # the engine is called directly.
        self.debug: DebugEvents | None = None
        self._lac_receive: Callable[[bytes, Hashable, float], int] = self.engine_up.receive
        self._upstream: UpstreamPoller[Peer] = UpstreamPoller(
            self._on_lns_readable, self._on_lns_error
        )

    # --- setup and teardown ------------------------------------------------------------------

    @property
    def engines(self) -> dict[str, ReorderEngine]:
        """Direction label -> engine (what the metrics collector reads)."""
        engines = {"lac_to_lns": self.engine_up}
        if self.engine_down is not None:
            engines["lns_to_lac"] = self.engine_down
        return engines

    def bind(self) -> None:
        """Bind every listen address; raises BindError (all or nothing)."""
        try:
            for address in self.config.listen:
                try:
                    sock = UdpSocket.bind(address, self.config.socket_buffer_bytes)
                except OSError as e:
                    raise BindError(address, e) from None
                self.listeners.append(sock)
        except BindError:
            for sock in self.listeners:
                sock.close()
            self.listeners.clear()
            raise

    @property
    def bound_addresses(self) -> list[Address]:
        return [s.sock.getsockname()[:2] for s in self.listeners]  # (ip, port), as peers' keys

    def start_reading(self) -> None:
        for lsock in self.listeners:
            self.loop.add_reader(lsock.fd, self._on_lac_readable, lsock)
        if self._timerfd is not None and not self._timerfd_reading:
            self.loop.add_reader(self._timerfd.fd, self._on_timerfd)
            self._timerfd_reading = True
        self.loop.add_reader(self._upstream.fd, self._upstream.dispatch)
        self._reading = True

    def stop_reading(self) -> None:
        """Stop taking new datagrams from LACs and from the LNS (shutdown step 1)."""
        if not self._reading:
            return
        self._reading = False
        for lsock in self.listeners:
            self.loop.remove_reader(lsock.fd)
        self.loop.remove_reader(self._upstream.fd)

    def shutdown(self, state_file: str | None = None) -> None:
        """Stop reading, deliver everything held in order, save state, close every socket."""
        self.stop_reading()
        now = self.clock()
        self.engine_up.flush(now)
        if self.engine_down is not None:
            self.engine_down.flush(now)
        self._send_out()
        if state_file is not None:
            self.save_state(state_file)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = None
        if self._timerfd is not None:
            if self._timerfd_reading:
                self.loop.remove_reader(self._timerfd.fd)
                self._timerfd_reading = False
            self._timerfd.close()
            self._timerfd = None
        for peer in self.peers.values():
            self._upstream.remove(peer.up.fd)
            self._release_source(peer)
            peer.up.close()
        self.peers.clear()
        self._upstream.close()
        self.counters.peers = 0
        for lsock in self.listeners:
            lsock.close()
        self.listeners.clear()

    def _route_source(self) -> str:
        """The source IP the kernel would use towards the LNS, fixed for the process' life."""
        family = self._lns_family
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(self._lns)  # UDP connect sends nothing; it only picks a route
                return str(probe.getsockname()[0])
            except OSError:
                return "::" if family == socket.AF_INET6 else "0.0.0.0"

    # --- LAC -> LNS ----------------------------------------------------------------------------

    def _on_lac_readable(self, lsock: UdpSocket) -> None:
        c = self.counters
        peers = self.peers
        receive = self._lac_receive
        down = self.engine_down
        for _ in range(DRAIN_BATCHES):
            datas, keys, cmsgs = lsock.read(BATCH)
            if not datas:
                break
            now = self.clock()
            if lsock.drops != self._drops_seen.get(lsock.fd, 0):
                self._kernel_dropped(lsock, now, self.engine_up)
            c.rx_datagrams_lac += len(datas)
            size = 0
            if cmsgs is None and down is None:
                # The common shape: one loop of dict lookup + engine per datagram.
                for data, key in zip(datas, keys, strict=True):
                    size += len(data)
                    peer = peers.get(key)
                    if peer is None:
                        peer = self._admit(lsock.address_of(key), key, lsock, now)
                        if peer is None:
                            continue
                    peer.last_seen = now
                    receive(data, key, now)
            else:
                replies = cmsgs if cmsgs is not None else [None] * len(datas)
                for data, key, cmsg in zip(datas, keys, replies, strict=True):
                    size += len(data)
                    peer = peers.get(key)
                    if peer is None:
                        peer = self._admit(lsock.address_of(key), key, lsock, now)
                        if peer is None:
                            continue
                    peer.last_seen = now
                    if cmsg is not None:
                        peer.cmsg = cmsg
                    receive(data, key, now)
                    if down is not None and data and data[0] & 0x80:
                        down.observe_reverse(data, key, now)
            c.rx_bytes_lac += size
            self._send_out()
            if len(datas) < BATCH:
                break
        self._rearm()

    def _kernel_dropped(self, sock: UdpSocket, now: float, engine: ReorderEngine | None) -> None:
        """The kernel dropped datagrams on `sock` (its queue overflowed) since the last batch:
        the gaps this opens are never filled, so the engine stops waiting the full timeout
        for gaps that may be those drops."""
        self._drops_seen[sock.fd] = sock.drops
        if engine is not None:
            engine.note_kernel_drops(now)

    def _admit(self, addr: Any, key: tuple[str, int], lsock: UdpSocket, now: float) -> Peer | None:
        """A datagram from a new source: check the ACL and the peer cap, open its upstream."""
        c = self.counters
        if key in self._denied or not self._allowed(key[0]) or self._is_self(key):
            c.dropped_not_allowed += 1
            c.count_not_allowed_source(key[0])
            if self.debug is not None:
                self.debug.refused(key, "source not in `allow` (reason not_allowed)", now)
            if len(self._denied) >= DENIED_CACHE:
                self._denied.clear()
            self._denied[key] = None
            return None
        if len(self.peers) >= self.config.max_peers:
            c.dropped_peer_limit += 1
            if self.debug is not None:
                self.debug.refused(key, "max_peers reached (reason peer_limit)", now)
            return None
        source = self._sources.acquire(key[0]) if self._sources is not None else None
        try:
            up = self._upstream_socket(0, source)
        except OSError:
            if self._sources is not None:
                self._sources.release(key[0])
            c.dropped_peer_limit += 1  # out of file descriptors: counted, reported by the tick
            return None
        return self._add_peer(Peer(addr, key, lsock, up, now))

    def _upstream_socket(self, port: int, source: str | None = None) -> UdpSocket:
        sock = socket.socket(self._lns_family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            set_buffers(sock, min(self.config.socket_buffer_bytes, 1 << 20))
            enable_icmp_errors(sock)
            sock.bind((source or self._upstream_ip, port))
            return UdpSocket(sock, gso=self.config.udp_gso)
        except OSError:
            sock.close()
            raise

    def _add_peer(self, peer: Peer) -> Peer:
        c = self.counters
        key, up, sock = peer.key, peer.up, peer.up.sock
        self.peers[key] = peer
        c.peers = len(self.peers)
        self._upstream.add(up.fd, peer)
        log.info(
            "new LAC peer %s: upstream %s -> LNS %s",
            format_address(key),
            format_address(sock.getsockname()[:2]),
            format_address(self._lns),
        )
        return peer

    def _is_self(self, key: tuple[str, int]) -> bool:
        """The LNS or one of our own sockets as a "LAC" (spoofed): relaying it could loop."""
        return key == self._lns or key[1] == 0 or key in self.bound_addresses

    def _allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._allow)

    # --- LNS -> LAC ----------------------------------------------------------------------------

    def _on_lns_error(self, peer: Peer) -> None:
        """EPOLLERR on an upstream socket: ICMP errors queued for what we sent (lns_health)."""
        errors = drain_icmp_errors(peer.up.sock)
        if errors:
            self.health.on_icmp_errors(errors)

    def _on_lns_readable(self, peer: Peer) -> None:
        c = self.counters
        lns = self._lns
        key = peer.key
        up = self.engine_up
        for _ in range(DRAIN_BATCHES):
            datas, sources, _ = peer.up.read(BATCH)
            if not datas:
                break
            now = self.clock()
            down = self.engine_down
            if peer.up.drops != self._drops_seen.get(peer.up.fd, 0):
                self._kernel_dropped(peer.up, now, down)
            c.rx_datagrams_lns += len(datas)
            size = 0
            forward: list[bytes] = []
            for data, src in zip(datas, sources, strict=True):
                size += len(data)
                if src != lns:
                    c.dropped_not_from_lns += 1  # only the LNS may speak on this socket
                    continue
                peer.last_seen = now
                if data and data[0] & 0x80:
                    # Session lifecycle comes from both directions (CDN/StopCCN by the LNS).
                    up.observe_reverse(data, key, now)
                if down is not None:
                    down.receive(data, key, now)
                else:
                    forward.append(data)
            c.rx_bytes_lns += size
            if forward:
                if peer.cmsg is None:
                    sent = peer.lsock.send_many(forward, peer.addr)
                    sent_bytes = sum(map(len, forward[:sent]))
                else:
                    sent = sent_bytes = 0
                    for data in forward:
                        if peer.lsock.send(data, peer.addr, peer.cmsg):
                            sent += 1
                            sent_bytes += len(data)
                c.tx_datagrams_lac += sent
                c.tx_bytes_lac += sent_bytes
                c.tx_errors += len(forward) - sent
            self._send_out()
            if len(datas) < BATCH:
                break
        self._rearm()

    # --- output and the one timer ------------------------------------------------------------

    def _send_out(self) -> None:
        """Send what the engines released (the adapter's half of the engine contract).

        Consecutive datagrams for one peer go to its socket as one run (`send_many`: UDP GSO).
        """
        c = self.counters
        out = self.engine_up.out
        if out:
            peers = self.peers
            lns = self._lns
            sent = size = failed = 0
            for key, group in groupby(out, _flow_of):
                datas = [d for _, d in group]
                peer = peers.get(key)
                n = peer.up.send_many(datas, lns) if peer is not None else 0
                sent += n
                size += sum(map(len, datas[:n]))
                failed += len(datas) - n
            c.tx_datagrams_lns += sent
            c.tx_bytes_lns += size
            c.tx_errors += failed
            out.clear()
        down = self.engine_down
        if down is not None and down.out:
            peers = self.peers
            sent = size = 0
            for key, data in down.out:
                peer = peers.get(key)
                if peer is not None and peer.lsock.send(data, peer.addr, peer.cmsg):
                    sent += 1
                    size += len(data)
                else:
                    c.tx_errors += 1
            c.tx_datagrams_lac += sent
            c.tx_bytes_lac += size
            down.out.clear()

    def next_deadline(self) -> float | None:
        deadline = self.engine_up.next_deadline()
        if self.engine_down is not None:
            other = self.engine_down.next_deadline()
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def _rearm(self) -> None:
        """Keep the single timer on the engines' earliest deadline; touch it only on change."""
        deadline = self.next_deadline()
        if deadline == self._timer_when:
            return
        self._timer_when = deadline
        if self._timerfd is not None:
            self._timerfd.arm(deadline)
            return
        if self._timer is not None:
            self._timer.cancel()
        if deadline is None:
            self._timer = None
        else:
            self._timer = self.loop.call_later(max(0.0, deadline - self.clock()), self._on_timer)

    def _on_timerfd(self) -> None:
        assert self._timerfd is not None
        self._timerfd.clear()
        self._timer_when = None
        self._expire_due()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        now = self.clock()
        deadline = self.next_deadline()
        if deadline is not None and deadline > now:
            # Fired early (loop timers tick in whole, cached milliseconds): wait the rest,
            # at least one tick, rather than spinning through zero-delay timers.
            self._timer_when = deadline
            self._timer = self.loop.call_later(max(deadline - now, 0.001), self._on_timer)
            return
        self._expire_due()

    def _expire_due(self) -> None:
        now = self.clock()
        self.engine_up.expire(now)
        if self.engine_down is not None:
            self.engine_down.expire(now)
        self._send_out()
        self._rearm()

    # --- housekeeping (once a second from the daemon) ------------------------------------------

    def remove_idle(self, now: float | None = None) -> int:
        """Forget peers quiet for longer than peer_idle_timeout (their held data goes out)."""
        now = self.clock() if now is None else now
        limit = now - self.config.peer_idle_timeout
        idle = [p for p in self.peers.values() if p.last_seen < limit]
        for peer in idle:
            log.info("LAC peer %s idle: upstream socket closed", format_address(peer.key))
            self._remove_peer(peer, now)
        self.counters.peers_removed_idle += len(idle)
        return len(idle)

    def _remove_peer(self, peer: Peer, now: float) -> None:
        self.engine_up.end_flow(peer.key, now)
        if self.engine_down is not None:
            self.engine_down.end_flow(peer.key, now)
        self._send_out()
        self._upstream.remove(peer.up.fd)
        self._release_source(peer)
        self._closed_socket_drops += self._socket_drops.pop(peer.up.inode, 0)
        peer.up.close()
        del self.peers[peer.key]
        self.counters.peers = len(self.peers)
        self._rearm()

    def update_socket_drops(self) -> int:
        """Refresh `socket_rx_drops` (kernel receive-queue overflows on all our sockets)."""
        inodes = {s.inode for s in self.listeners}
        inodes.update(p.up.inode for p in self.peers.values())
        self._socket_drops.update(udp_drops(inodes))
        total = self._closed_socket_drops + sum(
            v for k, v in self._socket_drops.items() if k in inodes
        )
        self.counters.socket_rx_drops = max(total, self.counters.socket_rx_drops)
        return self.counters.socket_rx_drops

    # --- restarts ----------------------------------------------------------------------------

    def save_state(self, path: str) -> bool:
        """Write the engines' sessions and each peer's upstream port (call after a flush).

        xl2tpd's tunnel socket is connected to the source port it first saw, and in renumber
        mode it has seen our Ns: both must survive a restart. Failure is logged, never raised.
        """
        peers = []
        for peer in self.peers.values():
            cmsg = None
            if peer.cmsg is not None:
                cmsg = [[level, kind, bytes(value).hex()] for level, kind, value in peer.cmsg]
            peers.append(
                {
                    "addr": list(peer.addr),
                    "listen": list(peer.lsock.sock.getsockname()[:2]),
                    "cmsg": cmsg,
                    "upstream": list(peer.up.sock.getsockname()[:2]),
                }
            )
        extra: dict[str, Any] = {"peers": peers, "lns_to_lac": None}
        if self.engine_down is not None:
            extra["lns_to_lac"] = state.export_engine(self.engine_down)
        try:
            count = state.save_state(self.engine_up, path, extra)
        except (OSError, TypeError, ValueError) as e:
            log.error("cannot save state to %s: %s (a restart will renumber afresh)", path, e)
            return False
        log.info("saved state of %d sessions and %d LAC peers to %s", count, len(peers), path)
        return True

    def restore_state(self, saved: state.SavedState) -> tuple[int, int]:
        """Recreate saved sessions and peers with their old upstream ports; before reading.

        `extra` is only checked for its JSON shape by `state.load_state`, so every peer entry is
        validated here (`parse_saved_peers`): a bad entry is reported and skipped, never raised.
        A peer that is no longer allowed, whose listen address is gone or whose port cannot be
        bound again is skipped with a warning: it gets a new port when it next sends.
        Returns (sessions, peers) restored.
        """
        now = self.clock()
        listeners = {tuple(s.sock.getsockname()[:2]): s for s in self.listeners}
        restored_peers = 0
        saved_peers, problems = parse_saved_peers(saved.extra.get("peers"))
        for problem in problems:
            log.warning("state: %s; that entry is skipped", problem)
        for p in saved_peers:
            where = format_address(p.key)
            lsock = listeners.get(p.listen)
            if lsock is None:
                log.warning(
                    "state: LAC peer %s: its listen address %s is no longer configured; skipped",
                    where,
                    format_address(p.listen),
                )
                continue
            if lsock.family != p.family:
                log.warning(
                    "state: LAC peer %s: not of the address family of %s; skipped",
                    where,
                    format_address(p.listen),
                )
                continue
            if p.key in self.peers:
                log.warning("state: LAC peer %s is listed twice; the later entry is skipped", where)
                continue
            if not self._allowed(p.key[0]):
                log.warning("state: LAC peer %s is no longer allowed (`allow`); skipped", where)
                continue
            if self._is_self(p.key):
                log.warning("state: LAC peer %s is the LNS or one of our sockets; skipped", where)
                continue
            source = self._restored_source(p, where)
            if source is None:
                continue
            if len(self.peers) >= self.config.max_peers:
                log.warning(
                    "state: LAC peer %s: max_peers (%d) reached; skipped",
                    where,
                    self.config.max_peers,
                )
                continue
            try:
                up = self._upstream_socket(p.upstream[1], source)
            except OSError as e:
                if self._sources is not None and source != self._upstream_ip:
                    self._sources.release(p.key[0])
                log.warning(
                    "state: LAC peer %s: cannot bind upstream port %d again (%s); it gets a new "
                    "one when it next sends",
                    where,
                    p.upstream[1],
                    e.strerror,
                )
                continue
            peer = Peer(p.addr, p.key, lsock, up, now)
            peer.cmsg = p.cmsg if lsock.pktinfo else None
            self._add_peer(peer)
            restored_peers += 1
        sessions = saved.restore(self.engine_up, now)
        down = saved.extra.get("lns_to_lac")
        if down is not None and self.engine_down is not None:
            try:
                sessions += state.restore_engine(self.engine_down, *state.parse_engine(down), now)
            except ValueError as e:
                log.warning("state: LNS-to-LAC sessions not restored: %s", e)
        return sessions, restored_peers

    def _release_source(self, peer: Peer) -> None:
        if self._sources is None:
            return
        with contextlib.suppress(OSError):
            if peer.up.sock.getsockname()[0] == self._upstream_ip:
                return  # the shared address of an older version's state file: not allocated
        self._sources.release(peer.key[0])

    def _restored_source(self, p: SavedPeer, where: str) -> str | None:
        """The saved upstream address if it still applies (taking it), else None (logged)."""
        saved = p.upstream[0]
        if self._sources is not None and saved != self._upstream_ip:
            if self._sources.restore(p.key[0], saved):
                return saved
            log.warning(
                "state: LAC peer %s: saved upstream address %s is taken; skipped", where, saved
            )
            return None
        if saved != self._upstream_ip:
            log.warning(
                "state: LAC peer %s: saved upstream address %s is not the current %s; skipped",
                where,
                saved,
                self._upstream_ip,
            )
            return None
        return saved

    # --- SIGHUP ------------------------------------------------------------------------------

    def set_debug(self, enabled: bool) -> None:
        """Debug lines on or off (start, reload); off costs nothing per datagram."""
        if enabled and self.debug is None:
            self.debug = DebugEvents(self.engine_up)
            self._lac_receive = self.debug.receiver()
        elif not enabled:
            self.debug = None
            self._lac_receive = self.engine_up.receive

    def reconfigure(self, new: Config) -> list[str]:
        """Apply what can change live; returns the keys refused because they need a rebind."""
        refused = self.config.rebind_changes(new)
        now = self.clock()
        self.engine_up.reconfigure(new.engine, now)
        if new.reorder_lns_to_lac and self.engine_down is None:
            self.engine_down = ReorderEngine(new.engine)
        elif self.engine_down is not None:
            if not new.reorder_lns_to_lac:
                self.engine_down.flush(now)
                self._send_out()
                self.engine_down = None
            else:
                self.engine_down.reconfigure(new.engine, now)
        self._allow = new.allow
        self._denied.clear()
        # Keep the sockets' settings (refused keys) from the running config.
        self.config = replace(new, **{key: getattr(self.config, key) for key in REBIND_KEYS})
        for peer in [p for p in self.peers.values() if not self._allowed(p.key[0])]:
            log.warning(
                "LAC peer %s no longer allowed: its sessions end now", format_address(peer.key)
            )
            self._remove_peer(peer, now)
        self._send_out()
        self._rearm()
        return refused
