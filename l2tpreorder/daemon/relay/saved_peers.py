"""The relay's part of the state file's `extra`: each LAC peer's addresses and upstream port.

xl2tpd's tunnel socket is connected to the source port it first saw, so a restart must give
each LAC peer its old upstream port back. `state.load_state` checks only the JSON shape of
`extra`; every peer entry is validated here and a bad one is skipped, never raised.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from l2tpreorder.daemon.relay.sockets import IN_PKTINFO, IP_PKTINFO, IPV6_PKTINFO, IPV6_PKTINFO_SIZE
from l2tpreorder.daemon.state import short


def peer_entry(
    addr: tuple[Any, ...],
    listen: tuple[str, int],
    upstream: tuple[str, int],
    cmsg: list[tuple[int, int, bytes]] | None,
) -> dict[str, Any]:
    """One `extra.peers` entry as `parse_saved_peers` reads it back."""
    saved_cmsg = None
    if cmsg is not None:
        saved_cmsg = [[level, kind, bytes(value).hex()] for level, kind, value in cmsg]
    return {
        "addr": list(addr),
        "listen": list(listen),
        "cmsg": saved_cmsg,
        "upstream": list(upstream),
    }


class SavedPeer:
    """One validated `extra.peers` entry of a state file (what `Relay.save_state` wrote)."""

    __slots__ = ("addr", "cmsg", "family", "flow", "listen", "upstream")

    def __init__(
        self,
        addr: tuple[Any, ...],
        listen: tuple[str, int],
        upstream: tuple[str, int],
        cmsg: list[tuple[int, int, bytes]] | None,
    ) -> None:
        self.addr = addr  # as the kernel gave it: (host, port) or (host, port, flowinfo, scope)
        self.flow: tuple[str, int] = (addr[0], addr[1])  # the peer's flow: (ip, port)
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
        return [], [f"extra.peers = {short(value)}: expected a list of peer entries"]
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
        raise ValueError(f"{short(item)}: expected an object")
    for name in ("addr", "listen", "upstream"):
        if name not in item:
            raise ValueError(f"missing {name!r}")
    addr = item["addr"]
    if not isinstance(addr, list) or len(addr) not in (2, 4):
        expected = "expected [host, port] or [host, port, flow info, scope id]"
        raise ValueError(f"addr = {short(addr)}: {expected}")
    host, port = _saved_address("addr", addr[:2])
    if len(addr) == 4:
        if ipaddress.ip_address(host).version != 6:
            raise ValueError(f"addr = {short(addr)}: flow info and scope id only for IPv6")
        for name, x in zip(("flow info", "scope id"), addr[2:], strict=True):
            if type(x) is not int or not 0 <= x <= 0xFFFFFFFF:
                raise ValueError(f"addr {name} = {short(x)}: expected an integer 0..4294967295")
    listen = _saved_address("listen", item["listen"])
    upstream = _saved_address("upstream", item["upstream"])
    cmsg = item.get("cmsg")
    if cmsg is not None:
        cmsg = _saved_cmsg(cmsg)
    return SavedPeer((host, port, *addr[2:]), listen, upstream, cmsg)


def _saved_address(name: str, value: object) -> tuple[str, int]:
    expected = "expected [IP literal, port 1..65535]"
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{name} = {short(value)}: {expected}")
    host, port = value
    if not isinstance(host, str) or type(port) is not int or not 1 <= port <= 0xFFFF:
        raise ValueError(f"{name} = {short(value)}: {expected}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{name} = {short(value)}: {expected}") from None
    return host, port


def _saved_cmsg(value: object) -> list[tuple[int, int, bytes]]:
    """Only the one PKTINFO item `sockets._reply_cmsg` makes, with its exact size, is accepted."""
    expected = "expected null or [[level, type, hex]] of an IP_PKTINFO/IPV6_PKTINFO item"
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], list):
        raise ValueError(f"cmsg = {short(value)}: {expected}")
    item = value[0]
    if len(item) != 3 or not isinstance(item[2], str):
        raise ValueError(f"cmsg = {short(value)}: {expected}")
    level, kind, text = item
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"cmsg = {short(value)}: {expected}") from None
    shapes = {
        (socket.IPPROTO_IP, IP_PKTINFO): IN_PKTINFO.size,
        (socket.IPPROTO_IPV6, IPV6_PKTINFO): IPV6_PKTINFO_SIZE,
    }
    if type(level) is not int or type(kind) is not int or shapes.get((level, kind)) != len(data):
        raise ValueError(f"cmsg = {short(value)}: {expected}")
    return [(level, kind, data)]
