"""A real `l2tpreorder run` on loopback, a fake LAC and a real UDP "LNS" that checks every
renumbered Ns: a session end with a packet in flight (issue 11, 1c), and a bounded soak of
session churn at the table cap with silent sessions and live ones whose setup was never seen
(issue 16)."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.soak import rss_kib
from l2tpreorder.core.fastpath import control_fields, parse_header
from l2tpreorder.wire import (
    MessageType,
    avp_message_type,
    avp_result_code,
    build_control,
    build_data,
)
from tests.daemon_harness import WAIT, Daemon, free_udp_port, recv, udp
from tests.metrics_helpers import parse, value

PAYLOAD = struct.Struct("!HHHHIB")  # peer, tunnel, session, call generation, LAC seq, copy


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def packet(peer: int, tid: int, sid: int, gen: int, seq: int, ns: int, copy: int = 0) -> bytes:
    return build_data(tid, sid, PAYLOAD.pack(peer, tid, sid, gen, seq, copy), ns=ns)


def control(msg: MessageType, tid: int, sid: int, *avps: bytes) -> bytes:
    return build_control(tid, sid, 0, 0, [avp_message_type(msg), *avps])


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def start(config: dict[str, Any]) -> Daemon:
        d = Daemon(tmp_path, config)
        started.append(d)
        return d.ready()

    yield start
    for d in started:
        d.stop()


def test_1c_duplicate_in_flight_after_a_spoofed_cdn_through_real_sockets(daemon: Any) -> None:
    """The LNS ignores a CDN spoofed from the LAC's address; a duplicate in flight behind it must
    not reach the LNS, and its Ns must not go back (main: 9, then 5, 6, ...)."""
    listen, lns_port = free_udp_port(), free_udp_port()
    lns, lac = udp(port=lns_port), udp()
    daemon(
        {
            "listen": [f"127.0.0.1:{listen}"],
            "lns": f"127.0.0.1:{lns_port}",
            "reorder": {"timeout_ms": 1000},
            "metrics": {"enabled": False},
        }
    )
    relay = ("127.0.0.1", listen)
    try:
        for n in range(10):
            lac.sendto(packet(0, 7, 9, 0, n, 100 + n), relay)
        cdn = control(MessageType.CDN, 7, 9, avp_result_code(3))
        lac.sendto(cdn, relay)  # spoofed: forged from the LAC's address and port
        lac.sendto(packet(0, 7, 9, 0, 5, 105, copy=1), relay)  # a duplicate in flight
        lac.sendto(packet(0, 7, 9, 0, 10, 110), relay)
        lac.sendto(packet(0, 7, 9, 0, 11, 111), relay)
        got = [recv(lns)[0] for _ in range(13)]
    finally:
        lns.close()
        lac.close()
    assert got[10] == cdn
    data = [d for d in got if not d[0] & 0x80]
    headers = [h for h in map(parse_header, data) if not isinstance(h, str)]
    seqs = [PAYLOAD.unpack_from(d, h.payload_offset)[4] for d, h in zip(data, headers, strict=True)]
    ns = [h.ns for h in headers]
    assert seqs == list(range(12))  # the duplicate never reached the LNS
    assert ns == list(range(100, 112))  # no step back


# --- the soak ------------------------------------------------------------------------------


@dataclass
class Lns:
    """A UDP "LNS" checking every session's renumbered Ns as it arrives."""

    sock: socket.socket
    violations: list[str] = field(default_factory=list)
    delivered: set[tuple[int, int, int, int, int]] = field(default_factory=set)
    last_ns: dict[tuple[int, int, int], int | None] = field(default_factory=dict)
    datagrams: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                d = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.datagrams += 1
            self.check(d)

    def check(self, d: bytes) -> None:
        h = parse_header(d)
        assert not isinstance(h, str)
        if h.is_control:
            c = control_fields(d)
            if not isinstance(c, str) and c.message_type == MessageType.ICCN:
                peer = (h.tunnel_id - 100) if 100 <= h.tunnel_id < 110 else -1
                self.last_ns[(peer, h.tunnel_id, h.session_id)] = None  # a new call: afresh
            return
        peer, tid, sid, gen, seq, _ = PAYLOAD.unpack_from(d, h.payload_offset)
        ident = (peer, tid, sid, gen, seq)
        if ident in self.delivered:
            self.violations.append(f"delivered twice: {ident}")
        self.delivered.add(ident)
        key = (peer, tid, sid)
        last = self.last_ns.get(key, -1)
        assert h.ns is not None
        if last is None:
            if h.ns != 0:
                self.violations.append(f"new call {key} starts at Ns {h.ns}, not 0")
        elif last >= 0 and h.ns != (last + 1) & 0xFFFF:
            kind = "backward step" if (h.ns - last) & 0xFFFF > 0x8000 else "gap"
            self.violations.append(f"{kind} {key}: {last} -> {h.ns}")
        self.last_ns[key] = h.ns


@dataclass
class Stream:
    """One session's LAC side: swaps, duplicates and losses on a deterministic schedule."""

    peer: int
    tid: int
    sid: int
    ns: int
    gen: int = 0
    seq: int = 0
    sent: list[tuple[int, int]] = field(default_factory=list)  # (seq, ns) sent, for duplicates

    def next_datagrams(self, rng: random.Random, counts: dict[str, int]) -> list[bytes]:
        out: list[bytes] = []
        roll = rng.random() if self.seq > 2 else 1.0  # never impair a call's first packets
        if roll < 0.02:  # lost before the relay: never sent
            counts["lost"] += 1
            self._advance(1)
            return out
        if roll < 0.12:  # swapped pair
            out += [self._make(1), self._make(0)]
            self._remember(0)
            self._remember(1)
            self._advance(2)
            counts["sent"] += 2
            return out
        out.append(self._make(0))
        self._remember(0)
        self._advance(1)
        counts["sent"] += 1
        if roll > 0.96 and len(self.sent) > 3:  # a duplicate of a recent packet
            seq, ns = self.sent[-rng.randint(1, 3)]
            out.append(packet(self.peer, self.tid, self.sid, self.gen, seq, ns, copy=1))
            counts["duplicates"] += 1
        return out

    def _make(self, offset: int) -> bytes:
        return packet(
            self.peer, self.tid, self.sid, self.gen, self.seq + offset, (self.ns + offset) & 0xFFFF
        )

    def _remember(self, offset: int) -> None:
        self.sent.append((self.seq + offset, (self.ns + offset) & 0xFFFF))
        del self.sent[:-8]

    def _advance(self, n: int) -> None:
        self.seq += n
        self.ns = (self.ns + n) & 0xFFFF


LIVE, PEERS, CAP, IDLE_S = 12, 3, 20, 4.0
# A longer run for measurements (docs/sessions.md): L2TPREORDER_SOAK_SECONDS=300.
TRAFFIC_S = float(os.environ.get("L2TPREORDER_SOAK_SECONDS", "40"))
WARMUP_S = min(15.0, TRAFFIC_S / 3)


@pytest.mark.timeout(TRAFFIC_S + 240)
def test_soak_churn_at_the_cap_silent_sessions_and_unseen_setups(daemon: Any) -> None:
    """About a minute: live sessions whose setup was never seen (they start mid-stream, across
    the Ns wrap), calls set up (ICCN) and torn down (CDN) over and over with reused IDs, and a
    steady trickle of sessions that go silent, with the table capped below what all of them
    need. At the LNS: no renumbered-Ns gap or backward step, nothing delivered twice, every
    packet sent (not deliberately lost) delivered; duplicates dropped exactly as many as sent;
    no active session evicted; silent ones idle out; RSS flat after warm-up."""
    listen, lns_port, metrics_port = free_udp_port(), free_udp_port(), free_tcp_port()
    lns = Lns(udp(port=lns_port))
    lacs = [udp() for _ in range(PEERS)]
    d = daemon(
        {
            "listen": [f"127.0.0.1:{listen}"],
            "lns": f"127.0.0.1:{lns_port}",
            "reorder": {
                "timeout_ms": 200,
                "max_sessions": CAP,
                "session_idle_timeout_ms": int(IDLE_S * 1000),
            },
            "metrics": {"enabled": True, "listen": "127.0.0.1", "port": metrics_port},
        }
    )
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    relay = ("127.0.0.1", listen)
    rng = random.Random(16)
    counts = dict.fromkeys(("sent", "lost", "duplicates", "calls", "silent"), 0)
    live = [Stream(p % PEERS, 100 + p % PEERS, 1 + p, rng.randrange(65536)) for p in range(LIVE)]
    churn = [Stream(p, 100 + p, 1000, 0) for p in range(PEERS)]  # one call at a time per peer
    churn_left = [0] * PEERS
    receiver = threading.Thread(target=lns.run)
    receiver.start()
    rss: list[int] = []
    trace: list[tuple[int, int]] = []
    try:
        start = time.monotonic()
        tick = 0
        next_silent = start
        while (elapsed := time.monotonic() - start) < TRAFFIC_S:
            tick += 1
            for s in live:
                for dgram in s.next_datagrams(rng, counts):
                    lacs[s.peer].sendto(dgram, relay)
            for p, s in enumerate(churn):
                if churn_left[p] == 0:  # a new call with the same IDs: ICCN, then Ns from 0
                    s.gen, s.seq, s.ns, s.sent = s.gen + 1, 0, 0, []
                    s.sid = 1000 + (s.gen % 4)
                    lacs[p].sendto(control(MessageType.ICCN, s.tid, s.sid), relay)
                    churn_left[p] = rng.randint(10, 30)
                    counts["calls"] += 1
                for dgram in s.next_datagrams(rng, counts):
                    lacs[p].sendto(dgram, relay)
                churn_left[p] -= 1
                if churn_left[p] == 0:
                    lacs[p].sendto(
                        control(MessageType.CDN, s.tid, s.sid, avp_result_code(1)), relay
                    )
            if time.monotonic() >= next_silent:  # a session that sends 3 packets, then nothing
                next_silent += 0.5
                counts["silent"] += 1
                p = counts["silent"] % PEERS
                silent = Stream(p, 100 + p, 2000 + counts["silent"], rng.randrange(65536))
                if counts["silent"] % 2:  # half set up by the control channel: Ns from 0
                    silent.ns = 0
                    lacs[p].sendto(control(MessageType.ICCN, silent.tid, silent.sid), relay)
                for _ in range(3):
                    for dgram in silent.next_datagrams(rng, counts):
                        lacs[p].sendto(dgram, relay)
            if not rss and elapsed > WARMUP_S:
                rss.append(rss_kib(d.proc.pid))
            if elapsed >= len(trace) * 30:  # RSS every 30 s, printed for the record
                trace.append((round(elapsed), rss_kib(d.proc.pid)))
            time.sleep(0.025)  # pacing the traffic, not synchronisation
        # Only the live sessions go on: the silent ones must idle out, the gauge come back.
        deadline = time.monotonic() + IDLE_S + 3 * WAIT
        sessions = -1.0
        while time.monotonic() < deadline:
            for s in live:
                for dgram in s.next_datagrams(rng, counts):
                    lacs[s.peer].sendto(dgram, relay)
            samples = parse(urllib.request.urlopen(url, timeout=WAIT).read().decode())
            sessions = value(samples, "l2tpreorder_sessions", direction="lac_to_lns")
            if sessions == LIVE:
                break
            time.sleep(0.1)
        assert sessions == LIVE, f"sessions gauge {sessions}, {LIVE} live"
        rss.append(rss_kib(d.proc.pid))
        # Everything sent has arrived (bounded wait), then the counters.
        deadline = time.monotonic() + 3 * WAIT
        while time.monotonic() < deadline and len(lns.delivered) < counts["sent"]:
            time.sleep(0.1)
        samples = parse(urllib.request.urlopen(url, timeout=WAIT).read().decode())
    finally:
        lns.stop.set()
        receiver.join(WAIT)
        lns.sock.close()
        for s in lacs:
            s.close()
    assert lns.violations == [], lns.violations[:20]
    assert len(lns.delivered) == counts["sent"], (len(lns.delivered), counts)
    d_ = "lac_to_lns"
    dropped = "l2tpreorder_dropped_packets_total"
    assert value(samples, dropped, direction=d_, reason="duplicate") == counts["duplicates"]
    assert value(samples, dropped, direction=d_, reason="late") == 0
    assert value(samples, dropped, direction=d_, reason="stale") == 0
    evicted = sum(
        value(samples, "l2tpreorder_sessions_evicted_total", direction=d_, confirmed=c)
        for c in ("yes", "no")
    )
    assert evicted > 0, "the cap must have been reached"
    assert value(samples, "l2tpreorder_sessions_evicted_active_total", direction=d_) == 0
    assert value(samples, "l2tpreorder_sessions_idle_expired_total", direction=d_) > 0
    growth = rss[1] - rss[0]
    print(f"soak {TRAFFIC_S:.0f} s: RSS {rss[0]} -> {rss[1]} KiB after warm-up; {counts}")
    print(f"RSS (s, KiB): {trace}; LNS datagrams {lns.datagrams}")
    assert growth < 8 * 1024, f"RSS {rss[0]} -> {rss[1]} KiB after warm-up ({counts})"
