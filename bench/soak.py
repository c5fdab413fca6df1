"""Long soak of a real `l2tpreorder run` under session churn: the memory figure in docs/sessions.md.

    python -m bench.soak --seconds 900 --rate 10000

Shaped like a busy LNS front-end (issue 16): many LAC peers on loopback, each session either set
up by an ICCN (Ns from 0, session IDs reused by later calls) or seen mid-stream with no setup;
calls end by a CDN from the LAC, by a CDN from the LNS, or by going silent (some of which resume
after their idle expiry and must continue their numbering); peers send a StopCCN and idle out,
then come back; swaps, losses and duplicates; a malformed trickle; SIGHUP reloads, every third one
of a broken file. A separate "LNS" process checks every session's renumbered Ns and LAC sequence,
and that its upstream source (ip, port) stays the same while its LAC peer keeps sending (issue 20:
xl2tpd takes a new port for a new peer; `UpstreamSources`).

Reports RSS after warm-up (first and last sample, and the least-squares slope in KiB/h over every
sample after warm-up) and the checker's findings; exit status 1 on any order or source violation
or accounting mismatch. The relay is pinned alone to CPU 1 when there are two CPUs. `--stall S`
stops the relay for S seconds mid-run while the LACs go on slowly (see `Stall`).

`--trace-memory DIR` runs the relay under tracemalloc and writes a snapshot there every
`--trace-every` seconds (compare them with `python -m bench.soak_compare DIR`): slow, for finding
what grows, not for the figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

from bench import udp
from l2tpreorder.core.fastpath import control_fields, parse_header
from l2tpreorder.wire import (
    MessageType,
    avp_assigned_session_id,
    avp_assigned_tunnel_id,
    avp_message_type,
    avp_result_code,
    build_control,
    build_data,
)

ROOT = Path(__file__).resolve().parent.parent
# peer, session_id, call generation, LAC sequence, flags, the peer's pause epoch (Lac.epoch);
# tunnel_id = TUNNEL0 + peer
PAYLOAD = struct.Struct("!HHIIBH")
LNS_ENDS = 1  # flag: the last packet of a call the LNS ends with a CDN
COPY = 2  # flag: a deliberate duplicate
NEUTRAL = 0.5  # a roll of the dice that plans no loss, swap or duplicate
TUNNEL0 = 1000
PPP = b"\xff\x03\x00\x21" + bytes(60)  # PPP IPv4 framing and some bytes, a small data packet
# A LAC peer silent for longer than this share of peer_idle_timeout starts a new pause epoch: the
# relay may then have closed its upstream socket, and its next datagrams may come from a new
# port. Half: a shorter gap seen as a whole peer_idle_timeout by the relay is the relay's fault.
PAUSE_SHARE = 0.5
STALL_SHARE = 0.01  # the LACs' rate while the relay is stopped (--stall)


class Template:
    """`build_data`'s bytes for one data message, and where tunnel_id, session_id, Ns and the
    payload sit in them: each datagram is a copy patched with struct (construct is ~100x slower)."""

    def __init__(self) -> None:
        body = PPP + bytes(PAYLOAD.size)
        self.base = build_data(0, 0, body, ns=0, nr=0)
        self.tunnel = self._where(build_data(0xFFFF, 0, body, ns=0, nr=0))
        self.session = self._where(build_data(0, 0xFFFF, body, ns=0, nr=0))
        self.ns = self._where(build_data(0, 0, body, ns=0xFFFF, nr=0))
        self.payload = len(self.base) - PAYLOAD.size

    def _where(self, other: bytes) -> int:
        diff = [i for i in range(len(self.base)) if self.base[i] != other[i]]
        assert len(diff) == 2 and diff[1] == diff[0] + 1, diff
        return diff[0]

    def make(
        self, peer: int, sid: int, gen: int, seq: int, ns: int, flags: int = 0, epoch: int = 0
    ) -> bytes:
        buf = bytearray(self.base)
        struct.pack_into("!H", buf, self.tunnel, TUNNEL0 + peer)
        struct.pack_into("!H", buf, self.session, sid)
        struct.pack_into("!H", buf, self.ns, ns & 0xFFFF)
        PAYLOAD.pack_into(buf, self.payload, peer, sid, gen, seq, flags, epoch & 0xFFFF)
        return bytes(buf)


def control(msg: MessageType, tunnel_id: int, session_id: int, *avps: Any) -> bytes:
    return build_control(tunnel_id, session_id, 0, 0, [avp_message_type(msg), *avps])


# --- the LNS side: a checker process ----------------------------------------------------------


class UpstreamSources:
    """Each session's upstream source (ip, port) as the LNS sees it: fixed while its LAC peer
    sends without a pause (xl2tpd `connect()`s its tunnel socket to it, so a new port is another
    peer to it). Kept per tunnel, i.e. per LAC peer: the relay gives a peer one upstream socket,
    so all its sessions share one source, and a session that ended (CDN, StopCCN, silence) or
    whose IDs a later call reuses still shares it while the peer keeps sending. Only a pause
    (a new epoch in the payload, from the harness's own send times) lets the source change."""

    __slots__ = ("changes", "last", "violations")

    def __init__(self) -> None:
        self.last: dict[int, tuple[int, tuple[str, int], int]] = {}  # tunnel -> epoch, src, sid
        self.changes = 0  # a new source after a pause: allowed
        self.violations = 0

    def check(self, tunnel_id: int, session_id: int, epoch: int, src: tuple[str, int]) -> str:
        """'' if fine, else what went wrong."""
        prev = self.last.get(tunnel_id)
        self.last[tunnel_id] = (epoch, src, session_id)
        if prev is None or prev[1] == src:
            return ""
        if prev[0] != epoch:
            self.changes += 1
            return ""
        self.violations += 1
        return (
            f"upstream source changed while its LAC peer kept sending: session "
            f"{(tunnel_id, session_id)} came from {src[0]}:{src[1]}, the peer's last datagram "
            f"(session {prev[2]}) from {prev[1][0]}:{prev[1][1]} (pause epoch {epoch})"
        )


def lns_checker(port: int, conn: Connection) -> None:
    """Receive until told to stop; check each session's Ns (+1 each time), LAC sequence
    (strictly rising: nothing twice, nothing out of order, but for late deliveries, counted in
    `late_steps` and matched against the relay's count in `report`) and upstream source
    (UpstreamSources); answer LNS_ENDS with a CDN."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.big_receive_buffer(sock, 32 << 20)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.2)
    payload_at = Template().payload
    last: dict[tuple[int, int], tuple[int, int, int] | None] = {}  # (ns, gen, seq)
    stats = {"data": 0, "control": 0, "other": 0, "lns_cdns": 0, "copies": 0, "late_steps": 0}
    violations: list[str] = []
    late_steps: list[str] = []
    sources = UpstreamSources()
    conn.send("ready")
    stopping = False
    while True:
        if not stopping and conn.poll():
            stopping = True  # the relay has exited: read what is queued, then report
            sock.setblocking(False)
        try:
            d, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        except BlockingIOError:
            break
        h = parse_header(d)
        if isinstance(h, str) or (len(d) < h.payload_offset + PAYLOAD.size and not h.is_control):
            stats["other"] += 1
            continue
        if h.is_control:
            stats["control"] += 1
            c = control_fields(d)
            if not isinstance(c, str) and c.message_type == MessageType.ICCN:
                last[(h.tunnel_id, h.session_id)] = None  # a new call: its Ns from 0
            continue
        stats["data"] += 1
        _peer, sid, gen, seq, flags, epoch = PAYLOAD.unpack_from(d, payload_at)
        key = (h.tunnel_id, h.session_id)
        if moved := sources.check(h.tunnel_id, h.session_id, epoch, addr):
            violations.append(moved)
        ns = h.ns if h.ns is not None else -1
        prev = last.get(key, (-1, -1, -1))
        if flags & COPY:
            stats["copies"] += 1
            violations.append(f"a duplicate was delivered: {key} gen {gen} seq {seq}")
        if prev is None:
            if ns != 0:
                violations.append(f"new call {key} starts at Ns {ns}, not 0")
        elif prev[0] >= 0:
            if ns != (prev[0] + 1) & 0xFFFF:
                kind = "backward step" if (ns - prev[0]) & 0xFFFF > 0x8000 else "gap"
                violations.append(f"{kind} {key}: Ns {prev[0]} -> {ns}")
            if gen == prev[1] and seq <= prev[2]:
                # A packet that came after its gap was given up (the sender stalled past the
                # reorder timeout between a swapped pair) is delivered late, renumbered: its
                # Ns follows on, its LAC sequence steps back. `report` holds these to the
                # relay's own count of late deliveries.
                stats["late_steps"] += 1
                if stats["late_steps"] <= 20:
                    late_steps.append(f"{key} gen {gen}: LAC seq {prev[2]} then {seq}")
        last[key] = (ns, gen, seq)
        if flags & LNS_ENDS:
            sock.sendto(
                control(MessageType.CDN, 0, 0, avp_result_code(1), avp_assigned_session_id(sid)),
                addr,
            )
            stats["lns_cdns"] += 1
    stats["source_changes_after_pause"] = sources.changes
    stats["source_violations"] = sources.violations
    stats["tunnels_seen"] = len(sources.last)
    conn.send((stats, violations[:200], len(violations), late_steps))


# --- the LAC side --------------------------------------------------------------------------------


@dataclass
class Call:
    """One session as its LAC sends it: swaps, a loss, a duplicate on a seeded schedule."""

    peer: int
    sid: int
    gen: int
    ns: int
    left: int  # packets before the call's end
    end: str  # "lac_cdn", "lns_cdn", "silent", "resume"
    seq: int = 0
    recent: list[tuple[int, int]] = field(default_factory=list)


class Lac:
    """All peers and their calls; counts what it sent for the reconciliation at the end."""

    def __init__(self, args: argparse.Namespace, relay: tuple[str, int]) -> None:
        self.args = args
        self.relay = relay
        self.rng = random.Random(args.seed)
        self.tpl = Template()
        self.socks = [self._socket() for _ in range(args.peers)]
        self.calls: list[Call] = []
        self.next_sid = [1] * args.peers
        self.free_sids: list[list[int]] = [[] for _ in range(args.peers)]  # for reuse (ICCN)
        self.gen = 0
        self.resting: dict[int, float] = {}  # peer -> when it comes back
        self.resumes: list[tuple[float, Call]] = []
        # Per peer: when it last sent anything, and its pause epoch (UpstreamSources).
        self.last_sent = [float("-inf")] * args.peers
        self.epochs = [0] * args.peers
        self.pause = args.peer_idle_seconds * PAUSE_SHARE
        self.datagrams = 0  # everything sent to the relay: data, copies, control, junk
        self.counts = dict.fromkeys(
            ("sent", "lost", "copies", "calls", "unseen", "silent", "resumed", "lac_cdns",
             "lns_cdns", "stopccns", "malformed"), 0)  # fmt: skip

    def _socket(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies are never read
        s.bind(("127.0.0.1", 0))
        return s

    def epoch(self, peer: int) -> int:
        """The peer's pause epoch for what it sends now: a new one after a pause (PAUSE_SHARE)."""
        now = time.monotonic()
        if now - self.last_sent[peer] > self.pause:
            self.epochs[peer] += 1
        self.last_sent[peer] = now
        return self.epochs[peer]

    def send(self, peer: int, data: bytes) -> None:
        self.epoch(peer)  # control messages and junk count as activity too
        self.datagrams += 1
        try:
            self.socks[peer].sendto(data, self.relay)
        except BlockingIOError:  # not expected on loopback; the reconciliation will show it
            self.counts["send_errors"] = self.counts.get("send_errors", 0) + 1

    def new_call(self, now: float) -> None:
        rng = self.rng
        peer = rng.randrange(self.args.peers)
        if peer in self.resting:
            return
        self.gen += 1
        end = rng.choices(("lac_cdn", "lns_cdn", "silent", "resume"), (55, 30, 10, 5))[0]
        left = rng.randint(20, 2 * self.args.rate * self.args.call_seconds // self.args.sessions)
        if rng.random() < 0.5 and self.free_sids[peer]:  # set up by an ICCN, reusing IDs
            sid = self.free_sids[peer].pop(0)
            self.send(peer, control(MessageType.ICCN, TUNNEL0 + peer, sid))
            call = Call(peer, sid, self.gen, 0, left, end)
            self.counts["calls"] += 1
        else:  # seen mid-stream: its setup went by before us (e.g. a restart); fresh IDs
            sid = self.next_sid[peer]
            self.next_sid[peer] = sid % 60000 + 1
            call = Call(peer, sid, self.gen, rng.randrange(65536), left, end)
            self.counts["unseen"] += 1
        self.calls.append(call)

    def step(self, call: Call) -> bool:
        """Send the call's next datagram(s); False when the call has ended."""
        rng, tpl = self.rng, self.tpl
        # A call's first and last three packets go out plain (NEUTRAL: no loss, swap or copy), so
        # no copy follows the last packet: after a CDN from the LNS it would start a new session
        # (by design: the LNS ended the call), which the checker would call a duplicate.
        roll = rng.random() if call.seq >= 3 and call.left > 3 else NEUTRAL
        if roll < self.args.loss:
            self.counts["lost"] += 1
            call.seq, call.ns, call.left = call.seq + 1, (call.ns + 1) & 0xFFFF, call.left - 1
            return True
        last = call.left <= 1
        flags = LNS_ENDS if last and call.end == "lns_cdn" else 0
        epoch = self.epoch(call.peer)
        if roll < self.args.loss + self.args.swaps and call.left > 2:  # a swapped pair
            ahead = tpl.make(call.peer, call.sid, call.gen, call.seq + 1, call.ns + 1, flags, epoch)
            self.send(call.peer, ahead)
            behind = tpl.make(call.peer, call.sid, call.gen, call.seq, call.ns, 0, epoch)
            self.send(call.peer, behind)
            call.recent += [(call.seq, call.ns), (call.seq + 1, call.ns + 1)]
            n = 2
        else:
            data = tpl.make(call.peer, call.sid, call.gen, call.seq, call.ns, flags, epoch)
            self.send(call.peer, data)
            call.recent.append((call.seq, call.ns))
            n = 1
            if roll > 1 - self.args.duplicates and len(call.recent) > 3:
                seq, ns = call.recent[-rng.randint(1, 3)]
                self.send(call.peer, tpl.make(call.peer, call.sid, call.gen, seq, ns, COPY, epoch))
                self.counts["copies"] += 1
        del call.recent[:-4]
        self.counts["sent"] += n
        call.seq, call.ns, call.left = call.seq + n, (call.ns + n) & 0xFFFF, call.left - n
        return call.left > 0

    def finish(self, call: Call, now: float) -> None:
        """The call's last packet went out: end it the way it was drawn."""
        if call.end in ("silent", "resume"):
            self.counts["silent"] += 1
            if call.end == "resume":  # silent past its idle expiry, then carries on, then a CDN
                call.end, call.left = "lac_cdn", self.rng.randint(5, 50)
                self.resumes.append((now + self.args.idle_seconds * self.rng.uniform(1.2, 3), call))
            return  # "silent" for good: the relay's idle expiry forgets it; IDs never reused
        if call.end == "lac_cdn":
            cdn = control(
                MessageType.CDN, TUNNEL0 + call.peer, call.sid,
                avp_result_code(1), avp_assigned_session_id(call.sid),
            )  # fmt: skip
            self.send(call.peer, cdn)
            self.counts["lac_cdns"] += 1
        else:  # "lns_cdn": the checker answered its last packet with a CDN from the LNS
            self.counts["lns_cdns"] += 1
        self.free_sids[call.peer].append(call.sid)  # a later ICCN call may reuse the IDs

    def rest_a_peer(self, now: float) -> None:
        """A LAC drops its tunnel (StopCCN), stays away past peer_idle_timeout, comes back."""
        peer = self.rng.randrange(self.args.peers)
        if peer in self.resting:
            return
        self.send(
            peer,
            control(
                MessageType.StopCCN,
                TUNNEL0 + peer,
                0,
                avp_result_code(1),
                avp_assigned_tunnel_id(TUNNEL0 + peer),
            ),
        )
        self.counts["stopccns"] += 1
        self.calls = [c for c in self.calls if c.peer != peer]
        self.resumes = [(t, c) for t, c in self.resumes if c.peer != peer]
        self.free_sids[peer] = []  # after a StopCCN, only calls set up afresh
        self.resting[peer] = now + self.args.peer_idle_seconds * 1.5

    def malformed(self) -> None:
        # Never a well-formed L2TPv2 message by chance: too short, or another version.
        junk = self.rng.choice(
            [b"\xc8", b"\xc8\x02\x00", bytes(5), b"\x00\x03" + os.urandom(self.rng.randint(0, 80))]
        )
        self.send(self.rng.randrange(self.args.peers), junk)
        self.counts["malformed"] += 1


# --- the run -------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def slope_per_hour(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB), in KiB per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 3600 * sum((t - mx) * (v - my) for t, v in points) / var if var else 0.0


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(
    args: argparse.Namespace, listen: int, lns: int, metrics: int, tmp: Path
) -> dict[str, Any]:
    return {
        "listen": [f"127.0.0.1:{listen}"],
        "lns": f"127.0.0.1:{lns}",
        "peer_idle_timeout_ms": int(args.peer_idle_seconds * 1000),
        "socket_buffer_bytes": 16 << 20,
        "reorder": {
            "timeout_ms": args.timeout_ms,
            "max_sessions": args.cap,
            "session_idle_timeout_ms": int(args.idle_seconds * 1000),
        },
        "logging": {"drop_report_interval_ms": 60000},
        "metrics": {"enabled": True, "listen": "127.0.0.1", "port": metrics},
        "control_socket": str(tmp / "control.sock"),
    }


def daemon_command(args: argparse.Namespace, path: Path) -> list[str]:
    cmd = [sys.executable, "-m", "l2tpreorder", "run", "--config", str(path)]
    if args.trace_memory:
        cmd = [sys.executable, "-m", "bench.soak_trace", args.trace_memory,
               str(args.trace_every), "--", *cmd[3:]]  # fmt: skip
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        cmd = ["taskset", "-c", "1", *cmd]
    return cmd


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        ours = 'direction="lac_to_lns"' in line or "{" not in line  # and relay-wide series
        if line and not line.startswith("#") and ours:
            name, _, val = line.rpartition(" ")
            out[name] = float(val)
    return out


def scrape_when_read(port: int, datagrams: int, timeout: float = 60.0) -> dict[str, float]:
    """The relay's metrics once it has read all `datagrams` the LACs sent (so every drop is
    counted), or after `timeout` (then the report shows the shortfall)."""
    limit = time.monotonic() + timeout
    while True:
        m = scrape(port)
        read = sum(v for k, v in m.items() if k.startswith("l2tpreorder_socket_received_datagrams"))
        if read >= datagrams or time.monotonic() > limit:
            return m
        time.sleep(0.2)


class Stall:
    """`--stall S`: the relay is stopped (SIGSTOP) once, mid-run, for S seconds (more than
    peer_idle_timeout) while its LACs go on at STALL_SHARE of the rate (what its receive queue
    holds): no LAC pauses, so none may come back on a new upstream port."""

    def __init__(self, args: argparse.Namespace, pid: int, start: float) -> None:
        self.pid = pid
        self.begin = start + args.seconds / 2 if args.stall > 0 else float("inf")
        self.end = self.begin + args.stall
        self.stopped = False

    def share(self, now: float) -> float:
        """The share of the rate the LACs send now; stops and continues the relay on time."""
        if not self.stopped and self.begin <= now < self.end:
            os.kill(self.pid, signal.SIGSTOP)
            self.stopped = True
        elif self.stopped and now >= self.end:
            os.kill(self.pid, signal.SIGCONT)
            self.stopped = False
        return STALL_SHARE if self.stopped else 1.0


def drive(
    args: argparse.Namespace, lac: Lac, pid: int, daemon_cfg: Path, good: str
) -> list[tuple[float, int]]:
    """The traffic loop: paced in 10 ms ticks; returns the RSS samples (seconds, KiB)."""
    start = time.monotonic()
    samples: list[tuple[float, int]] = []
    next_sample = next_call = next_rest = next_reload = next_junk = start
    reloads = 0
    per_tick = args.rate / 100
    owed = 0.0
    tick = start
    stall = Stall(args, pid, start)
    while (now := time.monotonic()) - start < args.seconds:
        while lac.resting and min(lac.resting.values()) <= now:
            lac.resting.pop(min(lac.resting, key=lac.resting.__getitem__))
        while lac.resumes and lac.resumes[0][0] <= now:
            lac.calls.append(lac.resumes.pop(0)[1])
            lac.counts["resumed"] += 1
        while len(lac.calls) < args.sessions and next_call <= now:
            lac.new_call(now)
            next_call += args.call_seconds / args.sessions / 2  # ends are packet-bound
        next_call = max(next_call, now - 1)
        owed += per_tick * stall.share(now)
        while owed >= 1 and lac.calls:
            i = lac.rng.randrange(len(lac.calls))
            call = lac.calls[i]
            owed -= 1
            if not lac.step(call):
                lac.calls[i] = lac.calls[-1]
                lac.calls.pop()
                lac.finish(call, now)
        lac.resumes.sort(key=lambda tc: tc[0])
        if now >= next_rest:
            lac.rest_a_peer(now)
            next_rest += 60
        if now >= next_junk:
            lac.malformed()
            next_junk += 1
        if now >= next_reload:
            reloads += 1
            broken = reloads % 3 == 0
            daemon_cfg.write_text("reorder: [not: a mapping\n" if broken else good)
            if reloads > 1:
                os.kill(pid, signal.SIGHUP)
            next_reload += 20 if broken else 40  # a broken file is fixed 20 s later
        if now >= next_sample:
            samples.append((now - start, rss_kib(pid)))
            next_sample += 10
        tick += 0.01
        time.sleep(max(0.0, tick - time.monotonic()))  # pacing, not synchronisation
    daemon_cfg.write_text(good)
    os.kill(pid, signal.SIGHUP)
    return samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=900)
    p.add_argument("--rate", type=int, default=10000, help="data datagrams per second")
    p.add_argument("--peers", type=int, default=120)
    p.add_argument("--sessions", type=int, default=600, help="calls sending at once")
    p.add_argument("--call-seconds", type=int, default=45, help="mean call length")
    p.add_argument("--cap", type=int, default=650, help="reorder.max_sessions")
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--peer-idle-seconds", type=float, default=61.0)
    p.add_argument("--timeout-ms", type=int, default=100)
    p.add_argument("--swaps", type=float, default=0.05)
    p.add_argument("--loss", type=float, default=0.002)
    p.add_argument("--duplicates", type=float, default=0.003)
    p.add_argument("--warmup", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--stall", type=float, default=0.0, help="stop the relay this long, mid-run")
    p.add_argument("--trace-memory", metavar="DIR", default="")
    p.add_argument("--trace-every", type=float, default=120.0)
    p.add_argument("--json", metavar="FILE", default="")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="l2tpreorder-soak-"))
    listen, lns_port, metrics = (
        free_port(socket.SOCK_DGRAM),
        free_port(socket.SOCK_DGRAM),
        free_port(socket.SOCK_STREAM),
    )
    cfg_path = tmp / "config.yaml"
    good = yaml.safe_dump(config(args, listen, lns_port, metrics, tmp))
    cfg_path.write_text(good)
    ours, theirs = multiprocessing.Pipe()
    checker = multiprocessing.Process(target=lns_checker, args=(lns_port, theirs), daemon=True)
    checker.start()
    assert ours.recv() == "ready"
    log = open(tmp / "daemon.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(daemon_command(args, cfg_path), cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        if not udp.wait_until_bound(listen, proc, 60.0):
            raise SystemExit(f"the relay did not start: {(tmp / 'daemon.log').read_text()}")
        lac = Lac(args, ("127.0.0.1", listen))
        samples = drive(args, lac, proc.pid, cfg_path, good)  # taskset execs: same pid
        metrics_now = scrape_when_read(metrics, lac.datagrams)
    finally:
        proc.send_signal(signal.SIGCONT)  # a --stall cut short
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
        ours.send("stop")
    stats, violations, n_violations, late_steps = ours.recv()
    checker.join(10)
    return report(args, lac, samples, metrics_now, stats, violations, n_violations, tmp, late_steps)


def report(args: argparse.Namespace, lac: Lac, samples: list[tuple[float, int]],
           m: dict[str, float], stats: dict[str, int], violations: list[str],
           n_violations: int, tmp: Path, late_steps: list[str]) -> int:  # fmt: skip
    after = [(t, v) for t, v in samples if t >= args.warmup]
    slope = slope_per_hour(after)
    dropped = {
        k.split('reason="')[1].split('"')[0]: int(v)
        for k, v in m.items()
        if k.startswith("l2tpreorder_dropped_packets_total")
    }
    delivered_expected = lac.counts["sent"] - dropped.get("late", 0)
    # The accounting first: when the relay's socket overflowed (it fell behind the sender), the
    # order violations that follow are what the lost input (an ICCN, a call's first packets)
    # caused, not reordering faults.
    problems: list[str] = []
    read = sum(v for k, v in m.items() if k.startswith("l2tpreorder_socket_received_datagrams"))
    if read != lac.datagrams:
        overflow = m.get("l2tpreorder_socket_receive_drops_total", 0)
        problems.append(
            f"the relay read {read:.0f} of the {lac.datagrams} datagrams sent "
            f"(socket overflow drops: {overflow:.0f}); the checks below are void"
        )
    if stats["data"] != delivered_expected:
        problems.append(f"LNS got {stats['data']} data packets, expected {delivered_expected}")
    if dropped.get("duplicate", 0) != lac.counts["copies"]:
        problems.append(
            f"duplicate drops {dropped.get('duplicate', 0)}, copies sent {lac.counts['copies']}"
        )
    problems += violations
    # Late deliveries: each LAC-sequence step back the LNS saw must be one the relay counted.
    late = sum(
        v for k, v in m.items()
        if k.startswith("l2tpreorder_forwarded_packets_total") and 'kind="data_late"' in k
    )  # fmt: skip
    if stats["late_steps"] > late:
        problems.append(
            f"the LNS saw {stats['late_steps']} LAC-sequence steps back, the relay delivered "
            f"{late:.0f} late: {late_steps}"
        )
    tables = {
        name: sum(v for k, v in m.items() if k.startswith(f"l2tpreorder_{name}"))
        for name in (
            "sessions{", "sessions_started_total", "sessions_evicted_total",
            "sessions_evicted_active_total", "sessions_idle_expired_total",
            "sessions_continued_total",
        )
    }  # fmt: skip
    result = {
        "seconds": args.seconds, "rate": args.rate, "sent": lac.counts,
        "lns": stats, "dropped": dropped, "sessions": tables,
        "rss_kib": samples, "rss_after_warmup_kib": [after[0][1], after[-1][1]] if after else [],
        "rss_slope_kib_per_hour": round(slope), "violations": n_violations,
        "problems": problems[:50], "log": str(tmp / "daemon.log"),
    }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "rss_kib"}, indent=1))
    print("RSS (s, KiB):", " ".join(f"{t:.0f}:{v}" for t, v in samples))
    if after:
        print(f"RSS after {args.warmup:.0f} s warm-up: {after[0][1]} -> {after[-1][1]} KiB; "
              f"slope {slope / 1024:+.2f} MiB/h over {len(after)} samples")  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
