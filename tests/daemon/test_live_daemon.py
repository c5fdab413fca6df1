"""`replay pcap --live` against a REAL `l2tpreorder run` on loopback.

A real capture is impaired with `l2tpreorder impair --add-seq --swap` (as the README recipe does),
sent with `--live` at high `--speed` to a running daemon, and what the daemon hands a test LNS
socket is checked: every data payload once, each session in the capture's original order, with
contiguous Ns; every control message passed too.
"""

from __future__ import annotations

import io
import socket
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from l2tpreorder import cli
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.tools.capture import CaptureReader, UdpDatagram
from tests.conftest import shared_pcap
from tests.daemon_harness import WAIT, Daemon, free_udp_port, udp

pytestmark = pytest.mark.integration

CAPTURE_LNS = "192.168.98.222"  # the LNS in jnetpcap_test-l2tp.pcap
Session = tuple[int, int]  # (tunnel_id, session_id)


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def towards_lns(path: Path) -> tuple[dict[Session, list[bytes]], list[bytes]]:
    """Per session, the PPP frames of the data messages sent to the LNS; and the control ones."""
    data: dict[Session, list[bytes]] = {}
    control: list[bytes] = []
    for item in CaptureReader(path):
        if isinstance(item, UdpDatagram) and item.dst == CAPTURE_LNS:
            h = parse_header(item.payload)
            assert not isinstance(h, str), h
            if h.is_control:
                control.append(item.payload)
            else:
                frame = item.payload[h.payload_offset : h.end]
                data.setdefault((h.tunnel_id, h.session_id), []).append(frame)
    return data, control


def receive_all(sock: socket.socket, count: int, into: list[bytes]) -> None:
    """Collect up to `count` datagrams; stop early when the daemon goes quiet for WAIT s."""
    sock.settimeout(WAIT)
    try:
        while len(into) < count:
            into.append(sock.recv(65535))
    except (TimeoutError, OSError):
        pass


def test_live_impaired_capture_through_a_running_daemon(tmp_path: Path) -> None:
    src = shared_pcap("jnetpcap_test-l2tp.pcap")
    impaired = tmp_path / "big-pings.pcap"
    # a seed whose dice leave each session's first packet in place: a session starts at the
    # first Ns seen, so a swap of its first two packets is not repairable by any receiver
    code, text = run_cli(
        "impair", str(src), str(impaired), "--add-seq", "--swap", "0.2", "--seed", "1"
    )
    assert code == 0, text
    original, original_control = towards_lns(src)
    reordered, _ = towards_lns(impaired)
    assert reordered != original, "the impairment must actually reorder something"
    assert sorted(map(sorted, reordered.values())) == sorted(map(sorted, original.values()))
    expected_count = sum(map(len, original.values())) + len(original_control)

    listen, lns_port = free_udp_port(), free_udp_port()
    lns = udp(port=lns_port)
    config = {
        "listen": [f"127.0.0.1:{listen}"],
        "lns": f"127.0.0.1:{lns_port}",
        "reorder": {"timeout_ms": 5000, "sequencing": "renumber"},
        "logging": {"level": "info", "drop_report_interval_ms": 100},
        "metrics": {"enabled": False},
    }
    daemon = Daemon(tmp_path, config)
    got: list[bytes] = []
    try:
        daemon.ready()
        receiver = threading.Thread(target=receive_all, args=(lns, expected_count, got))
        receiver.start()
        code, text = run_cli(
            "replay", "pcap", str(impaired), "--live", f"127.0.0.1:{listen}",
            "--speed", "2000", "--lns", CAPTURE_LNS,
        )  # fmt: skip
        assert code == 0, text
        assert text.startswith(f"sent {expected_count} datagrams from 1 LAC endpoint(s)"), text
        receiver.join(WAIT * 2)
        assert not receiver.is_alive()
        assert daemon.terminate() == 0
        log = daemon.log()
    finally:
        daemon.stop()
        lns.close()

    delivered: dict[Session, list[tuple[int | None, bytes]]] = {}
    control = []
    for datagram in got:
        h = parse_header(datagram)
        assert not isinstance(h, str), h
        if h.is_control:
            control.append(datagram)
        else:
            frame = datagram[h.payload_offset : h.end]
            delivered.setdefault((h.tunnel_id, h.session_id), []).append((h.ns, frame))
    assert len(got) == expected_count, f"got {len(got)} of {expected_count}; log:\n{log}"
    assert control == original_control
    assert delivered.keys() == original.keys()
    for key, frames in original.items():
        assert [frame for _, frame in delivered[key]] == frames, key  # each once, in order
        ns = [n for n, _ in delivered[key]]
        assert None not in ns
        first = ns[0]
        assert first is not None
        assert ns == [(first + i) & 0xFFFF for i in range(len(ns))], key  # contiguous Ns
    assert "dropped" not in log, log
