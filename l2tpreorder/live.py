"""`replay pcap FILE --live HOST:PORT`: send a capture's LAC->LNS L2TP payloads to a running
daemon with the original pacing (or `--speed N` times it), to test a live deployment.

One UDP socket per LAC endpoint in the capture, so the daemon sees as many peers as the capture
had. Whatever the daemon sends back is read and counted, never interpreted.
"""

from __future__ import annotations

import selectors
import socket
import sys
import time

from l2tpreorder.capture import CaptureReader, UdpDatagram
from l2tpreorder.direction import DirectionFinder, Endpoint, format_endpoint, parse_host_port
from l2tpreorder.fastpath import parse_header
from l2tpreorder.wire import parse_control


def send_live(
    path: str,
    target: str,
    speed: float = 1.0,
    ports: tuple[int, ...] = (1701,),
    lns_address: str | None = None,
) -> int:
    host, port = parse_host_port(target)
    if port is None:
        print(f"l2tpreorder replay: --live {target!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    directions = DirectionFinder(lns_address, ports)
    sockets: dict[Endpoint, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sent = received = 0
    first_ts: float | None = None
    start = time.monotonic()
    try:
        for item in CaptureReader(path, ports):
            if not isinstance(item, UdpDatagram):
                continue
            header = parse_header(item.payload)
            message_type = None
            if not isinstance(header, str) and header.is_control:
                control = parse_control(item.payload)
                if not isinstance(control, str):
                    message_type = control.message_type
            conv, towards_lns = directions.find(
                (item.src, item.sport), (item.dst, item.dport), message_type
            )
            if not towards_lns:
                continue
            if first_ts is None:
                first_ts = item.ts
            if speed > 0:
                due = start + max(0.0, item.ts - first_ts) / speed
                while (wait := due - time.monotonic()) > 0:
                    received += _drain(sel, min(wait, 0.05))
            sock = sockets.get(conv.lac)
            if sock is None:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect((host, port))
                sel.register(sock, selectors.EVENT_READ)
                sockets[conv.lac] = sock
            try:
                sock.send(item.payload)
                sent += 1
            except BlockingIOError:
                time.sleep(0.001)
                sock.send(item.payload)
                sent += 1
            received += _drain(sel, 0)
        received += _drain(sel, 0.2)
    finally:
        for sock in sockets.values():
            sel.unregister(sock)
            sock.close()
        sel.close()
    peers = ", ".join(format_endpoint(lac) for lac in sockets)
    print(
        f"sent {sent:,} datagrams from {len(sockets)} LAC endpoint(s) ({peers}) to "
        f"{format_endpoint((host, port))} in {time.monotonic() - start:.3f} s; "
        f"{received:,} datagrams came back"
    )
    return 0


def _drain(sel: selectors.BaseSelector, timeout: float) -> int:
    n = 0
    for key, _ in sel.select(timeout):
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        while True:
            try:
                sock.recv(65535)
                n += 1
            except (BlockingIOError, ConnectionRefusedError):
                break
    return n
