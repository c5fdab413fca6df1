"""The relay hands one read's datagrams to the pipeline in one call when every source is a peer
already (`Pipeline.from_lac_many`), and goes datagram by datagram when a batch holds a new
source (admission, and a refusal, is counted per datagram). Both paths, on real loopback
sockets, with one read per batch: the datagrams are queued before the relay reads."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from l2tpreorder.config import config_from_dict
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.daemon.relay.adapter import Relay
from l2tpreorder.daemon.relay.sockets import UdpSocket
from l2tpreorder.wire import build_data
from tests.daemon_harness import free_udp_port, nothing_waiting, recv, udp
from tests.netns import wait_until


def data(session_id: int, ns: int) -> bytes:
    return build_data(7, session_id, f"payload-{session_id}-{ns}".encode(), ns=ns)


def ns_and_session(datagram: bytes) -> tuple[int, int | None]:
    h = parse_header(datagram)
    assert not isinstance(h, str), h
    return h.session_id, h.ns


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.parametrize("listen_host", ["127.0.0.1", "0.0.0.0"])  # the latter: PKTINFO replies
def test_batches_of_peers_and_of_new_sources_count_every_datagram(
    loop: asyncio.AbstractEventLoop, listen_host: str
) -> None:
    port = free_udp_port()
    lns = udp()
    config = config_from_dict(
        {
            "listen": [f"{listen_host}:{port}"],
            "lns": f"127.0.0.1:{lns.getsockname()[1]}",
            "allow": ["127.0.0.1/32", "127.0.0.5/32"],
            "reorder": {"timeout_ms": 1000},
        }
    )
    clock = [100.0]  # the relay's clock, moved by the test: last_seen is checked against it
    relay = Relay(config, loop=loop, clock=lambda: clock[0])
    relay.bind()
    lsock = relay.listeners[0]
    to = ("127.0.0.1", port)
    lac, other, refused = udp("127.0.0.1"), udp("127.0.0.5"), udp("127.0.0.9")
    c = relay.counters
    try:

        def read(sent: int) -> None:
            """One readiness callback once `sent` more datagrams are in: one read of all."""
            before = c.rx_datagrams_lac
            wait_until("datagrams queued", lambda: not nothing_waiting_peek(lsock))
            relay._on_lac_readable(lsock)
            assert c.rx_datagrams_lac - before == sent  # one read took them all

        # A batch with new sources: LAC admitted, a refused source counted per datagram.
        for sender, d in [(lac, data(1, 0)), (refused, data(2, 0)), (lac, data(1, 2)),
                          (refused, data(2, 1)), (lac, data(1, 1))]:  # fmt: skip
            sender.sendto(d, to)
        read(5)
        assert c.dropped_not_allowed == 2 and c.peers == 1
        # Known peer only (the batch path), swapped, then a batch adding a second peer.
        for d in (data(1, 4), data(1, 3)):
            lac.sendto(d, to)
        read(2)
        for sender, d in [(lac, data(1, 5)), (other, data(3, 0)), (lac, data(1, 6))]:
            sender.sendto(d, to)
        read(3)
        # Both peers known: one batch of both, with PKTINFO cmsgs on the wildcard socket; a
        # batch of known peers marks each as seen at its read.
        clock[0] = 200.0
        for sender, d in [(other, data(3, 2)), (lac, data(1, 7)), (other, data(3, 1))]:
            sender.sendto(d, to)
        read(3)
        assert [p.last_seen for p in relay.peers.values()] == [200.0, 200.0]
        assert c.dropped_not_allowed == 2 and c.peers == 2
        # The LAC now sends to another local address (wildcard socket only): in a batch of
        # known peers its reply cmsg follows, so replies leave from where it sends now.
        if listen_host == "0.0.0.0":
            peer = relay.peers[lac.getsockname()]
            first = peer.cmsg
            lac.sendto(data(1, 8), ("127.0.0.2", port))
            other.sendto(data(3, 3), to)
            read(2)
            assert peer.cmsg is not None and peer.cmsg != first
            lac.sendto(data(1, 9), to)
            read(1)
            assert peer.cmsg == first
        sent = {"127.0.0.1": 11, "0.0.0.0": 14}[listen_host]
        got = [ns_and_session(recv(lns)[0]) for _ in range(sent)]
        lac_sent, other_sent = (8, 3) if sent == 11 else (10, 4)
        assert [g for g in got if g[0] == 1] == [(1, n) for n in range(lac_sent)]
        assert [g for g in got if g[0] == 3] == [(3, n) for n in range(other_sent)]
        assert nothing_waiting(lns)
        assert relay.pipeline.counters.forwarded_in_order + relay.pipeline.counters.released == sent
        for peer in relay.peers.values():
            assert (peer.cmsg is not None) == (listen_host == "0.0.0.0")
    finally:
        relay.close()
        for s in (lns, lac, other, refused):
            s.close()


def nothing_waiting_peek(sock: UdpSocket) -> bool:
    try:
        sock.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    return False
