"""Issue 24 (13): `replay pcap` and `impair` say what they do. Options that need another are
refused (exit 2, both named) instead of ignored; captures come from stdin (`-`) or gzip'd
(found by the magic bytes, not the name); `impair` on data without Ns predicts no reordering."""

from __future__ import annotations

import gzip
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import pcapgen as g
from tests.conftest import shared_pcap

LAC, LNS = "192.0.2.10", "198.51.100.1"
T0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]


def cli(*argv: str, stdin: bytes | int | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real command line in a child: stdin is a pipe (bytes), a descriptor, or /dev/null."""
    return subprocess.run(
        [sys.executable, "-m", "l2tpreorder", *argv],
        input=stdin if isinstance(stdin, bytes) else None,
        stdin=stdin if isinstance(stdin, int) else (None if stdin else subprocess.DEVNULL),
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )


def stream(path: Path, *, with_ns: bool = True, sessions: int = 2, n: int = 60) -> Path:
    """`sessions` sessions of n data messages 10 ms apart, each with 3 and 4 swapped (when it
    carries Ns: replay then holds 4 and releases it after 3)."""
    frames = []
    for k in range(n):
        order = {3: 4, 4: 3}.get(k, k)
        for s in range(sessions):
            ppp = b"\xff\x03\x00\x21" + order.to_bytes(4, "big")
            payload = g.l2tp_data(5, 6 + s, ppp, ns=order if with_ns else None)
            frames.append((T0 + k * 0.01 + s * 0.001, g.eth(g.udp_ip(LAC, LNS, payload))))
    return g.write_pcap(path, frames, g.ETHERNET)


def report(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr.decode()
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# --- options that need another --------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "option", "other"),
    [
        (["--kernel-reorder-timeout", "50"], "--kernel-reorder-timeout", "--compare"),
        (["--speed", "4"], "--speed", "--live"),
        (["--live", "127.0.0.1:9", "--json"], "--json", "--live"),
        (["--live", "127.0.0.1:9", "--compare"], "--compare", "--live"),
        (["--live", "127.0.0.1:9", "-o", "x.pcap"], "-o/--output", "--live"),
        (["--live", "127.0.0.1:9", "--timeout", "30"], "--timeout", "--live"),
        (["--live", "127.0.0.1:9", "--max-held", "9"], "--max-held", "--live"),
        (["--live", "127.0.0.1:9", "--sequencing", "strip"], "--sequencing", "--live"),
        (["--live", "127.0.0.1:9", "--config", "c.yaml"], "--config", "--live"),
        (["--live", "127.0.0.1:9", "--plot", "x.png"], "--plot", "--live"),
        (["--live", "127.0.0.1:9", "--top", "3"], "--top", "--live"),
        (["--live", "127.0.0.1:9", "--summary"], "--summary", "--live"),
        (["--json", "--top", "3"], "--top", "--json"),
        (["--json", "--summary"], "--summary", "--json"),
        (
            ["--live", "127.0.0.1:9", "--kernel-reorder-timeout", "5"],
            "--kernel-reorder-timeout",
            "--live",
        ),
    ],
)
def test_replay_refuses_an_option_that_would_be_ignored(
    flags: list[str], option: str, other: str, tmp_path: Path
) -> None:
    cap = stream(tmp_path / "s.pcap")
    r = cli("replay", "pcap", str(cap), *flags)
    err = r.stderr.decode()
    assert r.returncode == 2 and r.stdout == b"", err
    assert err.startswith(f"l2tpreorder replay: error: {option} "), err
    assert other in err and err.count("\n") == 1, err
    assert not (ROOT / "x.pcap").exists()


def test_replay_takes_the_options_with_what_they_need(tmp_path: Path) -> None:
    """The same options with their partner are taken (the refusal above is not blanket)."""
    cap = stream(tmp_path / "s.pcap")
    r = cli("replay", "pcap", str(cap), "--compare", "--kernel-reorder-timeout", "50", "--json")
    assert "kernel reorderto=50ms" in report(r)["compared"]
    r = cli("replay", "pcap", str(cap), "--live", "127.0.0.1:9", "--speed", "-1")
    assert r.returncode == 2 and b"--speed -1: expected N >= 0" in r.stderr


@pytest.mark.parametrize(
    ("flags", "option", "other"),
    [(["--displace", "3"], "--displace", "--displace-prob"),
     (["--burst-len", "5"], "--burst-len", "--burst-loss")],
)  # fmt: skip
def test_impair_refuses_an_option_that_would_change_nothing(
    flags: list[str], option: str, other: str, tmp_path: Path
) -> None:
    cap, out = stream(tmp_path / "s.pcap"), tmp_path / "o.pcap"
    r = cli("impair", str(cap), str(out), *flags)
    err = r.stderr.decode()
    assert r.returncode == 2 and r.stdout == b"", err
    assert err.startswith(f"l2tpreorder impair: error: {option} needs {other}"), err
    assert f"add {other} P or drop {option}" in err  # the hint names the value to give
    assert not out.exists()
    r = cli("impair", str(cap), str(out), *flags, other, "0.2", "--seed", "1")
    assert r.returncode == 0 and out.exists(), r.stderr.decode()


@pytest.mark.parametrize(
    "flags",
    [["--displace", "3", "--displace-prob", "0"], ["--burst-len", "5", "--burst-loss", "0"]],
)
def test_impair_takes_a_partner_given_as_zero(flags: list[str], tmp_path: Path) -> None:
    """`--displace 3 --displace-prob 0` (a sweep from 0): the partner is given, so it is not
    refused as missing; the capture is written through unchanged."""
    cap, out = stream(tmp_path / "s.pcap"), tmp_path / "o.pcap"
    r = cli("impair", str(cap), str(out), *flags, "--seed", "1")
    assert r.returncode == 0, r.stderr.decode()
    assert b"needs" not in r.stderr and out.exists()


# --- impair's prediction ------------------------------------------------------------------------


def test_impair_without_ns_predicts_nothing_reordered_and_replay_agrees(tmp_path: Path) -> None:
    cap = stream(tmp_path / "plain.pcap", with_ns=False)
    out = tmp_path / "o.pcap"
    r = cli("impair", str(cap), str(out), "--swap", "0.3", "--seed", "4")
    text = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "at most" not in text
    assert "none of the " in text and "carry no Ns" in text and "--add-seq" in text, text
    totals = report(cli("replay", "pcap", str(out), "--json"))["totals"]
    assert totals["released"] == 0 and totals["forwarded_unsequenced"] == 120, totals
    r = cli("impair", str(cap), str(out), "--swap", "0.3", "--seed", "4", "--add-seq")
    assert r.returncode == 0 and "at most " in r.stdout.decode(), r.stdout.decode()
    assert "carry no Ns" not in r.stdout.decode()
    totals = report(cli("replay", "pcap", str(out), "--json"))["totals"]
    assert totals["released"] > 0, totals  # held, then released in order


def test_impair_on_a_real_capture_without_ns(tmp_path: Path) -> None:
    src = shared_pcap("jnetpcap_test-l2tp.pcap")  # 150 data messages, none with Ns
    r = cli("impair", str(src), str(tmp_path / "o.pcap"), "--swap", "0.2")
    text = r.stdout.decode()
    assert r.returncode == 0 and "none of the 13 moved packets can be reordered" in text, text


# --- stdin and gzip --------------------------------------------------------------------------


def without_name(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "capture": {k: v for k, v in d["capture"].items() if k != "file"}}


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_replay_reads_stdin_and_gzip_as_the_file(kind: str, tmp_path: Path) -> None:
    plain = stream(tmp_path / "s.pcap")
    if kind == "pcapng":
        packets = [(0, T0 + i * 0.01, g.eth(g.udp_ip(LAC, LNS, g.l2tp_data(5, 6, b"x", ns=n))))
                   for i, n in enumerate([0, 2, 1, 3, 5, 4])]  # fmt: skip
        plain = g.write_pcapng(tmp_path / "s.pcapng", [(g.ETHERNET, 6)], packets)
    raw = plain.read_bytes()
    zipped = tmp_path / "no-gz-suffix.cap"  # gzip'd: found by the magic bytes, not the name
    zipped.write_bytes(gzip.compress(raw))
    misnamed = tmp_path / "plain.pcap.gz"  # not gzip'd at all, whatever the name says
    misnamed.write_bytes(raw)
    want = report(cli("replay", "pcap", str(plain), "--json"))
    assert want["totals"]["released"] == 2  # one swap per session, or two in one
    assert want["capture"]["format"] == kind
    got = {
        "stdin": report(cli("replay", "pcap", "-", "--json", stdin=raw)),
        "gzip": report(cli("replay", "pcap", str(zipped), "--json")),
        "gzip on stdin": report(cli("replay", "pcap", "-", "--json", stdin=zipped.read_bytes())),
        ".gz name": report(cli("replay", "pcap", str(misnamed), "--json")),
    }
    assert got["stdin"]["capture"]["file"] == "<stdin>"
    assert got["gzip"]["capture"]["file"] == str(zipped)
    for how, data in got.items():
        assert without_name(data) == without_name(want), how


def test_a_cut_off_gzip_keeps_what_came_before_the_cut(tmp_path: Path) -> None:
    plain = stream(tmp_path / "s.pcap", n=400)
    whole = report(cli("replay", "pcap", str(plain), "--json"))["capture"]
    packed = gzip.compress(plain.read_bytes())
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    r = cli("replay", "pcap", str(cut))
    assert r.returncode == 0 and "gzip stream ends early (cut off)" in r.stdout.decode()
    got = report(cli("replay", "pcap", str(cut), "--json"))["capture"]
    assert 0 < got["frames"] < whole["frames"]
    assert got["unreadable"] == {"truncated_file": 1}
    assert "gzip stream ends early" in got["file_error"]
    broken = tmp_path / "broken.gz"
    broken.write_bytes(packed[:10] + b"\xff" * 64)
    r = cli("replay", "pcap", str(broken))
    assert r.returncode == 1 and b"not a readable gzip file" in r.stderr, r.stderr


def test_impair_reads_stdin_and_gzip_and_writes_the_same_file(tmp_path: Path) -> None:
    plain = stream(tmp_path / "s.pcap")
    zipped = tmp_path / "s.pcap.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    flags = ["--swap", "0.2", "--loss", "0.05", "--seed", "9"]
    outs = []
    for name, src, stdin in (
        ("a", str(plain), None), ("b", "-", plain.read_bytes()), ("c", str(zipped), None),
        ("d", "-", zipped.read_bytes()),
    ):  # fmt: skip
        out = tmp_path / f"{name}.pcap"
        r = cli("impair", src, str(out), *flags, stdin=stdin)
        assert r.returncode == 0, r.stderr.decode()
        outs.append(out.read_bytes())
    assert len(outs[0]) > 1000 and outs.count(outs[0]) == 4


def test_stdin_that_is_a_terminal_or_empty_is_refused(tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    try:
        r = cli("replay", "pcap", "-", stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert r.returncode == 1 and r.stdout == b""
    assert b"standard input, which is a terminal: pipe a capture in" in r.stderr, r.stderr
    assert b"tcpdump -c " in r.stderr and b"read to its end first" in r.stderr, r.stderr
    r = cli("impair", "-", str(tmp_path / "o.pcap"))  # stdin: /dev/null
    assert r.returncode == 1 and b"<stdin>: empty, no capture in it" in r.stderr, r.stderr
    assert not (tmp_path / "o.pcap").exists()


def test_live_says_why_a_corrupt_gzip_or_a_terminal_cannot_be_sent(tmp_path: Path) -> None:
    """`--live` reports an unreadable capture as the offline replay does (exit 1, one line),
    not with a traceback; nothing is sent (port 9 on loopback: discard, nothing listens)."""
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(stream(tmp_path / "s.pcap").read_bytes())[:10] + b"\xff" * 64)
    r = cli("replay", "pcap", str(broken), "--live", "127.0.0.1:9")
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b"", err
    assert "not a readable gzip file" in err and "Traceback" not in err, err
    primary, secondary = pty.openpty()
    try:
        r = cli("replay", "pcap", "-", "--live", "127.0.0.1:9", stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    err = r.stderr.decode()
    assert r.returncode == 1 and "which is a terminal" in err and "Traceback" not in err, err


def test_a_capture_named_by_a_pipe_path_is_read(tmp_path: Path) -> None:
    """`replay pcap <(cat s.pcap)`: the path is a pipe (/dev/fd/N), not seekable; it is copied
    first like stdin, and replays as the file does."""
    plain = stream(tmp_path / "s.pcap")
    raw = plain.read_bytes()
    assert len(raw) < 60_000  # fits the pipe's buffer: written whole before the child reads
    want = report(cli("replay", "pcap", str(plain), "--json"))
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, raw)
        os.close(write_end)
        write_end = -1
        r = subprocess.run(
            [sys.executable, "-m", "l2tpreorder", "replay", "pcap", f"/dev/fd/{read_end}",
             "--json"],
            pass_fds=(read_end,), stdin=subprocess.DEVNULL, capture_output=True, cwd=ROOT,
            timeout=120,
        )  # fmt: skip
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert without_name(report(r)) == without_name(want)


def test_a_gzip_padded_with_zeros_is_whole(tmp_path: Path) -> None:
    """Zero bytes after the last gzip member (`gzip -t` accepts them: a tape's padding) end
    the stream; the capture is whole, not reported corrupt."""
    plain = stream(tmp_path / "s.pcap")
    raw = plain.read_bytes()
    padded = tmp_path / "padded.pcap.gz"  # two members (`cat a.gz b.gz`), then the zeros
    half = len(raw) // 2
    padded.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + b"\0" * 1000)
    got = report(cli("replay", "pcap", str(padded), "--json"))
    assert not got["capture"].get("file_error"), got["capture"]
    assert without_name(got) == without_name(report(cli("replay", "pcap", str(plain), "--json")))


def test_a_hold_of_one_millisecond_reads_1ms(tmp_path: Path) -> None:
    """Ns 2 arrives 1 ms before Ns 1: held 1 ms (a float a hair under it, from the capture's
    timestamps: 999.93 µs here), which the text report once printed as `1e+03µs`."""
    frames = [
        (T0 + 0.001 + i * 0.001, g.eth(g.udp_ip(LAC, LNS, g.l2tp_data(5, 6, b"x", ns=n))))
        for i, n in enumerate([0, 2, 1, 3])
    ]
    cap = g.write_pcap(tmp_path / "ms.pcap", frames, g.ETHERNET)
    r = cli("replay", "pcap", str(cap))
    text = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "e+0" not in text, text
    assert "hold times: 1 packets held, p50 1ms, p99 1ms, max 1ms" in text, text
