"""Coverage-guided fuzzing (atheris / libFuzzer) of the parsers and the reorder engine.

Checks: parse_header, sequenced_data, parse_control (construct) and control_fields (struct)
agree and never raise; the engine never raises and keeps its invariants.

Each input is one raw datagram for the parsers, and also a script for the engine: byte 0
picks a small config (timeout, mode, session cap), then records of [op, length, datagram]
are fed to the engine from up to four peers, forwards or (control only) in reverse, with the
clock stepped and timers run as the op byte says. After every record the engine's invariants
must hold; any exception or broken invariant is a crash that libFuzzer saves and reports.

    make fuzz                                   # 5 minutes, corpus in fuzz/corpus/
    python fuzz/fuzz_engine.py -runs=1 FILE...  # replay inputs (e.g. tests/core/regressions/*)

`check_input` needs no atheris, so tests replay saved crash inputs with it directly.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if __name__ == "__main__":
    import os

    import atheris

    # atheris measures coverage on Python bytecode: the compiled build (l2tpreorder.build) has
    # none, so fuzzing runs the pure modules (the same source).
    os.environ.setdefault("L2TPREORDER_BUILD", "pure")
    with atheris.instrument_imports(include=["l2tpreorder", "construct"]):
        from l2tpreorder.core import reasons
        from l2tpreorder.core.engine import EngineConfig, ReorderEngine, Sequencing
        from l2tpreorder.core.fastpath import control_fields, parse_header
        from l2tpreorder.wire import parse_control
else:
    from l2tpreorder.core import reasons
    from l2tpreorder.core.engine import EngineConfig, ReorderEngine, Sequencing
    from l2tpreorder.core.fastpath import control_fields, parse_header
    from l2tpreorder.wire import parse_control
# The invariants and the capture reader the tests use (the harness runs from the repo root).
from tests.engine_helpers import check_invariants, sequenced_data, udp_payloads  # noqa: E402

FLOWS: tuple[Hashable, ...] = (("192.0.2.1", 1701), ("192.0.2.2", 1701), ("192.0.2.3", 4500), 4)
TIMEOUTS = (0.0, 0.01, 0.1, 0.1)
MODES = (Sequencing.RENUMBER, Sequencing.PRESERVE, Sequencing.STRIP, Sequencing.RENUMBER)
STEPS = (0.0, 0.0, 0.001, 0.005, 0.02, 0.2, 1.0, -0.3)  # capture clocks can step back
HELD_CAPS = (4, 1, 2, 8)
BYTE_CAPS = (2000, 100, 600, 5000)

OP_REVERSE = 0x04
OP_EXPIRE = 0x40
OP_END_FLOW = 0x80


def check_parsers(data: bytes) -> None:
    """The parsers on one raw datagram: a Header/Control or a known reason, never a crash."""
    header = parse_header(data)
    fast = sequenced_data(data)
    if isinstance(header, str):
        assert header in reasons.MALFORMED_REASONS, header
        assert fast is None
        return
    if fast is not None:
        assert header.ns is not None and not header.is_control
        assert fast == ((header.tunnel_id << 16) | header.session_id, header.ns, header.ns_offset)
    assert header.payload_offset <= header.end <= len(data)
    if header.is_control:
        # The engine's struct reader must agree with the construct definition.
        control = parse_control(data)
        fast_control = control_fields(data)
        if isinstance(control, str) or isinstance(fast_control, str):
            assert control == fast_control == reasons.BAD_AVP, (control, fast_control)
        else:
            assert (control.tunnel_id, control.session_id) == (header.tunnel_id, header.session_id)
            assert fast_control.message_type == control.message_type
            assert fast_control.assigned_tunnel_id == control.assigned_tunnel_id
            assert fast_control.assigned_session_id == control.assigned_session_id
            assert fast_control.avp_count == len(control.avps)


def make_config(sel: int, extra: int = 0) -> EngineConfig:
    """A small config from one or two selector bytes, so caps are reached within an input."""
    return EngineConfig(
        reorder_timeout=TIMEOUTS[sel & 3],
        sequencing=MODES[(sel >> 2) & 3],
        max_held_per_session=HELD_CAPS[extra & 3],
        max_held_bytes=BYTE_CAPS[(extra >> 2) & 3],
        max_sessions=1 + ((sel >> 4) & 7),
        adaptive=bool(sel & 0x80),  # the per-session adaptive timeout, floor 2 ms
    )


def check_engine(e: ReorderEngine) -> None:
    check_invariants(e)
    e.take_output()


def check_input(data: bytes) -> None:
    """One fuzz input: the raw datagram through the parsers, then the engine script.

    Script: byte 0 selects the config; then records [op, n, n bytes]. op bits 0-1: peer;
    bit 2: reverse direction (LNS to LAC; a non-control record there is a reconfigure with
    its first two bytes as the new config); bits 3-5: clock step; bit 6: run due timers;
    bit 7: end the peer's sessions afterwards (bits 6 and 7: the socket layer reports kernel
    receive-queue drops instead).
    """
    check_parsers(data)
    if not data:
        return
    e = ReorderEngine(make_config(data[0]))
    now = 1000.0
    pos = 1
    while pos + 2 <= len(data):
        op, size = data[pos], data[pos + 1]
        datagram = data[pos + 2 : pos + 2 + size]
        pos += 2 + size
        flow = FLOWS[op & 3]
        now += STEPS[(op >> 3) & 7]
        if op & OP_REVERSE:
            if datagram and datagram[0] & 0x80:
                e.observe_reverse(datagram, flow, now)
            else:
                # Not control: use it as a SIGHUP with a new config instead.
                sel = datagram[0] if datagram else 0
                e.reconfigure(make_config(sel, datagram[1] if len(datagram) > 1 else 0), now)
        else:
            before = e.counters.received
            e.receive(datagram, flow, now)
            assert e.counters.received == before + 1
        if op & OP_EXPIRE:
            deadline = e.next_deadline()
            if deadline is not None:
                e.expire(max(now, deadline))
        if op & (OP_END_FLOW | OP_EXPIRE) == OP_END_FLOW | OP_EXPIRE:
            e.note_kernel_drops(now)  # the kernel dropped datagrams
        elif op & OP_END_FLOW:
            e.end_flow(flow, now)
        check_engine(e)
    e.flush(now)
    check_engine(e)
    assert e.counters.held_packets == 0


def record(op: int, datagram: bytes) -> bytes:
    datagram = datagram[:255]
    return bytes([op, len(datagram)]) + datagram


def seed_inputs() -> list[bytes]:
    """Valid traffic shapes to start from: libFuzzer mutates them into the broken ones."""
    from l2tpreorder.wire import (
        MessageType,
        avp_assigned_session_id,
        avp_assigned_tunnel_id,
        avp_message_type,
        build_control,
        build_data,
    )

    ppp = b"\xff\x03\x00\x21" + bytes(range(20))
    swapped = [0, 1, 3, 2, 4, 6, 5, 7, 9, 8]
    seeds = [
        bytes([0x12]) + b"".join(record(0x08, build_data(1, 2, ppp, ns=n)) for n in swapped),
        bytes([0x35])
        + b"".join(record(0x48, build_data(1, 2, ppp, ns=n, length=True)) for n in swapped),
        bytes([0x22])
        + b"".join(record(0x10, build_data(3, 4, ppp, ns=n, offset_size=2)) for n in swapped),
        bytes([0x71])
        + record(0, build_control(0, 0, 0, 0, [avp_message_type(MessageType.SCCRQ),
                                               avp_assigned_tunnel_id(5)]))
        + record(OP_REVERSE, build_control(5, 0, 0, 1, [avp_message_type(MessageType.SCCRP),
                                                        avp_assigned_tunnel_id(9)]))
        + record(OP_REVERSE, build_control(5, 7, 1, 2, [avp_message_type(MessageType.ICRP),
                                                        avp_assigned_session_id(8)]))
        + record(0, build_control(9, 8, 2, 2, [avp_message_type(MessageType.ICCN)]))
        + b"".join(record(0x08, build_data(9, 8, ppp, ns=n)) for n in (0, 2, 1, 3, 5))
        + record(0, build_control(9, 8, 3, 3, [avp_message_type(MessageType.CDN)]))
        + record(0, build_control(9, 0, 4, 3, [avp_message_type(MessageType.StopCCN)])),
        bytes([0x40])
        + record(0, build_data(1, 1, ppp))
        + record(OP_END_FLOW, build_control(1, 1, 0, 0, [])),
        bytes([0x13])
        + b"".join(record(0x08, build_data(1, 2, ppp, ns=n)) for n in (0, 2, 3, 4, 5, 6))
        + record(OP_REVERSE, bytes([0x27, 0x05]))
        + b"".join(record(0x38, build_data(1, 2, ppp, ns=n)) for n in (1, 8, 7)),
    ]  # fmt: skip
    pcaps = ROOT.parent / "shared" / "pcaps"
    if pcaps.is_dir():
        for pcap in sorted(pcaps.glob("*l2tp*.pcap")):
            payloads = [p for _, p in udp_payloads(pcap, 1701)[:40]]
            seeds.append(bytes([0x10]) + b"".join(record(0, p) for p in payloads))
    return seeds


def main() -> None:
    corpus = [a for a in sys.argv[1:] if not a.startswith("-") and Path(a).is_dir()]
    if corpus and not any(Path(corpus[0]).iterdir()):
        for i, seed in enumerate(seed_inputs()):
            (Path(corpus[0]) / f"seed-{i:02d}").write_bytes(seed)
    atheris.Setup(sys.argv, check_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
