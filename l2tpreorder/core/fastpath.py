"""The `struct` fast path for L2TPv2 headers (RFC 2661 §3.1).

construct (`wire.py`) is the definition of the format; this module reads the same fields about a
hundred times faster, which is what the per-packet path needs. A hypothesis property test
(tests/core/test_fastpath_equivalence.py) proves both give the same fields or the same reason for
every flag combination, random values, offsets and truncated or lying inputs.
"""

from __future__ import annotations

import struct
from typing import Final

from l2tpreorder.core import reasons

# Flag word bits (first 16 bits of every L2TP header).
T_BIT: Final = 0x8000  # control message
L_BIT: Final = 0x4000  # Length present
S_BIT: Final = 0x0800  # Ns/Nr present
O_BIT: Final = 0x0200  # Offset Size present
P_BIT: Final = 0x0100  # priority (data only)
VERSION_MASK: Final = 0x000F

_u16: Final = struct.Struct("!H").unpack_from
_u16x2: Final = struct.Struct("!HH").unpack_from
_pack_u16: Final = struct.Struct("!H").pack
_u16x2_pack: Final = struct.Struct("!HH").pack


class Header:
    """Fields of one L2TPv2 header, named as in RFC 2661, plus where things are in the datagram."""

    __slots__ = (
        "end",
        "flags",
        "length",
        "nr",
        "ns",
        "ns_offset",
        "offset_size",
        "payload_offset",
        "session_id",
        "tunnel_id",
    )

    def __init__(
        self,
        flags: int,
        length: int | None,
        tunnel_id: int,
        session_id: int,
        ns: int | None,
        nr: int | None,
        offset_size: int | None,
        ns_offset: int | None,
        payload_offset: int,
        end: int,
    ) -> None:
        self.flags = flags
        self.length = length
        self.tunnel_id = tunnel_id
        self.session_id = session_id
        self.ns = ns
        self.nr = nr
        self.offset_size = offset_size
        self.ns_offset = ns_offset  # byte offset of Ns, for rewriting it in place
        self.payload_offset = payload_offset  # first byte after the header and offset padding
        self.end = end  # Length when present, else the datagram size

    @property
    def is_control(self) -> bool:
        return bool(self.flags & T_BIT)

    @property
    def has_length(self) -> bool:
        return bool(self.flags & L_BIT)

    @property
    def has_sequence(self) -> bool:
        return bool(self.flags & S_BIT)

    @property
    def has_offset(self) -> bool:
        return bool(self.flags & O_BIT)

    @property
    def priority(self) -> bool:
        return bool(self.flags & P_BIT)

    @property
    def version(self) -> int:
        return self.flags & VERSION_MASK

    def fields(self) -> dict[str, int | None]:
        """The wire fields only (what the equivalence test compares with construct)."""
        return {
            "flags": self.flags,
            "length": self.length,
            "tunnel_id": self.tunnel_id,
            "session_id": self.session_id,
            "ns": self.ns,
            "nr": self.nr,
            "offset_size": self.offset_size,
            "payload_offset": self.payload_offset,
            "end": self.end,
        }

    def __repr__(self) -> str:
        return f"Header({', '.join(f'{k}={v}' for k, v in self.fields().items())})"


def parse_header(data: bytes | bytearray | memoryview) -> Header | str:
    """Parse an L2TPv2 header; a str result is the malformed reason (see `reasons`)."""
    n = len(data)
    if n < 2:
        return reasons.TOO_SHORT
    flags = (data[0] << 8) | data[1]
    version = flags & VERSION_MASK
    if version != 2:
        return reasons.L2TPV3 if version == 3 else reasons.BAD_VERSION
    has_l = flags & L_BIT
    has_s = flags & S_BIT
    has_o = flags & O_BIT
    header_len = 6 + (2 if has_l else 0) + (4 if has_s else 0) + (2 if has_o else 0)
    if n < header_len:
        return reasons.TOO_SHORT
    if flags & T_BIT:
        if not (has_l and has_s):
            return reasons.CONTROL_WITHOUT_LENGTH_OR_SEQUENCE
        if has_o:
            return reasons.CONTROL_WITH_OFFSET
    pos = 2
    length: int | None = None
    end = n
    if has_l:
        length = _u16(data, 2)[0]
        if length > n:
            return reasons.LENGTH_EXCEEDS_DATAGRAM
        if length < header_len:
            return reasons.LENGTH_BELOW_HEADER
        end = length
        pos = 4
    tunnel_id, session_id = _u16x2(data, pos)
    pos += 4
    ns: int | None = None
    nr: int | None = None
    ns_offset: int | None = None
    if has_s:
        ns_offset = pos
        ns, nr = _u16x2(data, pos)
        pos += 4
    offset_size: int | None = None
    if has_o:
        offset_size = _u16(data, pos)[0]
        pos += 2 + offset_size
        if pos > end:
            return reasons.OFFSET_BEYOND_END
    return Header(flags, length, tunnel_id, session_id, ns, nr, offset_size, ns_offset, pos, end)


def raw_ns_readable(data: bytes | bytearray | memoryview) -> bool:
    """An L2TPv2 data message with the S bit whose Ns lies inside the datagram, malformed or
    not: an LNS that ignores Length (the kernel's L2TP does) reads that Ns. Such a malformed
    message must not reach the LNS untouched while it sees our numbering (renumber, strip):
    its raw Ns could repeat one we hand out (issue 21)."""
    n = len(data)
    if n < 2 or data[1] & 0x0F != 2 or data[0] & 0x80 or not data[0] & 0x08:
        return False
    return n >= (10 if data[0] & 0x40 else 8)


def with_ns(data: bytes, ns_offset: int, ns: int) -> bytes:
    """A copy of `data` with Ns replaced (renumber mode). Nr and everything else stay."""
    return data[:ns_offset] + _pack_u16(ns) + data[ns_offset + 2 :]


def with_sequence(data: bytes, ns: int, nr: int = 0) -> bytes:
    """A copy of a data message without Ns given Ns/Nr: S set, Length (if any) grown by 4.

    The inverse of `without_sequence`; `impair --add-seq` uses it to make SEIL-style traffic.
    """
    flags = (data[0] << 8) | data[1]
    at = 4 if flags & L_BIT else 2  # tunnel and session IDs follow the flags (and Length)
    head = _pack_u16(flags | S_BIT)
    if flags & L_BIT:
        head += _pack_u16(_u16(data, 2)[0] + 4)
    return head + data[at : at + 4] + _u16x2_pack(ns & 0xFFFF, nr & 0xFFFF) + data[at + 4 :]


def without_sequence(data: bytes, ns_offset: int) -> bytes:
    """A copy of `data` with Ns/Nr removed, S cleared and Length (if any) reduced by 4 (strip)."""
    flags = (data[0] << 8) | data[1]
    head = _pack_u16(flags & ~S_BIT & 0xFFFF)
    if flags & L_BIT:
        head += _pack_u16(_u16(data, 2)[0] - 4) + data[4:ns_offset]
    else:
        head += data[2:ns_offset]
    return head + data[ns_offset + 4 :]


# AVP attribute types the relay acts on (vendor 0; see wire.AttributeType) and the value sizes
# the construct definition accepts for them: at least 2 bytes, or exactly none.
_AVP_MESSAGE_TYPE: Final = 0
_AVP_RESULT_CODE: Final = 1
_AVP_ASSIGNED_TUNNEL_ID: Final = 9
_AVP_ASSIGNED_SESSION_ID: Final = 14
_AVP_SEQUENCING_REQUIRED: Final = 39
_AVP_TWO_BYTES_AT_LEAST = frozenset(
    {_AVP_MESSAGE_TYPE, _AVP_RESULT_CODE, _AVP_ASSIGNED_TUNNEL_ID, _AVP_ASSIGNED_SESSION_ID}
)
_u16x3: Final = struct.Struct("!HHH").unpack_from
_MESSAGE_NAMES = {
    1: "SCCRQ", 2: "SCCRP", 3: "SCCCN", 4: "StopCCN", 6: "HELLO", 7: "OCRQ", 8: "OCRP",
    9: "OCCN", 10: "ICRQ", 11: "ICRP", 12: "ICCN", 14: "CDN", 15: "WEN", 16: "SLI",
}  # fmt: skip


class ControlFields:
    """What the engine acts on in a control message: header IDs and three AVP values."""

    __slots__ = (
        "assigned_session_id",
        "assigned_tunnel_id",
        "avp_count",
        "message_type",
        "session_id",
        "tunnel_id",
    )

    def __init__(self, tunnel_id: int, session_id: int) -> None:
        self.tunnel_id = tunnel_id
        self.session_id = session_id
        self.message_type: int | None = None  # None for a ZLB acknowledgement
        self.assigned_tunnel_id: int | None = None
        self.assigned_session_id: int | None = None
        self.avp_count = 0

    @property
    def name(self) -> str:
        """Message type name for logs, as `wire.Control.name` gives it."""
        if self.message_type is None:
            return "ZLB" if not self.avp_count else "no-message-type"
        return _MESSAGE_NAMES.get(self.message_type, f"type-{self.message_type}")


def control_fields(data: bytes | bytearray | memoryview) -> ControlFields | str:
    """Validate a control message's AVP list and read the fields the engine needs, with struct.

    `wire.parse_control` (construct) is the definition and takes 150-300 µs a message, so a
    flood of control messages could stall the relay; this takes a few µs. A property test
    (tests/core/test_control_fields.py) proves both accept and reject the same inputs with the same
    reason and read the same values. A str result is the malformed reason.
    """
    header = parse_header(data)
    if isinstance(header, str):
        return header
    if not header.flags & T_BIT:
        raise ValueError("control_fields called on a data message")
    fields = ControlFields(header.tunnel_id, header.session_id)
    pos = header.payload_offset
    end = header.end
    while pos < end:
        if end - pos < 6:
            return reasons.BAD_AVP
        flags_length, vendor_id, attribute_type = _u16x3(data, pos)
        size = flags_length & 0x3FF
        if size < 6 or pos + size > end:
            return reasons.BAD_AVP
        value_len = size - 6
        fields.avp_count += 1
        if vendor_id == 0 and not flags_length & 0x4000:  # vendor 0, not hidden: typed value
            if attribute_type in _AVP_TWO_BYTES_AT_LEAST:
                if value_len < 2:
                    return reasons.BAD_AVP
                value = _u16(data, pos + 6)[0]
                if attribute_type == _AVP_MESSAGE_TYPE:
                    if fields.message_type is None:
                        fields.message_type = value
                elif attribute_type == _AVP_ASSIGNED_TUNNEL_ID:
                    fields.assigned_tunnel_id = value
                elif attribute_type == _AVP_ASSIGNED_SESSION_ID:
                    fields.assigned_session_id = value
            elif attribute_type == _AVP_SEQUENCING_REQUIRED and value_len:
                return reasons.BAD_AVP
        pos += size
    return fields
