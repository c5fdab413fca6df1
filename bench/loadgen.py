"""Load generator: real L2TPv2 data messages with per-session Ns, paced in batches, loopback only.

Speed comes from doing almost no per-packet Python: a *cycle* of L datagrams (every session
appearing K times, in a shuffled order that keeps each session's own order, with planned swaps and
losses) is built once; each batch only patches Ns, the trailer's seq and the send time with one
`struct.pack_into` and hands the batch to the kernel in one syscall (UDP GSO `sendmsg`, or
`sendmmsg`). Cycle j carries seq = 1 + j*K + k, so Ns keeps counting across cycles.

Swaps: `--swaps 0.05` means 5% of the data packets are sent *before* their predecessor in the same
session (adjacent on the wire, like a split frame whose halves were swapped). Loss: `--loss 0.01`
skips that fraction of Ns values (never sent); the next packet is marked AFTER_GAP and the ones
inside `--hold-window` BEHIND_GAP, and no other swap or loss is planned there, so a relay's release
lateness can be read straight off AFTER_GAP packets.

Prints one JSON object (what it sent) on stdout when done.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import socket
import struct
import sys
import time
from collections import Counter

from bench import udp
from bench.marker import MAGIC, SEQ_FROM_END, TRAILER, TRAILER_SIZE, TX_FROM_END, Kind
from bench.marker import tunnel_session as session_ids
from l2tpreorder.wire import build_data

PPP_IPV4 = b"\xff\x03\x00\x21"  # PPP address/control + protocol IPv4, so the payload looks real
MAX_GSO_SEGMENTS = 64
U16 = struct.Struct("!H")
CYCLE_TARGET = 65536  # datagrams per cycle (bounded memory: ~L * (size + 80) bytes)


class Template:
    """One datagram from `wire.build_data`, and where it keeps tunnel_id, session_id and Ns.

    The offsets are learnt by building variants that differ in one field, so the bytes are
    build_data's (construct's) own; copies are then patched with struct, ~100x faster.
    """

    def __init__(self, size: int) -> None:
        body = size - TRAILER_SIZE
        if body < 0:
            raise SystemExit(f"--size {size} is below the trailer ({TRAILER_SIZE} bytes)")

        def build(tunnel_id: int, session_id: int, ns: int) -> bytes:
            header_len = len(build_data(1, 1, b"", ns=0))
            ppp = (PPP_IPV4 + bytes(size))[: size - header_len - TRAILER_SIZE]
            if size - header_len - TRAILER_SIZE < 0:
                raise SystemExit(f"--size {size} is below header + trailer "
                                 f"({header_len + TRAILER_SIZE} bytes)")
            return build_data(tunnel_id, session_id, ppp + bytes(TRAILER_SIZE), ns=ns, nr=0)

        base = build(0, 0, 0)
        self.tunnel_offset = self._where(base, build(0xFFFF, 0, 0))
        self.session_offset = self._where(base, build(0, 0xFFFF, 0))
        self.ns_offset = self._where(base, build(0, 0, 0xFFFF))
        self.base = base
        self.size = len(base)
        assert self.size == size

    @staticmethod
    def _where(a: bytes, b: bytes) -> int:
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) != 2 or diff[1] != diff[0] + 1:
            raise SystemExit(f"cannot locate a 16-bit field in build_data output ({diff})")
        return diff[0]

    def write(self, buf: bytearray, at: int, index: int, kind: Kind, base_tunnel: int) -> None:
        """Datagram for session `index` at buf[at:at+size] (Ns/seq/time patched later)."""
        tunnel_id, session_id = session_ids(index, base_tunnel)
        size = self.size
        buf[at : at + size] = self.base
        U16.pack_into(buf, at + self.tunnel_offset, tunnel_id)
        U16.pack_into(buf, at + self.session_offset, session_id)
        TRAILER.pack_into(buf, at + size - TRAILER_SIZE, MAGIC, kind, index, 0, 0)


def build_plan(
    sessions: int, per_session: int, swaps: float, loss: float, window: int, rng: random.Random
) -> list[tuple[int, int, Kind]]:
    """One cycle: (session index, k, kind) in send order; k is the session's packet in the cycle.

    Every session has exactly `per_session` Ns values per cycle (sent or deliberately lost).
    """
    pair_p = swaps / (1.0 - swaps) if swaps < 1 else 1.0  # a pair yields 1 EARLY per 2 packets
    units: list[list[list[tuple[int, Kind]]]] = []
    for _ in range(sessions):
        mine: list[list[tuple[int, Kind]]] = []
        k = 0
        quiet_until = 0  # no planned swap/loss before this k (keeps hold windows clean)
        behind_until = -1
        while k < per_session:
            r = rng.random()
            if k >= quiet_until and k + window + 2 < per_session and r < loss:
                mine.append([(k + 1, Kind.AFTER_GAP)])  # k is lost
                behind_until = k + 1 + window
                quiet_until = behind_until + 1
                k += 2
            elif k >= quiet_until and k + 1 < per_session and r < loss + pair_p:
                mine.append([(k + 1, Kind.EARLY), (k, Kind.LATE)])
                k += 2
            else:
                mine.append([(k, Kind.BEHIND_GAP if k <= behind_until else Kind.NORMAL)])
                k += 1
        units.append(mine)
    order = [s for s in range(sessions) for _ in units[s]]
    rng.shuffle(order)
    cursor = [0] * sessions
    plan: list[tuple[int, int, Kind]] = []
    for s in order:
        for k, kind in units[s][cursor[s]]:
            plan.append((s, k, kind))
        cursor[s] += 1
    return plan


class Sender:
    """Sends slots [first, first+count) of a ring through GSO or sendmmsg."""

    def __init__(self, sock: socket.socket, ring: udp.MmsgRing, size: int, gso: bool) -> None:
        self.sock = sock
        self.ring = ring
        self.size = size
        self.gso = gso
        self.view = memoryview(ring.data)
        self.cmsg = [(udp.SOL_UDP, udp.UDP_SEGMENT, struct.pack("H", size))]
        self.fd = sock.fileno()
        self.refused = 0  # sends that reported ECONNREFUSED (the target was not listening)

    def send(self, first: int, count: int) -> None:
        if not self.gso:
            self.ring.send(self.fd, first, count)
            return
        size = self.size
        while count > 0:
            n = min(count, MAX_GSO_SEGMENTS)
            chunk = self.view[first * size : (first + n) * size]
            while True:
                try:
                    if n == 1:
                        self.sock.send(chunk)
                    else:
                        self.sock.sendmsg([chunk], self.cmsg)
                    break
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionRefusedError:  # ICMP from an earlier send: nobody listening
                    self.refused += 1
                    continue
            first += n
            count -= n


class Patcher:
    """Writes Ns, seq and send time into `count` consecutive datagrams of a buffer.

    One `struct.pack_into` packs (Ns, seq, tx) records densely into a scratch buffer; 14 strided
    memoryview copies then scatter those byte columns into the datagrams. No per-packet Python
    beyond building the seq list, and no pad bytes written over the rest of the datagram.
    """

    RECORD = struct.Struct("!HIQ")  # Ns, seq, send time

    def __init__(self, buf: bytearray, size: int, ns_offset: int) -> None:
        self.view = memoryview(buf)
        self.size = size
        # (destination offset in datagram, source byte in record)
        self.columns = [(ns_offset + c, c) for c in range(2)] + [
            (size - SEQ_FROM_END + c, 2 + c) for c in range(12)
        ]
        assert size - SEQ_FROM_END + 4 == size - TX_FROM_END
        self.scratch = bytearray()
        self.structs: dict[int, struct.Struct] = {}

    def patch(self, first: int, seqs: list[int], tx_ns: int) -> None:
        count = len(seqs)
        st = self.structs.get(count)
        if st is None:
            st = self.structs[count] = struct.Struct("!" + "HIQ" * count)
            if len(self.scratch) < st.size:
                self.scratch = bytearray(st.size)
        rec = self.RECORD.size
        st.pack_into(self.scratch, 0, *itertools.chain.from_iterable(
            zip([q & 0xFFFF for q in seqs], seqs, itertools.repeat(tx_ns, count), strict=True)))
        src = memoryview(self.scratch)
        size = self.size
        start = first * size
        stop = (first + count) * size
        view = self.view
        for dst_off, src_off in self.columns:
            view[start + dst_off : stop : size] = src[src_off : count * rec : rec]


def auto_batch(rate: float) -> int:
    """About one batch per 0.5 ms: small bursts, few wake-ups."""
    if rate <= 0:
        return MAX_GSO_SEGMENTS
    return max(1, min(MAX_GSO_SEGMENTS, round(rate * 0.0005)))


def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    tpl = Template(args.size)
    sessions: int = args.sessions
    per_session = max(4, CYCLE_TARGET // sessions)
    per_session_rate = args.rate / sessions if args.rate > 0 else 0.0
    window = int(args.hold_window * per_session_rate) + 2 if args.loss > 0 else 0
    if args.loss > 0 and window + 4 >= per_session:
        per_session = window + 8
    plan = build_plan(sessions, per_session, args.swaps, args.loss, window, rng)
    cycle = len(plan)
    size: int = args.size

    ring = udp.MmsgRing(cycle, size)
    for i, (s, _k, kind) in enumerate(plan):
        tpl.write(ring.data, i * size, s, kind, args.base_tunnel)
        if not args.gso:
            ring.set_length(i, size)
    deltas = [1 + k for (_s, k, _kind) in plan]  # seq = j*K + 1 + k (seq 0 is the warm-up)
    kinds_in_cycle = [kind for (_s, _k, kind) in plan]

    host, port = args.target.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.connect((host, int(port)))
    sender = Sender(sock, ring, size, args.gso)

    patcher = Patcher(ring.data, size, tpl.ns_offset)

    def patch_and_send(first: int, count: int, base: int) -> None:
        seqs = [base + d for d in deltas[first : first + count]]
        patcher.patch(first, seqs, time.time_ns())
        sender.send(first, count)

    # Warm-up: one seq-0 packet per session so the relay knows every session before timing.
    warmup_sent = 0
    if args.warmup:
        # Built in full before sending, so construct's cost never bunches the sends up.
        wring = udp.MmsgRing(sessions, size)
        for s in range(sessions):
            tpl.write(wring.data, s * size, s, Kind.WARMUP, args.base_tunnel)
            if not args.gso:
                wring.set_length(s, size)
        wsender = Sender(sock, wring, size, args.gso)
        wpatcher = Patcher(wring.data, size, tpl.ns_offset)
        wbatch = 8
        gap = wbatch / args.warmup_rate
        t_next = time.perf_counter()
        for j0 in range(0, sessions, wbatch):
            n = min(wbatch, sessions - j0)
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            wpatcher.patch(j0, [0] * n, time.time_ns())
            wsender.send(j0, n)
            warmup_sent += n
            t_next += gap
        time.sleep(args.settle)

    batch = args.batch or auto_batch(args.rate)
    interval = batch / args.rate if args.rate > 0 else 0.0
    sent = 0
    cycles = 0
    pos = 0
    start = time.perf_counter()
    end = start + args.duration
    t_next = start
    max_lag = 0.0
    limit = args.count or (1 << 62)
    while sent < limit:
        now = time.perf_counter()
        if now >= end:
            break
        if interval:
            delay = t_next - now
            if delay > 0:
                time.sleep(delay)
            else:
                max_lag = max(max_lag, -delay)
            t_next += interval
        n = min(batch, limit - sent)
        base = cycles * per_session
        while n > 0:
            take = min(n, cycle - pos)
            patch_and_send(pos, take, base)
            pos += take
            n -= take
            sent += take
            if pos == cycle:
                pos = 0
                cycles += 1
                base = cycles * per_session
    elapsed = time.perf_counter() - start
    sock.close()

    kinds = Counter(kinds_in_cycle) if cycles else Counter()
    for kind in kinds:
        kinds[kind] *= cycles
    kinds.update(kinds_in_cycle[:pos])
    return {
        "target": args.target,
        "mode": "gso" if args.gso else "sendmmsg",
        "sessions": sessions,
        "size": size,
        "offered_pps": args.rate,
        "batch": batch,
        "sent": sent,
        "warmup_sent": warmup_sent,
        "elapsed_s": elapsed,
        "achieved_pps": sent / elapsed if elapsed > 0 else 0.0,
        "max_lag_s": max_lag,
        "kinds": {Kind(k).name: v for k, v in sorted(kinds.items())},
        "intended_lost": kinds.get(Kind.AFTER_GAP, 0),
        # 1 when the run stopped between an EARLY packet and its LATE predecessor: one Ns the
        # sink will count missing although nothing was lost.
        "split_pair_at_end": int(sent > 0 and kinds_in_cycle[pos - 1] == Kind.EARLY),
        "cycle_len": cycle,
        "per_session_per_cycle": per_session,
        "cycles": cycles,
        "hold_window_packets": window,
        "refused": sender.refused,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, help="HOST:PORT to send to (loopback only)")
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--rate", type=float, default=10000, help="packets/s; 0 = as fast as possible")
    p.add_argument("--duration", type=float, default=2.0, help="seconds of the measured phase")
    p.add_argument("--count", type=int, default=0, help="stop after this many packets (0 = none)")
    p.add_argument("--size", type=int, default=100, help="UDP payload bytes (L2TP header incl.)")
    p.add_argument("--swaps", type=float, default=0.0, help="fraction sent before predecessor")
    p.add_argument("--loss", type=float, default=0.0, help="fraction of Ns never sent")
    p.add_argument("--hold-window", type=float, default=0.1,
                   help="seconds after a planned loss kept free of other swaps/losses")
    p.add_argument("--batch", type=int, default=0, help="packets per send batch (0 = auto)")
    p.add_argument("--base-tunnel", type=int, default=1, help="first tunnel_id used")
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    p.add_argument("--warmup-rate", type=float, default=20000)
    p.add_argument("--settle", type=float, default=0.2, help="pause after warm-up, seconds")
    p.add_argument("--mode", choices=["auto", "gso", "sendmmsg"], default="auto")
    p.add_argument("--seed", type=int, default=6)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    host = args.target.rsplit(":", 1)[0]
    if not host.startswith("127.") and host != "localhost":
        p.error(f"--target {args.target}: loopback only")
    args.gso = args.mode == "gso" or (args.mode == "auto" and udp.gso_supported())
    json.dump(run(args), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
