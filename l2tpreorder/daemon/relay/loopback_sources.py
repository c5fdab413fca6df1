"""One loopback source address per LAC, so an LNS on loopback can tell LACs apart by address.

Behind the relay every LAC used to reach xl2tpd from one address (the relay's), each on its own
port. xl2tpd's duplicate-SCCRQ check compares the peer *address* and the Assigned Tunnel ID of
all its tunnels, not the port: two LACs that chose the same tunnel ID (LACs that number from 1
after a reboot do at once) got one SCCRP, and "Peer requested tunnel 1 twice, ignoring second
one" in xl2tpd's log. Every address in 127.0.0.0/8 is local on Linux, so when the LNS is on
loopback each LAC address gets its own: 127.B.C.D from the LAC's last three bytes (LAC
198.18.1.7 is seen by xl2tpd as 127.18.1.7: easy to match in its log), another one from a
hash when two LACs would share it. Peers from one LAC address share its loopback address (on
their own ports), as they would reach an LNS without the relay. The state file keeps each
peer's upstream address and port, so a restart keeps them.
"""

from __future__ import annotations

import hashlib
import ipaddress

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
PROBES = 64  # hash candidates tried before giving up (the space has 2^24 addresses)


def lns_is_ipv4_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in LOOPBACK
    except ValueError:
        return False


class LoopbackSources:
    """LAC address -> its loopback source address, while peers of that LAC exist."""

    __slots__ = ("_by_source", "_of", "_users", "reserved")

    def __init__(self, reserved: set[str] | None = None) -> None:
        self._of: dict[str, str] = {}  # LAC ip -> loopback ip
        self._by_source: dict[str, str] = {}  # loopback ip -> LAC ip
        self._users: dict[str, int] = {}  # LAC ip -> peers using it
        # Never handed out: the network and broadcast addresses of the local 127/8 route.
        self.reserved = reserved if reserved is not None else {"127.0.0.0", "127.255.255.255"}

    def acquire(self, lac_ip: str) -> str:
        """The loopback address for a new peer of `lac_ip` (the same for all its peers)."""
        source = self._of.get(lac_ip)
        if source is None:
            source = self._choose(lac_ip)
            self._assign(lac_ip, source)
        self._users[lac_ip] += 1
        return source

    def restore(self, lac_ip: str, source: str) -> bool:
        """A peer restored from the state file with its old address; False if now taken."""
        owner = self._by_source.get(source)
        if owner not in (None, lac_ip) or self._of.get(lac_ip, source) != source:
            return False
        if lac_ip not in self._of:
            self._assign(lac_ip, source)
        self._users[lac_ip] += 1
        return True

    def release(self, lac_ip: str) -> None:
        """A peer of `lac_ip` is gone; its address is free again when it was the last one."""
        left = self._users.get(lac_ip, 0) - 1
        if left > 0:
            self._users[lac_ip] = left
            return
        self._users.pop(lac_ip, None)
        source = self._of.pop(lac_ip, None)
        if source is not None:
            self._by_source.pop(source, None)

    def _assign(self, lac_ip: str, source: str) -> None:
        self._of[lac_ip] = source
        self._by_source[source] = lac_ip
        self._users[lac_ip] = 0

    def _choose(self, lac_ip: str) -> str:
        low = ipaddress.ip_address(lac_ip).packed[-3:]
        for i in range(PROBES + 1):
            if i == 0:
                tail = low
            else:
                tail = hashlib.blake2s(f"{lac_ip}/{i}".encode(), digest_size=3).digest()
            candidate = "127." + ".".join(str(b) for b in tail)
            if candidate not in self._by_source and candidate not in self.reserved:
                return candidate
        raise OSError(99, f"no free loopback source address for LAC {lac_ip}")
