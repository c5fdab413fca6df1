"""Is the LNS answering? ICMP errors on the upstream sockets, and silence while LACs talk.

Without this, a relay whose LNS is stopped "sends" every datagram into the void: sendto on an
unconnected UDP socket succeeds and the ICMP port unreachable that comes back is discarded.
IP_RECVERR / IPV6_RECVERR make the kernel queue those ICMP errors on the socket (connected or
not); the relay drains the queue when the socket wakes it with nothing to read. The upstream
sockets stay unconnected so that datagrams from other sources still reach us and are counted
(reason not_from_lns) instead of being discarded by the kernel.

A second, slower signal covers an LNS that takes datagrams but never answers (a firewall that
drops, a hung xl2tpd): LAC traffic came in and nothing came back from the LNS for
`lns_silence_after` seconds (longer than L2TP's 60 s hello, which a live LNS always sends).
Each episode is logged once, with the address, and ends when the LNS is heard again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct

from l2tpreorder.config import Address, format_address
from l2tpreorder.daemon.relay.counters import RelayCounters

log = logging.getLogger("l2tpreorder")

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err
MAX_ERRORS_PER_DRAIN = 64  # the queue is bounded by the receive buffer; this bounds one call
LNS_SILENCE_AFTER = 90.0  # > L2TP's 60 s hello interval: a live LNS says something by then

_ICMP_TEXT = {
    errno.ECONNREFUSED: "port unreachable: nothing listens at that address",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EACCES: "administratively prohibited (a firewall refuses it)",
    errno.EMSGSIZE: "fragmentation needed (datagram larger than the path MTU)",
}


def enable_icmp_errors(sock: socket.socket) -> None:
    """Ask the kernel to queue ICMP errors for datagrams this socket sent."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


class IcmpError:
    """One queued error: its errno and the destination of the datagram that caused it."""

    __slots__ = ("destination", "errno", "reporter")

    def __init__(self, err: int, destination: Address | None, reporter: str | None) -> None:
        self.errno = err
        self.destination = destination
        self.reporter = reporter  # the host that sent the ICMP message

    def describe(self) -> str:
        text = _ICMP_TEXT.get(self.errno) or os.strerror(self.errno)
        by = f", reported by {self.reporter}" if self.reporter else ""
        return f"ICMP {text}{by}"


def drain_icmp_errors(sock: socket.socket) -> list[IcmpError]:
    """Read the socket's error queue (never blocks); every entry it held. Also clears the
    pending socket error, which would otherwise fail the next datagram sent to a revived LNS."""
    errors: list[IcmpError] = []
    with contextlib.suppress(OSError):
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    for _ in range(MAX_ERRORS_PER_DRAIN):
        try:
            _, ancillary, _, name = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        destination = (str(name[0]), int(name[1])) if name else None
        for level, kind, data in ancillary:
            if (level, kind) not in (
                (socket.IPPROTO_IP, IP_RECVERR),
                (socket.IPPROTO_IPV6, IPV6_RECVERR),
            ) or len(data) < _EE.size:
                continue
            ee_errno, origin, _type, _code, _pad, _info, _data = _EE.unpack_from(data)
            reporter = _offender(data[_EE.size :], origin)
            errors.append(IcmpError(ee_errno, destination, reporter))
    return errors


def _offender(raw: bytes, origin: int) -> str | None:
    """SO_EE_OFFENDER: the sockaddr after the struct (the ICMP message's sender)."""
    try:
        if origin == SO_EE_ORIGIN_ICMP and len(raw) >= 8:
            return socket.inet_ntop(socket.AF_INET, raw[4:8])
        if origin == SO_EE_ORIGIN_ICMP6 and len(raw) >= 24:
            return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    except (OSError, ValueError):
        pass
    return None


class LnsHealth:
    """Whether the LNS answers, from ICMP errors and from traffic both ways (one per relay)."""

    __slots__ = (
        "_lac_seen",
        "_lac_since",
        "_lns_seen",
        "counters",
        "lns",
        "reason",
        "silence_after",
    )

    def __init__(
        self, lns: Address, counters: RelayCounters, silence_after: float = LNS_SILENCE_AFTER
    ) -> None:
        self.lns = lns
        self.counters = counters
        self.silence_after = silence_after
        self.reason: str | None = None  # why the LNS is considered unresponsive; None = fine
        self._lac_seen = counters.rx_datagrams_lac
        self._lns_seen = counters.rx_datagrams_lns
        self._lac_since: float | None = None  # first LAC datagram the LNS has not answered since

    def status(self) -> dict[str, object]:
        """`status`'s `lns_health`: answering is True once the LNS was heard, False with a
        problem, None (`unknown, no traffic yet`) before either: right after start nothing
        says the LNS answers, and `true` there hid a missing LNS (issue 24)."""
        c = self.counters
        if self.reason is not None:
            answering: bool | None = False
            state = f"not answering: {self.reason}"
        elif c.rx_datagrams_lns - c.dropped_not_from_lns > 0:
            answering, state = True, "answering"
        else:
            answering, state = None, "unknown, no traffic yet"
        return {"answering": answering, "state": state, "problem": self.reason}

    def on_icmp_errors(self, errors: list[IcmpError]) -> None:
        """Errors drained from an upstream socket: about the LNS, or about nobody we know."""
        for e in errors:
            if e.destination is not None and e.destination[:2] != self.lns:
                continue  # an error for another destination (never sent by us): not the LNS
            self.counters.lns_icmp_errors += 1
            self._unresponsive(e.describe())

    def tick(self, now: float) -> None:
        """Housekeeping: LAC datagrams in, nothing back from the LNS for too long?"""
        c = self.counters
        # What we sent the LNS (refused LAC datagrams never reach it), and what it sent back:
        # a datagram from anyone else on an upstream socket is not an answer.
        lac, lns = c.tx_datagrams_lns, c.rx_datagrams_lns - c.dropped_not_from_lns
        lac_grew, lns_grew = lac != self._lac_seen, lns != self._lns_seen
        self._lac_seen, self._lns_seen = lac, lns
        if lns_grew:
            self._lac_since = None
            if self.reason is not None:
                log.warning("LNS %s answers again", format_address(self.lns))
                self.reason = None
                c.lns_unresponsive = 0
            return
        if lac_grew and self._lac_since is None:
            self._lac_since = now
        if self._lac_since is not None and now - self._lac_since >= self.silence_after:
            self._unresponsive(
                f"LACs sent datagrams and nothing came back from it for "
                f"{now - self._lac_since:.0f} s"
            )

    def _unresponsive(self, why: str) -> None:
        if self.reason is not None:
            return  # logged once per episode
        self.reason = why
        self.counters.lns_unresponsive = 1
        log.error(
            "LNS %s does not answer: %s. Is the LNS (xl2tpd) running and listening there "
            "(xl2tpd.conf [global] listen-addr and port, as in `lns`)?",
            format_address(self.lns),
            why,
        )
