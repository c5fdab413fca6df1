"""Small helpers shared by the engine tests: build sequenced packets, read what came out."""

from __future__ import annotations

import struct
from collections.abc import Hashable

from l2tpreorder import fastpath, wire
from l2tpreorder.engine import ReorderEngine

TUNNEL = 25085
SESSION = 42025
FLOW = ("192.0.2.10", 1701)  # an opaque flow key; nothing is ever sent anywhere


def data(
    ns: int,
    seq_id: int | None = None,
    *,
    tunnel: int = TUNNEL,
    session: int = SESSION,
    size: int = 0,
    nr: int = 0,
    length: bool = False,
) -> bytes:
    """A sequenced data message whose payload starts with `seq_id` (defaults to ns)."""
    ident = ns if seq_id is None else seq_id
    payload = struct.pack("!I", ident) + bytes(max(0, size - 4))
    return wire.build_data(tunnel, session, payload, ns=ns, nr=nr, length=length)


def ns_of(datagram: bytes) -> int | None:
    header = fastpath.parse_header(datagram)
    assert isinstance(header, fastpath.Header), header
    return header.ns


def ident_of(datagram: bytes) -> int:
    header = fastpath.parse_header(datagram)
    assert isinstance(header, fastpath.Header), header
    value: int = struct.unpack_from("!I", datagram, header.payload_offset)[0]
    return value


def drain(engine: ReorderEngine) -> list[tuple[Hashable, bytes]]:
    out = list(engine.out)
    engine.out.clear()
    return out


def check_invariants(engine: ReorderEngine) -> None:
    """What must hold after every step, whatever the input."""
    c = engine.counters
    assert c.received == c.accounted, (c.received, c.accounted)
    held = sum(len(s.held) for s in engine.sessions())
    assert held == c.held_packets
    assert sum(s.held_bytes for s in engine.sessions()) == c.held_bytes
    assert c.held_bytes <= engine.config.max_held_bytes
    for s in engine.sessions():
        assert len(s.held) <= engine.config.max_held_per_session
