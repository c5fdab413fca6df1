"""The bench's C programs (bench/c/): they build, and do on real sockets what the bench relies on.

The generator must send what bench/loadgen.py sends (the sink's counts and the bytes on the
wire), and the NFQUEUE reader must bind a queue and pass every queued packet (a queue without
--queue-bypass drops everything when the reader does not answer, so passing proves it).
Loopback and a namespace of our own only; every process is started here and stopped by pid.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import cprogs, run_builds
from bench.loadgen import Template
from bench.marker import TRAILER, TRAILER_SIZE, Kind
from tests.conftest import need_root, need_tool
from tests.netns import NetNs, wait_until
from tests.test_bench_smoke import start, stop, wait_until_received

QUEUE = 7


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both programs, built fresh here (not the bench's cached build) with the bench's flags."""
    need_tool("gcc")
    where = tmp_path_factory.mktemp("cbuild")
    return {name: cprogs.build(name, where) for name in cprogs.PROGRAMS}


def generate(gen: Path, port: int, *args: str) -> dict[str, Any]:
    proc = subprocess.run([str(gen), "--target", f"127.0.0.1:{port}", *args], text=True,
                          capture_output=True, timeout=60, check=True)  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize("mode", ["gso", "sendmmsg"])
def test_c_generator_traffic_is_what_the_sink_counts(programs: dict[str, Path], mode: str) -> None:
    """Swaps, planned losses, warm-up: the sink's counts match what the generator says it sent,
    exactly as for the Python generator (tests/test_bench_smoke.py)."""
    sessions = 20
    sink = start("bench.sink", "--sessions", str(sessions), "--latency", "--max-seconds", "60")
    try:
        assert sink.stdout is not None
        port = json.loads(sink.stdout.readline())["port"]
        sent = generate(programs["loadgen"], port, "--sessions", str(sessions), "--rate", "5000",
                        "--duration", "10", "--count", "3000", "--swaps", "0.1", "--loss", "0.02",
                        "--hold-window", "0.05", "--seed", "3", "--mode", mode)
        wait_until_received(sink, sent["sent"] + sent["warmup_sent"])
    finally:
        got = json.loads(stop(sink).strip().splitlines()[-1])
    assert sent["generator"] == "c" and sent["mode"] == mode
    assert sent["sent"] == 3000 and sent["warmup_sent"] == sessions
    kinds = sent["kinds"]
    assert sum(kinds.values()) == sent["sent"]
    assert kinds["EARLY"] == kinds["LATE"] > 0
    assert sent["intended_lost"] == kinds["AFTER_GAP"] > 0 and kinds["BEHIND_GAP"] > 0
    assert got["received_measured"] == sent["sent"]
    assert got["received_by_kind"]["WARMUP"] == sessions
    assert got["unique"] == got["received"] and got["duplicates"] == 0
    assert got["out_of_order"] == kinds["LATE"]
    assert got["missing"] == sent["intended_lost"] + sent["split_pair_at_end"]
    assert got["header_mismatch"] == 0 and got["foreign"] == 0
    assert got["sessions_seen"] == sessions
    assert got["latency_after_gap_ns"]["count"] == kinds["AFTER_GAP"]
    assert 500 < sent["achieved_pps"] < 6000  # paced, not flooded


def test_c_generator_bytes_are_the_python_generators(programs: dict[str, Path]) -> None:
    """The warm-up datagrams byte for byte against bench/loadgen.py's Template (built by
    wire.build_data), send time aside; sessions past 65535 move to the next tunnel_id."""
    size, sessions = 120, 3
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        sent = generate(programs["loadgen"], rx.getsockname()[1], "--sessions", str(sessions),
                        "--size", str(size), "--duration", "0", "--base-tunnel", "65534",
                        "--settle", "0")
        assert sent["sent"] == 0 and sent["warmup_sent"] == sessions
        datagrams = [rx.recv(2048) for _ in range(sessions)]
    tpl = Template(size)
    for index, got in enumerate(datagrams):
        want = bytearray(size)
        tpl.write(want, 0, index, Kind.WARMUP, 65534)
        assert len(got) == size
        # Ns 0 and seq 0 are what the template holds; only the send time differs.
        assert got[: size - 8] == bytes(want[: size - 8]), index
        _magic, kind, idx, seq, tx_ns = TRAILER.unpack_from(got, size - TRAILER_SIZE)
        assert (kind, idx, seq) == (Kind.WARMUP, index, 0) and tx_ns > 0


def queue_bound(space: NetNs, queue: int) -> bool:
    text = space.run("cat", "/proc/net/netfilter/nfnetlink_queue").stdout
    return any(line.split()[0] == str(queue) for line in text.splitlines() if line.strip())


def test_c_reader_passes_every_queued_packet(programs: dict[str, Path], tmp_path: Path) -> None:
    need_root()
    need_tool("iptables")
    space = NetNs("cbench")
    try:
        # No --queue-bypass: unanswered packets stay queued and never reach the socket.
        space.run("iptables", "-A", "INPUT", "-p", "udp", "-j", "NFQUEUE",
                  "--queue-num", str(QUEUE))  # fmt: skip
        log = tmp_path / "reader.log"
        reader = space.popen([str(programs["nfq_reader"]), "--queue", str(QUEUE)], log)
        wait_until("the C reader binding its queue", lambda: queue_bound(space, QUEUE))
        rx = space.udp("127.0.0.1")
        port = rx.getsockname()[1]
        gen = space.run(str(programs["loadgen"]), "--target", f"127.0.0.1:{port}",
                        "--sessions", "10", "--rate", "20000", "--count", "2000",
                        "--duration", "10", "--swaps", "0.1")  # fmt: skip
        sent = json.loads(gen.stdout)
        total = sent["sent"] + sent["warmup_sent"]
        assert total == 2010
        last: dict[int, int] = {}
        out_of_order = 0
        for _ in range(total):
            data = rx.recv(2048)
            _, _, index, seq, _ = TRAILER.unpack_from(data, len(data) - TRAILER_SIZE)
            out_of_order += seq < last.get(index, -1)
            last[index] = max(seq, last.get(index, -1))
        rx.close()
        # The reader only accepts, in arrival order: exactly the planned swaps arrive late.
        assert out_of_order == sent["kinds"]["LATE"] > 0
        reader.send_signal(signal.SIGTERM)
        assert reader.wait(timeout=10) == 0
        stats = json.loads(log.read_text().strip().splitlines()[-1])
        assert stats["packets"] == total and stats["truncated"] == 0
        assert stats["verdict_sends"] == stats["batches"] <= total
        assert stats["bytes_copied"] == total * (20 + 8 + 100)  # IPv4 + UDP + payload
    finally:
        space.close()


def test_bench_build_falls_back_when_there_is_no_compiler(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """Without gcc the bench says why (its lines then read `n/a (why)` / "Python generator")."""
    monkeypatch.setenv("CC", "l2rx-no-such-compiler")
    with pytest.raises(cprogs.CUnavailable, match="no C compiler"):
        cprogs.build("loadgen", tmp_path)
    assert not (tmp_path / "loadgen").exists()


def _search(pps: float, bound: bool = False) -> dict[str, Any]:
    return {"loss_free_pps": pps, "harness_bound": bound}


def test_issue_23_lines_with_and_without_a_compiled_build() -> None:
    """The ratio lines above the headline: values against the relay's pure build, `n/a (why)`
    for what this run could not measure (run_builds.ratio_lines; bench.run prints them)."""
    both = run_builds.Plan(compiled_why=None, reader=Path("/nonexistent"))
    inpath = {"pure": {"1": _search(100e3)}, "compiled": {"1": _search(240e3), "2": _search(300e3)},
              "ceiling": _search(400e3, bound=True)}
    ratios: dict[str, float | None] = {}
    lines = run_builds.ratio_lines({"pure": _search(120e3), "compiled": _search(150e3)}, inpath,
                                   both, ratios)
    by_name = {line.split(":")[0]: line for line in lines}
    assert by_name["loss-free ratio inpath/relay"].startswith(
        "loss-free ratio inpath/relay: 2.00  (in-path compiled, 1 worker / relay pure")
    assert by_name["loss-free ratio compiled/pure relay"].startswith(
        "loss-free ratio compiled/pure relay: 1.25")
    assert by_name["loss-free ratio compiled/pure inpath"].startswith(
        "loss-free ratio compiled/pure inpath: 2.40")
    assert "0.60" in by_name["loss-free ratio inpath/ceiling"]
    assert "harness-bound" in by_name["loss-free ratio inpath/ceiling"]
    assert "  in-path compiled build, 2 workers / 1 worker" in by_name
    assert ratios == pytest.approx({"loss_free_inpath_over_relay": 2.0,
                                    "loss_free_compiled_over_pure_relay": 1.25,
                                    "loss_free_compiled_over_pure_inpath": 2.4,
                                    "loss_free_inpath_over_ceiling": 0.6})

    pure_only = run_builds.Plan(compiled_why="compiled build not available: not built",
                                reader=None, reader_why="no C compiler (gcc not found)")
    ratios = {}
    lines = run_builds.ratio_lines({"pure": _search(120e3)},
                                   {"pure": {"1": _search(90e3)}, "ceiling": {
                                       "unavailable": "C reader: no C compiler (gcc not found)"}},
                                   pure_only, ratios)
    assert lines[-4:] == [
        "loss-free ratio inpath/relay: 0.75  (in-path pure, 1 worker / relay pure)",
        "loss-free ratio compiled/pure relay: n/a (compiled build not available: not built)",
        "loss-free ratio compiled/pure inpath: n/a (compiled build not available: not built)",
        "loss-free ratio inpath/ceiling: n/a (C reader: no C compiler (gcc not found))",
    ]
    assert ratios["loss_free_inpath_over_relay"] == 0.75
    assert ratios["loss_free_compiled_over_pure_relay"] is None
