"""Sink (the LNS side of the bench): receives in recvmmsg batches, checks per-session order, counts.

Order is checked on the trailer's per-session `seq` (see bench.marker), so a relay that renumbers
Ns is still checked. Latency = kernel receive timestamp (SO_TIMESTAMPNS, taken when the relay's
send reached this socket, so the sink's own lag does not count) minus the send time the load
generator wrote into the trailer. Both are CLOCK_REALTIME on the same machine.

Prints {"port": P} once bound, then runs until SIGTERM/SIGINT, then prints its results as JSON.
On SIGUSR1 it prints {"progress_received": N} (datagrams so far), so a caller can wait until
everything sent has arrived instead of sleeping a guessed time.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time
from array import array
from typing import Any

from bench import udp
from bench.marker import MAGIC, TRAILER, TRAILER_SIZE, Kind
from bench.marker import tunnel_session as session_ids

SLOT = 2048  # bigger than any bench datagram
L2TP_IDS = struct.Struct("!HHH")  # flags/version, tunnel_id, session_id (no Length field)
MSG_LEN = struct.Struct("I")


def percentiles(values: array[int] | list[int], points: tuple[float, ...]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    out = {f"p{p:g}": float(ordered[min(n - 1, int(p / 100.0 * n))]) for p in points}
    out["min"] = float(ordered[0])
    out["max"] = float(ordered[-1])
    out["count"] = float(n)
    return out


class Sink:
    def __init__(self, sock: socket.socket, sessions: int, base_tunnel: int, keep: bool) -> None:
        self.sock = sock
        self.base_tunnel = base_tunnel
        self.keep_latency = keep
        self.last = [-1] * sessions
        self.received = [0] * len(Kind)
        self.unique = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.holes = 0
        self.foreign = 0
        self.header_mismatch = 0
        self.socket_drops = 0
        self.first_rx_ns = 0
        self.last_rx_ns = 0
        self.latency_normal: array[int] = array("q")
        self.latency_after_gap: array[int] = array("q")
        self.stop = False
        self.report = False  # SIGUSR1: print the progress line

    def handle_batch(self, ring: udp.MmsgRing, n: int) -> None:
        data = ring.data
        hdrs = ring.hdrs
        ctrl = ring.ctrl
        last = self.last
        received = self.received
        unpack_trailer = TRAILER.unpack_from
        unpack_len = MSG_LEN.unpack_from
        unpack_ts = udp.TIMESPEC.unpack_from
        keep = self.keep_latency
        lat_normal = self.latency_normal
        rx_ns = 0
        for i in range(n):
            length = unpack_len(hdrs, i * udp.MMSGHDR_SIZE + udp.MSG_LEN_OFFSET)[0]
            base = i * SLOT
            if length < TRAILER_SIZE:
                self.foreign += 1
                continue
            magic, kind, index, seq, tx_ns = unpack_trailer(data, base + length - TRAILER_SIZE)
            if magic != MAGIC or kind >= len(received):
                self.foreign += 1
                continue
            sec, nsec = unpack_ts(ctrl, i * udp.CTRL_SLOT + 16)
            rx_ns = sec * 1_000_000_000 + nsec
            received[kind] += 1
            if index >= len(last):
                last.extend([-1] * (index + 1 - len(last)))
            prev = last[index]
            if seq > prev:
                self.unique += 1
                self.holes += seq - prev - 1
                last[index] = seq
            elif seq == prev:
                self.duplicates += 1
                continue
            else:
                self.unique += 1  # a real packet, just not in order
                self.out_of_order += 1
            if kind == 0:  # Kind.NORMAL
                if keep:
                    lat_normal.append(rx_ns - tx_ns)
            elif kind == 3:  # Kind.AFTER_GAP
                self.latency_after_gap.append(rx_ns - tx_ns)
        if rx_ns:
            if not self.first_rx_ns:
                self.first_rx_ns = rx_ns
            self.last_rx_ns = rx_ns
        # Spot-check one real L2TP header per batch (ids must match the trailer's session).
        length = unpack_len(hdrs, udp.MSG_LEN_OFFSET)[0]
        if length >= 6 + TRAILER_SIZE:
            flags, tunnel_id, session_id = L2TP_IDS.unpack_from(data, 0)
            index = TRAILER.unpack_from(data, length - TRAILER_SIZE)[2]
            if flags & 0x800F != 0x0002 or (tunnel_id, session_id) != session_ids(
                index, self.base_tunnel
            ):
                self.header_mismatch += 1
        # SO_RXQ_OVFL: the socket's running drop count rides after the timestamp when non-zero.
        off = (n - 1) * udp.CTRL_SLOT + 32
        clen, level, ctype = udp.CMSG_HDR.unpack_from(ctrl, off)
        if level == socket.SOL_SOCKET and ctype == udp.SO_RXQ_OVFL and clen >= 20:
            self.socket_drops = struct.unpack_from("I", ctrl, off + 16)[0]

    def results(self) -> dict[str, Any]:
        points = (1, 50, 90, 99, 99.9)
        return {
            "received": sum(self.received),
            "received_by_kind": {k.name: self.received[k] for k in Kind},
            "received_measured": sum(self.received) - self.received[Kind.WARMUP],
            "unique": self.unique,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "gaps_opened": self.holes,  # seq jumps forward; an out-of-order arrival fills one
            "missing": self.holes - self.out_of_order,
            "foreign": self.foreign,
            "header_mismatch": self.header_mismatch,
            "sink_socket_drops": self.socket_drops,
            "sessions_seen": sum(1 for x in self.last if x >= 0),
            "rx_span_s": (self.last_rx_ns - self.first_rx_ns) / 1e9,
            "latency_normal_ns": percentiles(self.latency_normal, points),
            "latency_after_gap_ns": percentiles(self.latency_after_gap, points),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 = any)")
    p.add_argument("--sessions", type=int, default=1024, help="initial per-session table size")
    p.add_argument("--base-tunnel", type=int, default=1)
    p.add_argument("--batch", type=int, default=256, help="datagrams per recvmmsg")
    p.add_argument("--rcvbuf", type=int, default=64 << 20, help="receive buffer bytes")
    p.add_argument("--latency", action="store_true", help="keep every in-order latency sample")
    p.add_argument("--max-seconds", type=float, default=600, help="hard stop (safety bound)")
    args = p.parse_args(argv)

    host, port = args.listen.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    granted = udp.big_receive_buffer(sock, args.rcvbuf)
    sock.setsockopt(socket.SOL_SOCKET, udp.SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, udp.SO_RXQ_OVFL, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 50_000))
    sock.bind((host, int(port)))
    sink = Sink(sock, args.sessions, args.base_tunnel, args.latency)

    def stop(_sig: int, _frame: object) -> None:
        sink.stop = True

    def report(_sig: int, _frame: object) -> None:
        sink.report = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, report)
    print(json.dumps({"port": sock.getsockname()[1], "rcvbuf": granted}), flush=True)

    ring = udp.MmsgRing(args.batch, SLOT, control=True)
    fd = sock.fileno()
    hard_stop = time.monotonic() + args.max_seconds
    while not sink.stop and time.monotonic() < hard_stop:
        n = ring.recv(fd)
        if n:
            sink.handle_batch(ring, n)
        if sink.report:
            sink.report = False
            print(json.dumps({"progress_received": sum(sink.received)}), flush=True)
    while True:  # drain what is already queued
        n = ring.recv(fd, udp.MSG_DONTWAIT)
        if not n:
            break
        sink.handle_batch(ring, n)
    out = sink.results()
    out["rcvbuf"] = granted
    out["socket_stats"] = udp.udp_socket_stats(sock.getsockname()[1])
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
