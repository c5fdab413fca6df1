"""`replay pcap --config FILE` with `reorder.adaptive: true` (issue 12's "done means"): the
report's table and JSON show each session's learnt timeout next to its hold times."""

from __future__ import annotations

import io
import json
import random
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from bench.adaptive_eval import LNS, split_pair, write_capture
from l2tpreorder import cli
from l2tpreorder.tools.impair import ImpairConfig, impair_file


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def capture(tmp_path: Path) -> Path:
    """Two split-pair sessions for 1 s (small half 0.1-0.4 ms early), 0.5% lost by impair."""
    base, out = tmp_path / "base.pcap", tmp_path / "split.pcap"
    write_capture(base, split_pair(random.Random(7), 2, 1.0))
    impair_file(str(base), str(out), ImpairConfig(seed=1, loss=0.005, lns_address=LNS))
    return out


def test_replay_reports_learnt_timeouts_and_hold_times(tmp_path: Path) -> None:
    pcap = capture(tmp_path)
    conf = tmp_path / "c.yaml"
    conf.write_text("reorder: {adaptive: true, timeout_ms: 100}\n")
    code, text, err = run_cli("replay", "pcap", str(pcap), "--config", str(conf), "--json")
    assert code == 0, err
    doc = json.loads(text)
    assert doc["engine"]["adaptive"] is True and doc["engine"]["min_timeout_ms"] == 2
    assert len(doc["sessions"]) == 2
    for s in doc["sessions"]:
        assert 2 <= s["learned_timeout_ms"] <= 100
        assert s["learned_timeout_ms"] < 10  # 0.1-0.4 ms of reordering: down near the floor
        assert s["hold_ms"]["p50"] < 1 and s["hold_ms"]["count"] > 100
        assert s["late"] == 0
    code, table, err = run_cli("replay", "pcap", str(pcap), "--config", str(conf))
    assert code == 0, err
    assert "adaptive reorder timeout 2..100 ms" in table
    assert any(line.endswith("timeout ms") for line in table.splitlines())
    fixed = tmp_path / "f.yaml"
    fixed.write_text("reorder: {timeout_ms: 100, adaptive: false}\n")  # adaptive is the default
    code, text, err = run_cli("replay", "pcap", str(pcap), "--config", str(fixed), "--json")
    assert code == 0, err
    assert all(s["learned_timeout_ms"] is None for s in json.loads(text)["sessions"])
