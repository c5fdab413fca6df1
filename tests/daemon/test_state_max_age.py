"""`state_file_max_age_ms` decides which state file a start restores, not the peer idle
timeout (real daemon, relay mode; the in-path worker passes the same setting)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.daemon.test_daemon import _valid_state_file, base_config
from tests.daemon_harness import Daemon, free_udp_port

pytestmark = pytest.mark.integration


def _aged_state_file(path: Path, age_s: float) -> None:
    _valid_state_file(path)
    document = json.loads(path.read_text())
    document["saved_at"] = time.time() - age_s
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("max_age_ms", "restored"),
    [(60_000, False), (3_600_000, True)],
    ids=["older-than-max-age", "within-max-age"],
)
def test_state_file_max_age_decides_the_restore(
    tmp_path: Path, max_age_ms: int, restored: bool
) -> None:
    state_file = tmp_path / "state.json"
    _aged_state_file(state_file, age_s=600)  # 10 minutes: past the 5-minute peer idle default
    cfg = base_config(
        [f"127.0.0.1:{free_udp_port()}"],
        f"127.0.0.1:{free_udp_port()}",
        state_file=str(state_file),
        state_file_max_age_ms=max_age_ms,
    )
    cfg["relay"] = {"listen": cfg.pop("listen"), "lns": cfg.pop("lns")}
    d = Daemon(tmp_path, cfg)
    try:
        d.ready()
        if restored:
            log = d.wait_log("restored 1 sessions")
            assert "older than" not in log
        else:
            log = d.wait_log("older than 60 s; ignored, starting afresh")
            assert "restored" not in log
        assert not state_file.exists()  # consumed either way
        assert "deprecated" not in log  # the sectioned file: no warning
    finally:
        d.stop()
