"""The UDP relay: LAC-facing sockets, one upstream socket per LAC peer, the engine in between.

    LAC --(udp 1701)--> [listen socket] --engine--> [peer's upstream socket] --> LNS (1702)
    LAC <-------------- [listen socket] <---------- [peer's upstream socket] <-- LNS

Why one upstream socket per LAC peer: the LNS (xl2tpd) `connect()`s its tunnel socket to the
address:port it first saw, and RFC 2661 wants both ports static for the tunnel's life. So each LAC
(ip, port) gets its own local port towards the LNS, bound once to a fixed source address and kept
until the peer has been silent longer than L2TP's hello interval. Replies from the LNS on that
socket go back to that LAC from the very address the LAC sent to (IP_PKTINFO on wildcard sockets).

Kept apart on purpose:
- `sockets.UdpSocket` is the only code that reads or writes datagrams (`read`, `send`,
  `send_many`): recvmmsg batches and UDP GSO runs through `mmsg` (ctypes), plain calls where
  unavailable. `admission` decides which sources may become peers; `state` holds the file format.
- `Relay` is relay mode's adapter for the one service (`daemon/mode.py`): it feeds batches into
  the `Pipeline` (both directions, sans-IO), sends what its `take_output()` returns, and tells
  the service after each batch (`on_batch`), which re-arms the one timer. Which control
  messages end sessions is the pipeline's business, not the relay's.

The per-packet path logs nothing and counts with plain ints. It never sends anywhere but the
configured LNS or a LAC that sent to us first: it cannot be used as a UDP reflector.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import select
import socket
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace
from typing import Any

from prometheus_client.registry import Collector

from l2tpreorder.config import REBIND_KEYS, Address, Config, format_address
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.daemon import status
from l2tpreorder.daemon.debug_log import DebugEvents
from l2tpreorder.daemon.mode import CounterTable, HousekeepingStep
from l2tpreorder.daemon.relay import saved_peers as state
from l2tpreorder.daemon.relay.admission import Admission
from l2tpreorder.daemon.relay.counters import RELAY_ROWS, RelayCounters
from l2tpreorder.daemon.relay.fd_limit import raise_fd_limit, warn_if_open
from l2tpreorder.daemon.relay.lns_health import LnsHealth, drain_icmp_errors, enable_icmp_errors
from l2tpreorder.daemon.relay.loopback_sources import LoopbackSources, lns_is_ipv4_loopback
from l2tpreorder.daemon.relay.sockets import BATCH, BindError, UdpSocket, set_buffers, udp_drops
from l2tpreorder.daemon.relay.upstream_poll import UpstreamPoller

log = logging.getLogger("l2tpreorder.daemon.relay.adapter")

# Batches drained per readiness callback while the socket keeps giving full ones: fewer trips
# through the event loop under load, still bounded so the other sockets and the timer run.
DRAIN_BATCHES = 4


class Peer:
    """One LAC (source ip, port): where it came in, and its own fixed socket towards the LNS."""

    __slots__ = ("addr", "cmsg", "flow", "last_seen", "lsock", "up")

    def __init__(
        self, addr: Any, flow: tuple[str, int], lsock: UdpSocket, up: UdpSocket, now: float
    ) -> None:
        self.addr = addr  # as the kernel gave it (IPv6: with flowinfo and scope id) for sending
        self.flow = flow  # (ip, port): this peer's flow in the pipeline
        self.lsock = lsock  # LAC-facing socket it sent to; replies leave from it
        self.cmsg: Any = None  # PKTINFO making replies leave from the address the LAC used
        self.up = up
        self.last_seen = now


def _unread(fds: Iterable[int]) -> set[int]:
    """Those of the socket `fds` with datagrams queued that have not been read yet."""
    poll = select.poll()
    for fd in fds:
        poll.register(fd, select.POLLIN)
    return {fd for fd, events in poll.poll(0) if events & select.POLLIN}


class Relay:
    """Moves datagrams between LACs and the LNS through the reorder engine(s): relay mode."""

    name = "relay"
    keep_capabilities: tuple[int, ...] = ()
    fails_open = False  # nothing passes while the relay is down: it is lost
    refused_why = "needs new sockets"

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
        self.pipeline = Pipeline(config.engine, reorder_from_lns=config.reorder_lns_to_lac)
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
        self.admission = Admission(config.allow, config.lns, lambda: self.bound_addresses)
        # The service's: transmit and re-arm its one timer (after a batch, a peer removed).
        self._on_batch: Callable[[], None] = lambda: None
        self._drops_seen: dict[int, int] = {}  # socket fd -> SO_RXQ_OVFL count last acted on
        self._lac_drained: dict[int, float] = {}  # listen socket fd -> last read that emptied it
        self._reading = False
        self._closed_socket_drops = 0
        self._socket_drops: dict[int, int] = {}
        self.health = LnsHealth(config.lns, self.counters)
        # --log-level debug: reads the pipeline's events (debug_log.py), set by the service;
        # None = debug off, and the pipeline records nothing.
        self.debug: DebugEvents | None = None
        self._upstream: UpstreamPoller[Peer] = UpstreamPoller(
            self._on_lns_readable, self._on_lns_error
        )

    # --- setup and teardown ------------------------------------------------------------------

    def bind(self) -> None:
        """Bind every listen address; raises BindError (all or nothing)."""
        raise_fd_limit(self.config.max_peers)
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
        warn_if_open(self.config)

    @property
    def bound_addresses(self) -> list[Address]:
        return [s.sock.getsockname()[:2] for s in self.listeners]  # (ip, port), as peers' flows

    def start_reading(self, on_batch: Callable[[], None] = lambda: None) -> None:
        self._on_batch = on_batch
        for lsock in self.listeners:
            self.loop.add_reader(lsock.fd, self._on_lac_readable, lsock)
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

    def drain_for_stop(self, now: float) -> None:
        """Nothing: at a stop the relay reads no more (what waits in the sockets stays)."""

    def close(self) -> None:
        """After the final flush and save: close every socket (idempotent)."""
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
        for _ in range(DRAIN_BATCHES):
            datas, flows, cmsgs = lsock.read(BATCH)
            if not datas:  # a full batch, then nothing: all that came in is read
                self._lac_drained[lsock.fd] = self.clock()
                break
            now = self.clock()
            if lsock.drops != self._drops_seen.get(lsock.fd, 0):
                self._kernel_dropped(lsock, now, from_lac=True)
            c.rx_datagrams_lac += len(datas)
            c.rx_bytes_lac += sum(map(len, datas))
            if not self._feed_known(datas, flows, cmsgs, now):
                self._feed_admitting(lsock, datas, flows, cmsgs, now)
            self._send_out()
            if len(datas) < BATCH:
                self._lac_drained[lsock.fd] = now  # all that came in by then is read (remove_idle)
                break
        self._rearm()

    def _feed_known(
        self, datas: list[bytes], flows: list[Any], cmsgs: list[Any] | None, now: float
    ) -> bool:
        """The common batch, from peers we have: the whole batch goes into the pipeline in one
        `from_lac_many` call (its per-datagram loop runs in the core, compiled when built) and
        the per-peer work is done once per distinct peer. False, having done nothing, when a
        datagram comes from a source that is not a peer yet (admission is per datagram)."""
        peers = self.peers
        seen = dict.fromkeys(flows)
        if not seen.keys() <= peers.keys():
            return False
        for flow in seen:
            peers[flow].last_seen = now
        if cmsgs is not None:
            # Each peer keeps the last PKTINFO reply cmsg it sent with (one that has none
            # leaves it as it was).
            latest = dict(zip(flows, cmsgs, strict=True))
            if None in latest.values():
                latest = {f: m for f, m in zip(flows, cmsgs, strict=True) if m is not None}
            for flow, cmsg in latest.items():
                peers[flow].cmsg = cmsg
        self.pipeline.from_lac_many(datas, flows, now)
        return True

    def _feed_admitting(
        self,
        lsock: UdpSocket,
        datas: list[bytes],
        flows: list[Any],
        cmsgs: list[Any] | None,
        now: float,
    ) -> None:
        """A batch with a new source in it: datagram by datagram, admitting (or refusing and
        counting) each one from a source that is not a peer, in arrival order."""
        peers = self.peers
        from_lac = self.pipeline.from_lac  # fetched per batch: rebound on reconfigure
        for i, (data, flow) in enumerate(zip(datas, flows, strict=True)):
            peer = peers.get(flow)
            if peer is None:
                peer = self._admit(lsock.address_of(flow), flow, lsock, now)
                if peer is None:
                    continue
            peer.last_seen = now
            if cmsgs is not None and cmsgs[i] is not None:
                peer.cmsg = cmsgs[i]
            from_lac(data, flow, now)

    def _kernel_dropped(self, sock: UdpSocket, now: float, *, from_lac: bool) -> None:
        """The kernel dropped datagrams on `sock` (its queue overflowed) since the last batch:
        the gaps this opens are never filled, so the pipeline stops waiting the full timeout
        for gaps that may be those drops."""
        self._drops_seen[sock.fd] = sock.drops
        self.pipeline.note_kernel_drops(now, from_lac=from_lac)

    def _admit(self, addr: Any, flow: tuple[str, int], lsock: UdpSocket, now: float) -> Peer | None:
        """A datagram from a new source: check the ACL and the peer cap, open its upstream."""
        c = self.counters
        if self.admission.refuses(flow):
            c.dropped_not_allowed += 1
            c.count_not_allowed_source(flow[0])
            if self.debug is not None:
                self.debug.refused(flow, "source not in `allow` (reason not_allowed)", now)
            return None
        if len(self.peers) >= self.config.max_peers:
            c.dropped_peer_limit += 1
            if self.debug is not None:
                self.debug.refused(flow, "max_peers reached (reason peer_limit)", now)
            return None
        source = self._sources.acquire(flow[0]) if self._sources is not None else None
        try:
            up = self._upstream_socket(0, source)
        except OSError:
            if self._sources is not None:
                self._sources.release(flow[0])
            c.dropped_peer_limit += 1  # out of file descriptors: counted, reported by the tick
            return None
        return self._add_peer(Peer(addr, flow, lsock, up, now))

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
        flow, up, sock = peer.flow, peer.up, peer.up.sock
        self.peers[flow] = peer
        c.peers = len(self.peers)
        self._upstream.add(up.fd, peer)
        log.info(
            "new LAC peer %s: upstream %s -> LNS %s",
            format_address(flow),
            format_address(sock.getsockname()[:2]),
            format_address(self._lns),
        )
        return peer

    # --- LNS -> LAC ----------------------------------------------------------------------------

    def _on_lns_error(self, peer: Peer) -> None:
        """EPOLLERR on an upstream socket: ICMP errors queued for what we sent (lns_health)."""
        errors = drain_icmp_errors(peer.up.sock)
        if errors:
            self.health.on_icmp_errors(errors)

    def _on_lns_readable(self, peer: Peer) -> None:
        c = self.counters
        lns = self._lns
        flow = peer.flow
        from_lns = self.pipeline.from_lns
        for _ in range(DRAIN_BATCHES):
            datas, sources, _ = peer.up.read(BATCH)
            if not datas:
                break
            now = self.clock()
            if peer.up.drops != self._drops_seen.get(peer.up.fd, 0):
                self._kernel_dropped(peer.up, now, from_lac=False)
            c.rx_datagrams_lns += len(datas)
            size = 0
            for data, src in zip(datas, sources, strict=True):
                size += len(data)
                if src != lns:
                    c.dropped_not_from_lns += 1  # only the LNS may speak on this socket
                    continue
                peer.last_seen = now
                from_lns(data, flow, now)
            c.rx_bytes_lns += size
            self._send_out()
            if len(datas) < BATCH:
                break
        self._rearm()

    # --- output and the one timer ------------------------------------------------------------

    def _send_out(self) -> None:
        """Send what the pipeline released (the adapter's half of the sans-IO contract).

        Consecutive datagrams for one peer and direction go out as one run (`send_many`: UDP
        GSO); towards a LAC that needs a PKTINFO reply cmsg, one by one.
        """
        runs = self.pipeline.take_runs()
        if not runs:
            return
        c = self.counters
        peers = self.peers
        lns = self._lns
        for to_lns, flow, datas in runs:
            peer = peers.get(flow)
            if to_lns:
                n = peer.up.send_many(datas, lns) if peer is not None else 0
                c.tx_datagrams_lns += n
                c.tx_bytes_lns += sum(map(len, datas[:n]))
            else:
                n = self._send_to_lac(peer, datas) if peer is not None else 0
            c.tx_errors += len(datas) - n

    def _send_to_lac(self, peer: Peer, datas: list[bytes]) -> int:
        """Send a run back to one LAC from the address it sent to; returns how many went."""
        c = self.counters
        if peer.cmsg is None:
            sent = peer.lsock.send_many(datas, peer.addr)
            c.tx_datagrams_lac += sent
            c.tx_bytes_lac += sum(map(len, datas[:sent]))
            return sent
        sent = 0
        for data in datas:
            if peer.lsock.send(data, peer.addr, peer.cmsg):
                sent += 1
                c.tx_bytes_lac += len(data)
        c.tx_datagrams_lac += sent
        return sent

    def transmit(self) -> None:
        self._send_out()

    def _rearm(self) -> None:
        """The service transmits and re-arms its one timer on the pipeline's deadline."""
        self._on_batch()

    # --- housekeeping (once a second from the daemon) ------------------------------------------

    def remove_idle(self, now: float | None = None) -> int:
        """Forget peers quiet for longer than peer_idle_timeout (their held data goes out).
        Silent sessions need no call here: the pipeline's deadline covers their idle expiry.

        Quiet is judged only up to the moment the relay had read everything that had come in:
        after a stall (loop blocked, process stopped, CPU starved) this tick runs before the
        readers, and a peer whose datagrams (from its LAC or from the LNS) wait unread is not
        idle. Forgetting it would give it a new upstream port, i.e. a new peer to xl2tpd,
        mid-tunnel, and lose what the LNS sent it."""
        now = self.clock() if now is None else now
        timeout = self.config.peer_idle_timeout
        waiting = _unread(s.fd for s in self.listeners)
        # Per listen socket: every datagram that came in before this time has been read.
        read_to = {
            s.fd: self._lac_drained.get(s.fd, -math.inf) if s.fd in waiting else now
            for s in self.listeners
        }
        idle = [p for p in self.peers.values() if p.last_seen + timeout < read_to[p.lsock.fd]]
        if idle:
            replies = _unread(p.up.fd for p in idle)
            idle = [p for p in idle if p.up.fd not in replies]
        for peer in idle:
            log.info("LAC peer %s idle: upstream socket closed", format_address(peer.flow))
            self._remove_peer(peer, now)
        self.counters.peers_removed_idle += len(idle)
        return len(idle)

    def _remove_peer(self, peer: Peer, now: float) -> None:
        self.pipeline.end_flow(peer.flow, now)
        self._send_out()
        self._upstream.remove(peer.up.fd)
        self._release_source(peer)
        self._closed_socket_drops += self._socket_drops.pop(peer.up.inode, 0)
        peer.up.close()
        del self.peers[peer.flow]
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

    def state_extra(self) -> tuple[dict[str, Any], str]:
        """Each peer's addresses and upstream port for the state file (the service saves the
        sessions of both directions beside them).

        xl2tpd's tunnel socket is connected to the source port it first saw, and in renumber
        mode it has seen our Ns: both must survive a restart.
        """
        peers = [
            state.peer_entry(
                peer.addr,
                peer.lsock.sock.getsockname()[:2],
                peer.up.sock.getsockname()[:2],
                peer.cmsg,
            )
            for peer in self.peers.values()
        ]
        return {"peers": peers}, f" and {len(peers)} LAC peers"

    def restore_extra(self, extra: dict[str, Any], now: float) -> str:
        """Recreate saved peers with their old upstream ports; before reading.

        `extra` is only checked for its JSON shape by `state.load_state`, so every peer entry is
        validated here (`parse_saved_peers`): a bad entry is reported and skipped, never raised.
        A peer that is no longer allowed, whose listen address is gone or whose port cannot be
        bound again is skipped with a warning: it gets a new port when it next sends.
        Returns the log line's words for the peers restored.
        """
        listeners = {tuple(s.sock.getsockname()[:2]): s for s in self.listeners}
        restored_peers = 0
        saved_peers, problems = state.parse_saved_peers(extra.get("peers"))
        for problem in problems:
            log.warning("state: %s; that entry is skipped", problem)
        for p in saved_peers:
            where = format_address(p.flow)
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
            if p.flow in self.peers:
                log.warning("state: LAC peer %s is listed twice; the later entry is skipped", where)
                continue
            if not self.admission.allowed(p.flow[0]):
                log.warning(
                    "state: LAC peer %s is no longer allowed (`relay.allow`); skipped", where
                )
                continue
            if self.admission.is_self(p.flow):
                log.warning("state: LAC peer %s is the LNS or one of our sockets; skipped", where)
                continue
            if len(self.peers) >= self.config.max_peers:  # before a source is taken for it
                log.warning(
                    "state: LAC peer %s: max_peers (%d) reached; skipped",
                    where,
                    self.config.max_peers,
                )
                continue
            source = self._restored_source(p, where)
            if source is None:
                continue
            try:
                up = self._upstream_socket(p.upstream[1], source)
            except OSError as e:
                if self._sources is not None and source != self._upstream_ip:
                    self._sources.release(p.flow[0])
                log.warning(
                    "state: LAC peer %s: cannot bind upstream port %d again (%s); it gets a new "
                    "one when it next sends",
                    where,
                    p.upstream[1],
                    e.strerror,
                )
                continue
            peer = Peer(p.addr, p.flow, lsock, up, now)
            peer.cmsg = p.cmsg if lsock.pktinfo else None
            self._add_peer(peer)
            restored_peers += 1
        return f" and {restored_peers} LAC peers (with their upstream ports)"

    def _release_source(self, peer: Peer) -> None:
        if self._sources is None:
            return
        with contextlib.suppress(OSError):
            if peer.up.sock.getsockname()[0] == self._upstream_ip:
                return  # the shared address of an older version's state file: not allocated
        self._sources.release(peer.flow[0])

    def _restored_source(self, p: state.SavedPeer, where: str) -> str | None:
        """The saved upstream address if it still applies (taking it), else None (logged)."""
        saved = p.upstream[0]
        if self._sources is not None and saved != self._upstream_ip:
            if self._sources.restore(p.flow[0], saved):
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

    def reconfigure(self, new: Config) -> list[str]:
        """Apply what can change live; returns the keys refused because they need a rebind."""
        refused = self.config.rebind_changes(new)
        now = self.clock()
        self._send_out()
        self.admission.reconfigure(new.allow)
        # Keep the sockets' settings (refused keys) from the running config.
        self.config = replace(new, **{key: getattr(self.config, key) for key in REBIND_KEYS})
        for peer in [p for p in self.peers.values() if not self.admission.allowed(p.flow[0])]:
            log.warning(
                "LAC peer %s no longer allowed: its sessions end now", format_address(peer.flow)
            )
            self._remove_peer(peer, now)
        self._send_out()
        self._rearm()
        warn_if_open(self.config)
        return refused

    # --- what the service reads (metrics, drop reports, status, housekeeping) -----------------

    def counter_tables(self) -> list[CounterTable]:
        return [(RELAY_ROWS, self.counters, {})]

    def collectors(self) -> list[Collector]:
        return []

    def report_detail(self, key: str) -> str | None:
        if key == "not_allowed":
            return f"top sources: {self.counters.top_not_allowed()}"
        return None

    def housekeeping_steps(self) -> list[HousekeepingStep]:
        return [
            ("idle peer expiry", self.remove_idle),
            ("socket drop count", lambda _: self.update_socket_drops()),
            ("LNS health", self.health.tick),
        ]

    def status_fields(self, now: float, query: status.StatusQuery) -> dict[str, Any]:
        """Each LAC peer with the upstream address xl2tpd sees it as, and its sessions."""
        by_flow = status.sessions_by_flow(self.pipeline, now, query)
        peers = []
        for key, peer in self.peers.items():
            if not query.peer_matches(format_address(peer.flow)):
                continue
            if query.selects_sessions and key not in by_flow:
                continue  # as in-path mode: only the peers of the sessions chosen
            try:
                upstream = format_address(peer.up.sock.getsockname()[:2])
            except OSError:
                upstream = "?"
            peers.append(
                {
                    "lac": format_address(peer.flow),
                    "upstream": upstream,
                    "last_seen_s": round(max(0.0, now - peer.last_seen), 3),
                    "sessions": by_flow.pop(key, []),
                }
            )
        c = self.counters
        return {
            "lns": format_address(self.config.lns),
            "lns_health": self.health.status(),
            "totals": {
                "peers": len(self.peers),
                "rx_datagrams_lac": c.rx_datagrams_lac,
                "rx_datagrams_lns": c.rx_datagrams_lns,
            },
            "peers": peers,
        }

    def status_line(self) -> str:
        c = self.config
        return (
            f"relaying {', '.join(format_address(a) for a in c.listen)} -> "
            f"{format_address(c.lns)}, reorder timeout {c.engine.reorder_timeout * 1000:g} ms"
        )

    def final_line(self) -> str:
        return (
            f"{self.counters.rx_datagrams_lac} datagrams from LACs, "
            f"{self.counters.tx_datagrams_lns} to the LNS, "
            f"{self.pipeline.counters.released} released after hold"
        )
