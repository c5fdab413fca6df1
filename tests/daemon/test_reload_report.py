"""A reload says what changed, which flag overrides the file, and keeps a gauge while the file
fails to load (real daemon, real metrics endpoint)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from tests.daemon.test_daemon import base_config
from tests.daemon_harness import WAIT, Daemon, free_udp_port

pytestmark = pytest.mark.integration


def gauge(url: str) -> str:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        text = response.read().decode()
    found = re.search(r"^l2tpreorder_config_load_failing (\S+)$", text, re.MULTILINE)
    assert found, text
    return found.group(1)


def test_reload_logs_changes_overrides_and_the_failing_gauge(tmp_path: Path) -> None:
    cfg = base_config(
        [f"127.0.0.1:{free_udp_port()}"],
        f"127.0.0.1:{free_udp_port()}",
        timeout_ms=100,
        control_socket=str(tmp_path / "control.sock"),
    )
    cfg["metrics"] = {"enabled": True, "listen": "127.0.0.1", "port": 0}
    d = Daemon(tmp_path, cfg, args=["--log-level", "info"])
    try:
        d.ready()
        url = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", d.wait_log("/metrics"))
        assert url, d.log()
        cfg["reorder"]["timeout_ms"] = 250
        cfg["max_peers"] = 7
        cfg["logging"]["level"] = "warning"
        d.write_config(cfg)
        d.reload()
        log = d.wait_log("reload: engine.reorder_timeout: 0.1 -> 0.25")
        assert "reload: max_peers: 4096 -> 7" in log
        assert "reload: log_level = info from --log-level overrides the file's warning" in log
        assert gauge(url.group(1)) == "0.0"

        d.config_path.write_text("reorder: [\n")
        d.reload()
        d.wait_log("reload failed, keeping the running configuration")
        assert gauge(url.group(1)) == "1.0", "stays 1 while the file is broken"
        d.write_config(cfg)
        d.reload()
        d.wait_log("reload: no setting changed")
        assert gauge(url.group(1)) == "0.0"
    finally:
        d.stop()
