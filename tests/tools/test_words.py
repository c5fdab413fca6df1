"""The words the tools print mean one thing each: "reordered" (held, then released in order),
counts with their plural, no made-up durations, a help text for every impair option."""

from __future__ import annotations

import json
import re
from pathlib import Path

from l2tpreorder import cli
from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.tools.impair import ImpairConfig, impair_file
from l2tpreorder.tools.replay import ReplayOptions, replay
from l2tpreorder.tools.replay_report import format_report
from tests.conftest import shared_pcap
from tests.tools.test_replay import run_cli, steady_stream


def test_reordered_is_what_the_engine_released_and_the_table_adds_up(tmp_path: Path) -> None:
    src = shared_pcap("jnetpcap_test-l2tp.pcap")
    impaired = tmp_path / "big-pings.pcap"
    stats = impair_file(str(src), str(impaired), ImpairConfig(seed=3, swap=0.1, add_seq=True))
    assert stats.swapped > 0
    r = replay(str(impaired), ReplayOptions(engine=EngineConfig(reorder_timeout=0.1)))
    code, text = run_cli("replay", "pcap", str(impaired), "--json", "--timeout", "100")
    assert code == 0
    by_id = {(s["tunnel_id"], s["session_id"]): s for s in json.loads(text)["sessions"]}
    table = format_report(r)
    released = 0
    for s in r.sessions:
        j = by_id[(s.tunnel_id, s.session_id)]
        assert j["reordered"] == s.released
        # with Ns = in order + reordered + late + duplicates (+ out of order at timeout 0)
        assert s.sequenced == (
            s.forwarded_in_order + s.released + s.dropped_late + s.dropped_duplicate
            + s.forwarded_out_of_order
        )  # fmt: skip
        row = next(line for line in table.splitlines() if f" {s.session_id:>7} " in line)
        cells = row.split()
        assert (int(cells[4]), int(cells[5])) == (s.forwarded_in_order, s.released)
        released += s.released
    assert released == r.counters["released"], "the same number as the metric counts"
    assert 0 < released <= stats.swapped


def test_counts_have_plurals_and_no_capture_gets_a_zero_duration() -> None:
    r = replay(str(shared_pcap("packetnet_l2tp.pcap")))
    head = format_report(r).splitlines()[:2]
    assert head[0].endswith("pcap, 1 frame, no L2TP time span")
    assert "1 packet (" in head[1] and "1 tunnel, 1 session" in head[1]
    assert "0.000 s" not in "\n".join(head)


def test_two_packet_stream_reports_its_span(tmp_path: Path) -> None:
    r = replay(str(steady_stream(tmp_path / "s.pcap", 3)))
    assert "3 frames, L2TP over 0.020 s" in format_report(r).splitlines()[0]


def test_every_impair_option_has_a_help_text() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    impair = sub.choices["impair"]  # type: ignore[attr-defined]
    missing = [
        a.option_strings or a.dest for a in impair._actions if a.help is None and a.dest != "help"
    ]
    assert missing == []
    assert re.search(
        r"--duplicate P\s+probability that a packet is sent twice", impair.format_help()
    )
