"""The L2TPv2 wire format (RFC 2661 §3 and §4), defined once, in construct.

This module is the definition: the header with its optional fields, the AVP list, the message
types and the AVP values the relay needs. It parses the control plane (rare, so construct's
~20 µs per message is fine) and builds packets for the tests and tools. The per-packet data path
reads the same fields with `fastpath`, and a property test proves the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from construct import (
    BitsInteger,
    BitStruct,
    Bytes,
    Check,
    ConstructError,
    FixedSized,
    Flag,
    GreedyBytes,
    GreedyRange,
    If,
    Int16ub,
    Optional,
    Struct,
    Switch,
    Tell,
    Terminated,
    this,
)

from l2tpreorder.core import reasons
from l2tpreorder.core.msgtype import MessageType

# --- header (§3.1) ------------------------------------------------------------------------------

FlagWord = BitStruct(
    "T" / Flag,  # 1 = control message
    "L" / Flag,  # Length field present (must be 1 on control)
    "reserved1" / BitsInteger(2),
    "S" / Flag,  # Ns and Nr present (must be 1 on control)
    "reserved2" / BitsInteger(1),
    "O" / Flag,  # Offset Size present (must be 0 on control)
    "P" / Flag,  # priority (data only)
    "reserved3" / BitsInteger(4),
    "version" / BitsInteger(4),  # 2 for L2TPv2; 3 is L2TPv3, 1 is L2F
)

_FIXED_FIELDS = (
    "flags" / FlagWord,
    "length" / If(this.flags.L, Int16ub),
    "tunnel_id" / Int16ub,
    "session_id" / Int16ub,
    "ns" / If(this.flags.S, Int16ub),
    "nr" / If(this.flags.S, Int16ub),
    "offset_size" / If(this.flags.O, Int16ub),
)

# The header up to (not including) the offset padding; `header_len` is where it ends.
HeaderFixedPart = Struct(*_FIXED_FIELDS, "header_len" / Tell)

# The whole header; `payload_offset` is the first byte of the PPP frame.
Header = Struct(
    *_FIXED_FIELDS,
    "offset_pad" / If(this.flags.O, Bytes(this.offset_size)),
    "payload_offset" / Tell,
)

# --- control messages (§4) ----------------------------------------------------------------------


class AttributeType(IntEnum):
    """The AVP attribute types the relay reads (vendor 0, §4.4)."""

    MESSAGE_TYPE = 0
    RESULT_CODE = 1
    ASSIGNED_TUNNEL_ID = 9
    ASSIGNED_SESSION_ID = 14
    SEQUENCING_REQUIRED = 39


ResultCodeValue = Struct(
    "result_code" / Int16ub,
    "error_code" / Optional(Int16ub),
    "error_message" / GreedyBytes,
)

AvpFlags = BitStruct(
    "M" / Flag,  # mandatory
    "H" / Flag,  # hidden: value is encrypted, kept as opaque bytes
    "reserved" / BitsInteger(4),
    "length" / BitsInteger(10),  # whole AVP including this 6-byte header
)

# Typed values for the AVPs we use; everything else (and every hidden AVP) stays raw bytes.
_AVP_VALUE_TYPES: dict[tuple[int, int], Any] = {
    (0, AttributeType.MESSAGE_TYPE): Int16ub,
    (0, AttributeType.RESULT_CODE): ResultCodeValue,
    (0, AttributeType.ASSIGNED_TUNNEL_ID): Int16ub,
    (0, AttributeType.ASSIGNED_SESSION_ID): Int16ub,
    (0, AttributeType.SEQUENCING_REQUIRED): Terminated,  # no value
}


def _avp_value_key(ctx: Any) -> tuple[int, int] | None:
    if ctx.flags.H:
        return None
    return (ctx.vendor_id, ctx.attribute_type)


Avp = Struct(
    "flags" / AvpFlags,
    "vendor_id" / Int16ub,
    "attribute_type" / Int16ub,
    Check(this.flags.length >= 6),
    "value"
    / FixedSized(
        this.flags.length - 6,
        Switch(_avp_value_key, _AVP_VALUE_TYPES, default=GreedyBytes),
    ),
)

AvpList = Struct("avps" / GreedyRange(Avp), Terminated)

ControlMessage = Struct(
    "header" / Header,
    Check(this.header.flags.T),
    "body" / FixedSized(this.header.length - this.header.payload_offset, AvpList),
)

# --- building packets -----------------------------------------------------------------------------


@dataclass(slots=True)
class AvpValue:
    """One AVP: attribute type, value (int, bytes or dict for Result Code), M and H bits."""

    attribute_type: int
    value: Any
    mandatory: bool = True
    hidden: bool = False
    vendor_id: int = 0


def avp_message_type(message_type: int) -> AvpValue:
    return AvpValue(AttributeType.MESSAGE_TYPE, message_type)


def avp_assigned_tunnel_id(tunnel_id: int) -> AvpValue:
    return AvpValue(AttributeType.ASSIGNED_TUNNEL_ID, tunnel_id)


def avp_assigned_session_id(session_id: int) -> AvpValue:
    return AvpValue(AttributeType.ASSIGNED_SESSION_ID, session_id)


def avp_result_code(code: int, error: int | None = None, message: bytes = b"") -> AvpValue:
    value = {"result_code": code, "error_code": error, "error_message": message}
    return AvpValue(AttributeType.RESULT_CODE, value)


def avp_sequencing_required() -> AvpValue:
    return AvpValue(AttributeType.SEQUENCING_REQUIRED, None)


def _build_avp(avp: AvpValue) -> bytes:
    key = None if avp.hidden else (avp.vendor_id, avp.attribute_type)
    value_type = _AVP_VALUE_TYPES.get(key, GreedyBytes) if key is not None else GreedyBytes
    value = b"" if value_type is Terminated else value_type.build(avp.value)
    built: bytes = Avp.build(
        {
            "flags": {
                "M": avp.mandatory,
                "H": avp.hidden,
                "reserved": 0,
                "length": 6 + len(value),
            },
            "vendor_id": avp.vendor_id,
            "attribute_type": avp.attribute_type,
            "value": avp.value if value_type is not Terminated else None,
        }
    )
    return built


def _build_header(
    *,
    control: bool,
    tunnel_id: int,
    session_id: int,
    ns: int | None,
    nr: int,
    with_length: bool,
    offset_size: int | None,
    priority: bool,
    body_len: int,
    offset_pad: bytes | None = None,
) -> bytes:
    has_offset = offset_size is not None
    header_len = 6 + 2 * with_length + 4 * (ns is not None) + 2 * has_offset
    pad = offset_pad if offset_pad is not None else bytes(offset_size or 0)
    built: bytes = Header.build(
        {
            "flags": {
                "T": control,
                "L": with_length,
                "reserved1": 0,
                "S": ns is not None,
                "reserved2": 0,
                "O": has_offset,
                "P": priority,
                "reserved3": 0,
                "version": 2,
            },
            "length": header_len + len(pad) + body_len if with_length else None,
            "tunnel_id": tunnel_id,
            "session_id": session_id,
            "ns": ns,
            "nr": nr if ns is not None else None,
            "offset_size": offset_size,
            "offset_pad": pad if has_offset else None,
        }
    )
    return built


def build_data(
    tunnel_id: int,
    session_id: int,
    payload: bytes,
    *,
    ns: int | None = None,
    nr: int = 0,
    length: bool = False,
    offset_size: int | None = None,
    offset_pad: bytes | None = None,
    priority: bool = False,
) -> bytes:
    """An L2TPv2 data message carrying `payload` (a PPP frame)."""
    header = _build_header(
        control=False,
        tunnel_id=tunnel_id,
        session_id=session_id,
        ns=ns,
        nr=nr,
        with_length=length,
        offset_size=offset_size,
        priority=priority,
        body_len=len(payload),
        offset_pad=offset_pad,
    )
    return header + payload


def build_control(tunnel_id: int, session_id: int, ns: int, nr: int, avps: list[AvpValue]) -> bytes:
    """An L2TPv2 control message; no AVPs makes a ZLB acknowledgement."""
    body = b"".join(_build_avp(a) for a in avps)
    header = _build_header(
        control=True,
        tunnel_id=tunnel_id,
        session_id=session_id,
        ns=ns,
        nr=nr,
        with_length=True,
        offset_size=None,
        priority=False,
        body_len=len(body),
    )
    return header + body


# --- parsing --------------------------------------------------------------------------------------


def flags_word(flags: Any) -> int:
    """The 16-bit flag word from construct's parsed FlagWord."""
    word: int = (
        (flags.T << 15)
        | (flags.L << 14)
        | (flags.reserved1 << 12)
        | (flags.S << 11)
        | (flags.reserved2 << 10)
        | (flags.O << 9)
        | (flags.P << 8)
        | (flags.reserved3 << 4)
        | flags.version
    )
    return word


def parse_header_reference(data: bytes) -> dict[str, int | None] | str:
    """Header fields by the construct definition, or the malformed reason.

    The reference the fast path is proven against; the checks run in the same order as there:
    too short, version, too short for the flags, control flags, Length, offset.
    """
    if len(data) < 2:
        return reasons.TOO_SHORT
    flags = FlagWord.parse(data[:2])
    if flags.version != 2:
        return reasons.L2TPV3 if flags.version == 3 else reasons.BAD_VERSION
    try:
        fixed = HeaderFixedPart.parse(data)
    except ConstructError:
        return reasons.TOO_SHORT
    if flags.T and not (flags.L and flags.S):
        return reasons.CONTROL_WITHOUT_LENGTH_OR_SEQUENCE
    if flags.T and flags.O:
        return reasons.CONTROL_WITH_OFFSET
    end = len(data)
    if flags.L:
        if fixed.length > len(data):
            return reasons.LENGTH_EXCEEDS_DATAGRAM
        if fixed.length < fixed.header_len:
            return reasons.LENGTH_BELOW_HEADER
        end = fixed.length
    try:
        full = Header.parse(data[:end])
    except ConstructError:
        return reasons.OFFSET_BEYOND_END
    return {
        "flags": flags_word(full.flags),
        "length": full.length,
        "tunnel_id": full.tunnel_id,
        "session_id": full.session_id,
        "ns": full.ns,
        "nr": full.nr,
        "offset_size": full.offset_size,
        "payload_offset": full.payload_offset,
        "end": end,
    }


@dataclass(slots=True)
class Control:
    """A parsed control message: header fields, the AVPs, and the values the relay acts on."""

    tunnel_id: int
    session_id: int
    ns: int
    nr: int
    avps: list[AvpValue] = field(default_factory=list)
    message_type: int | None = None  # None for a ZLB acknowledgement
    assigned_tunnel_id: int | None = None
    assigned_session_id: int | None = None
    result_code: int | None = None
    sequencing_required: bool = False

    @property
    def is_zlb(self) -> bool:
        return not self.avps

    @property
    def name(self) -> str:
        """Message type name for logs (e.g. 'CDN', 'ZLB', 'type-99')."""
        if self.message_type is None:
            return "ZLB" if self.is_zlb else "no-message-type"
        try:
            return MessageType(self.message_type).name
        except ValueError:
            return f"type-{self.message_type}"


def parse_control(data: bytes) -> Control | str:
    """Parse a control message with construct; a str result is the malformed reason."""
    header = parse_header_reference(data)
    if isinstance(header, str):
        return header
    if not (header["flags"] or 0) & 0x8000:
        raise ValueError("parse_control called on a data message")
    end = header["end"]
    assert isinstance(end, int)
    try:
        msg = ControlMessage.parse(data[:end])
    except ConstructError:
        return reasons.BAD_AVP
    hdr = msg.header
    control = Control(tunnel_id=hdr.tunnel_id, session_id=hdr.session_id, ns=hdr.ns, nr=hdr.nr)
    for raw in msg.body.avps:
        avp = AvpValue(
            attribute_type=raw.attribute_type,
            value=raw.value,
            mandatory=raw.flags.M,
            hidden=raw.flags.H,
            vendor_id=raw.vendor_id,
        )
        control.avps.append(avp)
        if avp.hidden or avp.vendor_id != 0:
            continue
        if avp.attribute_type == AttributeType.MESSAGE_TYPE and control.message_type is None:
            control.message_type = avp.value
        elif avp.attribute_type == AttributeType.ASSIGNED_TUNNEL_ID:
            control.assigned_tunnel_id = avp.value
        elif avp.attribute_type == AttributeType.ASSIGNED_SESSION_ID:
            control.assigned_session_id = avp.value
        elif avp.attribute_type == AttributeType.RESULT_CODE:
            control.result_code = avp.value.result_code
        elif avp.attribute_type == AttributeType.SEQUENCING_REQUIRED:
            control.sequencing_required = True
    return control
