"""A minimal uvloop adapter around ReorderEngine: a stand-in to check the harness, NOT the daemon.

It has none of the daemon's duties (no return path, control plane, config, metrics, batching,
socket tuning beyond SO_RCVBUF). It exists so the bench's reorder-specific measurements (held-
packet release lateness, overload with many sessions) can be exercised against a real reorderer
before `l2tpreorder run` exists, and as a reference point once it does:
`python -m bench.run --daemon-cmd "{python} -m bench.engine_relay --listen {listen} --lns {lns}
--timeout {timeout_ms} --rcvbuf {rcvbuf}"`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time

import uvloop

from l2tpreorder.engine import EngineConfig, ReorderEngine


class EngineRelay(asyncio.DatagramProtocol):
    def __init__(self, engine: ReorderEngine, out: asyncio.DatagramTransport, clock: str) -> None:
        self.engine = engine
        self.out = out
        self.loop = asyncio.get_running_loop()
        # uvloop's loop.time() is libuv's cached, millisecond-resolution loop time: stamping
        # arrivals with it makes held packets leave up to ~1 ms early. "monotonic" is exact.
        self.now = self.loop.time if clock == "loop" else time.monotonic
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.engine.receive(data, addr, self.now())
        self.flush()

    def flush(self) -> None:
        out = self.engine.out
        if out:
            send = self.out.sendto
            for _flow, datagram in out:
                send(datagram)
            out.clear()
        deadline = self.engine.next_deadline()
        if deadline != self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = None if deadline is None else self.loop.call_at(deadline, self.expire)
            self.timer_at = deadline

    def expire(self) -> None:
        self.timer = self.timer_at = None
        self.engine.expire(self.now())
        self.flush()


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    lh, lp = args.listen.rsplit(":", 1)
    th, tp = args.lns.rsplit(":", 1)
    out, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                 remote_addr=(th, int(tp)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if args.rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    sock.bind((lh, int(lp)))
    engine = ReorderEngine(EngineConfig(reorder_timeout=args.timeout / 1000.0))
    transport, _ = await loop.create_datagram_endpoint(
        lambda: EngineRelay(engine, out, args.clock), sock=sock)
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    transport.close()
    out.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--lns", required=True)
    p.add_argument("--timeout", type=float, default=100, help="reorder timeout, ms")
    p.add_argument("--rcvbuf", type=int, default=0)
    p.add_argument("--clock", choices=["monotonic", "loop"], default="monotonic")
    uvloop.run(serve(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
