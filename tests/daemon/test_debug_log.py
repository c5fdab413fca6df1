"""`--log-level debug` says what happened to whom; drop reports name refused sources and the
last interval is reported at stop (real daemon, real sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from l2tpreorder.wire import MessageType, avp_message_type, avp_result_code, build_control
from tests.daemon.test_daemon import data, payload_of
from tests.daemon_harness import Daemon, free_udp_port, recv, udp

pytestmark = pytest.mark.integration


def test_debug_lines_and_the_final_drop_report(tmp_path: Path) -> None:
    listen, lns_port = free_udp_port(), free_udp_port()
    lns, lac, stranger = udp(port=lns_port), udp(), udp("127.0.0.2")
    cfg = {
        "listen": [f"127.0.0.1:{listen}"],
        "lns": f"127.0.0.1:{lns_port}",
        "allow": ["127.0.0.1/32"],
        "reorder": {"timeout_ms": 60000},
        # An hour: only the report at stop can show these drops.
        "logging": {"level": "info", "drop_report_interval_ms": 3_600_000},
        "metrics": {"enabled": False},
        "control_socket": str(tmp_path / "control.sock"),
    }
    d = Daemon(tmp_path, cfg, args=["--log-level", "debug"])
    try:
        d.ready()
        relay = ("127.0.0.1", listen)
        lac.sendto(data(0), relay)
        assert payload_of(recv(lns)[0])[0] == 0
        lac.sendto(data(0), relay)  # a duplicate
        stranger.sendto(data(0), relay)
        stranger.sendto(data(1), relay)
        here = f"127.0.0.1:{lac.getsockname()[1]}"
        d.wait_log(f"dropped from LAC {here}: tunnel_id 100 session_id 200 Ns 0: duplicate")
        d.wait_log(f"refused datagram from 127.0.0.2:{stranger.getsockname()[1]}: source not in")
        d.wait_log(f"session started: LAC {here} tunnel_id 100 session_id 200, at Ns")
        cdn = build_control(100, 200, 0, 0, [avp_message_type(MessageType.CDN), avp_result_code(1)])
        lac.sendto(cdn, relay)
        assert recv(lns)[0] == cdn
        d.wait_log(f"session ended: LAC {here} tunnel_id 100 session_id 200, CDN from the LAC side")
        assert d.terminate() == 0
        log = d.log()
        assert (
            "2 dropped before stopping (reason not_allowed, 2 total); top sources: 127.0.0.2 x2"
            in (log)
        )
        assert "1 dropped before stopping (reason lac_to_lns:duplicate, 1 total)" in log
    finally:
        d.stop()
