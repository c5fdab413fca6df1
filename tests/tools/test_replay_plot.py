"""`replay pcap --plot`, `--top` and `--summary` (issue 24 item 14): the picture read back from
the PNG, what it is drawn from checked against streams whose gaps and late packets are known,
and the text report's options."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.tools.impair import ImpairConfig, impair_file
from l2tpreorder.tools.replay import Replay, ReplayOptions
from l2tpreorder.tools.replay_plot import AFTER_HIGHER, DROPPED, LATE_SENT, PlotRecorder
from l2tpreorder.tools.replay_report import fmt_duration
from tests.conftest import PROJECT_ROOT, need, shared_pcap
from tests.tools.test_replay import SHARED, late_stream, run_cli, steady_stream


def need_matplotlib() -> None:
    need(importlib.util.find_spec("matplotlib") is not None, "matplotlib (the `plot` extra)")


def recorded(path: Path, timeout: float = 0.02) -> PlotRecorder:
    r = Replay(str(path), ReplayOptions(engine=EngineConfig(reorder_timeout=timeout)))
    r.plot = PlotRecorder()  # what --plot records, without drawing
    r.run()
    return r.plot


def test_a_lost_packet_is_a_gap_given_up_at_its_deadline(tmp_path: Path) -> None:
    plot = recorded(steady_stream(tmp_path / "s.pcap", 100, lose=(50,)), timeout=0.02)
    [trace] = plot.traces.values()
    assert len(trace.arrivals) == 99 and len(trace.releases) == 99
    [(t, lo, hi)] = trace.gaps
    assert (lo, hi) == (50, 50)
    arrived_51 = next(at for at, y, _ in trace.arrivals if y == 51)
    assert t == pytest.approx(arrived_51 + 0.02)  # released when its wait ran out
    assert [y for _, y in trace.releases] == [y for y in range(100) if y != 50]


def test_late_and_swapped_packets_are_marked(tmp_path: Path) -> None:
    """Ns 50 comes 50 ms late with a 20 ms timeout: given up, then delivered on arrival."""
    plot = recorded(late_stream(tmp_path / "l.pcap", 100, late=50, by=5), timeout=0.02)
    [trace] = plot.traces.values()
    assert [y for _, y, k in trace.arrivals if k == LATE_SENT] == [50]
    assert [(lo, hi) for _, lo, hi in trace.gaps] == [(50, 50)]
    assert sorted(y for _, y in trace.releases) == list(range(100))
    swapped = recorded(steady_stream(tmp_path / "w.pcap", 20, swap_at=5), timeout=0.02)
    [trace] = swapped.traces.values()
    assert [y for _, y, k in trace.arrivals if k == AFTER_HIGHER] == [5]
    assert [y for _, y in trace.releases] == list(range(20))  # released in order
    assert trace.gaps == [] and len(swapped.holds) == 1


def test_duplicates_are_marked_dropped(tmp_path: Path) -> None:
    src = shared_pcap("jnetpcap_test-l2tp.pcap")
    dup = tmp_path / "dup.pcap"
    impair_file(str(src), str(dup), ImpairConfig(seed=1, duplicate=0.2, add_seq=True))
    plot = recorded(dup, timeout=0.05)
    dropped = sum(1 for t in plot.traces.values() for _, _, k in t.arrivals if k == DROPPED)
    reports = [t.report for t in plot.traces.values()]
    assert dropped == sum(r.dropped_duplicate for r in reports) > 0


def impaired(tmp_path: Path, name: str = "jnetpcap_test-l2tp.pcap") -> Path:
    out = tmp_path / f"{name}.impaired.pcap"
    impair_file(
        str(shared_pcap(name)), str(out),
        ImpairConfig(seed=3, swap=0.1, loss=0.03, duplicate=0.03, displace=6,
                     displace_prob=0.05, add_seq=True),
    )  # fmt: skip
    return out


def read_png(path: Path) -> tuple[int, int, float, float]:
    """Height, width, the pixels' standard deviation and the share of pixels that are not
    white, from the file as written (decoded by matplotlib's own PNG reader)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))
    rgb = pixels[:, :, :3]
    not_white = float((rgb.min(axis=2) < 0.95).mean())
    return pixels.shape[0], pixels.shape[1], float(rgb.std()), not_white


def test_plot_is_a_real_picture(tmp_path: Path) -> None:
    need_matplotlib()
    png = tmp_path / "replay.png"
    code, text = run_cli(
        "replay", "pcap", str(impaired(tmp_path)), "--compare", "--timeout", "20",
        "--plot", str(png),
    )  # fmt: skip
    assert code == 0, text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, spread, ink = read_png(png)
    # 10 inches at 100 dpi; two sessions, the histogram and the compare panel, 2.6 in each
    assert (width, height) == (1000, 1040)
    assert spread > 0.05 and 0.02 < ink < 0.6, (spread, ink)


def test_plot_of_a_capture_without_ns_still_draws(tmp_path: Path) -> None:
    need_matplotlib()
    png = tmp_path / "plain.png"
    code, _ = run_cli("replay", "pcap", str(shared_pcap(SHARED[0])), "--plot", str(png))
    assert code == 0
    height, width, spread, ink = read_png(png)
    assert (width, height) == (1000, 520) and spread > 0.01 and ink > 0.002


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    """A real run in a Python where importing matplotlib fails, as where it is not installed:
    refused before the capture is read, no file written, the extra named."""
    png = tmp_path / "never.png"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from l2tpreorder.cli import main\n"
        f"sys.exit(main(['replay', 'pcap', {str(shared_pcap(SHARED[0]))!r}, '--plot', "
        f"{str(png)!r}]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "--plot needs matplotlib" in r.stderr and "l2tpreorder[plot]" in r.stderr, r.stderr
    assert r.stdout == "" and not png.exists()


def test_docs_picture_is_in_the_docs() -> None:
    picture = PROJECT_ROOT / "docs" / "img" / "replay-plot.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](docs/img/replay-plot.png)" in (PROJECT_ROOT / "README.md").read_text()


# --- the text report ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(None, "-"), (4e-6, "4µs"), (0.000412, "412µs"), (0.0025, "2.5ms"), (0.1, "100ms"),
     (1.5, "1.5s")],
)  # fmt: skip
def test_hold_times_in_microseconds_below_a_millisecond(seconds: float | None, words: str) -> None:
    assert fmt_duration(seconds) == words


def test_top_and_summary(tmp_path: Path) -> None:
    path = impaired(tmp_path)
    code, full = run_cli("replay", "pcap", str(path), "--compare", "--timeout", "20")
    assert code == 0
    rows = [line for line in full.splitlines() if line.startswith("  ") and "/" not in line]
    code, top = run_cli("replay", "pcap", str(path), "--compare", "--timeout", "20", "--top", "1")
    assert code == 0
    assert "the 1 busiest of 2 sessions (--top):" in top
    # the busier session (25: 65 packets) stays, the other's rows go from both tables
    assert " 3257      25 " in top and "      24 " not in top.split("(--top):")[1], top
    assert len(top.splitlines()) < len(full.splitlines()) and rows
    code, summary = run_cli(
        "replay", "pcap", str(path), "--compare", "--timeout", "20", "--summary"
    )
    assert code == 0
    assert "all sessions: 84 data messages, 84 with Ns:" in summary
    assert "hold times: " in summary and "tunnel session" not in summary
    assert "all 2 sessions with Ns" in summary and "3257/25" not in summary
    with pytest.raises(SystemExit) as refused:
        run_cli("replay", "pcap", str(path), "--top", "-1")
    assert refused.value.code == 2


def test_plot_refuses_to_overwrite_the_capture(tmp_path: Path) -> None:
    cap = steady_stream(tmp_path / "s.pcap", 20)
    before = cap.read_bytes()
    code, _ = run_cli("replay", "pcap", str(cap), "--plot", str(cap))
    assert code == 2 and cap.read_bytes() == before
