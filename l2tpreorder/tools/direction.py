"""Which end of an L2TP conversation in a capture is the LNS, and the conversation as a flow key.

A capture has no notion of "towards the LNS"; replay and `--live` both need it, per conversation,
on its first datagram. The evidence, in this order: `--lns`, the control message type
(SCCRQ/ICRQ/ICCN come from the LAC, SCCRP/ICRP/OCRQ from the LNS), the UDP ports (the end on the
L2TP port when only one is), an address already known as LNS or LAC in another conversation, and
finally the first packet's destination (reported as a guess).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from l2tpreorder.config import ConfigError, parse_address, parse_ip
from l2tpreorder.core.fastpath import Header
from l2tpreorder.core.msgtype import MessageType
from l2tpreorder.wire import parse_control

Endpoint = tuple[str, int]

LAC_SENDS = {
    MessageType.SCCRQ,
    MessageType.SCCCN,
    MessageType.ICRQ,
    MessageType.ICCN,
    MessageType.OCRP,
    MessageType.OCCN,
    MessageType.WEN,
}
LNS_SENDS = {MessageType.SCCRP, MessageType.ICRP, MessageType.OCRQ, MessageType.SLI}


def control_message_type(payload: bytes, header: Header | str) -> int | None:
    """The Message Type of a control message (the direction evidence), None for data, a ZLB,
    or anything malformed."""
    if isinstance(header, str) or not header.is_control:
        return None
    control = parse_control(payload)
    return None if isinstance(control, str) else control.message_type


LNS_EXPECTED = 'an IP address with an optional port: "IPv4", "IPv4:PORT", "IPv6" or "[IPv6]:PORT"'


def parse_lns(flag: str, value: str) -> tuple[str, int | None]:
    """`--lns`: '192.0.2.1', '192.0.2.1:1701', '2001:db8::1', '[2001:db8::1]:1701' -> (canonical
    address, port or None). Raises ConfigError naming the flag, the value and the expected form;
    the address is canonical (config's parsers), as the capture's addresses are."""
    text = value.strip()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return parse_ip(flag, bare), None
    except ConfigError:
        pass
    try:
        return parse_address(flag, text)
    except ConfigError:
        raise ConfigError(flag, value, LNS_EXPECTED) from None


@dataclass(frozen=True, slots=True)
class Conversation:
    """One LAC-LNS UDP conversation; the engine's `flow` for it."""

    lac: Endpoint
    lns: Endpoint
    method: str  # how the direction was decided


class DirectionFinder:
    def __init__(self, lns_address: str | None = None, ports: tuple[int, ...] = (1701,)) -> None:
        """`lns_address` as typed after --lns; a bad one raises ConfigError."""
        self._lns: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int | None] | None = None
        if lns_address is not None:
            host, port = parse_lns("--lns", lns_address)
            self._lns = (ipaddress.ip_address(host), port)
        self.ports = frozenset(ports)
        self._conversations: dict[tuple[Endpoint, Endpoint], Conversation] = {}
        self._known_lns: set[str] = set()
        self._known_lac: set[str] = set()
        self.conflicts = 0  # later handshake messages that contradict a guessed direction

    @property
    def conversations(self) -> list[Conversation]:
        return list(self._conversations.values())

    def find(
        self, src: Endpoint, dst: Endpoint, message_type: int | None
    ) -> tuple[Conversation, bool]:
        """The conversation and whether this datagram travels towards the LNS."""
        key = (src, dst) if src <= dst else (dst, src)
        conv = self._conversations.get(key)
        if conv is None:
            conv = self._decide(src, dst, message_type)
            self._conversations[key] = conv
            self._known_lns.add(conv.lns[0])
            self._known_lac.add(conv.lac[0])
        elif message_type is not None and conv.method.startswith("guess"):
            said_lac = message_type in LAC_SENDS
            said_lns = message_type in LNS_SENDS
            if (said_lac and src != conv.lac) or (said_lns and src != conv.lns):
                self.conflicts += 1
        return conv, dst == conv.lns

    def _decide(self, src: Endpoint, dst: Endpoint, message_type: int | None) -> Conversation:
        if self._lns is not None:
            ip, port = self._lns
            for lns, lac in ((dst, src), (src, dst)):
                if (port is None or port == lns[1]) and _same_ip(lns[0], ip):
                    return Conversation(lac, lns, "--lns")
        if message_type in LAC_SENDS:
            return Conversation(src, dst, f"handshake ({MessageType(message_type).name})")
        if message_type in LNS_SENDS:
            return Conversation(dst, src, f"handshake ({MessageType(message_type).name})")
        src_on_port, dst_on_port = src[1] in self.ports, dst[1] in self.ports
        if dst_on_port and not src_on_port:
            return Conversation(src, dst, "ports")
        if src_on_port and not dst_on_port:
            return Conversation(dst, src, "ports")
        if dst[0] in self._known_lns or src[0] in self._known_lac:
            return Conversation(src, dst, "known address")
        if src[0] in self._known_lns or dst[0] in self._known_lac:
            return Conversation(dst, src, "known address")
        return Conversation(src, dst, "guess (first packet's destination; use --lns)")


def _same_ip(text: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Compared as addresses, not strings: '2001:DB8:0::1' is '2001:db8::1'."""
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False
