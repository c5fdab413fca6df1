"""A reload says what changed (in the file's keys and units), which flag overrides the file,
which change needs a restart, and keeps a gauge while the file fails to load (real daemon, real
metrics endpoint; the report itself from config.SETTINGS, checked directly below)."""

from __future__ import annotations

import dataclasses
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from l2tpreorder.config import REBIND_KEYS, SETTINGS, Config, config_from_dict, with_overrides
from l2tpreorder.daemon.reload_report import RESTART, changes, overridden, restart_needed
from tests.daemon.test_daemon import base_config
from tests.daemon_harness import WAIT, Daemon, free_udp_port


def gauge(url: str) -> str:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        text = response.read().decode()
    found = re.search(r"^l2tpreorder_config_last_reload_successful (\S+)$", text, re.MULTILINE)
    assert found, text
    # The deprecated name (kept one release) says the reverse.
    old = re.search(r"^l2tpreorder_config_load_failing (\S+)$", text, re.MULTILINE)
    assert old and float(old.group(1)) == 1 - float(found.group(1)), text
    return found.group(1)


@pytest.mark.integration
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
        log = d.wait_log("reload: reorder.timeout_ms: 100 -> 250")
        assert "reload: relay.max_peers: 4096 -> 7" in log
        assert "reload: logging.level = info from --log-level overrides the file's warning" in log
        # base_config writes the flat relay keys: warned once, at start, not again on reload
        assert log.count("`listen` is deprecated: write `relay.listen`") == 1
        assert gauge(url.group(1)) == "1.0"

        d.config_path.write_text("reorder: [\n")
        d.reload()
        d.wait_log("reload failed, keeping the running configuration")
        assert gauge(url.group(1)) == "0.0", "stays 0 while the file is broken"
        d.write_config(cfg)
        d.reload()
        d.wait_log("reload: no setting changed")
        assert gauge(url.group(1)) == "1.0"
    finally:
        d.stop()


def test_changes_are_in_the_files_keys_and_units() -> None:
    old = config_from_dict({"reorder": {"timeout_ms": 100}})
    new = config_from_dict(
        {
            "reorder": {"timeout_ms": 40, "sequencing": "strip"},
            "relay": {"max_peers": 7, "lns": "127.0.0.1:1703"},
            "logging": {"drop_report_interval_ms": 500},
            "metrics": {"port": 9999},
            "state_file_max_age_ms": 60000,
        }
    )
    assert changes(old, new) == [
        "relay.lns: 127.0.0.1:1702 -> 127.0.0.1:1703",
        "relay.max_peers: 4096 -> 7",
        "reorder.timeout_ms: 100 -> 40",
        "reorder.sequencing: renumber -> strip",
        "logging.drop_report_interval_ms: 10000 -> 500",
        "metrics.port: 17010 -> 9999",
        "state_file_max_age_ms: 300000 -> 60000",
    ]
    assert changes(new, new) == []
    # the source file and the deprecation warnings are not settings
    flat = config_from_dict({"max_peers": 7}, source="a.yaml")
    assert changes(config_from_dict({"relay": {"max_peers": 7}}), flat) == []


def test_every_listed_setting_is_reported_when_it_changes() -> None:
    """Derived from SETTINGS: a new setting is in the report without a line here."""
    changed = {
        "mode": "inpath", "relay.listen": ["127.0.0.1:11701"], "relay.lns": "127.0.0.1:11702",
        "relay.allow": ["192.0.2.0/24"], "relay.max_peers": 3,
        "relay.peer_idle_timeout_ms": 61000, "relay.upstream_bind": "127.0.0.1",
        "relay.socket_buffer_bytes": 8192, "relay.udp_gso": True, "inpath.queues": "2-3",
        "inpath.queue_maxlen": 5, "inpath.allow": ["198.51.100.0/24"], "reorder.timeout_ms": 5,
        "reorder.adaptive": False,
        "reorder.min_timeout_ms": 1, "reorder.sequencing": "preserve", "reorder.late": "drop",
        "reorder.max_held_per_session": 3, "reorder.max_held_bytes": 5, "reorder.resync_after": 3,
        "reorder.max_sessions": 5, "reorder.session_idle_timeout_ms": 5,
        "reorder.lns_to_lac": True, "logging.level": "debug",
        "logging.drop_report_interval_ms": 200, "metrics.enabled": False,
        "metrics.listen": "::1", "metrics.port": 1, "metrics.per_session": True,
        "metrics.per_session_top_n": 5, "metrics.tls_cert": "/c", "metrics.tls_key": "/k",
        "state_file": "/s.json", "state_file_max_age_ms": 5, "user": "root",
        "control_socket": "/c.sock",
    }  # fmt: skip
    listed = [s.key for s in SETTINGS if s.listed]
    assert set(changed) == set(listed), "give every listed setting a changed value above"
    data: dict[str, Any] = {}
    for key, value in changed.items():
        section, _, name = key.rpartition(".")
        if section:
            data.setdefault(section, {})[name] = value
        else:
            data[key] = value
    lines = changes(Config(), config_from_dict(data))
    assert [line.split(": ", 1)[0] for line in lines] == listed


def test_overridden_names_the_flag_and_the_files_key() -> None:
    file_only = config_from_dict({"reorder": {"timeout_ms": 100}, "logging": {"level": "info"}})
    effective = with_overrides(file_only, timeout_ms=40, log_level="debug")
    assert overridden(file_only, effective) == [
        "reorder.timeout_ms = 40 from --timeout overrides the file's 100",
        "logging.level = debug from --log-level overrides the file's info",
    ]
    assert overridden(file_only, file_only) == []


def test_restart_needed_names_what_a_reload_cannot_apply() -> None:
    relay = Config()
    new = config_from_dict(
        {
            "relay": {"lns": "127.0.0.1:1703", "udp_gso": True, "max_peers": 9},
            "reorder": {"timeout_ms": 5},
            "control_socket": "/run/other.sock",
            "user": "nobody",
            "inpath": {"queues": "0-3"},  # not the running mode's section
        }
    )
    assert restart_needed(relay, new) == [
        f"relay.lns changed to 127.0.0.1:1703 but a reload cannot apply it "
        f"(still 127.0.0.1:1702): {RESTART}",
        f"relay.udp_gso changed to true but a reload cannot apply it (still false): {RESTART}",
        f"user changed to nobody but a reload cannot apply it (still null): {RESTART}",
        f"control_socket changed to /run/other.sock but a reload cannot apply it "
        f"(still null): {RESTART}",
    ]
    inpath = dataclasses.replace(relay, mode="inpath")
    to_relay = dataclasses.replace(new, mode="relay")
    keys = [line.split(" ", 1)[0] for line in restart_needed(inpath, to_relay)]
    assert keys == ["mode", "inpath.queues", "user", "control_socket"]
    # the order of the listen sockets is not a change
    two = dataclasses.replace(relay, listen=(("127.0.0.1", 1), ("127.0.0.2", 1)))
    swapped = dataclasses.replace(relay, listen=(("127.0.0.2", 1), ("127.0.0.1", 1)))
    assert restart_needed(two, swapped) == []


def test_restart_settings_cover_what_the_relay_cannot_rebind() -> None:
    restart_fields = {s.field for s in SETTINGS if s.restart}
    assert set(REBIND_KEYS) <= restart_fields
    assert {"mode", "inpath_queues", "user", "state_file"} <= restart_fields
