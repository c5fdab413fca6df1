"""Baseline: the barest uvloop UDP relay (no parsing, no state), LAC side -> LNS side only.

The daemon's targets are ratios against this, run in the same bench run on the same machine:
it is what "Python + uvloop" costs before any L2TP work is done.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys

import uvloop


class Relay(asyncio.DatagramProtocol):
    def __init__(self, out: asyncio.DatagramTransport) -> None:
        self.out = out
        self.forwarded = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.out.sendto(data)
        self.forwarded += 1


async def serve(listen: tuple[str, int], target: tuple[str, int], rcvbuf: int) -> int:
    loop = asyncio.get_running_loop()
    out, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=target)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(listen)
    transport, relay = await loop.create_datagram_endpoint(lambda: Relay(out), sock=sock)
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    transport.close()
    out.close()
    return relay.forwarded


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to receive on")
    p.add_argument("--target", required=True, help="HOST:PORT to forward to")
    p.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF bytes (0 = system default)")
    args = p.parse_args(argv)
    lh, lp = args.listen.rsplit(":", 1)
    th, tp = args.target.rsplit(":", 1)
    forwarded = uvloop.run(serve((lh, int(lp)), (th, int(tp)), args.rcvbuf))
    print(f'{{"forwarded": {forwarded}}}', flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
