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

from l2tpreorder.config import ConfigError, format_address, parse_address
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.tools.capture import CaptureFormatError, CaptureReader, UdpDatagram
from l2tpreorder.tools.direction import DirectionFinder, Endpoint, control_message_type


def send_live(
    path: str,
    target: str,
    speed: float = 1.0,
    ports: tuple[int, ...] = (1701,),
    lns_address: str | None = None,
) -> int:
    try:
        host, port = parse_address("--live", target)
        directions = DirectionFinder(lns_address, ports)
        reader = CaptureReader(path, ports)
    except ConfigError as e:
        print(f"l2tpreorder replay: error: {e}", file=sys.stderr)
        return 2
    except (CaptureFormatError, OSError) as e:  # a corrupt gzip, a terminal on stdin
        print(f"l2tpreorder replay: {e}", file=sys.stderr)
        return 1
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: dict[Endpoint, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sent = received = 0
    first_ts: float | None = None
    start = time.monotonic()
    try:
        for item in reader:
            if not isinstance(item, UdpDatagram):
                continue
            message_type = control_message_type(item.payload, parse_header(item.payload))
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
            send_when_writable(sock, item.payload)
            sent += 1
            received += _drain(sel, 0)
        received += _drain(sel, 0.2)
    except CaptureFormatError as e:
        print(f"l2tpreorder replay: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(
            f"l2tpreorder replay: --live {format_address((host, port))}: sending datagram "
            f"{sent + 1} failed after {sent:,} sent: {e}",
            file=sys.stderr,
        )
        return 2
    finally:
        for sock in sockets.values():
            sel.unregister(sock)
            sock.close()
        sel.close()
    peers = ", ".join(format_address(lac) for lac in sockets)
    print(
        f"sent {sent:,} datagrams from {len(sockets)} LAC endpoint(s) ({peers}) to "
        f"{format_address((host, port))} in {time.monotonic() - start:.3f} s; "
        f"{received:,} datagrams came back"
    )
    return 0


def send_when_writable(sock: socket.socket, data: bytes, timeout: float = 5.0) -> None:
    """Send on a non-blocking socket; while the send buffer is full, wait until it is writable
    (up to `timeout` seconds in all, then TimeoutError: a daemon that stopped reading)."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        while True:
            try:
                sock.send(data)
                return
            except BlockingIOError:
                pass
            if not sel.get_map():
                sel.register(sock, selectors.EVENT_WRITE)
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"the socket stayed full for {timeout:g} s")


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
