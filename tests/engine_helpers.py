"""Small helpers shared by the engine tests and the fuzz harness: build sequenced packets, read
what came out, the engine's invariants, the malformed reason by the construct reference, and the
UDP payloads of a (possibly truncated) capture."""

from __future__ import annotations

import random
import struct
from collections.abc import Hashable, Iterable, Sequence
from itertools import pairwise
from os import PathLike

import dpkt

from l2tpreorder import wire
from l2tpreorder.core import fastpath, session_table
from l2tpreorder.core.engine import EngineConfig, ReorderEngine

_u16 = struct.Struct("!H").unpack_from
_u16x4 = struct.Struct("!HHHH").unpack_from

TUNNEL = 25085
SESSION = 42025
FLOW = ("192.0.2.10", 1701)  # an opaque flow key; nothing is ever sent anywhere


def engine(**kw: object) -> ReorderEngine:
    """An engine with these EngineConfig fields (the rest default)."""
    return ReorderEngine(EngineConfig(**kw))  # type: ignore[arg-type]


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
    return [(flow, data) for flow, data, _ in engine.take_output()]


def check_invariants(e: ReorderEngine) -> None:
    """What must hold after every step, whatever the input: one counted outcome per datagram,
    held state within its caps and equal to the totals, the lookup indexes equal to the tables,
    and everything waiting to be sent well-formed."""
    c = e.counters
    cfg = e.config
    assert c.received == c.accounted, (c.received, c.accounted)
    assert sum(c.malformed.values()) == c.rx_malformed, (c.malformed, c.rx_malformed)
    held = held_bytes = count = 0
    for s in e.sessions():
        count += 1
        assert len(s.held) <= cfg.max_held_per_session
        assert s.held_bytes == sum(len(d) for d, _, _, _ in s.held.values())
        held += len(s.held)
        held_bytes += s.held_bytes
    assert c.held_packets == held
    assert c.held_bytes == held_bytes <= cfg.max_held_bytes
    assert e.session_count == count <= cfg.max_sessions
    check_indexes(e)
    for _, out, _ in e._out:  # peeked at, left for the caller to take
        assert not isinstance(fastpath.parse_header(out), str), out.hex()


def check_indexes(e: ReorderEngine) -> None:
    """The engine's lookup indexes say exactly what its tables say."""
    by_tunnel: dict[tuple[Hashable, int], set[int]] = {}
    for s in e.sessions():
        by_tunnel.setdefault((s.flow, s.tunnel_id), set()).add(id(s))
    indexed = {
        (flow, tid): {id(s) for s in e.tunnel_sessions(flow, tid)}
        for flow, tunnels in e._tunnel_sessions.items()
        for tid in tunnels
    }
    assert indexed == by_tunnel
    ours: dict[tuple[Hashable, int], set[int]] = {}
    for (flow, theirs), our in e._tunnel_map.items():
        ours.setdefault((flow, our), set()).add(theirs)
    assert e._tunnel_map_ours == ours
    # The slot index (session_table._find, compiled build only) holds every live session's key
    # once, each session findable; one session per key, the same key on other flows counted.
    if not session_table.SLOTTED:
        return
    slotted = [s for s in e._slots if s is not None]
    live = list(e.sessions())
    assert {id(s) for s in slotted} <= {id(s) for s in live}
    keys = {(s.tunnel_id << 16) | s.session_id for s in slotted}
    assert len(keys) == len(slotted), "two sessions of one key slotted"
    assert e._unslotted == len(live) - len(slotted)
    assert 2 * len(slotted) <= len(e._slots)
    assert len(e._slots) == session_table.SLOTS_MIN or 8 * len(live) >= len(e._slots)
    for s in live:
        assert e._find(s.flow, (s.tunnel_id << 16) | s.session_id) is s


def expected_malformed_reason(datagram: bytes) -> str | None:
    """The reason the engine must count for `datagram` by the construct definition (not by the
    struct readers the engine itself uses), or None if it is a usable message."""
    header = wire.parse_header_reference(datagram)
    if isinstance(header, str):
        return header
    if (header["flags"] or 0) & 0x8000:
        control = wire.parse_control(datagram)
        if isinstance(control, str):
            return control
    return None


def udp_payloads(path: str | PathLike[str], port: int | None = None) -> list[tuple[int, bytes]]:
    """(destination port, UDP payload) of each Ethernet/IPv4/UDP frame; `port`: only datagrams
    from or to it. Frames cut short after the UDP header count, with what they have: that is
    what tcpdump's l2tp-avp-overflow reproducer is (l2tpreorder.tools.capture.CaptureReader rightly
    calls such frames unreadable, so it cannot feed them to the parsers)."""
    result = []
    with open(path, "rb") as f:
        for _, frame in dpkt.pcap.Reader(f):
            if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
                continue
            at = 14 + (frame[14] & 0x0F) * 4
            if len(frame) < at + 8:
                continue
            sport, dport = struct.unpack_from("!HH", frame, at)
            if port is None or port in (sport, dport):
                result.append((dport, bytes(frame[at + 8 :])))
    return result


def sequenced_data(data: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(session key, Ns, Ns byte offset) for the two common shapes of sequenced data, else None.

    The engine's per-packet path written out as a function (`ReorderEngine.receive` inlines it):
    data messages with S set and O clear, with or without Length. Anything else (control, no Ns,
    offsets, malformed) returns None and takes `parse_header`. The session key is
    tunnel_id << 16 | session_id. The oracle of two property tests: it equals `parse_header`
    (test_fastpath_equivalence), and the engine classifies like it (test_engine_inline_parse).
    """
    if len(data) >= 12:
        flags, a, b, c = _u16x4(data)
        shape = flags & 0xCA0F  # T, L, S, O bits and version; P and reserved bits ignored
        if shape == 0x0802:  # data, S, no L: flags tid sid Ns
            return (a << 16) | b, c, 6
        if shape == 0x4802 and 12 <= a <= len(data):  # data, L, S: flags len tid sid Ns
            d = _u16(data, 8)[0]
            return (b << 16) | c, d, 8
        return None
    if len(data) >= 10:
        flags, a, b, c = _u16x4(data)
        if flags & 0xCA0F == 0x0802:
            return (a << 16) | b, c, 6
    return None


# The given-up bitmap's definition (see core/continuation.py): ReorderEngine._skip and _behind
# inline these; tests/core/test_engine_skip_inline.py proves them equal.
def mark_given_up(gaps: int, gaps_end: int, start: int, count: int, window: int) -> int:
    """The bitmap after Ns start..start+count-1 were given up (bit i = Ns end-1-i; the new end
    is start+count). `gaps_end` is the old end; bits further back than `window` fall off."""
    full = (1 << window) - 1
    shift = (start - gaps_end) & 0xFFFF
    gaps = 0 if shift >= window else gaps << shift
    if count >= window:
        return full
    return ((gaps << count) | ((1 << count) - 1)) & full


def given_up_bit(gaps_end: int, ns: int, window: int) -> int:
    """The bitmap bit of `ns` (0 when it lies outside the window: ahead of the end, or beyond)."""
    i = (gaps_end - 1 - ns) & 0xFFFF
    return 1 << i if i < window else 0


def slot_names(cls: type) -> tuple[str, ...]:
    """A `__slots__` class's attribute names, on either build: a mypyc-compiled class has no
    `__slots__` at run time but lists the same names in `__mypyc_attrs__`."""
    names = getattr(cls, "__slots__", None)
    if names is None:
        names = cls.__mypyc_attrs__  # type: ignore[attr-defined]
    return tuple(names)


# --- what a LAC sends and what the LNS must see ------------------------------------------------


def swap_neighbours(order: Iterable[int], at: Iterable[int]) -> list[int]:
    """`order` with the item at each position in `at` swapped with the next one: a LAC's
    adjacent reordering (positions at least 2 apart, or a swap undoes part of another)."""
    out = list(order)
    for i in at:
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def randomly_swapped(n: int, seed: int = 1, rate: float = 0.1) -> list[int]:
    """0..n-1 with about `rate` of the neighbours swapped, never the first (it opens the
    session), the same for the same seed."""
    rng = random.Random(seed)
    at = []
    i = 1
    while i < n - 1:
        if rng.random() < rate:
            at.append(i)
            i += 2
        else:
            i += 1
    return swap_neighbours(range(n), at)


def steps_back(seen: Sequence[int | None]) -> list[tuple[int | None, int | None]]:
    """The neighbours in `seen` where the Ns does not move forward (serial arithmetic over 16
    bits): a step back or a repeat; a missing Ns counts as one."""
    return [
        (a, b)
        for a, b in pairwise(seen)
        if a is None or b is None or not 0 < (b - a) & 0xFFFF < 0x8000
    ]


def never_steps_back(seen: Sequence[int | None]) -> None:
    """Each Ns the LNS sees is after the one before it: no step back, no repeat."""
    back = steps_back(seen)
    assert not back, f"the LNS saw Ns step back or repeat: {back[:10]} ({len(back)} of {len(seen)})"
