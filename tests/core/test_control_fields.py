"""Property test: the struct control-message reader agrees with the construct definition.

The engine reads control messages with `fastpath.control_fields` (a few µs) instead of
`wire.parse_control` (150-300 µs), so that a flood of control messages cannot stall the relay.
For broken AVP lists, wrong headers and valid messages of every type, both must accept and
reject the same inputs with the same reason and read the same values.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from l2tpreorder.core import reasons
from l2tpreorder.core.fastpath import ControlFields, control_fields
from l2tpreorder.wire import (
    AvpValue,
    Control,
    MessageType,
    avp_assigned_session_id,
    avp_assigned_tunnel_id,
    avp_message_type,
    avp_result_code,
    avp_sequencing_required,
    build_control,
    build_data,
    parse_control,
)
from tests.core.test_fuzz_engine import broken_control, wrong_header

u16 = st.integers(0, 0xFFFF)
untyped = st.sampled_from([2, 3, 7, 8, 15]) | st.integers(40, 0xFFFF)  # raw-bytes attributes


@st.composite
def valid_control(draw: st.DrawFn) -> bytes:
    makers = [
        lambda: avp_message_type(draw(st.sampled_from(list(MessageType)) | u16)),
        lambda: avp_assigned_tunnel_id(draw(u16)),
        lambda: avp_assigned_session_id(draw(u16)),
        lambda: avp_result_code(draw(u16), draw(st.none() | u16), draw(st.binary(max_size=6))),
        avp_sequencing_required,
        lambda: AvpValue(draw(untyped), draw(st.binary(max_size=8))),
        lambda: AvpValue(draw(u16), draw(st.binary(max_size=8)), hidden=True),
        lambda: AvpValue(0, draw(st.binary(max_size=4)), vendor_id=draw(st.integers(1, 9))),
    ]
    avps = [draw(st.sampled_from(makers))() for _ in range(draw(st.integers(0, 6)))]
    return build_control(draw(u16), draw(u16), draw(u16), draw(u16), avps)


def same(fast: ControlFields | str, slow: Control | str) -> None:
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow
        return
    assert (fast.tunnel_id, fast.session_id) == (slow.tunnel_id, slow.session_id)
    assert fast.message_type == slow.message_type
    assert fast.assigned_tunnel_id == slow.assigned_tunnel_id
    assert fast.assigned_session_id == slow.assigned_session_id
    assert fast.avp_count == len(slow.avps)
    assert fast.name == slow.name


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(valid_control(), broken_control(), wrong_header()))
@example(struct.pack("!HHHHHH", 0xC802, 18, 1, 0, 0, 0) + struct.pack("!HHHH", 0x8008, 0, 0, 4)[:6])
@example(build_control(1, 2, 0, 0, [avp_message_type(4), avp_message_type(14)]))
def test_control_fields_equal_parse_control(data: bytes) -> None:
    if len(data) >= 2 and not data[0] & 0x80 and isinstance(parse_control_or_none(data), bool):
        with pytest.raises(ValueError):
            control_fields(data)
        return
    same(control_fields(data), parse_control(data))


def parse_control_or_none(data: bytes) -> Control | str | bool:
    """parse_control, or False where it refuses a data message (ValueError)."""
    try:
        return parse_control(data)
    except ValueError:
        return False


def test_data_messages_are_refused_like_parse_control() -> None:
    data = build_data(1, 2, b"ppp", ns=1)
    for parse in (control_fields, parse_control):
        with pytest.raises(ValueError):
            parse(data)


def with_length_fixed(data: bytes) -> bytes:
    fixed = bytearray(data)
    struct.pack_into("!H", fixed, 2, len(fixed))
    return bytes(fixed)


def test_every_avp_defect_is_bad_avp() -> None:
    good = build_control(1, 2, 0, 0, [avp_message_type(MessageType.CDN)])  # one 8-byte AVP
    cases = {
        "AVP length 5": good[:12] + struct.pack("!H", 0x8005) + good[14:],
        "AVP length past the end": good[:12] + struct.pack("!H", 0x8009) + good[14:],
        "4 stray bytes after the AVPs": with_length_fixed(good + b"\x00" * 4),
        "Message Type of 1 byte": with_length_fixed(
            good[:12] + struct.pack("!H", 0x8007) + good[14:19]
        ),
        "Sequencing Required with a value": with_length_fixed(
            good + struct.pack("!HHHB", 0x8007, 0, 39, 0)
        ),
    }
    for name, data in cases.items():
        assert control_fields(data) == reasons.BAD_AVP == parse_control(data), name
