"""The netlink parse's two forms agree: `_parse` (byte indexing, what the compiled build runs) and
`_parse_struct` (struct calls, the interpreted build's), on any run of messages the kernel could
send and on cut or garbled ones; and `parse_queued` gives the same from bytes, a bytearray and an
mmap at an offset (the receive ring's memory)."""

from __future__ import annotations

import errno
import mmap
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from l2tpreorder.daemon.inpath import nfqueue as nq
from tests.inpath_packets import Packet, as_tuple

ATTRS = st.sampled_from(
    [
        nq._attr(nq.NFQA_SKB_INFO, struct.pack("!I", nq.NFQA_SKB_CSUM_NOTVERIFIED)),
        nq._attr(nq.NFQA_SKB_INFO, struct.pack("!I", 0x7)),
        nq._attr(nq.NFQA_CAP_LEN, struct.pack("!I", 9000)),
        nq._attr(4, struct.pack("!I", 1)),  # NFQA_IFINDEX_INDEV: skipped
        nq._attr(nq.NFQA_SKB_INFO | 0x8000, struct.pack("!H", 1)),  # nested bit, too short
    ]
)


@st.composite
def packet_message(draw: st.DrawFn) -> bytes:
    packet_id = draw(st.integers(0, 0xFFFFFFFF))
    hook = draw(st.integers(0, 4))
    hdr = nq._attr(nq.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, hook) + b"\0")
    if draw(st.integers(0, 3)) == 0:  # another attribute first: the message is skipped
        hdr = hdr[:2] + struct.pack("=H", 5) + hdr[4:]
    attrs = draw(st.lists(ATTRS, max_size=3))
    payload = draw(st.binary(max_size=80))
    body = hdr + b"".join(attrs)
    if draw(st.booleans()):
        body += nq._attr(nq.NFQA_PAYLOAD, payload)
    return nq._message(nq.NFQNL_MSG_PACKET, 0, body, 0)


def error_message(code: int, batch: bool) -> bytes:
    kind = (nq.NFNL_SUBSYS_QUEUE << 8) | (
        nq.NFQNL_MSG_VERDICT_BATCH if batch else nq.NFQNL_MSG_VERDICT
    )
    request = nq._NLMSGHDR.pack(32, kind, 1, 0, 0)
    body = struct.pack("=i", -code) + request
    return nq._NLMSGHDR.pack(16 + len(body), nq.NLMSG_ERROR, 0, 0, 0) + body


MESSAGE = st.one_of(
    packet_message(),
    st.builds(error_message, st.sampled_from([errno.ENOENT, errno.EINVAL, 0]), st.booleans()),
)


def both(buf: bytes) -> tuple[object, object]:
    native: list[nq.Queued] = []
    native_errors: list[int] = []
    nq._parse(buf, 0, len(buf), native, native_errors)
    old: list[nq.Queued] = []
    old_errors: list[int] = []
    nq._parse_struct(buf, 0, len(buf), old, old_errors)
    return ([as_tuple(q) for q in native], native_errors), ([as_tuple(q) for q in old], old_errors)


@settings(max_examples=300, deadline=None)
@given(st.lists(MESSAGE, max_size=6), st.data())
def test_both_parses_agree(messages: list[bytes], data: st.DataObject) -> None:
    buf = b"".join(messages)
    native, old = both(buf)
    assert native == old
    cut = data.draw(st.integers(0, len(buf)))
    garbled = bytearray(buf[:cut])
    if garbled:  # one byte changed anywhere: a length, a type, a flag
        at = data.draw(st.integers(0, len(garbled) - 1))
        garbled[at] = data.draw(st.integers(0, 255))
    native, old = both(bytes(garbled))
    assert native == old


@settings(max_examples=100, deadline=None)
@given(st.lists(packet_message(), min_size=1, max_size=4), st.integers(0, 64))
def test_any_buffer_parses_alike(messages: list[bytes], offset: int) -> None:
    buf = b"".join(messages)
    from_bytes: list[nq.Queued] = []
    nq.parse_queued(buf, 0, len(buf), from_bytes)
    want: list[Packet] = [as_tuple(q) for q in from_bytes]
    assert want == both(buf)[1][0]  # type: ignore[index]
    ring = mmap.mmap(-1, offset + len(buf) + 16)
    ring[offset : offset + len(buf)] = buf
    for source in (bytearray(b"\0" * offset + buf), ring):
        queued: list[nq.Queued] = []
        nq.parse_queued(source, offset, offset + len(buf), queued)
        assert [as_tuple(q) for q in queued] == want
        assert all(type(q.pkt) is bytes for q in queued)
        assert not any(q.done or q.l2tp for q in queued)
