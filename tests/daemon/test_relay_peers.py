"""A LAC peer keeps its upstream port while it keeps sending (issue 20, "relay peers at the cap").

xl2tpd `connect()`s its tunnel socket to the address:port it first saw: a new upstream port for a
LAC that never paused is another peer to it, and that LAC's tunnel is lost. Real sockets on
loopback; peer_idle_timeout is shortened (the config's floor is 61 s) so the test takes seconds.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace
from typing import Any

import uvloop

from l2tpreorder.config import config_from_dict
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.daemon.relay.adapter import Relay
from l2tpreorder.wire import build_data
from tests.daemon_harness import WAIT, free_udp_port, recv, udp
from tests.relay_service import relay_service

IDLE = 1.0  # peer_idle_timeout of these tests, in seconds


def data(ns: int) -> bytes:
    return build_data(7, 9, f"payload-{ns}".encode(), ns=ns)


def ns_of(datagram: bytes) -> int | None:
    h = parse_header(datagram)
    assert not isinstance(h, str), h
    return h.ns


def stall(seconds: float, sender: socket.socket, to: Any, datagrams: list[bytes]) -> None:
    """Block the relay's event loop (this thread) for `seconds` while the LAC goes on sending:
    what a loaded machine, a stopped process or a long pause of the loop does to the relay.
    `sender` is the LAC (or the LNS), sending `datagrams` to `to` spread over the stall."""
    step = seconds / len(datagrams)
    for d in datagrams:
        time.sleep(step)  # the stall itself (nothing is waited for)
        sender.sendto(d, to)


def test_a_stalled_relay_keeps_the_port_of_a_peer_whose_datagrams_wait_unread() -> None:
    """After a stall longer than peer_idle_timeout the overdue housekeeping tick runs before the
    readers (libuv runs due timers before it polls): the LAC's datagrams are still queued, so
    it did not pause and must keep its upstream port. A LAC that really pauses is forgotten."""
    listen = free_udp_port()
    lns, lac = udp(), udp()
    base = config_from_dict(
        {
            "listen": [f"127.0.0.1:{listen}"],
            "lns": f"127.0.0.1:{lns.getsockname()[1]}",
            "peer_idle_timeout_ms": 61000,
        }
    )
    config = replace(base, peer_idle_timeout=IDLE)
    to = ("127.0.0.1", listen)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        relay = Relay(config, loop=loop)
        relay.bind()
        service = relay_service(relay)
        service.start_io()

        async def lns_recv() -> tuple[bytes, Any]:
            return await asyncio.wait_for(loop.run_in_executor(None, recv, lns), 2 * WAIT)

        try:
            lac.sendto(data(0), to)
            got, upstream = await lns_recv()
            assert ns_of(got) == 0
            stall(1.6 * IDLE, lac, to, [data(1), data(2)])
            assert relay.remove_idle() == 0, "a peer whose datagrams wait unread is not idle"
            for ns in (1, 2):
                got, src = await lns_recv()
                assert (ns_of(got), src) == (ns, upstream), "the LNS saw a new upstream port"
            assert relay.counters.peers == 1 and relay.counters.peers_removed_idle == 0
            # A real pause (the relay reads everything, the LAC sends nothing): forgotten.
            await asyncio.sleep(1.5 * IDLE)  # the pause itself
            assert relay.remove_idle() == 1
            assert relay.counters.peers == 0 and relay.counters.peers_removed_idle == 1
        finally:
            service.stop_io()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(scenario())
    finally:
        lns.close()
        lac.close()


def test_a_stalled_relay_keeps_a_peer_whose_lns_replies_wait_unread() -> None:
    """The LNS's datagrams count as the peer's activity too: when they wait unread on its
    upstream socket after a stall, the peer stays (closing the socket would lose them, and the
    LAC's next datagram would come from a new port). Once read, a real pause forgets it."""
    listen = free_udp_port()
    lns, lac = udp(), udp()
    base = config_from_dict(
        {
            "listen": [f"127.0.0.1:{listen}"],
            "lns": f"127.0.0.1:{lns.getsockname()[1]}",
            "peer_idle_timeout_ms": 61000,
        }
    )
    config = replace(base, peer_idle_timeout=IDLE)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        relay = Relay(config, loop=loop)
        relay.bind()
        service = relay_service(relay)
        service.start_io()
        try:
            lac.sendto(data(0), ("127.0.0.1", listen))
            got, upstream = await asyncio.wait_for(loop.run_in_executor(None, recv, lns), WAIT)
            assert ns_of(got) == 0
            stall(1.6 * IDLE, lns, upstream, [data(100)])  # the LNS answers; the LAC is quiet
            assert relay.remove_idle() == 0, "a peer with LNS datagrams unread is not idle"
            got, _ = await asyncio.wait_for(loop.run_in_executor(None, recv, lac), WAIT)
            assert ns_of(got) == 100
            assert relay.counters.peers_removed_idle == 0
            await asyncio.sleep(1.5 * IDLE)  # a real pause of both sides
            assert relay.remove_idle() == 1
        finally:
            service.stop_io()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(scenario())
    finally:
        lns.close()
        lac.close()
