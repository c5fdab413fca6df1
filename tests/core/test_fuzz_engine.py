"""Hostile and broken input against the parser and the engine (property tests).

Structured-but-wrong headers (every flag combination, Length lies, offsets past the end,
L2TPv3 and other versions, truncations), control messages with broken AVP lists, and raw
garbage, interleaved with valid sequenced traffic of a few sessions (swapped, duplicated,
lost, restarted Ns). After every step: no exception, every datagram has exactly one counted
outcome, held state is within its caps, and whatever the engine sends on is well-formed.
The coverage-guided counterpart is fuzz/fuzz_engine.py (atheris; tests/core/test_atheris.py).
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fuzz.fuzz_engine import check_parsers
from l2tpreorder.core import reasons
from l2tpreorder.core.engine import EngineConfig, ReorderEngine, Sequencing
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.wire import (
    MessageType,
    avp_assigned_session_id,
    avp_assigned_tunnel_id,
    avp_message_type,
    avp_result_code,
    build_control,
    build_data,
)
from tests.conftest import shared_pcap
from tests.engine_helpers import check_invariants, expected_malformed_reason, udp_payloads

FLOWS: tuple[Hashable, ...] = (("192.0.2.1", 1701), ("192.0.2.2", 1701), "lac-3")
SESSIONS = ((1, 1), (1, 2), (7, 300))

u16 = st.integers(0, 0xFFFF)


# --- strategies ---------------------------------------------------------------------------------


@st.composite
def wrong_header(draw: st.DrawFn) -> bytes:
    """An L2TP-shaped header with any flags and fields, often lying about its own size."""
    version = draw(st.sampled_from([2, 2, 2, 3, 0, 1]) | st.integers(0, 15))
    flags = (draw(u16) & 0xFFF0) | version
    has_l, has_s, has_o = flags & 0x4000, flags & 0x0800, flags & 0x0200
    body = draw(st.binary(max_size=64))
    offset_size = draw(st.sampled_from([0, 1, 4, len(body), len(body) + 1, 0xFFFF]) | u16)
    fields = struct.pack("!HH", draw(u16), draw(u16))
    if has_s:
        fields += struct.pack("!HH", draw(u16), draw(u16))
    if has_o:
        fields += struct.pack("!H", offset_size)
    size = 2 + (2 if has_l else 0) + len(fields) + len(body)
    packet = struct.pack("!H", flags)
    if has_l:
        length = draw(st.sampled_from([size, size - 1, size + 1, 0, 6, 0xFFFF]) | u16)
        packet += struct.pack("!H", length)
    packet += fields + body
    cut = draw(st.none() | st.integers(0, len(packet)))
    return packet if cut is None else packet[:cut]


@st.composite
def broken_control(draw: st.DrawFn) -> bytes:
    """A control message with a correct header and an AVP list that may be broken anywhere."""
    avps = b""
    for _ in range(draw(st.integers(0, 5))):
        value = draw(st.binary(max_size=12))
        true_len = 6 + len(value)
        length = draw(st.sampled_from([true_len, true_len, 0, 5, 6, true_len + 1, 1023]))
        flags = draw(st.sampled_from([0x8000, 0x0000, 0x4000, 0xC000]) | u16) & 0xFC00
        attribute = draw(st.sampled_from([0, 1, 9, 14, 39]) | u16)
        vendor = draw(st.sampled_from([0, 0, 0, 9]))
        avps += struct.pack("!HHH", flags | (length & 0x3FF), vendor, attribute) + value
    if draw(st.booleans()):
        # A valid Message Type first, so the broken part is in a later AVP.
        avps = struct.pack("!HHHH", 0x8008, 0, 0, draw(st.integers(0, 20))) + avps
    header_len = 12
    length = header_len + len(avps)
    tunnel_id, session_id = draw(st.sampled_from([(1, 0), (1, 1), (7, 300), (0, 0)]))
    packet = struct.pack("!HHHHHH", 0xC802, length, tunnel_id, session_id, 0, 0) + avps
    cut = draw(st.none() | st.integers(header_len, len(packet)))
    return packet if cut is None else packet[:cut]


def valid_control(draw: st.DrawFn) -> bytes:
    tunnel_id, session_id = draw(st.sampled_from(SESSIONS))
    msg = draw(st.sampled_from(list(MessageType)))
    avps = [avp_message_type(msg)]
    if draw(st.booleans()):
        avps.append(avp_assigned_tunnel_id(draw(u16)))
    if draw(st.booleans()):
        avps.append(avp_assigned_session_id(draw(u16)))
    if draw(st.booleans()):
        avps.append(avp_result_code(draw(u16), draw(st.none() | u16), draw(st.binary(max_size=8))))
    if draw(st.integers(0, 9)) == 0:
        avps = []  # ZLB
    return build_control(tunnel_id, session_id, draw(u16), draw(u16), avps)


@dataclass
class Step:
    kind: str  # "rx" (towards the LNS), "reverse" (control from the LNS), "expire", "end"
    flow: Hashable
    data: bytes
    dt: float


@st.composite
def steps(draw: st.DrawFn) -> list[Step]:
    """Valid sequenced traffic for a few sessions with broken input mixed in."""
    ns = {(f, s): draw(u16) for f in FLOWS for s in SESSIONS}
    result: list[Step] = []
    for _ in range(draw(st.integers(1, 120))):
        flow = draw(st.sampled_from(FLOWS))
        dt = draw(st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.05, 0.3]))
        kind = draw(st.integers(0, 99))
        if kind < 45:
            session = draw(st.sampled_from(SESSIONS))
            n = ns[(flow, session)]
            jump = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 5, -1, -3, 300, -300, 32768]))
            use = (n + jump) & 0xFFFF
            ns[(flow, session)] = (use + 1) & 0xFFFF if jump >= 0 else n
            packet = build_data(
                *session,
                draw(st.binary(max_size=40)),
                ns=use,
                nr=draw(u16),
                length=draw(st.booleans()),
                offset_size=draw(st.none() | st.integers(0, 6)),
                priority=draw(st.booleans()),
            )
            result.append(Step("rx", flow, packet, dt))
        elif kind < 55:
            result.append(Step("rx", flow, draw(wrong_header()), dt))
        elif kind < 65:
            result.append(Step("rx", flow, draw(broken_control()), dt))
        elif kind < 72:
            result.append(Step("rx", flow, draw(st.binary(max_size=80)), dt))
        elif kind < 80:
            result.append(Step("rx", flow, valid_control(draw), dt))
        elif kind < 88:
            reverse = draw(st.sampled_from([0, 1, 2]))
            packet = (
                valid_control(draw),
                draw(broken_control()),
                draw(wrong_header()),
            )[reverse]
            result.append(Step("reverse", flow, packet, dt))
        elif kind < 96:
            result.append(Step("expire", flow, b"", dt))
        elif kind < 98:
            result.append(Step("kernel_drops", flow, b"", dt))
        else:
            result.append(Step("end", flow, b"", dt))
    return result


configs = st.builds(
    EngineConfig,
    reorder_timeout=st.sampled_from([0.0, 0.01, 0.1]),
    sequencing=st.sampled_from(list(Sequencing)),
    max_held_per_session=st.integers(1, 8),
    max_held_bytes=st.integers(1, 600),
    resync_after=st.integers(2, 5),
    max_sessions=st.integers(1, 6),
)


# --- invariants ---------------------------------------------------------------------------------


def check_output(e: ReorderEngine, sent: list[tuple[Hashable, bytes]]) -> None:
    """Everything sent on is a well-formed L2TPv2 message of a flow that sent us something."""
    for flow, out, _ in e.take_output():
        assert flow in FLOWS
        header = parse_header(out)
        assert not isinstance(header, str), (header, out.hex())
        if not header.is_control and e.config.sequencing is Sequencing.STRIP:
            assert header.ns is None
        sent.append((flow, out))


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(configs, steps())
def test_engine_survives_hostile_input(config: EngineConfig, plan: list[Step]) -> None:
    e = ReorderEngine(config)
    now = 100.0
    sent: list[tuple[Hashable, bytes]] = []
    for step in plan:
        now += step.dt
        if step.kind == "rx":
            before = e.counters.received
            malformed_before = dict(e.counters.malformed)
            reason = expected_malformed_reason(step.data)
            outcome = e.receive(step.data, step.flow, now)
            event(reason or Outcome(outcome).name)  # --hypothesis-show-statistics shows the mix
            assert e.counters.received == before + 1
            if reason is not None:
                assert outcome == Outcome.DROPPED_MALFORMED
                assert e.counters.malformed[reason] == malformed_before[reason] + 1
            else:
                assert outcome != Outcome.DROPPED_MALFORMED
        elif step.kind == "reverse":
            before = e.counters.received
            e.observe_reverse(step.data, step.flow, now)
            assert e.counters.received == before  # reverse traffic is not ours to count
        elif step.kind == "kernel_drops":
            e.note_kernel_drops(now)
        elif step.kind == "expire":
            deadline = e.next_deadline()
            e.expire(now if deadline is None else max(now, deadline))
        else:
            session = e.session(step.flow, *SESSIONS[0])
            if session is not None:
                e.end_session(step.flow, *SESSIONS[0], now)
        check_invariants(e)
        check_output(e, sent)
    for counter in ("sessions_evicted", "resyncs", "released", "dropped_late"):
        if getattr(e.counters, counter):
            event(counter)
    e.flush(now)
    check_invariants(e)
    check_output(e, sent)
    assert e.counters.held_packets == 0
    c = e.counters
    control_out = sum(1 for _, d in sent if d[0] & 0x80)
    assert control_out == c.forwarded_control == c.rx_control
    assert len(sent) == c.forwarded + c.released  # nothing sent twice, nothing made up


@settings(max_examples=1000, deadline=None)
@given(st.one_of(wrong_header(), broken_control(), st.binary(max_size=120)))
def test_parsers_agree_and_never_raise(data: bytes) -> None:
    """The fuzz harness's parser check (parse_header, sequenced_data, parse_control and
    control_fields agree on one datagram: a result, not a crash), driven by hypothesis."""
    check_parsers(data)


@settings(max_examples=500, deadline=None)
@given(broken_control())
def test_broken_avp_lists_are_counted_bad_avp(data: bytes) -> None:
    e = ReorderEngine()
    outcome = e.receive(data, "lac", 0.0)
    reason = expected_malformed_reason(data)
    if reason is None:
        assert outcome == Outcome.FORWARDED_CONTROL
        assert e.take_output() == [("lac", data, None)]  # control passes untouched
    else:
        assert reason in (reasons.BAD_AVP, reasons.LENGTH_EXCEEDS_DATAGRAM)
        assert outcome == Outcome.DROPPED_MALFORMED
        assert e.counters.malformed[reason] == 1
        assert e.take_output() == []


def test_avp_length_past_the_message_end_is_bad_avp() -> None:
    """The shape of tcpdump's l2tp-avp-overflow reproducer, rebuilt as a valid header."""
    good = build_control(1, 0, 0, 0, [avp_message_type(MessageType.SCCRQ)])
    for avp_length in (0, 5, len(good) - 12 + 1, 1023):
        bad = bytearray(good)
        struct.pack_into("!H", bad, 12, 0x8000 | avp_length)
        e = ReorderEngine()
        assert e.receive(bytes(bad), "lac", 0.0) == Outcome.DROPPED_MALFORMED
        assert e.counters.malformed[reasons.BAD_AVP] == 1, avp_length


# --- the real fuzz reproducer capture -------------------------------------------------------------


def test_tcpdump_avp_overflow_capture_is_counted_malformed() -> None:
    """tcpdump's l2tp-avp-overflow reproducer (frames cut to 58 bytes; the UDP length field
    claims 6,632). Its 16 UDP/1701 payloads have T and L set but S clear plus reserved bits,
    so a strict RFC 2661 parser rejects them at the header (control without sequence), before
    the AVPs tcpdump overflowed on; the other two UDP payloads are not version 2."""
    payloads = udp_payloads(shared_pcap("tcpdump_l2tp-avp-overflow.pcap"))
    assert len(payloads) == 18
    e = ReorderEngine()
    for _, payload in payloads:
        assert e.receive(payload, "capture", 0.0) == Outcome.DROPPED_MALFORMED
        if payload[0] & 0x80:  # control: what the LNS side would also have to survive
            assert e.observe_reverse(payload, "capture", 0.0) in reasons.MALFORMED_REASONS
    c = e.counters
    assert c.received == c.rx_malformed == 18
    assert c.malformed[reasons.CONTROL_WITHOUT_LENGTH_OR_SEQUENCE] == 16
    assert c.malformed[reasons.BAD_VERSION] == 2
    assert sum(1 for port, _ in payloads if port == 1701) == 16
    assert e.take_output() == [] and e.session_count == 0
