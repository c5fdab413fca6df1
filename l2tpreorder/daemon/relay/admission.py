"""Which UDP sources may become LAC peers: the `allow` ACL, and never the LNS or ourselves.

Kept apart from the socket plumbing and the asyncio adapter so the rule is read in one place and
is the same for a datagram from a new source and for a peer restored from the state file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from l2tpreorder.config import Address, Network

# Rejected source addresses remembered so a flood from one does not re-run the ACL per packet.
DENIED_CACHE = 4096


class Admission:
    """The relay's source ACL, with a bounded cache of sources already refused."""

    def __init__(
        self, allow: tuple[Network, ...], lns: Address, bound: Callable[[], list[Address]]
    ) -> None:
        self.allow = allow
        self.lns = lns
        self.bound = bound  # our own listen addresses (the relay's, as bound now)
        self._denied: dict[tuple[str, int], None] = {}

    def allowed(self, host: str) -> bool:
        """`host` is inside one of the `allow` networks."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.allow)

    def is_self(self, source: tuple[str, int]) -> bool:
        """The LNS or one of our own sockets as a "LAC" (spoofed): relaying it could loop."""
        return source == self.lns or source[1] == 0 or source in self.bound()

    def refuses(self, source: tuple[str, int]) -> bool:
        """A datagram from a new source `source`: True when it may not become a peer."""
        if source in self._denied:
            return True
        if self.allowed(source[0]) and not self.is_self(source):
            return False
        if len(self._denied) >= DENIED_CACHE:
            self._denied.clear()
        self._denied[source] = None
        return True

    def reconfigure(self, allow: tuple[Network, ...]) -> None:
        """A new `allow` list (SIGHUP): sources refused before are judged afresh."""
        self.allow = allow
        self._denied.clear()
