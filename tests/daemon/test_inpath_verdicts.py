"""Verdict batching: NFQNL_MSG_VERDICT_BATCH covers every queued id up to the one given, so it
may only be used for a run that is exactly the head of what is still queued."""

from __future__ import annotations

import struct

from l2tpreorder.daemon.inpath import InPathCounters, Verdicts
from l2tpreorder.daemon.nfqueue import NF_ACCEPT, NF_DROP


def decode(messages: list[bytes]) -> list[tuple[str, int, int, bool]]:
    """(kind, verdict, id, has payload) of each netlink verdict message."""
    out = []
    for m in messages:
        length, kind = struct.unpack_from("=IH", m)
        assert length == len(m)
        verdict, packet_id = struct.unpack_from("!II", m, 20 + 4)
        name = {0x301: "single", 0x303: "batch"}[kind]
        out.append((name, verdict, packet_id, length > 20 + 4 + 8))
    return out


def test_in_order_run_is_one_batch() -> None:
    v = Verdicts(0, InPathCounters())
    for i in range(1, 6):
        v.add(i)
    for i in range(1, 6):
        v.accept(i)
    assert decode(v.take()) == [("batch", NF_ACCEPT, 5, False)]
    assert not v.pending


def test_a_held_packet_in_front_forces_single_verdicts() -> None:
    v = Verdicts(0, InPathCounters())
    for i in (1, 2, 3, 4):
        v.add(i)
    v.accept(1)  # head: may start a run
    v.accept(3)  # 2 is still held: a batch up to 3 would accept 2 too
    v.accept(4)
    assert decode(v.take()) == [
        ("single", NF_ACCEPT, 1, False),
        ("single", NF_ACCEPT, 3, False),
        ("single", NF_ACCEPT, 4, False),
    ]
    assert list(v.pending) == [2]
    v.add(5)
    v.accept(2)  # the gap fills: 2 is the head again, then 5 follows it
    v.accept(5)
    assert decode(v.take()) == [("batch", NF_ACCEPT, 5, False)]


def test_rewritten_and_dropped_packets_end_a_run() -> None:
    v = Verdicts(0, InPathCounters())
    for i in (1, 2, 3, 4):
        v.add(i)
    v.accept(1)
    v.accept(2)
    v.drop(3)
    v.accept(4, b"E" + bytes(27))
    assert decode(v.take()) == [
        ("batch", NF_ACCEPT, 2, False),
        ("single", NF_DROP, 3, False),
        ("single", NF_ACCEPT, 4, True),
    ]
