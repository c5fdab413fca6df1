"""LNS health: a stopped LNS is named in the log, the metrics and `status` (real sockets)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import uvloop

from l2tpreorder.config import config_from_dict
from l2tpreorder.daemon.relay.adapter import Relay
from tests.conftest import PROJECT_ROOT, need
from tests.daemon.test_daemon import _has_ipv6_loopback, base_config, data
from tests.daemon_harness import WAIT, Daemon, free_udp_port, recv, udp
from tests.netns import wait_until
from tests.relay_service import relay_service

pytestmark = pytest.mark.integration


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return str(response.read().decode())


def test_nothing_listening_at_the_lns_address_is_said_plainly(tmp_path: Path) -> None:
    listen, lns_port = free_udp_port(), free_udp_port()  # nobody binds lns_port
    cfg = base_config(
        [f"127.0.0.1:{listen}"],
        f"127.0.0.1:{lns_port}",
        control_socket=str(tmp_path / "control.sock"),
    )
    cfg["metrics"] = {"enabled": True, "listen": "127.0.0.1", "port": 0}
    d = Daemon(tmp_path, cfg)
    lac = udp()
    try:
        d.ready()
        found = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", d.wait_log("/metrics"))
        assert found, d.log()
        assert "l2tpreorder_lns_unresponsive 0.0" in scrape(found.group(1))
        # The ICMP error comes back for the first datagram; keep sending until it is logged,
        # as a LAC retransmitting its SCCRQ does (bounded by the deadline).
        deadline = time.monotonic() + WAIT
        expected = (
            f"LNS 127.0.0.1:{lns_port} does not answer: ICMP port unreachable: "
            "nothing listens at that address"
        )
        while expected not in d.log():
            assert time.monotonic() < deadline, d.log()
            lac.sendto(data(None), ("127.0.0.1", listen))
            time.sleep(0.05)
        assert d.log().count(expected) == 1, "logged once per episode, not per datagram"
        for _ in range(5):
            lac.sendto(data(None), ("127.0.0.1", listen))
        text = scrape(found.group(1))
        assert "l2tpreorder_lns_unresponsive 1.0" in text
        errors = re.search(r"^l2tpreorder_lns_icmp_errors_total (\S+)$", text, re.MULTILINE)
        assert errors and float(errors.group(1)) >= 1
        status = subprocess.run(
            [sys.executable, "-m", "l2tpreorder", "status", "-c", str(d.config_path), "--json"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT * 3,
            check=True,
        )
        health = json.loads(status.stdout)["lns_health"]
        assert health["answering"] is False
        assert "port unreachable" in health["problem"]

        # The LNS comes up and answers: the episode ends, said once.
        lns = udp(port=lns_port)
        lac.sendto(data(None), ("127.0.0.1", listen))
        _, upstream = recv(lns)
        lns.sendto(data(None), upstream)
        recv(lac)
        d.wait_log(f"LNS 127.0.0.1:{lns_port} answers again")
        assert "l2tpreorder_lns_unresponsive 0.0" in scrape(found.group(1))
    finally:
        d.stop()


def test_lac_traffic_and_no_answer_for_the_silence_period_is_unresponsive() -> None:
    """An LNS that takes datagrams but never answers (no ICMP): in process, short period."""
    lns = udp()
    listen = free_udp_port()
    config = config_from_dict(
        {
            "listen": [f"127.0.0.1:{listen}"],
            "lns": f"127.0.0.1:{lns.getsockname()[1]}",
            "metrics": {"enabled": False},
        }
    )
    lac = udp()

    async def scenario() -> tuple[str | None, str | None, str | None, str | None]:
        relay = Relay(config, loop=asyncio.get_running_loop())
        relay.health.silence_after = 0.5
        relay.bind()
        service = relay_service(relay)
        service.start_io()
        try:
            start = relay.clock()
            relay.health.tick(start)
            lac.sendto(data(None), ("127.0.0.1", listen))
            deadline = time.monotonic() + WAIT
            while relay.counters.tx_datagrams_lns < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            relay.health.tick(start + 0.1)  # LAC traffic seen; the silence starts
            relay.health.tick(start + 0.4)
            before = relay.health.reason
            relay.health.tick(start + 0.7)
            during = relay.health.reason
            _, upstream = lns.recvfrom(65535)
            stranger = udp()  # anyone else writing to the upstream socket is not the LNS
            stranger.sendto(data(None), upstream)
            while relay.counters.dropped_not_from_lns < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            relay.health.tick(start + 0.75)
            after_stranger = relay.health.reason
            stranger.close()
            lns.sendto(data(None), upstream)
            while relay.counters.rx_datagrams_lns < 2:  # the stranger's, then the LNS's
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            relay.health.tick(start + 0.8)
            return before, during, after_stranger, relay.health.reason
        finally:
            service.stop_io()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        before, during, after_stranger, after = runner.run(scenario())
    assert before is None
    assert during is not None and "nothing came back from it for 1 s" in during
    assert after_stranger == during, "a stranger's datagram is not the LNS answering"
    assert after is None


def test_ipv6_lns_port_unreachable_is_seen_too(tmp_path: Path) -> None:
    """IPV6_RECVERR: the same line for an IPv6 LNS with nothing listening."""

    need(_has_ipv6_loopback(), "IPv6 loopback ::1")
    listen, lns_port = free_udp_port("::1"), free_udp_port("::1")
    cfg = base_config([f"[::1]:{listen}"], f"[::1]:{lns_port}")
    d = Daemon(tmp_path, cfg)
    lac = udp("::1")
    try:
        d.ready()
        expected = f"LNS [::1]:{lns_port} does not answer: ICMP port unreachable"
        deadline = time.monotonic() + WAIT
        while expected not in d.log():
            assert time.monotonic() < deadline, d.log()
            lac.sendto(data(None), ("::1", listen))
            time.sleep(0.05)
    finally:
        d.stop()


def _status(d: Daemon, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l2tpreorder", "status", "-c", str(d.config_path), *extra],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=WAIT * 3, check=True,
    )  # fmt: skip


def test_right_after_start_the_lns_is_unknown_not_answering(tmp_path: Path) -> None:
    """Nothing heard from the LNS yet proves nothing either way: status says "unknown, no
    traffic yet" (it said `answering: true` for an LNS that was not even there, issue 24),
    and "answering" once the LNS has sent something back."""
    listen = free_udp_port()
    lns = udp()
    lns_port = lns.getsockname()[1]
    cfg = base_config(
        [f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", control_socket=str(tmp_path / "c.sock")
    )
    d = Daemon(tmp_path, cfg)
    lac = udp()
    try:
        d.ready()
        health = json.loads(_status(d, "--json").stdout)["lns_health"]
        assert health == {"answering": None, "state": "unknown, no traffic yet", "problem": None}
        assert f"LNS 127.0.0.1:{lns_port}: unknown, no traffic yet" in _status(d).stdout

        lac.sendto(data(None), ("127.0.0.1", listen))
        _, upstream = recv(lns)
        lns.sendto(data(None), upstream)
        recv(lac)  # relayed back to the LAC: the relay has read the LNS's answer

        def answering() -> bool:
            return bool(json.loads(_status(d, "--json").stdout)["lns_health"]["answering"])

        wait_until("status says the LNS answers", answering, timeout=WAIT)
        health = json.loads(_status(d, "--json").stdout)["lns_health"]
        assert health == {"answering": True, "state": "answering", "problem": None}
        assert f"LNS 127.0.0.1:{lns_port}: answering" in _status(d).stdout
    finally:
        d.stop()
        lac.close()
        lns.close()
