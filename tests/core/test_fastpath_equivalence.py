"""Property test: the struct fast path reads exactly what the construct definition reads.

Inputs are assembled byte by byte here (independently of both parsers) from every flag
combination, random field values, offset fields, lying Length values, truncation and trailing
bytes. For each, both parsers must return the same fields, or both the same malformed reason.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from l2tpreorder import wire
from l2tpreorder.core import fastpath, reasons
from tests.engine_helpers import sequenced_data


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([2] * 12 + list(range(16))))
    t, l_, s, o, p = (draw(st.booleans()) for _ in range(5))
    if draw(st.booleans()):
        # Half the inputs use the shapes real traffic has, so their edges get explored hard.
        version = 2
        t, l_, s, o = draw(
            st.sampled_from([(0, 0, 1, 0), (0, 1, 1, 0), (1, 1, 1, 0), (0, 1, 0, 0)])
        )
    reserved = draw(st.sampled_from([0, 0, 0, draw(st.integers(0, 0xFF))]))
    flags = (
        (t << 15) | (l_ << 14) | (s << 11) | (o << 9) | (p << 8) | version
        | ((reserved & 0x3) << 12) | ((reserved >> 2 & 1) << 10) | ((reserved >> 3 & 0xF) << 4)
    )  # fmt: skip
    body = bytearray()
    tunnel_id = draw(st.integers(0, 0xFFFF))
    session_id = draw(st.integers(0, 0xFFFF))
    body += struct.pack("!HH", tunnel_id, session_id)
    if s:
        body += struct.pack("!HH", draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))
    if o:
        offset_size = draw(st.one_of(st.integers(0, 16), st.integers(0, 0xFFFF)))
        body += struct.pack("!H", offset_size)
        body += bytes(min(offset_size, draw(st.integers(0, 20))))
    body += draw(st.binary(max_size=24))
    header_len = 2 + (2 if l_ else 0)
    if l_:
        honest = header_len + len(body)
        length = draw(
            st.one_of(
                st.just(honest),
                st.integers(0, 0xFFFF),
                st.integers(max(0, honest - 8), honest + 8),
                st.integers(0, 20),  # around every header size: the Length edge cases
            )
        )
        data = struct.pack("!HH", flags, length & 0xFFFF) + bytes(body)
    else:
        data = struct.pack("!H", flags) + bytes(body)
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return data if cut is None else data[:cut]


def check_same(data: bytes) -> None:
    reference = wire.parse_header_reference(data)
    fast = fastpath.parse_header(data)
    if isinstance(reference, str):
        assert fast == reference, (data.hex(), fast, reference)
        assert reference in reasons.MALFORMED_REASONS
    else:
        assert isinstance(fast, fastpath.Header), (data.hex(), fast, reference)
        assert fast.fields() == reference, data.hex()


def check_sequenced_shortcut(data: bytes) -> None:
    """The engine's shortcut agrees with parse_header whenever it answers, and always answers
    for the common shapes (data, S set, no offset)."""
    fast = fastpath.parse_header(data)
    shortcut = sequenced_data(data)
    common = (
        isinstance(fast, fastpath.Header)
        and not fast.is_control
        and fast.has_sequence
        and not fast.has_offset
    )
    if shortcut is None:
        assert not common, data.hex()
        return
    assert common, data.hex()
    assert isinstance(fast, fastpath.Header)
    key, ns, ns_offset = shortcut
    assert key == (fast.tunnel_id << 16) | fast.session_id
    assert ns == fast.ns
    assert ns_offset == fast.ns_offset


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers())
@example(b"\x48\x02\x00\x0a" + bytes(8))  # L+S data, Length 10 < its 12-byte header
@example(b"\x48\x02\x00\x0c" + bytes(8))  # L+S data, Length exactly the header
@example(b"\x08\x02" + bytes(8))  # S data, exactly the 10-byte header
@example(b"\x48\x02\x00\x0e" + bytes(10) + b"pad")  # Length < datagram: the rest is padding
@example(b"\x48\x02\x00\x20" + bytes(10))  # Length > datagram: truncated, malformed
def test_fast_path_equals_construct(data: bytes) -> None:
    check_same(data)
    check_sequenced_shortcut(data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40))
def test_fast_path_equals_construct_on_noise(data: bytes) -> None:
    check_same(data)
    check_sequenced_shortcut(data)


@settings(max_examples=500, deadline=None)
@given(
    tunnel_id=st.integers(0, 0xFFFF),
    session_id=st.integers(0, 0xFFFF),
    ns=st.integers(0, 0xFFFF),
    nr=st.integers(0, 0xFFFF),
    new_ns=st.integers(0, 0xFFFF),
    length=st.booleans(),
    offset_size=st.one_of(st.none(), st.integers(0, 8)),
    payload=st.binary(max_size=64),
)
def test_rewrites_match_construct(
    tunnel_id: int,
    session_id: int,
    ns: int,
    nr: int,
    new_ns: int,
    length: bool,
    offset_size: int | None,
    payload: bytes,
) -> None:
    """Renumbering and stripping produce what construct itself would have built."""
    data = wire.build_data(
        tunnel_id, session_id, payload, ns=ns, nr=nr, length=length, offset_size=offset_size
    )
    header = fastpath.parse_header(data)
    assert isinstance(header, fastpath.Header) and header.ns_offset is not None
    renumbered = fastpath.with_ns(data, header.ns_offset, new_ns)
    assert renumbered == wire.build_data(
        tunnel_id, session_id, payload, ns=new_ns, nr=nr, length=length, offset_size=offset_size
    )
    stripped = fastpath.without_sequence(data, header.ns_offset)
    assert stripped == wire.build_data(
        tunnel_id, session_id, payload, length=length, offset_size=offset_size
    )
    assert fastpath.with_sequence(stripped, ns, nr) == data  # the inverse (impair --add-seq)


def test_every_reason_is_reachable() -> None:
    """Each header reason has a concrete witness, named so a regression says which broke."""
    witnesses = {
        reasons.TOO_SHORT: b"\x08",
        reasons.BAD_VERSION: b"\x00\x01\x00\x00\x00\x00",
        reasons.L2TPV3: b"\x00\x03\x00\x00\x00\x00",
        reasons.CONTROL_WITHOUT_LENGTH_OR_SEQUENCE: b"\x88\x02" + bytes(8),
        reasons.CONTROL_WITH_OFFSET: b"\xca\x02\x00\x0e" + bytes(10),
        reasons.LENGTH_EXCEEDS_DATAGRAM: b"\x40\x02\x00\x40\x00\x01\x00\x01",
        reasons.LENGTH_BELOW_HEADER: b"\x40\x02\x00\x04\x00\x01\x00\x01",
        reasons.OFFSET_BEYOND_END: b"\x02\x02\x00\x01\x00\x01\x00\x10\x00",
    }
    for reason, data in witnesses.items():
        assert fastpath.parse_header(data) == reason
        assert wire.parse_header_reference(data) == reason
