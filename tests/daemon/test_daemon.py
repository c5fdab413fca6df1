"""The daemon end to end: a real `l2tpreorder run` process, real UDP sockets on loopback.

fake LAC (test socket) -> daemon -> fake LNS (test socket), and back. Packets are built with
l2tpreorder.wire, so they are the same bytes a LAC would send.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from l2tpreorder.config import config_from_dict
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.daemon.relay.adapter import Relay
from l2tpreorder.wire import (
    MessageType,
    avp_assigned_session_id,
    avp_assigned_tunnel_id,
    avp_message_type,
    avp_result_code,
    build_control,
    build_data,
)
from tests.conftest import PROJECT_ROOT, need, need_tool
from tests.daemon_harness import Daemon, free_udp_port, nothing_waiting, recv, udp
from tests.relay_service import relay_service

pytestmark = pytest.mark.integration

T_LNS, S_LNS = 100, 200  # the IDs the LAC's data headers carry (assigned by the LNS)
T_LAC, S_LAC = 5, 6  # the IDs the LNS's headers carry (assigned by the LAC)


def data(ns: int | None, session_id: int = S_LNS, tunnel_id: int = T_LNS) -> bytes:
    tag = "u" if ns is None else str(ns)
    return build_data(tunnel_id, session_id, f"payload-{session_id}-{tag}".encode(), ns=ns)


def payload_of(datagram: bytes) -> tuple[int | None, bytes]:
    h = parse_header(datagram)
    assert not isinstance(h, str), h
    return h.ns, datagram[h.payload_offset :]


def control(message: MessageType, tunnel_id: int, session_id: int, *avps: Any) -> bytes:
    return build_control(tunnel_id, session_id, 0, 0, [avp_message_type(message), *avps])


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_udp_port(), free_udp_port()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def _start(config: dict[str, Any], env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(tmp_path, config, env)
        started.append(d)
        return d.ready()

    yield _start
    for d in started:
        d.stop()


def base_config(listen: list[str], lns: str, timeout_ms: float = 60000, **extra: Any) -> dict:
    cfg: dict[str, Any] = {
        "listen": listen,
        "lns": lns,
        "reorder": {"timeout_ms": timeout_ms},
        "logging": {"level": "info", "drop_report_interval_ms": 100},
        "metrics": {"enabled": False},
    }
    cfg.update(extra)
    return cfg


def test_reorders_data_and_never_delays_control(start: Callable[..., Daemon], ports) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    lac = udp()
    start(base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}"))
    relay = ("127.0.0.1", listen)

    sccrq = control(MessageType.SCCRQ, 0, 0, avp_assigned_tunnel_id(T_LAC))
    lac.sendto(sccrq, relay)
    got, upstream = recv(lns)
    assert got == sccrq

    lac.sendto(data(0), relay)
    assert payload_of(recv(lns)[0]) == (0, b"payload-200-0")
    lac.sendto(data(2), relay)
    lac.sendto(data(3), relay)
    hello = control(MessageType.HELLO, T_LNS, 0)
    lac.sendto(hello, relay)
    got, src = recv(lns)
    assert got == hello, "control must pass while data is held"
    assert src == upstream
    lac.sendto(data(1), relay)
    for ns in (1, 2, 3):
        got, src = recv(lns)
        assert payload_of(got) == (ns, f"payload-200-{ns}".encode())
        assert src == upstream, "one fixed upstream address:port per LAC"


def test_each_lac_has_a_fixed_upstream_port_and_replies_come_from_where_it_sent(
    start: Callable[..., Daemon], ports
) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    lac_a = udp("127.0.0.1")
    lac_b = udp("127.0.0.3")
    # Wildcard listen (replies need IP_PKTINFO); the ACL keeps it to loopback sources.
    start(base_config([f"0.0.0.0:{listen}"], f"127.0.0.1:{lns_port}", allow=["127.0.0.0/8"]))
    upstream: dict[bytes, set[Any]] = {b"a": set(), b"b": set()}
    for _ in range(5):
        lac_a.sendto(data(None, session_id=1) + b"a", ("127.0.0.1", listen))
        lac_b.sendto(data(None, session_id=2) + b"b", ("127.0.0.2", listen))
        for _ in (1, 2):
            got, src = recv(lns)
            upstream[got[-1:]].add(src)
    assert len(upstream[b"a"]) == 1 and len(upstream[b"b"]) == 1
    (up_a,) = upstream[b"a"]
    (up_b,) = upstream[b"b"]
    assert up_a != up_b
    # LNS on loopback: each LAC address its own 127/8 source (docs/lac-addresses.md); LAC
    # 127.0.0.3 -> 127.0.0.3; 127.0.0.1 is the relay's own route source, so LAC a gets another.
    assert up_b[0] == "127.0.0.3"
    assert up_a[0].startswith("127.") and up_a[0] not in ("127.0.0.1", "127.0.0.3")

    lns.sendto(b"\x00\x02reply-for-b", up_b)
    lns.sendto(b"\x00\x02reply-for-a", up_a)
    got, src = recv(lac_a)
    assert (got, src) == (b"\x00\x02reply-for-a", ("127.0.0.1", listen))
    got, src = recv(lac_b)
    assert (got, src) == (b"\x00\x02reply-for-b", ("127.0.0.2", listen))


def test_upstream_socket_only_listens_to_the_lns(start: Callable[..., Daemon], ports) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    lac = udp()
    stranger = udp()
    d = start(base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}"))
    lac.sendto(data(None), ("127.0.0.1", listen))
    _, upstream = recv(lns)
    stranger.sendto(b"\x00\x02reflect-me", upstream)
    stranger.sendto(b"\x00\x02reflect-me-too", upstream)
    lns.sendto(b"\x00\x02from-the-lns", upstream)
    got, src = recv(lac)
    assert (got, src) == (b"\x00\x02from-the-lns", ("127.0.0.1", listen))
    d.wait_log("2 dropped in the last 0.1 s (reason not_from_lns, 2 total)")
    assert nothing_waiting(lac)
    assert nothing_waiting(stranger)


def test_sources_outside_allow_are_dropped(start: Callable[..., Daemon], ports) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    denied = udp("127.0.0.4")
    allowed = udp("127.0.0.2")
    d = start(
        base_config(
            [f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", allow=["127.0.0.2/32", "127.0.0.1/32"]
        )
    )
    denied.sendto(data(None, session_id=1), ("127.0.0.1", listen))
    # The LNS's own address is never a LAC (a spoofed one could make the two ping-pong).
    lns.sendto(data(None, session_id=3), ("127.0.0.1", listen))
    allowed.sendto(data(None, session_id=2), ("127.0.0.1", listen))
    got, _ = recv(lns)
    assert payload_of(got) == (None, b"payload-2-u"), "a denied datagram went first"
    d.wait_log("reason not_allowed, 2 total")
    assert nothing_waiting(lns)


def test_new_peers_beyond_max_peers_are_refused_and_counted(
    start: Callable[..., Daemon], ports
) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    first, second = udp(), udp()
    d = start(base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", max_peers=1))
    first.sendto(data(None, session_id=1), ("127.0.0.1", listen))
    assert payload_of(recv(lns)[0]) == (None, b"payload-1-u")
    second.sendto(data(None, session_id=2), ("127.0.0.1", listen))
    first.sendto(data(None, session_id=3), ("127.0.0.1", listen))  # known peers still pass
    assert payload_of(recv(lns)[0]) == (None, b"payload-3-u")
    d.wait_log("1 dropped in the last 0.1 s (reason peer_limit, 1 total)")


def test_sighup_changes_the_timeout_without_losing_held_packets(
    start: Callable[..., Daemon], ports
) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    lac = udp()
    cfg = base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", timeout_ms=60000)
    d = start(cfg)
    relay = ("127.0.0.1", listen)
    lac.sendto(data(0), relay)
    assert payload_of(recv(lns)[0])[0] == 0
    lac.sendto(data(2), relay)  # held: Ns 1 is missing and the timeout is a minute
    with pytest.raises(TimeoutError):
        recv(lns, timeout=0.3)
    cfg["reorder"]["timeout_ms"] = 50
    d.write_config(cfg)
    ready = d.reload()
    assert "reorder timeout 50 ms" in ready
    got, _ = recv(lns)  # the held packet survived the reload and now times out quickly
    assert payload_of(got) == (1, b"payload-200-2")  # renumbered across the given-up gap
    assert "configuration reloaded" in d.log()


def test_bad_reload_keeps_the_running_config_and_rebinds_are_refused(
    start: Callable[..., Daemon], ports
) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    other_lns = udp()
    lac = udp()
    cfg = base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", timeout_ms=60000)
    d = start(cfg)
    relay = ("127.0.0.1", listen)

    d.config_path.write_text("reorder:\n  timeout_ms: soon\n")
    d.reload()
    d.wait_log("reload failed, keeping the running configuration")
    assert "reorder.timeout_ms = 'soon': expected a number of milliseconds" in d.log()
    lac.sendto(data(0), relay)
    assert payload_of(recv(lns)[0])[0] == 0
    lac.sendto(data(2), relay)
    with pytest.raises(TimeoutError):
        recv(lns, timeout=0.3)  # still the running 60 s timeout

    cfg["lns"] = f"127.0.0.1:{other_lns.getsockname()[1]}"
    cfg["reorder"]["timeout_ms"] = 50
    d.write_config(cfg)
    d.reload()
    d.wait_log(f"but a reload cannot apply it (still 127.0.0.1:{lns_port}): restart the service")
    got, _ = recv(lns)  # the timeout change applied; the LNS change did not
    assert payload_of(got) == (1, b"payload-200-2")
    assert nothing_waiting(other_lns)
    assert d.proc.poll() is None


def test_sigterm_delivers_everything_held_in_order_and_exits_0(
    start: Callable[..., Daemon], ports
) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    lac = udp()
    d = start(base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", timeout_ms=60000))
    relay = ("127.0.0.1", listen)
    lac.sendto(data(0), relay)
    assert payload_of(recv(lns)[0])[0] == 0
    for ns in (3, 2, 5, 7, 6):
        lac.sendto(data(ns), relay)
    lac.sendto(data(None), relay)  # unsequenced: passes at once, proves the others were read
    assert payload_of(recv(lns)[0]) == (None, b"payload-200-u")
    assert d.terminate() == 0
    delivered = [payload_of(recv(lns)[0]) for _ in range(5)]
    assert delivered == [
        (i + 1, f"payload-200-{ns}".encode()) for i, ns in enumerate((2, 3, 5, 6, 7))
    ]
    d.wait_notify("STOPPING=1")


def test_cdn_from_the_lns_flushes_the_session_and_a_reused_id_starts_fresh(
    start: Callable[..., Daemon], ports
) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    lac = udp()
    start(base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", timeout_ms=60000))
    relay = ("127.0.0.1", listen)
    lac.sendto(data(0), relay)
    _, upstream = recv(lns)
    lac.sendto(data(2), relay)  # held
    cdn = control(MessageType.CDN, T_LAC, S_LAC, avp_result_code(3), avp_assigned_session_id(S_LNS))
    lns.sendto(cdn, upstream)
    assert recv(lac)[0] == cdn
    assert payload_of(recv(lns)[0]) == (1, b"payload-200-2")  # flushed by the CDN
    # The LAC reuses the session ID; its Ns restart at 0 and are not "duplicates".
    lac.sendto(data(0), relay)
    assert payload_of(recv(lns)[0]) == (0, b"payload-200-0")

    # StopCCN from the LAC: what its sessions held reaches the LNS before the StopCCN.
    lac.sendto(data(5, session_id=201), relay)
    assert payload_of(recv(lns)[0])[1] == b"payload-201-5"
    lac.sendto(data(7, session_id=201), relay)
    stop = control(MessageType.StopCCN, T_LNS, 0, avp_assigned_tunnel_id(T_LAC), avp_result_code(1))
    lac.sendto(stop, relay)
    assert payload_of(recv(lns)[0])[1] == b"payload-201-7"
    assert recv(lns)[0] == stop


def test_lns_to_lac_reordering_is_a_switch(start: Callable[..., Daemon], ports) -> None:
    listen, lns_port = ports
    lns = udp(port=lns_port)
    lac = udp()
    cfg = base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}")
    cfg["reorder"]["lns_to_lac"] = True
    start(cfg)
    lac.sendto(data(None), ("127.0.0.1", listen))
    _, upstream = recv(lns)
    for ns in (0, 2, 1):
        lns.sendto(data(ns, session_id=S_LAC, tunnel_id=T_LAC), upstream)
    got = [payload_of(recv(lac)[0]) for _ in range(3)]
    assert got == [(ns, f"payload-{S_LAC}-{ns}".encode()) for ns in (0, 1, 2)]


def test_ipv6_listen_and_lns(start: Callable[..., Daemon]) -> None:
    need(_has_ipv6_loopback(), "IPv6 loopback ::1")
    listen, lns_port = free_udp_port("::1"), free_udp_port("::1")
    lns = udp("::1", lns_port)
    lac = udp("::1")
    start(base_config([f"[::1]:{listen}"], f"[::1]:{lns_port}"))
    lac.sendto(data(1), ("::1", listen))
    got, upstream = recv(lns)
    assert payload_of(got) == (1, b"payload-200-1")
    lns.sendto(b"\x00\x02v6-reply", upstream)
    got, src = recv(lac)
    assert got == b"\x00\x02v6-reply" and src[:2] == ("::1", listen)


def test_notifies_ready_with_status_then_watchdog_pings_then_stopping(
    start: Callable[..., Daemon], ports
) -> None:
    listen, lns_port = ports
    d = start(
        base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}"),
        env={"WATCHDOG_USEC": "200000"},
    )
    assert "STATUS=relaying 127.0.0.1:" in d.messages[0]
    for _ in range(3):
        d.wait_notify("WATCHDOG=1")
    assert d.terminate() == 0
    d.wait_notify("STOPPING=1")


def test_privileged_port_without_capability_is_one_clear_line(tmp_path: Path) -> None:
    setpriv = need_tool("setpriv")
    # Its own control socket and no metrics: a daemon running on this host at the default
    # socket (or port) would refuse this one for that, before the bind under test.
    config = tmp_path / "c.yaml"
    config.write_text(f"control_socket: {tmp_path / 'c.sock'}\nmetrics: {{enabled: false}}\n")
    res = subprocess.run(
        [
            setpriv,
            "--bounding-set",
            "-net_bind_service",
            "--inh-caps",
            "-net_bind_service",
            sys.executable,
            "-m",
            "l2tpreorder",
            "run",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:1",
            "--lns",
            "127.0.0.1:1702",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROJECT_ROOT,
    )
    assert res.returncode == 1, "binding port 1 without CAP_NET_BIND_SERVICE must fail"
    # One line says why (besides the INFO line naming the configuration in force).
    lines = [line for line in res.stderr.strip().splitlines() if " INFO config: " not in line]
    assert len(lines) == 1, res.stderr
    assert f"INFO config: {config}" in res.stderr
    assert "cannot bind 127.0.0.1:1: permission denied" in lines[0]
    assert "--listen 127.0.0.1:11701" in lines[0]


def test_bad_config_at_startup_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("listen: ['[::1]:99999']\n")
    res = subprocess.run(
        [sys.executable, "-m", "l2tpreorder", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROJECT_ROOT,
    )
    assert res.returncode == 78, "EX_CONFIG: the unit's RestartPreventExitStatus"
    assert res.stderr == (
        f"l2tpreorder: error: {path}: listen[0] = '[::1]:99999': expected an address "
        '"IPv4:PORT" or "[IPv6]:PORT" with PORT 1..65535 (line 1)\n'
    )


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# --- in process: idle peers (the timeout is minutes, so the clock is moved instead) -----------


def test_idle_peer_is_forgotten_after_the_timeout_and_its_held_data_delivered() -> None:
    import uvloop
    from prometheus_client import generate_latest

    from l2tpreorder.daemon.metrics import MetricsConfig, build_registry

    listen, lns_port = free_udp_port(), free_udp_port()
    lns = udp(port=lns_port)
    lac = udp()
    config = config_from_dict(
        {
            "listen": [f"127.0.0.1:{listen}"],
            "lns": f"127.0.0.1:{lns_port}",
            "reorder": {"timeout_ms": 60000},
            "peer_idle_timeout_ms": 61000,
        }
    )

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        relay = Relay(config, loop=loop)
        relay.bind()
        service = relay_service(relay)
        service.start_io()

        async def lns_recv() -> tuple[bytes, Any]:
            return await asyncio.wait_for(loop.run_in_executor(None, recv, lns), 10)

        try:
            lac.sendto(data(0), ("127.0.0.1", listen))
            got, upstream = await lns_recv()
            assert payload_of(got)[0] == 0
            lac.sendto(data(2), ("127.0.0.1", listen))
            for _ in range(100):
                if relay.pipeline.engine.counters.held_packets:
                    break
                await asyncio.sleep(0.01)
            assert relay.pipeline.engine.counters.held_packets == 1
            now = relay.clock()
            assert relay.remove_idle(now + 30) == 0  # quiet, but not for longer than 61 s
            assert relay.counters.peers == 1
            assert relay.remove_idle(now + 62) == 1
            assert relay.counters.peers == 0 and relay.counters.peers_removed_idle == 1
            exported = generate_latest(
                build_registry(MetricsConfig(), service)
            ).decode()
            assert "\nl2tpreorder_peers_idle_expired_total 1.0\n" in exported
            assert "\nl2tpreorder_peers_removed_idle_total 1.0\n" in exported  # deprecated
            got, src = await lns_recv()  # held data went out on the old socket first
            assert payload_of(got) == (1, b"payload-200-2") and src == upstream
            assert relay.pipeline.engine.session_count == 0
            # Back with a new call (set up by the control channel, then Ns from 0 again): a new
            # peer and a fresh session. (Without the ICCN, Ns 0 just behind where the session
            # stopped would be taken for a late duplicate of the old stream.)
            iccn = control(MessageType.ICCN, T_LNS, S_LNS)
            lac.sendto(iccn, ("127.0.0.1", listen))
            assert (await lns_recv())[0] == iccn
            lac.sendto(data(0), ("127.0.0.1", listen))
            got, _ = await lns_recv()
            assert payload_of(got) == (0, b"payload-200-0")
            assert relay.pipeline.engine.counters.sessions_continued == 0
            assert relay.counters.peers == 1
        finally:
            service.stop_io()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def test_metrics_endpoint_reads_the_running_relay(start: Callable[..., Daemon], ports) -> None:
    import re
    import urllib.request

    listen, lns_port = ports
    lns = udp(port=lns_port)
    lac = udp()
    cfg = base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}")
    cfg["metrics"] = {"enabled": True, "listen": "127.0.0.1", "port": 0}
    d = start(cfg)
    url = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", d.wait_log("/metrics"))
    assert url, d.log()
    for ns in (0, 1, 2):
        lac.sendto(data(ns), ("127.0.0.1", listen))
        recv(lns)
    d.reload()
    with urllib.request.urlopen(url.group(1), timeout=10) as response:
        text = response.read().decode()
    assert 'l2tpreorder_socket_received_datagrams_total{direction="lac_to_lns"} 3.0' in text
    assert 'l2tpreorder_socket_sent_datagrams_total{direction="lac_to_lns"} 3.0' in text
    assert 'l2tpreorder_config_reloads_total{result="success"} 1.0' in text
    assert "l2tpreorder_peers 1.0" in text


def _valid_state_file(path: Path, sequencing: str = "renumber") -> bytes:
    """A real state file (one session) as `run` writes it on SIGTERM."""
    from l2tpreorder.core.engine import EngineConfig, Sequencing
    from l2tpreorder.core.pipeline import Pipeline
    from l2tpreorder.daemon.state import save_state

    pipeline = Pipeline(EngineConfig(sequencing=Sequencing(sequencing)))
    pipeline.from_lac(data(7), ("127.0.0.1", 40000), 0.0)
    pipeline.take_output()
    save_state(pipeline.snapshot(), path, {"peers": []})
    return path.read_bytes()


def test_unknown_user_fails_before_the_state_file_is_consumed(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    saved = _valid_state_file(state_file)
    config = tmp_path / "c.yaml"
    lns_port = free_udp_port()
    config.write_text(
        f"listen: ['127.0.0.1:{free_udp_port()}']\nlns: '127.0.0.1:{lns_port}'\n"
        f"state_file: '{state_file}'\nuser: l2r-no-such-user\nmetrics: {{enabled: false}}\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "l2tpreorder", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROJECT_ROOT,
    )
    assert res.returncode == 78, res.stderr
    assert "user = 'l2r-no-such-user': expected an existing user" in res.stderr
    assert "Traceback" not in res.stderr
    assert state_file.read_bytes() == saved, "the saved sessions must survive a config typo"


def test_sigterm_while_the_state_file_is_read_stops_cleanly_and_saves_it(tmp_path: Path) -> None:
    """The state file is a FIFO, so the daemon is provably inside the restore (blocked reading
    it) when SIGTERM arrives; the restored session must be saved again, not lost."""
    import os
    import signal
    import time

    saved = _valid_state_file(tmp_path / "saved.json")
    state_file = tmp_path / "state.json"
    os.mkfifo(state_file)
    lns_port = free_udp_port()
    d = Daemon(
        tmp_path,
        base_config(
            [f"127.0.0.1:{free_udp_port()}"], f"127.0.0.1:{lns_port}", state_file=str(state_file)
        ),
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # opening the write end succeeds once the daemon opened the read end
            try:
                fd = os.open(state_file, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert d.proc.poll() is None, d.log()
                assert time.monotonic() < deadline, "the daemon never opened its state file"
                time.sleep(0.01)
        d.proc.send_signal(signal.SIGTERM)
        # Wait until the kernel delivered it (no longer pending in /proc), i.e. it landed while
        # the daemon waits for the file's bytes; a fixed sleep could lose that race under load.
        while _signal_pending(d.proc.pid, signal.SIGTERM):
            assert time.monotonic() < deadline + 10, "SIGTERM never delivered"
            time.sleep(0.005)
        os.set_blocking(fd, True)
        try:
            os.write(fd, saved)
        except BrokenPipeError:
            pytest.fail(f"the daemon died of the SIGTERM (exit {d.proc.wait(10)}) mid-restore")
        finally:
            os.close(fd)
        assert d.proc.wait(10) == 0, d.log()
        log = d.log()
        assert "restored 1 sessions" in log
        assert "SIGTERM: stopping" in log
        assert "saved state of 1 sessions" in log
        document = json.loads(state_file.read_text())
        saved_sessions = document["directions"]["lac_to_lns"]["sessions"]
        assert [(s["tunnel_id"], s["session_id"]) for s in saved_sessions] == [
            (T_LNS, S_LNS)
        ]
    finally:
        d.stop()


def _signal_pending(pid: int, signum: int) -> bool:
    """Is `signum` still pending for the process (ShdPnd in /proc/PID/status)?"""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("ShdPnd:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_bind_failure_closes_what_the_relay_opened() -> None:
    """In process: a failed bind returns 1 and leaves no descriptor (timerfd, socket) open."""
    import os
    import socket

    import uvloop

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    config = config_from_dict(
        {
            "listen": [f"127.0.0.1:{free_udp_port()}", f"127.0.0.1:{taken.getsockname()[1]}"],
            "lns": f"127.0.0.1:{free_udp_port()}",
            "metrics": {"enabled": False},
        }
    )

    def open_fds() -> dict[str, str]:
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # the listing's own descriptor, closed by now
                continue
        return fds

    async def scenario() -> tuple[int, dict[str, str], dict[str, str]]:
        before = open_fds()
        relay = Relay(config, loop=asyncio.get_running_loop())
        code = await relay_service(relay, config).run()
        return code, before, open_fds()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code, before, after = runner.run(scenario())
    finally:
        taken.close()
    assert code == 1
    leaked = {fd: what for fd, what in after.items() if fd not in before}
    assert leaked == {}


def test_reloaded_drop_report_interval_applies_at_once() -> None:
    """In process (the old interval is an hour): a reload to 100 ms reports the next tick."""
    import dataclasses

    import uvloop

    from l2tpreorder.daemon.sdnotify import Notifier
    from l2tpreorder.daemon.service import Service

    listen = free_udp_port()
    config = config_from_dict(
        {
            "listen": [f"127.0.0.1:{listen}"],
            "lns": f"127.0.0.1:{free_udp_port()}",
            "allow": ["127.0.0.1/32"],
            "logging": {"drop_report_interval_ms": 3_600_000},
            "metrics": {"enabled": False},
        }
    )
    reloaded = dataclasses.replace(config, drop_report_interval=0.1)
    denied = udp("127.0.0.2")

    async def scenario() -> list[str]:
        relay = Relay(config, loop=asyncio.get_running_loop())
        daemon = Service(config, relay, lambda: reloaded, notifier=Notifier(environ={}))
        relay.bind()
        daemon.start_io()
        try:
            reporter = daemon.reporter
            assert reporter.tick(relay.clock()) == []  # the next report is an hour out
            denied.sendto(data(None), ("127.0.0.1", listen))
            for _ in range(500):
                if relay.counters.dropped_not_allowed:
                    break
                await asyncio.sleep(0.01)
            assert relay.counters.dropped_not_allowed == 1
            daemon.reload()
            reporter.tick(relay.clock())  # the first tick after the reload schedules it
            return reporter.tick(relay.clock() + 0.2)
        finally:
            daemon.stop_io()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            lines = runner.run(scenario())
    finally:
        denied.close()
    assert lines == [
        "1 dropped in the last 0.1 s (reason not_allowed, 1 total); top sources: 127.0.0.2 x1"
    ]


def test_restoring_a_state_saved_in_another_sequencing_mode_warns(
    start: Callable[..., Daemon], tmp_path: Path, ports
) -> None:
    listen, lns_port = ports
    state_file = tmp_path / "state.json"
    _valid_state_file(state_file, sequencing="preserve")
    d = start(
        base_config(
            [f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", state_file=str(state_file)
        )
    )
    log = d.wait_log("restored 1 sessions")
    assert (
        f"state file {state_file} was saved with reorder.sequencing = preserve, running renumber"
        in log
    )


def test_config_error_under_journald_is_logged_at_error_priority(tmp_path: Path) -> None:
    """stderr is "the journal" (JOURNAL_STREAM names its device:inode, as systemd sets it): the
    reason carries `<3>`, so `journalctl -p err` shows it, and the exit status is EX_CONFIG."""
    config = tmp_path / "c.yaml"
    config.write_text("reorder: {timeout_ms: -5}\n")
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        st = os.fstat(err.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        res = subprocess.run(
            [sys.executable, "-m", "l2tpreorder", "run", "--config", str(config)],
            stderr=err, stdout=subprocess.DEVNULL, timeout=30, cwd=PROJECT_ROOT, env=env,
        )
    assert res.returncode == 78
    text = err_path.read_text()
    assert text.startswith("<3>l2tpreorder: error: ") and "timeout_ms" in text, text


def test_missing_state_file_directory_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"listen: ['127.0.0.1:{free_udp_port()}']\nlns: '127.0.0.1:{free_udp_port()}'\n"
        f"state_file: '{tmp_path}/nonexistent/state.json'\nmetrics: {{enabled: false}}\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "l2tpreorder", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=30, cwd=PROJECT_ROOT,
    )
    assert res.returncode == 78, res.stderr
    assert "does not exist" in res.stderr and "Traceback" not in res.stderr
