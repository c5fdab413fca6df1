"""In-path test traffic as the tuples tests write: (packet id, hook, packet, flags).

The daemon reads and handles `Queued` objects only (nfqueue.read_queued, InPath.handle_queued);
these turn a test's tuples into them and back, so no tuple door is kept in the daemon for tests.
"""

from __future__ import annotations

from typing import Any

from l2tpreorder.daemon.inpath.adapter import InPath
from l2tpreorder.daemon.inpath.nfqueue import NfQueue, Queued, parse_queued
from l2tpreorder.daemon.inpath.verdicts import Verdicts

Packet = tuple[int, int, bytes, int]


def as_tuple(q: Queued) -> Packet:
    return (q.packet_id, q.hook, q.pkt, q.flags)


def handle(
    inpath: InPath, packets: list[Packet], now: float, backlog: int | None = None
) -> list[bytes]:
    """`InPath.handle_queued` for packets given as tuples."""
    return inpath.handle_queued([Queued(p[0], p[2], p[1], p[3]) for p in packets], now, backlog)


def read(q: NfQueue, limit: int = 64) -> list[Packet]:
    return [as_tuple(p) for p in q.read_queued(limit)]


def parse_messages(
    buf: Any, at: int, end: int, out: list[Packet], errors: list[int] | None = None
) -> None:
    queued: list[Queued] = []
    parse_queued(buf, at, end, queued, errors)
    out += [as_tuple(p) for p in queued]


def pending(v: Verdicts) -> list[int]:
    """The ids awaiting a verdict, oldest first."""
    return [q.packet_id for q in v.waiting()]
