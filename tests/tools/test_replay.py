"""`replay pcap` and `impair`: real captures, tshark as referee, virtual-time release, --compare."""

from __future__ import annotations

import io
import json
import random
import re
import socket
import subprocess
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from l2tpreorder import cli
from l2tpreorder.config import format_address
from l2tpreorder.core.engine import EngineConfig, Late, Sequencing
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.tools import capture
from l2tpreorder.tools.capture import CaptureReader, UdpDatagram
from l2tpreorder.tools.impair import ImpairConfig, impair_file
from l2tpreorder.tools.live import send_live, send_when_writable
from l2tpreorder.tools.replay import (
    COMPARE_KERNEL0,
    COMPARE_L2TPREORDER,
    COMPARE_XL2TPD,
    ReplayOptions,
    format_report,
    replay,
    result_as_dict,
)
from tests import pcapgen as g
from tests.conftest import need_tool, shared_pcap

SHARED = [
    "jnetpcap_test-l2tp.pcap",
    "tcpdump_l2tp-avp-overflow.pcap",
    "packetnet_l2tp.pcap",
    "xdp2_l7_l2tp.pcap",
    "xdp2_l2tp.pcap",
    "flowcontainer_l2tp.pcap",
]
LAC, LNS = "192.0.2.10", "198.51.100.1"
T0 = 1_700_000_000.0


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def tshark_rows(path: Path, fields: list[str], display_filter: str) -> list[list[str]]:
    exe = need_tool("tshark")
    cmd = [exe, "-r", str(path), "-n", "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    cmd += ["-Y", display_filter]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


def steady_stream(
    path: Path, n: int = 100, swap_at: int | None = None, lose: tuple[int, ...] = ()
) -> Path:
    """A LAC sending n sequenced data messages 10 ms apart after the tunnel/session handshake."""
    orders = [i for i in range(n) if i not in lose]
    if swap_at is not None:
        i = orders.index(swap_at)
        orders[i], orders[i + 1] = orders[i + 1], orders[i]
    frames = []
    for k, order in enumerate(orders):
        payload = g.l2tp_data(5, 6, b"\xff\x03\x00\x21" + order.to_bytes(4, "big"), ns=order)
        frames.append((T0 + k * 0.01, g.eth(g.udp_ip(LAC, LNS, payload, 1701, 1701))))
    return g.write_pcap(path, frames, g.ETHERNET)


def inner_by_session(path: Path, to: str) -> dict[tuple[int, int], list[bytes]]:
    out: dict[tuple[int, int], list[bytes]] = {}
    for item in CaptureReader(path):
        if isinstance(item, UdpDatagram) and item.dst == to:
            h = parse_header(item.payload)
            if not isinstance(h, str) and not h.is_control:
                out.setdefault((h.tunnel_id, h.session_id), []).append(
                    item.payload[h.payload_offset : h.end]
                )
    return out


# --- real captures ------------------------------------------------------------------------------


def test_jnetpcap_counts() -> None:
    r = replay(str(shared_pcap("jnetpcap_test-l2tp.pcap")))
    assert (r.l2tp_packets, r.control, r.data, r.data_with_ns) == (168, 18, 150, 0)
    assert (r.tunnels, r.sessions_seen) == (2, 2)
    assert [(s.tunnel_id, s.session_id, s.data) for s in r.sessions] == [
        (56152, 24, 20),
        (3257, 25, 65),
    ]
    assert {c.lac[0] for c in r.conversations} == {"192.168.101.233"}
    assert r.counters["forwarded_unsequenced"] == 85


def test_encrypted_capture_is_reported_as_such() -> None:
    r = replay(str(shared_pcap("flowcontainer_l2tp.pcap")))
    assert r.l2tp_packets == 0
    assert r.capture.unreadable == {capture.ENCRYPTED: 2342, capture.IKE: 8}
    text = format_report(r)
    assert "2,342 frames encrypted" in text and "L2TP over IPsec" in text


@pytest.mark.parametrize("name", SHARED)
def test_every_shared_capture_replays_without_error(name: str, tmp_path: Path) -> None:
    r = replay(
        str(shared_pcap(name)),
        ReplayOptions(output=str(tmp_path / "o.pcap"), compare=True, kernel_reorder_timeout=0.02),
    )
    st = r.capture
    assert st.frames == st.datagrams + st.fragments + sum(st.unreadable.values())
    assert r.l2tp_packets + sum(r.malformed.values()) == st.datagrams
    assert r.written == st.datagrams  # the engine forwards everything it reads here (no Ns)
    doc = json.loads(json.dumps(result_as_dict(r)))
    assert doc["capture"]["frames"] == st.frames
    assert doc["capture"]["l2tpv2_packets"] == r.l2tp_packets
    assert doc["capture"]["unreadable"] == st.unreadable
    assert doc["written"] == r.written
    assert [(s["tunnel_id"], s["session_id"], s["packets"]) for s in doc["sessions"]] == [
        (s.tunnel_id, s.session_id, s.data) for s in r.sessions
    ]
    text = format_report(r)
    frames = "1 frame" if st.frames == 1 else f"{st.frames:,} frames"
    assert text.startswith(f"{r.path}: {st.file_format}, {frames}, ")
    packets = "1 packet" if r.l2tp_packets == 1 else f"{r.l2tp_packets:,} packets"
    assert f"L2TPv2: {packets} (" in text
    for s in r.sessions:  # under its LAC peer's heading, one row: tunnel, session, packets
        lac = format_address(s.conversation.lac)
        assert re.search(rf"^LAC {re.escape(lac)} -> LNS ", text, re.M), lac
        row = rf"^ +{s.tunnel_id} +{s.session_id} +{s.data:,} "
        assert re.search(row, text, re.M), row
    wide = [line for line in text.replace(r.path, "").splitlines() if len(line) > 100]
    assert not wide, "lines over 100 columns:\n" + "\n".join(wide)
    for reason, n in st.unreadable.items():
        assert f"not read: {n:,} frames {capture.REASON_TEXT[reason]}" in text


@pytest.mark.integration
@pytest.mark.parametrize("name", SHARED)
def test_l2tp_header_decoding_agrees_with_tshark(name: str) -> None:
    path = shared_pcap(name)
    ours = {}
    for item in CaptureReader(path):
        if isinstance(item, UdpDatagram):
            h = parse_header(item.payload)
            assert not isinstance(h, str), (item.frame, h)
            ours[item.frame] = (
                str(h.tunnel_id),
                str(h.session_id),
                "" if h.ns is None else str(h.ns),
            )
    rows = tshark_rows(
        path,
        ["frame.number", "l2tp.tunnel", "l2tp.session", "l2tp.Ns"],
        "udp && l2tp && frame.cap_len == frame.len",
    )
    theirs = {int(r[0]): (r[1], r[2], r[3]) for r in rows}
    assert ours == theirs


# --- impairment of real captures, replayed: Ns contiguous, inner order restored -----------------


@pytest.mark.integration
@pytest.mark.parametrize("name", ["jnetpcap_test-l2tp.pcap", "xdp2_l7_l2tp.pcap"])
def test_impaired_real_capture_replays_to_contiguous_ns_in_original_order(
    name: str, tmp_path: Path
) -> None:
    src = shared_pcap(name)
    impaired, out = tmp_path / "impaired.pcap", tmp_path / "out.pcap"
    # A seed whose dice leave each session's first packet in place: a session starts at the
    # first Ns seen, so a swap of its first two packets is not repairable by any receiver.
    cfg = ImpairConfig(
        seed=1, swap=0.2, displace=3, displace_prob=0.05, duplicate=0.05, add_seq=True
    )
    stats = impair_file(str(src), str(impaired), cfg)
    assert stats.seq_added == stats.data_in > 0
    r = replay(
        str(impaired),
        ReplayOptions(engine=EngineConfig(reorder_timeout=60.0), output=str(out)),
    )
    lns = r.conversations[0].lns[0]
    original = inner_by_session(src, lns)
    assert inner_by_session(out, lns) == original
    if name.startswith("jnetpcap"):  # long enough for this seed's swaps to take effect
        assert stats.swapped + stats.displaced > 0
        assert inner_by_session(impaired, lns) != original  # the impairment did reorder
    # tshark: every session's Ns towards the LNS is 0, 1, 2, ... with no gap
    rows = tshark_rows(
        out, ["l2tp.tunnel", "l2tp.session", "l2tp.Ns"], f"l2tp.type == 0 && ip.dst == {lns}"
    )
    by_session: dict[tuple[str, str], list[int]] = {}
    for t, s, ns in rows:
        by_session.setdefault((t, s), []).append(int(ns))
    assert by_session and all(v == list(range(len(v))) for v in by_session.values())
    assert sum(len(v) for v in by_session.values()) == sum(len(v) for v in original.values())


@pytest.mark.integration
def test_impaired_with_loss_still_contiguous_and_in_order(tmp_path: Path) -> None:
    src = shared_pcap("jnetpcap_test-l2tp.pcap")
    impaired, out = tmp_path / "impaired.pcap", tmp_path / "out.pcap"
    stats = impair_file(
        str(src), str(impaired), ImpairConfig(seed=3, swap=0.1, loss=0.05, add_seq=True)
    )
    assert stats.lost > 0
    replay(str(impaired), ReplayOptions(engine=EngineConfig(reorder_timeout=60.0), output=str(out)))
    lns = "192.168.98.222"
    original, got = inner_by_session(src, lns), inner_by_session(out, lns)
    for key, frames in got.items():
        it = iter(original[key])
        assert all(f in it for f in frames)  # a subsequence: order kept, only losses missing
    assert sum(map(len, original.values())) - sum(map(len, got.values())) == stats.lost
    rows = tshark_rows(out, ["l2tp.session", "l2tp.Ns"], f"l2tp.type == 0 && ip.dst == {lns}")
    for sid in {r[0] for r in rows}:
        ns = [int(r[1]) for r in rows if r[0] == sid]
        assert ns == list(range(len(ns)))


def test_impair_is_reproducible_and_the_seed_matters(tmp_path: Path) -> None:
    src = str(shared_pcap("jnetpcap_test-l2tp.pcap"))
    cfg = ImpairConfig(seed=11, swap=0.2, loss=0.05, duplicate=0.05, jitter=0.002, add_seq=True)
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    impair_file(src, str(a), cfg)
    impair_file(src, str(b), cfg)
    impair_file(src, str(c), ImpairConfig(**{**_fields(cfg), "seed": 12}))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    times = [i.ts for i in CaptureReader(a) if isinstance(i, UdpDatagram)]
    assert times == sorted(times)


def _fields(cfg: ImpairConfig) -> dict[str, object]:
    return {name: getattr(cfg, name) for name in cfg.__slots__}


def test_impair_without_impairments_keeps_everything(tmp_path: Path) -> None:
    src = shared_pcap("jnetpcap_test-l2tp.pcap")
    out = tmp_path / "same.pcap"
    stats = impair_file(str(src), str(out), ImpairConfig())
    assert stats.written == 168
    orig = [(i.ts, i.payload) for i in CaptureReader(src) if isinstance(i, UdpDatagram)]
    same = [(i.ts, i.payload) for i in CaptureReader(out) if isinstance(i, UdpDatagram)]
    assert [p for _, p in orig] == [p for _, p in same]
    assert all(abs(a - b) < 1e-6 for (a, _), (b, _) in zip(orig, same, strict=True))


# --- virtual time and the engine's decisions ----------------------------------------------------


def test_release_time_is_the_deadline_not_the_next_arrival(tmp_path: Path) -> None:
    # Ns 50 is lost; 51.. are held from t(51) and released together 50 ms later.
    path = steady_stream(tmp_path / "s.pcap", 100, lose=(50,))
    out = tmp_path / "o.pcap"
    r = replay(str(path), ReplayOptions(engine=EngineConfig(reorder_timeout=0.05), output=str(out)))
    s = r.sessions[0]
    assert (s.skipped, s.forwarded_in_order, s.released) == (1, 94, 5)
    sent = [
        (i.ts, parse_header(i.payload)) for i in CaptureReader(out) if isinstance(i, UdpDatagram)
    ]
    t51 = T0 + 50 * 0.01  # the 51st frame in the capture carries Ns 51
    released = [(ts, h.ns) for ts, h in sent if not isinstance(h, str) and 50 <= (h.ns or 0) < 55]
    assert [ns for _, ns in released] == [50, 51, 52, 53, 54]  # renumbered: contiguous
    assert all(abs(ts - (t51 + 0.05)) < 2e-6 for ts, _ in released)
    assert s.hold.max == pytest.approx(0.05, abs=1e-6)


def test_compare_reproduces_the_known_numbers(tmp_path: Path) -> None:
    path = steady_stream(tmp_path / "s.pcap", 200, swap_at=100)
    r = replay(str(path), ReplayOptions(compare=True, kernel_reorder_timeout=0.1))
    cmp = result_as_dict(r)["sessions"][0]["compare"]
    assert cmp[COMPARE_L2TPREORDER]["delivered"] == 200
    assert cmp[COMPARE_L2TPREORDER]["dropped"] == 0
    assert cmp[COMPARE_KERNEL0]["dropped"] == 5
    assert cmp["kernel reorderto=100ms"]["dropped"] == 0
    assert cmp[COMPARE_XL2TPD]["dropped"] == 1
    # two consecutive losses: xl2tpd stalls for the rest of the capture, l2tpreorder skips on
    path = steady_stream(tmp_path / "l.pcap", 200, lose=(100, 101))
    cmp = result_as_dict(replay(str(path), ReplayOptions(compare=True)))["sessions"][0]["compare"]
    assert cmp[COMPARE_XL2TPD]["delivered"] == 100
    assert cmp[COMPARE_XL2TPD]["stalled_max_s"] >= 0.9
    assert cmp[COMPARE_L2TPREORDER]["delivered"] == 198
    assert cmp[COMPARE_L2TPREORDER]["stalled_max_s"] == pytest.approx(0.1, abs=0.011)


def late_stream(path: Path, n: int, late: int, by: int) -> Path:
    """n sequenced data messages 10 ms apart; Ns `late` arrives `by` slots (x 10 ms) late."""
    orders = [i for i in range(n) if i != late]
    orders.insert(orders.index(late + by) + 1, late)
    frames = []
    for k, order in enumerate(orders):
        payload = g.l2tp_data(5, 6, b"\xff\x03\x00\x21" + order.to_bytes(4, "big"), ns=order)
        frames.append((T0 + k * 0.01, g.eth(g.udp_ip(LAC, LNS, payload, 1701, 1701))))
    return g.write_pcap(path, frames, g.ETHERNET)


def test_compare_shows_late_packets_delivered_by_us_and_dropped_by_the_lns_models(
    tmp_path: Path,
) -> None:
    """Issue 22: a 20 ms timeout where one packet comes 50 ms late. Its gap is given up; when it
    comes, we deliver it with the next Ns (renumber's reorder.late default); the kernel and xl2tpd
    models, which is what the LNS does without us, drop it."""
    path = late_stream(tmp_path / "late.pcap", 100, late=50, by=5)
    r = replay(str(path), ReplayOptions(compare=True, engine=EngineConfig(reorder_timeout=0.02)))
    (session,) = result_as_dict(r)["sessions"]
    cmp = session["compare"]
    ours = cmp[COMPARE_L2TPREORDER]
    assert (ours["delivered"], ours["dropped"], ours["late_delivered"]) == (100, 0, 1)
    assert session["late_delivered"] == 1 and session["late"] == 0 and session["skipped_ns"] == 1
    for model in (COMPARE_KERNEL0, COMPARE_XL2TPD):
        assert cmp[model]["delivered"] < 100 and cmp[model]["dropped"] >= 1, (model, cmp[model])
        assert cmp[model]["late_delivered"] == 0
    # late: drop (what every LNS model does) loses it here too
    dropped = replay(
        str(path),
        ReplayOptions(compare=True, engine=EngineConfig(reorder_timeout=0.02, late=Late.DROP)),
    )
    ours = result_as_dict(dropped)["sessions"][0]["compare"][COMPARE_L2TPREORDER]
    assert (ours["delivered"], ours["dropped"], ours["late_delivered"]) == (99, 1, 0)
    code, text = run_cli("replay", "pcap", str(path), "--compare", "--timeout", "20")
    assert code == 0
    row = next(line for line in text.splitlines() if "late, delivered" in line)
    assert row.split()[-3:] == ["1", "0", "0"]  # l2tpreorder, kernel reorderto=0, xl2tpd


def test_sequencing_modes_in_the_output(tmp_path: Path) -> None:
    path = steady_stream(tmp_path / "s.pcap", 20, swap_at=5)
    for mode, expect_ns in (
        (Sequencing.PRESERVE, list(range(20))),
        (Sequencing.STRIP, [None] * 20),
    ):
        out = tmp_path / f"{mode}.pcap"
        replay(str(path), ReplayOptions(engine=EngineConfig(sequencing=mode), output=str(out)))
        hs = [parse_header(i.payload) for i in CaptureReader(out) if isinstance(i, UdpDatagram)]
        assert [h.ns for h in hs if not isinstance(h, str)] == expect_ns


# --- command line -------------------------------------------------------------------------------


def test_cli_json_and_table(tmp_path: Path) -> None:
    path = steady_stream(tmp_path / "s.pcap", 50, swap_at=10)
    code, text = run_cli("replay", "pcap", str(path), "--json", "--compare", "--timeout", "20")
    assert code == 0
    doc = json.loads(text)
    assert doc["engine"]["reorder_timeout_ms"] == 20
    (session,) = doc["sessions"]
    assert (session["tunnel_id"], session["session_id"], session["packets"]) == (5, 6, 50)
    assert session["reordered"] == 1 and session["max_displacement"] == 1
    assert session["hold_ms"]["count"] == 1
    code, text = run_cli("replay", "pcap", str(path), "--compare")
    assert code == 0
    assert re.search(rf"^LAC {LAC}:\d+ -> LNS {LNS}:\d+: 1 session$", text, re.M), text
    assert "kernel reorderto=0" in text and "xl2tpd" in text
    code, _ = run_cli("replay", "pcap", str(tmp_path / "missing.pcap"))
    assert code == 1


def test_cli_impair_then_replay(tmp_path: Path) -> None:
    src = shared_pcap("jnetpcap_test-l2tp.pcap")
    imp = tmp_path / "i.pcap"
    code, text = run_cli("impair", str(src), str(imp), "--add-seq", "--swap", "0.1", "--seed", "1")
    assert code == 0 and "given Ns" in text
    code, text = run_cli("replay", "pcap", str(imp), "--timeout", "60000", "--json")
    assert code == 0
    assert json.loads(text)["capture"]["data_with_ns"] == 85
    code, _ = run_cli("impair", str(src), str(imp), "--swap", "2")
    assert code == 2


def test_live_sends_lac_payloads_in_capture_order() -> None:
    src = shared_pcap("jnetpcap_test-l2tp.pcap")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    got: list[bytes] = []

    def receive() -> None:
        try:
            while len(got) < 95:
                got.append(rx.recv(65535))
        except TimeoutError:
            pass

    t = threading.Thread(target=receive)
    t.start()
    try:
        with redirect_stdout(io.StringIO()):
            assert send_live(str(src), f"127.0.0.1:{port}", speed=0) == 0
        t.join(10)
    finally:
        rx.close()
    expected = [
        i.payload
        for i in CaptureReader(src)
        if isinstance(i, UdpDatagram) and i.dst == "192.168.98.222"
    ]
    assert len(expected) == 95
    assert got == expected


# --- damaged captures ---------------------------------------------------------------------------


def test_mutated_pcapng_never_escapes_as_a_traceback(tmp_path: Path) -> None:
    """A real capture converted to pcapng by editcap, then 300 copies with 1-4 random bytes
    changed or the tail cut off: `replay pcap` and `impair` either report (exit 0, whatever was
    readable, with the reason it stopped) or refuse a file that is not a capture (exit 1)."""
    editcap = need_tool("editcap")
    ng = tmp_path / "j.pcapng"
    subprocess.run(
        [editcap, "-F", "pcapng", str(shared_pcap("jnetpcap_test-l2tp.pcap")), str(ng)],
        check=True,
        timeout=60,
    )
    original = ng.read_bytes()
    rng = random.Random(7)
    mutated, out = tmp_path / "m.pcapng", tmp_path / "o.pcap"
    codes: dict[int, int] = {}
    stopped_early = 0
    for _ in range(300):
        data = bytearray(original)
        if rng.random() < 0.1:
            del data[rng.randrange(len(data)) :]
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        mutated.write_bytes(bytes(data))
        with redirect_stderr(io.StringIO()):
            code, text = run_cli("replay", "pcap", str(mutated), "--compare", "-o", str(out))
            codes[code] = codes.get(code, 0) + 1
            stopped_early += "everything before it was read" in text
            icode, _ = run_cli("impair", str(mutated), str(out), "--add-seq", "--swap", "0.1")
        assert code in (0, 1) and icode in (0, 1), (code, icode)
        assert code == icode
    assert codes.get(0, 0) > 200 and stopped_early > 10, (codes, stopped_early)


def test_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path: Path) -> None:
    src = tmp_path / "in.pcap"
    src.write_bytes(shared_pcap("jnetpcap_test-l2tp.pcap").read_bytes())
    original = src.read_bytes()
    (tmp_path / "link.pcap").symlink_to(src)
    for argv in (
        ["replay", "pcap", str(src), "-o", str(src)],
        ["replay", "pcap", str(src), "-o", str(tmp_path / "link.pcap")],
        ["impair", str(src), str(src), "--add-seq"],
        ["impair", str(src), str(tmp_path / "." / "in.pcap")],
        ["replay", "pcap", str(src), "--plot", str(src), "-o", str(tmp_path / "o.pcap")],
    ):
        err = io.StringIO()
        with redirect_stderr(err):
            code, _ = run_cli(*argv)
        assert code == 2, argv
        out_arg = argv[4] if argv[0] == "replay" else argv[2]
        assert f"{out_arg} is the input capture {src}" in err.getvalue(), err.getvalue()
        assert src.read_bytes() == original, argv  # 23,686 bytes, not truncated to 24
        # refused before anything was opened: no -o file, no temp file beside it
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pcap", "link.pcap"], argv


def test_a_failed_run_leaves_no_output_file(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a capture at all\n")
    out = tmp_path / "out.pcap"
    with redirect_stderr(io.StringIO()):
        assert run_cli("replay", "pcap", str(bogus), "-o", str(out))[0] == 1
        assert run_cli("impair", str(bogus), str(out))[0] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no OUT, no temp file
    # a previous output survives a failed run untouched
    out.write_bytes(b"earlier result")
    with redirect_stderr(io.StringIO()):
        assert run_cli("replay", "pcap", str(bogus), "-o", str(out))[0] == 1
    assert out.read_bytes() == b"earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "out.pcap"]


@pytest.mark.parametrize("lns", ["2001:DB8:0:0::1", "[2001:db8:0::1]:1701", "2001:0db8::0001"])
def test_lns_flag_matches_a_non_canonical_ipv6_spelling(lns: str, tmp_path: Path) -> None:
    lac, server = "2001:db8::2", "2001:db8::1"
    frames = [  # the LNS speaks first and both ends use port 1701: only --lns can tell
        (T0, g.eth(g.udp_ip(server, lac, g.l2tp_data(9, 8, b"\xff\x03\x00\x21x"), 1701, 1701))),
        (T0 + 1, g.eth(g.udp_ip(lac, server, g.l2tp_data(5, 6, b"\xff\x03\x00\x21y"), 1701, 1701))),
    ]
    path = g.write_pcap(tmp_path / "v6.pcap", frames, g.ETHERNET)
    r = replay(str(path), ReplayOptions(lns_address=lns))
    (conv,) = r.conversations
    assert (conv.lac[0], conv.lns[0], conv.method) == (lac, server, "--lns")
    assert [(s.tunnel_id, s.session_id) for s in r.sessions] == [(5, 6)]


def test_live_send_waits_while_the_socket_is_full() -> None:
    """A real full send queue (AF_UNIX datagram pair whose reader is slow): the datagram goes
    out once there is room, instead of a second BlockingIOError escaping after a 1 ms sleep."""
    tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        tx.setblocking(False)
        queued = 0
        with pytest.raises(BlockingIOError):
            while True:
                tx.send(b"x" * 1024)
                queued += 1
        rx.settimeout(5)
        drain = threading.Timer(0.2, lambda: [rx.recv(2048) for _ in range(queued)])
        drain.start()
        send_when_writable(tx, b"last")
        drain.join(10)
        assert rx.recv(2048) == b"last"  # after the `queued` ones the reader took
        with pytest.raises(TimeoutError):  # nobody reads any more: a bounded wait, then an error
            while True:
                send_when_writable(tx, b"y" * 1024, timeout=0.05)
    finally:
        tx.close()
        rx.close()


def test_impair_says_why_nothing_was_written(tmp_path: Path) -> None:
    src = shared_pcap("flowcontainer_l2tp.pcap")
    code, text = run_cli("impair", str(src), str(tmp_path / "o.pcap"))
    assert code == 0
    assert "0 datagrams written" in text
    assert "not read: 2,342 frames encrypted" in text and "L2TP over IPsec" in text
    assert "not read: 8 frames IKE" in text


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--jitter", "-5"], "--jitter -5: expected >= 0 ms"),
        (["--swap", "1.5"], "--swap 1.5: expected a probability 0..1"),
        (["--displace-prob", "0.1"], "--displace 0: expected K >= 1 with --displace-prob"),
        (["--burst-len", "0"], "--burst-len 0: expected N >= 1"),
        (["--lns", "1.2.3.4:x"], "--lns = '1.2.3.4:x': expected an IP address"),
    ],
)
def test_impair_bad_flag_names_the_flag_and_unit(
    flags: list[str], expected: str, tmp_path: Path
) -> None:
    src = shared_pcap("jnetpcap_test-l2tp.pcap")
    err = io.StringIO()
    with redirect_stderr(err):
        code, out = run_cli("impair", str(src), str(tmp_path / "o.pcap"), *flags)
    assert code == 2 and out == ""
    assert expected in err.getvalue(), err.getvalue()
    assert not (tmp_path / "o.pcap").exists()


def test_impair_switching_jitter_on_keeps_the_other_dice(tmp_path: Path) -> None:
    src = str(shared_pcap("jnetpcap_test-l2tp.pcap"))
    base = dict(add_seq=True, swap=0.1, loss=0.1, duplicate=0.1, seed=5)
    plain = impair_file(src, str(tmp_path / "a.pcap"), ImpairConfig(**base))  # type: ignore[arg-type]
    jittered = impair_file(
        src, str(tmp_path / "b.pcap"), ImpairConfig(**base, jitter=1e-9)  # type: ignore[arg-type]
    )
    assert plain.data_in == jittered.data_in == 85
    counts = (plain.swapped, plain.lost, plain.duplicated)
    assert counts == (jittered.swapped, jittered.lost, jittered.duplicated)
    assert all(counts)
    # 1 ns of jitter moves no packet past another: the same datagrams in the same order
    assert inner_by_session(tmp_path / "a.pcap", "192.168.98.222") == inner_by_session(
        tmp_path / "b.pcap", "192.168.98.222"
    )


def test_impair_config_refuses_what_the_flags_refuse() -> None:
    """One declaration of impair's ranges (impair.range_problems): the dataclass says it too."""
    for bad, needle in (
        ({"swap": 1.5}, "swap=1.5: expected a probability 0..1"),
        ({"displace_prob": 0.1}, "displace=0: expected K >= 1 with displace_prob"),
        ({"burst_len": 0}, "burst_len=0: expected N >= 1"),
        ({"jitter": -0.005}, "jitter=-0.005: expected >= 0 seconds"),
    ):
        with pytest.raises(ValueError) as info:
            ImpairConfig(**bad)  # type: ignore[arg-type]
        assert str(info.value) == needle
