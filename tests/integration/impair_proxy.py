"""The middle box of the xl2tpd integration test: a UDP relay that impairs LAC->LNS data.

Debian's xl2tpd as LAC never sets the S bit on data, so, as a SEIL/X1 does, this proxy first adds
Ns/Nr (a per-session counter from 0; Length grows by 4 when L is set). Then, with a fixed seed, it
displaces data messages (held back until K later ones have passed; K=1 is an adjacent swap), drops
chosen bursts and duplicates. Control messages and LNS->LAC traffic pass untouched and at once.

Every datagram sent upstream is recorded as one JSON line in --record, so the test knows exactly
what the proxy did (which frames were displaced, dropped, duplicated, and in which order they left).

Run: python impair_proxy.py --listen 198.18.1.2:1701 --upstream 198.18.2.1:1701 --record FILE ...
"""

from __future__ import annotations

import argparse
import json
import random
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any, TextIO

from l2tpreorder.core.fastpath import Header, parse_header
from l2tpreorder.wire import build_data

MAGIC = b"L2RX"  # fake_pppd puts MAGIC + 4-byte frame number in every test frame
IDLE_FLUSH = 0.2  # release a held message when the LAC has been quiet this long


def frame_number(datagram: bytes) -> int | None:
    at = datagram.find(MAGIC)
    if at < 0 or at + 8 > len(datagram):
        return None
    value: int = struct.unpack_from("!I", datagram, at + 4)[0]
    return value


def add_sequence(datagram: bytes, header: Header, ns: int, nr: int) -> bytes:
    """The same data message rebuilt by the project's wire builder, now with Ns/Nr (S set)."""
    pad_start = header.payload_offset - (header.offset_size or 0)
    return build_data(
        header.tunnel_id, header.session_id, datagram[header.payload_offset : header.end],
        ns=ns, nr=nr, length=header.has_length, offset_size=header.offset_size,
        offset_pad=datagram[pad_start : header.payload_offset] if header.has_offset else None,
        priority=header.priority,
    )


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def burst(text: str) -> tuple[int, int]:
    at, _, count = text.partition(":")
    return int(at), int(count)


class Proxy:
    """Per-session Ns, one held (displaced) message at a time, decisions from one seeded RNG."""

    def __init__(self, args: argparse.Namespace, record: TextIO) -> None:
        self.args = args
        self.record = record
        self.rng = random.Random(args.seed)
        self.next_ns: dict[tuple[int, int], int] = {}
        self.drop: set[int] = set()
        for at, count in args.drop:
            self.drop.update(range(at, at + count))
        self.last_control: bytes | None = None
        self.held: bytes | None = None
        self.held_left = 0
        self.last_data = 0.0
        self.lac: tuple[str, int] | None = None
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(args.listen)
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind((args.upstream_source, 0))
        self.up.connect(args.upstream)
        # Non-blocking both: a pending ICMP error can make `select` report a socket readable
        # whose error another call then consumes; a blocking recv on it would wait for ever.
        self.down.setblocking(False)
        self.up.setblocking(False)

    def log(self, **event: Any) -> None:
        self.record.write(json.dumps(event) + "\n")

    def send_up(self, datagram: bytes, kind: str, **extra: Any) -> None:
        try:
            self.up.send(datagram)
        except ConnectionRefusedError:
            # Nobody listened upstream (the relay restarting): the ICMP error comes back on the
            # next send, and that datagram is lost, as a real LAC's would be.
            self.log(event="refused", kind=kind, frame=frame_number(datagram), **extra)
            return
        except BlockingIOError:  # send buffer full (non-blocking socket): lost, as on a wire
            self.log(event="blocked", kind=kind, frame=frame_number(datagram), **extra)
            return
        self.log(event="sent", kind=kind, hex=datagram.hex(), frame=frame_number(datagram), **extra)

    def from_lac(self, datagram: bytes) -> None:
        header = parse_header(datagram)
        if isinstance(header, str) or header.is_control:
            self.send_up(datagram, "control" if not isinstance(header, str) else header)
            self.last_control = datagram
            return
        self.last_data = time.monotonic()
        ns = header.ns
        if self.args.add_sequence and not header.has_sequence:
            key = (header.tunnel_id, header.session_id)
            ns = self.next_ns.get(key, 0)
            self.next_ns[key] = (ns + 1) & 0xFFFF
            datagram = add_sequence(datagram, header, ns, 0)
        index = frame_number(datagram)
        if index == self.args.replay_control_at and self.last_control is not None:
            # A LAC retransmitting its last control message (legal, RFC 2661 §5.8): the LNS
            # answers with a ZLB. The test checks it is not queued behind held data.
            self.send_up(self.last_control, "control", replayed=True)
        lo, hi = self.args.impair_range
        in_range = index is not None and lo <= index < hi
        if index is not None and index in self.drop:
            self.log(event="dropped", frame=index, ns=ns)
        elif in_range and self.held is None and self.rng.random() < self.args.displace_rate:
            self.held, self.held_left = datagram, self.args.displace
            self.log(event="displaced", frame=index, ns=ns, by=self.args.displace)
            return
        else:
            self.send_up(datagram, "data", ns=ns)
            if in_range and self.rng.random() < self.args.duplicate_rate:
                self.log(event="duplicated", frame=index, ns=ns)
                self.send_up(datagram, "data", ns=ns)
        if self.held is not None:
            self.held_left -= 1
            if self.held_left <= 0:
                self.release_held()

    def release_held(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            header = parse_header(held)
            self.send_up(held, "data", ns=None if isinstance(header, str) else header.ns)

    def drain_down(self) -> None:
        """Everything the LAC sent so far; returns when the socket would block."""
        while True:
            try:
                datagram, self.lac = self.down.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue  # an ICMP error for an earlier reply to the LAC: nothing to read
            self.from_lac(datagram)

    def drain_up(self) -> None:
        """Every reply from upstream, passed to the LAC; returns when the socket would block."""
        while True:
            try:
                reply = self.up.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue  # see send_up: the error is consumed, data may still be queued
            if self.lac is not None:
                try:
                    self.down.sendto(reply, self.lac)
                except (BlockingIOError, ConnectionRefusedError):
                    self.log(event="reply_lost")

    def serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.down, selectors.EVENT_READ, "down")
        sel.register(self.up, selectors.EVENT_READ, "up")
        self.log(event="ready")
        self.record.flush()
        while True:
            for key, _ in sel.select(timeout=IDLE_FLUSH / 2):
                if key.data == "down":
                    self.drain_down()
                else:
                    self.drain_up()
            if self.held is not None and time.monotonic() - self.last_data > IDLE_FLUSH:
                self.release_held()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=address, required=True, help="HOST:PORT the LAC dials")
    p.add_argument("--upstream", type=address, required=True, help="HOST:PORT of LNS or relay")
    p.add_argument("--upstream-source", default="0.0.0.0", help="source address towards upstream")
    p.add_argument("--record", required=True, help="JSON lines: every datagram sent upstream")
    p.add_argument("--add-sequence", action=argparse.BooleanOptionalAction, default=True,
                   help="add Ns/Nr to data as a SEIL/X1 does (--no-add-sequence: Windows-style)")
    p.add_argument("--displace", type=int, default=1, help="K: held back behind K later messages")
    p.add_argument("--displace-rate", type=float, default=0.0)
    p.add_argument("--drop", type=burst, action="append", default=[],
                   help="AT:COUNT drop COUNT consecutive frames from frame number AT")
    p.add_argument("--duplicate-rate", type=float, default=0.0)
    p.add_argument("--impair-range", type=burst, default=(0, 1 << 32),
                   help="LO:HI only frames LO <= n < HI are displaced or duplicated")
    p.add_argument("--replay-control-at", type=int, default=None,
                   help="re-send the last control message right after data frame N arrives")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(args.record, "a", buffering=1) as record:
        proxy = Proxy(args, record)
        try:
            proxy.serve()
        finally:
            proxy.release_held()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
