"""`replay pcap --config FILE`: the daemon's config file drives the replayed engine, flags win,
and a bad file or flag fails exactly as `check-config` reports it."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2tpreorder import cli
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.tools.capture import CaptureReader, UdpDatagram
from tests import pcapgen as g

LAC, LNS = "192.0.2.10", "198.51.100.1"
T0 = 1_700_000_000.0
GAP = 0.01  # seconds between packets in the capture


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def stream_with_a_loss(path: Path, n: int = 60, lost: int = 30) -> Path:
    """Sequenced data, GAP apart, Ns `lost` never sent: what follows waits for it."""
    frames = []
    for k, ns in enumerate(i for i in range(n) if i != lost):
        payload = g.l2tp_data(5, 6, b"\xff\x03\x00\x21" + ns.to_bytes(4, "big"), ns=ns)
        frames.append((T0 + k * GAP, g.eth(g.udp_ip(LAC, LNS, payload, 1701, 1701))))
    return g.write_pcap(path, frames, g.ETHERNET)


def write_config(path: Path, reorder: dict[str, Any]) -> Path:
    # a full daemon config: the keys replay does not use must still be valid
    doc = {
        "listen": ["127.0.0.1:1701"],
        "lns": "127.0.0.1:1702",
        "reorder": reorder,
        "metrics": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def ns_sent(path: Path) -> list[int | None]:
    hs = [parse_header(i.payload) for i in CaptureReader(path) if isinstance(i, UdpDatagram)]
    return [h.ns for h in hs if not isinstance(h, str)]


FILE_REORDER = {
    "timeout_ms": 25,
    "sequencing": "preserve",
    "max_held_per_session": 8,
    "max_held_bytes": 100_000,
    "resync_after": 7,
    "adaptive": False,  # these tests are about the fixed timeout the file sets
    "min_timeout_ms": 5,
}


def test_config_file_reorder_settings_apply_in_replay(tmp_path: Path) -> None:
    cap = stream_with_a_loss(tmp_path / "s.pcap")
    conf = write_config(tmp_path / "c.yaml", FILE_REORDER)
    out = tmp_path / "o.pcap"
    code, text, err = run_cli(
        "replay", "pcap", str(cap), "--config", str(conf), "--json", "-o", str(out)
    )
    assert code == 0, err
    doc = json.loads(text)
    assert doc["engine"] == {
        "reorder_timeout_ms": 25,
        "sequencing": "preserve",
        "max_held_per_session": 8,
        "max_held_bytes": 100_000,
        "resync_after": 7,
        "adaptive": False,
        "min_timeout_ms": 5,
    }
    (s,) = doc["sessions"]
    # 31, 32, 33 wait for the lost 30 until 25 ms after 31 arrived (the file's timeout)
    assert s["hold_ms"]["max"] == pytest.approx(25, abs=0.01)
    assert (s["skipped_ns"], s["reordered"]) == (1, 3)
    assert doc["totals"]["skipped"] == {"timeout": 1}
    assert ns_sent(out) == [ns for ns in range(60) if ns != 30]  # preserve: the gap stays


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    cap = stream_with_a_loss(tmp_path / "s.pcap")
    conf = write_config(tmp_path / "c.yaml", FILE_REORDER)
    out = tmp_path / "o.pcap"
    code, text, err = run_cli(
        "replay", "pcap", str(cap), "--config", str(conf), "--json", "-o", str(out),
        "--timeout", "45", "--sequencing", "renumber",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(text)
    assert doc["engine"] == {
        "reorder_timeout_ms": 45,
        "sequencing": "renumber",
        "max_held_per_session": 8,  # not overridden: still the file's
        "max_held_bytes": 100_000,
        "resync_after": 7,
        "adaptive": False,
        "min_timeout_ms": 5,
    }
    (s,) = doc["sessions"]
    assert s["hold_ms"]["max"] == pytest.approx(45, abs=0.01)
    assert ns_sent(out) == list(range(59))  # renumbered over the gap

    # --max-held 3 (and a long timeout): the 4th packet behind the gap closes it (cap)
    code, text, err = run_cli(
        "replay", "pcap", str(cap), "--config", str(conf), "--json",
        "--max-held", "3", "--timeout", "1000",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(text)
    assert doc["engine"]["max_held_per_session"] == 3
    assert doc["engine"]["reorder_timeout_ms"] == 1000
    assert doc["engine"]["sequencing"] == "preserve"  # the file's again
    assert doc["totals"]["skipped"] == {"cap": 1}
    assert doc["sessions"][0]["hold_ms"]["max"] == pytest.approx(3 * GAP * 1000, abs=0.01)


BAD_FILES = {
    "negative timeout": ("reorder:\n  timeout_ms: -5\n", "reorder.timeout_ms = -5: expected"),
    "unknown mode": ("reorder:\n  sequencing: shuffle\n", "reorder.sequencing = 'shuffle'"),
    "typo in a key": ("reorder:\n  timout_ms: 5\n", "reorder.timout_ms = 5: expected a known key"),
    "cap out of range": (
        "reorder:\n  max_held_per_session: 0\n",
        "reorder.max_held_per_session = 0: expected an integer 1..32767 packets",
    ),
    "not YAML": ("reorder: [\n", "line 2, column 1: "),  # where, as an editor says it
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_file_fails_as_check_config_says(case: str, tmp_path: Path) -> None:
    text, expected = BAD_FILES[case]
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    cap = stream_with_a_loss(tmp_path / "s.pcap", n=5, lost=2)
    code, _, check_err = run_cli("check-config", str(conf))
    assert code == 1
    assert check_err.startswith("error: ")
    message = check_err.removeprefix("error: ").strip()
    assert message.startswith(f"{conf}: ") and expected in message
    code, out, err = run_cli("replay", "pcap", str(cap), "--config", str(conf))
    assert code == 2 and out == ""
    assert err.strip() == f"l2tpreorder replay: error: {message}"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--timeout", "-1"], "--timeout = -1: expected a number of milliseconds >= 0"),
        (["--timeout", "90000"], "--timeout = 90000: expected a number of milliseconds"),
        (["--max-held", "0"], "--max-held = 0: expected an integer 1..32767 packets"),
        (
            ["--compare", "--kernel-reorder-timeout", "-50"],
            "--kernel-reorder-timeout = -50: expected a number of milliseconds >= 0 and <= 60000",
        ),
        (["--lns", "1.2.3.4:x"], "--lns = '1.2.3.4:x': expected an IP address with an optional"),
        (["--lns", "lns.example"], "--lns = 'lns.example': expected an IP address"),
        (["--live", "localhost:abc"], "--live = 'localhost:abc': expected an address"),
        (["--live", "127.0.0.1"], "--live = '127.0.0.1': expected an address"),
        (["--live", "127.0.0.1:9", "--lns", "::1:x"], "--lns = '::1:x': expected an IP address"),
    ],
)
def test_bad_flag_names_the_flag(flags: list[str], expected: str, tmp_path: Path) -> None:
    cap = stream_with_a_loss(tmp_path / "s.pcap", n=5, lost=2)
    code, out, err = run_cli("replay", "pcap", str(cap), *flags)
    assert code == 2 and out == ""
    assert err.startswith("l2tpreorder replay: error: ") and expected in err


@pytest.mark.parametrize("kind", ["missing", "not_a_capture"])
def test_live_with_a_bad_capture_says_so(kind: str, tmp_path: Path) -> None:
    cap = tmp_path / "in.pcap"
    if kind == "not_a_capture":
        cap.write_text("hello\n")
    # port 9 on loopback: nothing is sent, the capture is refused first
    code, out, err = run_cli("replay", "pcap", str(cap), "--live", "127.0.0.1:9")
    assert code == 1 and out == ""
    assert err.startswith("l2tpreorder replay: ") and str(cap) in err
