"""Reliability against the live daemon (a real `l2tpreorder run` process on loopback).

- 100,000 random and mutated datagrams (truncated headers, Length lies, bad versions, L2TPv3,
  huge offsets, control messages with broken AVPs as in tcpdump's l2tp-avp-overflow capture,
  bit-flipped valid messages) from one LAC address, interleaved with a real session from another:
  the daemon stays up, the real session loses nothing and stays in order, the malformed counter
  equals what was sent, and (tcpdump on lo) nothing leaves the daemon for anyone but the LNS or a
  LAC that sent to it; datagrams to an upstream port from anyone but the LNS are dropped.
- Restart: SIGTERM saves per-session state, the next start restores it and rebinds the same
  upstream port, so the LNS sees contiguous Ns from the same source port; a corrupt state file is
  reported and ignored.
"""

from __future__ import annotations

import json
import random
import re
import select
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dpkt
import pytest

from bench.udp import udp_socket_stats
from l2tpreorder.core import reasons
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.wire import (
    MessageType,
    avp_assigned_session_id,
    avp_assigned_tunnel_id,
    avp_message_type,
    build_control,
    build_data,
)
from tests.conftest import need_root, need_tool, shared_pcap
from tests.daemon_harness import Daemon, free_udp_port, nothing_waiting, recv, udp
from tests.engine_helpers import expected_malformed_reason, udp_payloads
from tests.metrics_helpers import (
    daemon_socket_drops,
    matching,
    metrics_url,
    parse,
    scrape,
    socket_inodes,
)

pytestmark = pytest.mark.integration

T_LNS, S_LNS = 100, 200
HOSTILE_COUNT = 100_000
REAL_COUNT = 2_000
BURST = 100  # hostile datagrams between two real ones (the real one is awaited: pacing)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def _start(config: dict[str, Any], run: str = "run") -> Daemon:
        directory = tmp_path / f"{run}-{len(started)}"
        directory.mkdir()
        d = Daemon(directory, config)
        started.append(d)
        return d.ready()

    yield _start
    for d in started:
        d.stop()


def config(listen: int, lns: int, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "listen": [f"127.0.0.1:{listen}"],
        "lns": f"127.0.0.1:{lns}",
        "allow": ["127.0.0.0/8"],
        "reorder": {"timeout_ms": 50},
        "logging": {"level": "info", "drop_report_interval_ms": 100},
        "metrics": {"enabled": False},
    }
    cfg.update(extra)
    return cfg


def real(ns: int) -> bytes:
    return build_data(T_LNS, S_LNS, b"\xff\x03\x00\x21" + ns.to_bytes(4, "big"), ns=ns & 0xFFFF)


def ns_and_number(datagram: bytes) -> tuple[int, int]:
    h = parse_header(datagram)
    assert not isinstance(h, str) and h.ns is not None, datagram.hex()
    return h.ns, int.from_bytes(datagram[-4:], "big")


# --- hostile traffic ---------------------------------------------------------------------


class Hostile:
    """Random and mutated datagrams, each with the outcome the relay must give it."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.avp_overflow = [
            p for _, p in udp_payloads(shared_pcap("tcpdump_l2tp-avp-overflow.pcap")) if p
        ]
        good_control = build_control(
            9, 0, 0, 0, [avp_message_type(MessageType.SCCRQ), avp_assigned_tunnel_id(9)]
        )
        self.templates = [
            build_data(7, 7, b"\xff\x03\x00\x21" + bytes(60), ns=5),
            build_data(7, 7, bytes(30), ns=5, length=True),
            build_data(7, 7, bytes(30), ns=5, offset_size=4),
            build_data(7, 7, bytes(30)),
            good_control,
            build_control(
                9, 3, 1, 1, [avp_message_type(MessageType.ICRP), avp_assigned_session_id(4)]
            ),
        ]
        self.kinds = [
            self.truncated, self.length_lie, self.bad_version, self.l2tpv3, self.huge_offset,
            self.broken_avps, self.tcpdump_overflow, self.bit_flips, self.random_bytes,
        ]  # fmt: skip

    def datagram(self) -> bytes:
        return self.rng.choice(self.kinds)()

    def truncated(self) -> bytes:
        t = self.rng.choice(self.templates)
        return t[: self.rng.randrange(0, 12)]

    def length_lie(self) -> bytes:
        t = bytearray(self.rng.choice(self.templates[1:2] + self.templates[4:]))
        struct.pack_into("!H", t, 2, self.rng.choice([0, 5, len(t) + 1, 0xFFFF]))
        return bytes(t)

    def bad_version(self) -> bytes:
        t = bytearray(self.rng.choice(self.templates))
        t[1] = (t[1] & 0xF0) | self.rng.choice([0, 1, 4, 5, 15])
        return bytes(t)

    def l2tpv3(self) -> bytes:
        t = bytearray(self.rng.choice(self.templates))
        t[1] = (t[1] & 0xF0) | 3
        return bytes(t)

    def huge_offset(self) -> bytes:
        t = bytearray(self.templates[2])
        struct.pack_into("!H", t, 10, self.rng.choice([0xFFFF, 0x8000, len(t)]))
        return bytes(t)

    def broken_avps(self) -> bytes:
        t = bytearray(self.templates[4])
        pos = 12 + self.rng.choice([0, 8])
        struct.pack_into("!H", t, pos, 0x8000 | self.rng.choice([0, 1, 5, 200, 1023]))
        return bytes(t)

    def tcpdump_overflow(self) -> bytes:
        return self.rng.choice(self.avp_overflow)

    def bit_flips(self) -> bytes:
        t = bytearray(self.rng.choice(self.templates))
        for _ in range(self.rng.randrange(1, 4)):
            i = self.rng.randrange(len(t))
            t[i] ^= 1 << self.rng.randrange(8)
        return bytes(t)

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(0, 80))


def wait_listening(dump: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """tcpdump says "listening on" once its capture is attached: send nothing before that."""
    assert dump.stderr is not None
    limit = time.monotonic() + timeout
    said = b""
    while b"listening on" not in said:
        left = limit - time.monotonic()
        ready, _, _ = select.select([dump.stderr], [], [], max(0.0, left))
        chunk = dump.stderr.read1(4096) if ready else b""
        assert chunk, f"tcpdump did not start listening: {said!r}"
        said += chunk


@pytest.mark.slow
def test_hostile_flood_interleaved_with_a_real_session(
    start: Callable[..., Daemon], tmp_path: Path
) -> None:
    need_root()
    tcpdump = need_tool("tcpdump")
    listen, lns_port = free_udp_port(), free_udp_port()
    lns = udp(port=lns_port)
    lac = udp("127.0.0.1")
    attacker = udp("127.0.0.2")
    stranger = udp("127.0.0.3")
    bystander = udp("127.0.0.4")  # never sends: must never receive
    capture = tmp_path / "lo.pcap"
    dump = subprocess.Popen(
        [tcpdump, "-i", "lo", "-n", "-U", "-s", "96", "-w", str(capture), "udp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        cfg = config(listen, lns_port, socket_buffer_bytes=4 << 20)
        cfg["metrics"] = {"enabled": True, "listen": "127.0.0.1", "port": 0}
        d = start(cfg)
        url = metrics_url(d.wait_log("/metrics"))
        relay = ("127.0.0.1", listen)
        wait_listening(dump)

        hostile = Hostile(seed=7)
        expected: dict[str, int] = {}
        passed_hostile = 0
        lac.sendto(real(0), relay)
        datagram, upstream = recv(lns)
        got_real = [ns_and_number(datagram)]
        upstream_hostile: set[Any] = set()
        sent = 0
        next_real = 1
        while sent < HOSTILE_COUNT:
            for _ in range(min(BURST, HOSTILE_COUNT - sent)):
                datagram = hostile.datagram()
                reason = expected_malformed_reason(datagram)
                if reason is None:
                    passed_hostile += 1
                else:
                    expected[reason] = expected.get(reason, 0) + 1
                attacker.sendto(datagram, relay)
                sent += 1
            # The real session: in order, every 10th pair swapped; its arrival paces the flood.
            batch = [next_real + 1, next_real] if next_real % 10 == 5 else [next_real]
            for n in batch:
                lac.sendto(real(n), relay)
            next_real += len(batch)
            while len(got_real) < next_real:
                datagram, src = recv(lns)
                if src == upstream:
                    got_real.append(ns_and_number(datagram))
                else:
                    upstream_hostile.add(src)  # a mutated datagram that is still well-formed
        while not nothing_waiting(lns):
            pass  # the last hostile datagrams that passed
        assert d.proc.poll() is None, "the daemon died"

        # The real session: nothing lost, in order, Ns contiguous.
        assert [n for _, n in got_real] == list(range(next_real))
        first = got_real[0][0]
        assert [ns for ns, _ in got_real] == [(first + i) & 0xFFFF for i in range(next_real)]
        assert next_real >= HOSTILE_COUNT // BURST
        assert len(upstream_hostile) <= 1

        # Replies from anyone but the LNS to an upstream port are dropped, not relayed.
        for i in range(50):
            stranger.sendto(build_data(5, 6, f"spoof-{i}".encode()), upstream)
        lns.sendto(build_data(5, 6, b"from-the-lns"), upstream)
        reply, src = recv(lac)
        assert (reply[-12:], src) == (b"from-the-lns", relay)

        samples = parse(scrape(url))
        d.wait_log("reason not_from_lns, 50 total")
        assert nothing_waiting(lac) and nothing_waiting(stranger) and nothing_waiting(bystander)
        # Read now from /proc: the exported counter is refreshed only once a second.
        assert daemon_socket_drops(d.proc.pid) == 0
        for reason in reasons.MALFORMED_REASONS:
            got = matching(samples, "l2tpreorder_malformed_packets_total", reason=reason)
            assert sum(got.values()) == expected.get(reason, 0), reason
        received = matching(samples, "l2tpreorder_received_packets_total", direction="lac_to_lns")
        assert sum(received.values()) == HOSTILE_COUNT + next_real
        print(
            f"{HOSTILE_COUNT} hostile datagrams: {sum(expected.values())} malformed "
            f"{dict(sorted(expected.items()))}, {passed_hostile} well-formed after mutation; "
            f"{next_real} real ones delivered in order"
        )
    finally:
        dump.terminate()
        dump.wait(10)

    # Nothing left the daemon's sockets for anyone but the LNS or a LAC that had sent to it.
    daemon_ports = {listen} | {p for _, p in {upstream} | upstream_hostile}
    lacs = {("127.0.0.1", lac.getsockname()[1]), ("127.0.0.2", attacker.getsockname()[1])}
    seen = 0
    with open(capture, "rb") as f:
        for _, frame in dpkt.pcap.Reader(f):
            ip = _ipv4(frame)
            if ip is None or not isinstance(ip.data, dpkt.udp.UDP):
                continue
            # Any 127/8 source: upstream sockets use one loopback address per LAC.
            src = (dpkt.utils.inet_to_str(ip.src) if ip.src[0] == 127 else None, ip.data.sport)
            if src[0] is None or src[1] not in daemon_ports:
                continue
            dst = (".".join(str(b) for b in ip.dst), ip.data.dport)
            seen += 1
            if src[1] == listen:
                assert dst in lacs, f"the daemon sent to {dst}, not a LAC that sent to it"
            else:
                assert dst == ("127.0.0.1", lns_port), f"upstream socket sent to {dst}"
    assert seen >= next_real, "the capture missed the daemon's traffic"


def _ipv4(frame: bytes) -> Any:
    """Loopback captures are Ethernet-framed on Linux (DLT_EN10MB with zero MACs)."""
    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except (dpkt.UnpackError, dpkt.NeedData):
        return None
    return eth.data if isinstance(eth.data, dpkt.ip.IP) else None


# --- restarts ------------------------------------------------------------------------------


def test_restart_keeps_ns_contiguous_and_the_upstream_port(
    start: Callable[..., Daemon], tmp_path: Path
) -> None:
    listen, lns_port = free_udp_port(), free_udp_port()
    lns = udp(port=lns_port)
    lac = udp()
    state_file = tmp_path / "state.json"
    cfg = config(listen, lns_port, state_file=str(state_file))
    relay = ("127.0.0.1", listen)
    first = start(cfg)
    iccn = build_control(T_LNS, S_LNS, 3, 2, [avp_message_type(MessageType.ICCN)])
    lac.sendto(iccn, relay)
    _, upstream = recv(lns)
    lac_ns = list(range(1000, 1100))
    lac_ns.remove(1050)  # lost before the relay: skipped after 50 ms, renumbered over
    for n in lac_ns:
        lac.sendto(real(n), relay)
    before = [ns_and_number(recv(lns)[0]) for _ in lac_ns]
    assert [n for _, n in before] == lac_ns
    assert [ns for ns, _ in before] == list(range(1000, 1099))  # renumbered: no gap at 1050

    assert first.terminate() == 0
    assert "saved state of 1 sessions and 1 LAC peers" in first.log()
    assert state_file.exists()
    lac.sendto(real(1100), relay)  # in flight during the restart: nobody is listening

    second = start(cfg)
    assert "restored 1 sessions and 1 LAC peers" in second.log()
    assert not state_file.exists(), "a used state file must not come back after a crash"
    for n in range(1101, 1121):
        lac.sendto(real(n), relay)
    after = []
    for _ in range(20):
        datagram, src = recv(lns)
        assert src == upstream, "xl2tpd's connected socket needs the same source port"
        after.append(ns_and_number(datagram))
    assert [n for _, n in after] == list(range(1101, 1121))
    # The LNS continues at 1099: no jump to the LAC's 1101, only 1100 (in flight) missing.
    assert [ns for ns, _ in after] == list(range(1099, 1119))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"format": "l2tpreorder-state", "version": 1, "saved_at": 1', "corrupt or truncated"),
        (b'{"format": "l2tpreorder-state", "version": 0}', "version 0"),
        (b"\x00\xff garbage", "corrupt"),
    ],
)
def test_bad_state_file_is_reported_and_ignored(
    start: Callable[..., Daemon], tmp_path: Path, content: bytes, reason: str
) -> None:
    listen, lns_port = free_udp_port(), free_udp_port()
    lns = udp(port=lns_port)
    lac = udp()
    state_file = tmp_path / "state.json"
    state_file.write_bytes(content)
    d = start(config(listen, lns_port, state_file=str(state_file)))
    log = d.wait_log("ignored, starting afresh")
    assert reason in log
    lac.sendto(real(7), ("127.0.0.1", listen))
    assert ns_and_number(recv(lns)[0]) == (7, 7)


def state_document(peers: object) -> dict[str, Any]:
    """A state file in the valid format (one real session) whose `extra.peers` is `peers`."""
    return {
        "format": "l2tpreorder-state",
        "version": 1,
        "saved_at": time.time(),
        "sequencing": "renumber",
        "sessions": [
            {
                "flow": ["127.0.0.1", 40000],
                "tunnel_id": T_LNS,
                "session_id": S_LNS,
                "expected": 10,
                "out_ns": 10,
                "confirmed": True,
            }
        ],
        "tunnels": [],
        "extra": {"peers": peers, "lns_to_lac": None},
    }


def _peer(listen_port: int, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "addr": ["127.0.0.1", 40000],
        "listen": ["127.0.0.1", listen_port],
        "cmsg": None,
        "upstream": ["127.0.0.1", free_udp_port()],
    }
    entry.update(fields)
    return entry


@pytest.mark.parametrize(
    ("peers", "reason"),
    [
        (lambda listen: 5, "extra.peers = 5: expected a list"),
        (lambda listen: [_peer(listen, addr=[])], "extra.peers[0]: addr = []: expected"),
        (
            lambda listen: [_peer(listen, listen=[[1, 2], 3])],
            "extra.peers[0]: listen = [[1, 2], 3]: expected",
        ),
        (
            lambda listen: [_peer(listen, upstream=["127.0.0.1", 70000])],
            "extra.peers[0]: upstream = ['127.0.0.1', 70000]: expected [IP literal, port 1..65535]",
        ),
        (
            lambda listen: [_peer(listen, cmsg=[[0, 8, "zz"]])],
            "extra.peers[0]: cmsg = [[0, 8, 'zz']]: expected",
        ),
        (lambda listen: ["peer"], "extra.peers[0]: 'peer': expected an object"),
    ],
)
def test_hostile_peer_entries_in_a_valid_state_file_are_reported_and_skipped(
    start: Callable[..., Daemon], tmp_path: Path, peers: Callable[[int], object], reason: str
) -> None:
    listen, lns_port = free_udp_port(), free_udp_port()
    lns = udp(port=lns_port)
    lac = udp()
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state_document(peers(listen))))
    d = start(config(listen, lns_port, state_file=str(state_file)))
    log = d.wait_log("restored 1 sessions and 0 LAC peers")
    assert f"state: {reason}" in log
    assert "Traceback" not in log
    assert not state_file.exists(), "a used state file must be gone, whatever it held"
    lac.sendto(real(7), ("127.0.0.1", listen))
    assert ns_and_number(recv(lns)[0]) == (7, 7)


def test_root_binds_a_privileged_port_then_runs_as_the_configured_user() -> None:
    import os
    import pwd
    import shutil
    import tempfile

    need_root()
    nobody = pwd.getpwnam("nobody")
    port = _free_privileged_port()
    lns_port = free_udp_port()
    lns = udp(port=lns_port)
    lac = udp()
    # The daemon reaches its notify socket after dropping root: a directory it may enter.
    directory = Path(tempfile.mkdtemp(prefix="l2rreliab"))
    directory.chmod(0o755)
    old_umask = os.umask(0)
    try:
        d = Daemon(directory, {**config(port, lns_port), "user": "nobody"})
    finally:
        os.umask(old_umask)
    try:
        d.ready()
        status = Path(f"/proc/{d.proc.pid}/status").read_text()
        uid = re.search(r"^Uid:\s+(.*)$", status, re.M)
        gid = re.search(r"^Gid:\s+(.*)$", status, re.M)
        cap_eff = re.search(r"^CapEff:\s+(\w+)$", status, re.M)
        assert uid and uid.group(1).split() == [str(nobody.pw_uid)] * 4, status
        assert gid and gid.group(1).split() == [str(nobody.pw_gid)] * 4, status
        assert cap_eff and int(cap_eff.group(1), 16) == 0, "capabilities left after the drop"
        assert re.search(r"^Groups:\s*$", status, re.M), "supplementary groups kept"
        lac.sendto(real(5), ("127.0.0.1", port))
        assert ns_and_number(recv(lns)[0]) == (5, 5)
        assert f"running as user nobody (uid {nobody.pw_uid}" in d.log()
        # Bound as root: the daemon's own socket is on the privileged port.
        on_port = {s["inode"] for s in udp_socket_stats(port)}
        assert on_port & socket_inodes(d.proc.pid)
        assert d.terminate() == 0
    finally:
        d.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _free_privileged_port() -> int:
    import socket

    for port in range(1000, 600, -1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free UDP port below 1024")
