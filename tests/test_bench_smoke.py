"""Smoke tests of the benchmark harness (bench/): it runs and counts right. No timing asserted.

Loopback only; every process is started here, bounded in time, and stopped by its pid.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import udp
from bench.soak import UpstreamSources
from tests.conftest import PROJECT_ROOT

PY = sys.executable


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-m", *args], cwd=PROJECT_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=5)
    return out


def relay_chain(loadgen_args: list[str], sessions: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """loadgen -> baseline forwarder -> sink; returns (what was sent, what the sink saw)."""
    sink = start("bench.sink", "--sessions", str(sessions), "--latency", "--max-seconds", "60")
    relay = None
    try:
        assert sink.stdout is not None
        sink_port = json.loads(sink.stdout.readline())["port"]
        port = udp.free_udp_port()
        # The same 4 MiB buffer `make bench` gives the baseline: with the ~200 KiB default a
        # scheduling stall of a few tens of ms on a busy 2-core VM overflows it, and this test
        # is about counting, not about surviving stalls.
        relay = start("bench.baseline_forwarder", "--listen", f"127.0.0.1:{port}",
                      "--target", f"127.0.0.1:{sink_port}", "--rcvbuf", str(4 << 20))
        assert udp.wait_until_bound(port, relay), "baseline forwarder exited or never bound"
        gen = subprocess.run(
            [PY, "-m", "bench.loadgen", "--target", f"127.0.0.1:{port}",
             "--sessions", str(sessions), *loadgen_args],
            cwd=PROJECT_ROOT, text=True, capture_output=True, timeout=60, check=True)
        sent = json.loads(gen.stdout)
        wait_until_received(sink, sent["sent"] + sent["warmup_sent"])
    finally:
        if relay is not None:
            stop(relay)
        out = stop(sink)
    got = json.loads(out.strip().splitlines()[-1])
    return sent, got


def wait_until_received(sink: subprocess.Popen[str], expected: int, timeout: float = 15.0) -> None:
    """Ask the sink (SIGUSR1) how much has arrived until it is all `expected` (bounded): what
    the relay still holds or has queued must not count as lost. Short of it, the caller's exact
    count assertions say what was missing."""
    assert sink.stdout is not None
    limit = time.monotonic() + timeout
    while time.monotonic() < limit and sink.poll() is None:
        sink.send_signal(signal.SIGUSR1)
        line = sink.stdout.readline()  # the sink answers within its 50 ms receive timeout
        if json.loads(line)["progress_received"] >= expected:
            return
        time.sleep(0.05)


def test_loadgen_baseline_sink_in_order_at_low_rate() -> None:
    sent, got = relay_chain(["--rate", "3000", "--duration", "1"], sessions=20)
    assert sent["warmup_sent"] == 20
    assert sent["sent"] > 1000
    assert got["received"] == sent["sent"] + sent["warmup_sent"]
    assert got["unique"] == got["received"]
    assert got["received_measured"] == sent["sent"]
    assert got["out_of_order"] == 0 and got["duplicates"] == 0 and got["missing"] == 0
    assert got["header_mismatch"] == 0 and got["foreign"] == 0
    assert got["sessions_seen"] == 20
    assert got["latency_normal_ns"]["count"] == sent["kinds"]["NORMAL"]
    assert got["latency_normal_ns"]["p50"] > 0


def test_planned_swaps_and_losses_are_what_the_sink_counts() -> None:
    """The baseline does not reorder: a swap reaches the sink out of order, a loss as a gap."""
    sent, got = relay_chain(
        ["--rate", "3000", "--duration", "1", "--swaps", "0.1", "--loss", "0.02",
         "--hold-window", "0.05", "--seed", "3"],
        sessions=10,
    )
    kinds = sent["kinds"]
    assert kinds["EARLY"] == kinds["LATE"] > 0
    assert sent["intended_lost"] == kinds["AFTER_GAP"] > 0
    assert got["received_measured"] == sent["sent"]
    assert got["out_of_order"] == kinds["LATE"]
    assert got["missing"] == sent["intended_lost"] + sent["split_pair_at_end"]
    assert got["received_by_kind"]["EARLY"] == kinds["EARLY"]
    assert got["latency_after_gap_ns"]["count"] == kinds["AFTER_GAP"]


def test_engine_bench_tiny() -> None:
    proc = subprocess.run([PY, "-m", "bench.engine_bench", "--quick", "--json"],
                          cwd=PROJECT_ROOT, text=True, capture_output=True, timeout=120,
                          check=True)
    result = json.loads(proc.stdout)
    cases = {(c["sessions"], c["pattern"]): c for c in result["cases"]}
    assert set(cases) == {(s, p) for s in (1, 100) for p in ("in_order", "swaps", "loss")}
    for c in cases.values():
        assert c["engine_ns_per_packet"] > 0 and c["plain_ns_per_packet"] > 0
        assert c["batch_ns_per_packet"] > 0  # receive_many, its counters checked equal
    in_order = cases[(100, "in_order")]
    assert in_order["engine_counters"]["forwarded_in_order"] == in_order["packets"]
    swaps = cases[(100, "swaps")]["engine_counters"]
    assert swaps["dropped"] == 0 and swaps["released"] > 0
    loss = cases[(100, "loss")]["engine_counters"]
    assert loss["dropped"] == 0
    assert loss["released"] + loss["held_packets_at_end"] > 0  # a gap made packets wait
    assert result["rss"]["sessions"] == 1000
    assert result["rss"]["bytes_per_idle_session"] > 0


@pytest.mark.slow
def test_run_smoke_writes_results_and_headline(tmp_path: Path) -> None:
    """The whole runner, with the baseline standing in for the daemon (ratio ~1 by design)."""
    out = tmp_path / "bench.json"
    stand_in = ("{python} -m bench.baseline_forwarder --listen {listen} --target {lns} "
                "--rcvbuf {rcvbuf}")
    proc = subprocess.run(
        [PY, "-m", "bench.run", "--smoke", "--nice", "0", "--out", str(out),
         "--plot", str(tmp_path / "plot.png"), "--daemon-cmd", stand_in],
        cwd=PROJECT_ROOT, text=True, capture_output=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    last = lines[-1]
    assert last.startswith("loss-free ratio daemon/baseline: ")
    float(last.rsplit(" ", 1)[1])
    # Issue 23's lines just above it, in this order; a stand-in daemon has no builds.
    names = [line.split(":")[0] for line in lines[-5:-1]]
    assert names == ["loss-free ratio inpath/relay", "loss-free ratio compiled/pure relay",
                     "loss-free ratio compiled/pure inpath", "loss-free ratio inpath/ceiling"]
    assert "n/a (a stand-in --daemon-cmd has no builds)" in lines[-4]
    summary = json.loads(out.read_text())
    assert summary["baseline"]["loss_free"]["loss_free_pps"] > 0
    assert summary["daemon"]["loss_free"]["loss_free_pps"] > 0
    labels = {t["label"] for t in summary["trials"]}
    assert {"ceiling", "search", "overload", "latency", "lateness"} <= labels
    for t in summary["trials"]:
        assert t["header_mismatch"] == 0
        assert t["received"] <= t["sent"]
    assert summary["engine"]["rss"]["sessions"] == 1000


def test_soak_runs_and_reconciles(tmp_path: Path) -> None:
    """`bench.soak` (the 15-minute memory figure in docs/sessions.md), shrunk to seconds: the
    relay reads every datagram, the LNS checker sees every packet sent once and in order, and
    the duplicates sent are exactly the duplicates dropped."""
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [PY, "-m", "bench.soak", "--seconds", "12", "--rate", "1500", "--sessions", "50",
         "--peers", "10", "--cap", "60", "--idle-seconds", "4", "--warmup", "4",
         "--json", str(out)],
        cwd=PROJECT_ROOT, text=True, capture_output=True, timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["problems"] == [] and result["violations"] == 0
    sent = result["sent"]
    assert sent["sent"] > 5000 and sent["copies"] > 0 and sent["lac_cdns"] > 0
    assert result["lns"]["data"] == sent["sent"]
    assert result["lns"]["lns_cdns"] == sent["lns_cdns"] > 0
    assert result["dropped"]["duplicate"] == sent["copies"]
    assert result["sessions"]["sessions_started_total"] > 0
    assert len(result["rss_kib"]) >= 2
    # Every sending peer's upstream source was checked (one rests from the start), none moved.
    assert result["lns"]["tunnels_seen"] >= 9
    assert result["lns"]["source_violations"] == result["lns"]["source_changes_after_pause"] == 0


def test_soak_source_check_flags_a_new_port_only_within_one_pause_epoch() -> None:
    """The soak checker's rule (issue 20): a peer's upstream source may change after it paused
    (a new epoch from the harness), never while it kept sending."""
    sources = UpstreamSources()
    a, b, c = ("127.1.2.3", 40000), ("127.1.2.3", 40001), ("127.1.2.3", 40002)
    assert sources.check(1000, 5, 1, a) == ""
    assert sources.check(1000, 6, 1, a) == ""  # another session of the same peer, same socket
    assert sources.check(1000, 5, 2, b) == ""  # after a pause: allowed, counted
    moved = sources.check(1000, 7, 2, c)  # the same epoch: the LAC kept sending
    assert "session (1000, 7) came from 127.1.2.3:40002" in moved and "40001" in moved
    assert sources.check(1001, 5, 2, a) == ""  # another peer: its own record
    assert (sources.changes, sources.violations) == (1, 1)
