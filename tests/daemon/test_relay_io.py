"""The relay's batched socket layer on real loopback sockets: recvmmsg reads, GSO runs, real
kernel receive-queue drops (SO_RXQ_OVFL) turned into given-up gaps, and the plain fallback."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest

from l2tpreorder.config import config_from_dict
from l2tpreorder.core import reasons
from l2tpreorder.daemon import mmsg
from l2tpreorder.daemon.relay.adapter import Relay
from l2tpreorder.daemon.relay.sockets import UdpSocket
from l2tpreorder.wire import build_data
from tests.conftest import need
from tests.daemon_harness import free_udp_port, udp
from tests.relay_service import relay_service


def drain(sock: socket.socket) -> Iterator[bytes]:
    sock.settimeout(0.5)
    try:
        while True:
            yield sock.recv(65535)
    except TimeoutError:
        return


@pytest.mark.parametrize("gso", [False, True], ids=["sendmmsg", "gso"])
def test_send_many_keeps_every_datagram_and_its_boundaries(gso: bool) -> None:
    """sendmmsg cuts one joined buffer back into datagrams; GSO sends equal-size runs (a shorter
    last one too) and sizes that differ split them. Every datagram arrives whole, in order."""
    need(mmsg.AVAILABLE, "sendmmsg through ctypes (Linux, 64-bit)")
    if gso:
        need(mmsg.GSO_AVAILABLE, "UDP GSO (Linux >= 4.18)")
    sink = udp()
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    out = UdpSocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), gso=gso)
    sizes = [100] * 70 + [60] + [100] * 3 + [1400] * 50 + [900, 1400, 7] + [30000] * 3 + [1]
    datas = [struct.pack("!H", i) + bytes([i % 251]) * (n - 2) for i, n in enumerate(sizes)]
    datas[-1] = b"x"
    try:
        assert out.send_many(datas, sink.getsockname()) == len(datas)
        assert out.gso == gso  # GSO on: the kernel took the GSO sends (else it turns it off)
        assert list(drain(sink)) == datas
    finally:
        out.close()
        sink.close()


def test_read_gives_datagrams_and_sources_in_order() -> None:
    rx = UdpSocket.bind(("127.0.0.1", 0), 1 << 20)
    a, b = udp(), udp()
    try:
        dest = rx.sock.getsockname()
        sent = []
        for i in range(100):
            sender = a if i % 3 else b
            datagram = bytes([i]) * (1 + i * 7)
            sender.sendto(datagram, dest)
            sent.append((datagram, sender.getsockname()))
        got: list[tuple[bytes, tuple[str, int]]] = []
        while len(got) < len(sent):
            datas, keys, cmsgs = rx.read(64)
            assert cmsgs is None  # bound to one address: no PKTINFO needed
            assert datas, "datagrams sent on loopback must be waiting"
            got.extend(zip(datas, keys, strict=True))
        assert got == sent
    finally:
        rx.close()
        a.close()
        b.close()


SESSIONS = 8


def _flood_then_read() -> Relay:
    """Fill the relay's tiny receive queue while it does not read (the kernel drops the rest),
    then let it read: the next datagram of each session opens a gap the drops caused.

    The flood (400 datagrams) is far beyond what a 4 KiB queue holds (about 9 of these), so
    drops happen whatever the exact capacity; the Ns 50 datagrams are sent one at a time, each
    after the relay has read the one before, so none of them can be dropped."""
    import uvloop

    listen = free_udp_port()
    lns = udp()
    lac = udp()
    config = config_from_dict(
        {
            "listen": [f"127.0.0.1:{listen}"],
            "lns": f"127.0.0.1:{lns.getsockname()[1]}",
            "reorder": {"timeout_ms": 30000},
            "socket_buffer_bytes": 4096,
        }
    )

    def packet(session: int, ns: int) -> bytes:
        return build_data(1, session, struct.pack("!HH", session, ns) + bytes(60), ns=ns)

    async def scenario() -> Relay:
        loop = asyncio.get_running_loop()
        relay = Relay(config, loop=loop)
        relay.bind()
        service = relay_service(relay)
        try:
            for ns in range(50):
                for s in range(1, SESSIONS + 1):
                    lac.sendto(packet(s, ns), ("127.0.0.1", listen))
            service.start_io()
            c = relay.counters
            for _ in range(500):  # the queue (a few datagrams) is read at once
                await asyncio.sleep(0.01)
                if c.rx_datagrams_lac and c.tx_datagrams_lns == c.rx_datagrams_lac:
                    break
            queued = c.rx_datagrams_lac
            assert 0 < queued < 50 * SESSIONS  # the kernel dropped part of the flood
            for s in range(1, SESSIONS + 1):
                lac.sendto(packet(s, 50), ("127.0.0.1", listen))
                for _ in range(500):
                    await asyncio.sleep(0.01)
                    if c.rx_datagrams_lac == queued + s and not relay.pipeline.engine._out:
                        break
                assert c.rx_datagrams_lac == queued + s, "the relay did not read Ns 50"
            return relay
        finally:
            service.stop_io()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        relay = runner.run(scenario())
    got = list(drain(lns))
    lns.close()
    lac.close()
    # What reached the LNS: in Ns order per session, each session's Ns 50 included.
    last: dict[int, int] = {}
    for datagram in got:
        session, ns = struct.unpack_from("!HH", datagram, 10)
        assert ns > last.get(session, -1)
        last[session] = ns
    assert len(got) == relay.counters.tx_datagrams_lns
    assert sorted(last.items()) == [(s, 50) for s in range(1, SESSIONS + 1)]
    return relay


def test_kernel_drops_are_seen_and_their_gaps_given_up_without_the_timeout() -> None:
    need(mmsg.AVAILABLE, "recvmmsg through ctypes (Linux, 64-bit)")
    relay = _flood_then_read()
    assert relay.counters.rx_datagrams_lac < 50 * SESSIONS  # the kernel did drop
    up = relay.pipeline.engine.counters
    # Every session's Ns 50 went out although its predecessors were lost and the 30 s reorder
    # timeout never passed: the gaps were given up because of the reported drops.
    assert up.skipped[reasons.SKIP_SOCKET_DROP] > 0
    assert up.skipped[reasons.SKIP_TIMEOUT] == 0
    assert up.skipped[reasons.SKIP_END] == 0  # nothing was left for shutdown to flush
    assert up.received == up.accounted


def test_plain_io_fallback_relays_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without recvmmsg (other platforms), datagrams still flow; no drop count is learnt."""
    monkeypatch.setattr(mmsg, "AVAILABLE", False)
    monkeypatch.setattr(mmsg, "GSO_AVAILABLE", False)
    relay = _flood_then_read()
    up = relay.pipeline.engine.counters
    assert up.skipped[reasons.SKIP_SOCKET_DROP] == 0
    assert up.skipped[reasons.SKIP_END] > 0  # Ns 50 waited for the timeout; shutdown sent it
    assert up.received == up.accounted
