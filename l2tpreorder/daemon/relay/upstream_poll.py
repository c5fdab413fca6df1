"""All upstream (LNS-facing) sockets in one epoll set that the event loop watches as one fd.

Why not `loop.add_reader` per socket: the upstream sockets have IP_RECVERR on (lns_health), so an
ICMP error from the LNS address makes a socket report EPOLLERR, and libuv (uvloop) answers
EPOLLERR on a watched fd by stopping the watcher for good: that peer's replies would never be
read again. Behind an epoll fd of our own, an error is one more event we dispatch (drain the
error queue), and the loop's watcher only ever sees "readable". One registration for every peer
also keeps the loop's work per wake-up independent of the number of peers.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Generic, TypeVar

P = TypeVar("P")
MAX_EVENTS = 1024


class UpstreamPoller(Generic[P]):
    """fd -> peer; `dispatch` calls on_error then on_readable for each ready socket."""

    __slots__ = ("_ep", "_peers", "fd", "on_error", "on_readable")

    def __init__(self, on_readable: Callable[[P], None], on_error: Callable[[P], None]) -> None:
        self._ep = select.epoll()
        self.fd = self._ep.fileno()
        self._peers: dict[int, P] = {}
        self.on_readable = on_readable
        self.on_error = on_error

    def add(self, fd: int, peer: P) -> None:
        self._ep.register(fd, select.EPOLLIN)  # EPOLLERR is always reported
        self._peers[fd] = peer

    def remove(self, fd: int) -> None:
        if self._peers.pop(fd, None) is not None:
            self._ep.unregister(fd)

    def dispatch(self) -> None:
        """The loop saw our epoll fd readable: serve every socket that is ready now."""
        peers = self._peers
        for fd, events in self._ep.poll(0, MAX_EVENTS):
            peer = peers.get(fd)
            if peer is None:
                continue  # removed by an earlier callback of this round
            if events & select.EPOLLERR:
                self.on_error(peer)
            if events & select.EPOLLIN and fd in peers:
                self.on_readable(peer)

    def close(self) -> None:
        """Idempotent; `remove` stays a no-op afterwards."""
        self._peers.clear()
        self._ep.close()
