"""A scripted, impaired LAC->LNS stream whose every expected counter is known in advance.

The script is a list of events: ("send", datagram) or ("wait", seconds). Waits are longer than
the reorder timeout they are written for, so a gap left open before a wait is given up (skipped,
reason timeout). Expected counts are derived from what the script did (swaps made, Ns withheld,
packets re-sent), not from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from l2tpreorder.wire import build_control, build_data

TUNNEL = 7
SWAP_SESSION = 1  # in-order stream with adjacent swaps
GAP_SESSION = 2  # stream with Ns withheld, some of them sent late
QUIET_SESSION = 3  # a few packets, in order (falls outside a per-session top 2)


@dataclass
class ImpairedTraffic:
    events: list[tuple[str, bytes | float]] = field(default_factory=list)
    swaps: int = 0
    withheld: int = 0
    late: int = 0
    duplicates: int = 0
    malformed_too_short: int = 0
    control: int = 0
    data_without_ns: int = 0
    sequenced: dict[int, int] = field(default_factory=dict)  # session_id -> datagrams sent
    bytes_sent: int = 0

    def send(self, data: bytes, session_id: int | None = None) -> None:
        self.events.append(("send", data))
        self.bytes_sent += len(data)
        if session_id is not None:
            self.sequenced[session_id] = self.sequenced.get(session_id, 0) + 1

    def wait(self, seconds: float) -> None:
        self.events.append(("wait", seconds))

    @property
    def datagrams(self) -> int:
        return sum(1 for kind, _ in self.events if kind == "send")


def _data(session_id: int, ns: int) -> bytes:
    return build_data(TUNNEL, session_id, b"\xff\x03\x00\x21" + bytes(60 + ns % 40), ns=ns)


def impaired_traffic(timeout: float, swaps: int = 30) -> ImpairedTraffic:
    """Swaps, withheld Ns, late and duplicate packets, malformed, control and unsequenced data.

    What a relay with this `timeout` must count (lac_to_lns):
      released (held, then sent in order) = swaps + withheld  (each gap's successor was held)
      skipped{reason="timeout"} = withheld; forwarded{kind="data_late"} = late (renumber);
      dropped{reason="duplicate"} = duplicates; session 1 alone released = swaps.
    """
    t = ImpairedTraffic()
    t.send(build_control(TUNNEL, 0, 0, 0, []))  # a ZLB ack: control, forwarded at once
    t.control += 1
    # Session 1: Ns 0..swaps*10-1 with (i, i+1) sent as i+1, i for i = 3, 13, 23, ...
    swapped = {10 * k + 3 for k in range(swaps)}
    n = 10 * swaps
    ns = 0
    while ns < n:
        if ns in swapped:
            t.send(_data(SWAP_SESSION, ns + 1), SWAP_SESSION)
            t.send(_data(SWAP_SESSION, ns), SWAP_SESSION)
            t.swaps += 1
            ns += 2
        else:
            t.send(_data(SWAP_SESSION, ns), SWAP_SESSION)
            ns += 1
    for dup in (n - 12, n - 11):  # delivered a moment ago: duplicates
        t.send(_data(SWAP_SESSION, dup), SWAP_SESSION)
        t.duplicates += 1
    # Session 2: Ns 0..119 without 20, 40, 60, 80, 100; each gap is given up after a wait,
    # then the first three withheld packets arrive after all (late).
    for ns in range(120):
        if ns and ns % 20 == 0:
            t.withheld += 1
            t.send(_data(GAP_SESSION, ns + 1), GAP_SESSION)  # held: its predecessor is missing
            t.wait(timeout * 3)
            if t.late < 3:
                t.send(_data(GAP_SESSION, ns), GAP_SESSION)
                t.late += 1
        elif ns % 20 != 1 or ns == 1:
            t.send(_data(GAP_SESSION, ns), GAP_SESSION)
    # Session 3: five packets in order.
    for ns in range(5):
        t.send(_data(QUIET_SESSION, ns), QUIET_SESSION)
    for i in range(10):  # data without Ns (S bit clear)
        t.send(build_data(TUNNEL, SWAP_SESSION, b"\xff\x03\x00\x21" + bytes(20 + i)))
        t.data_without_ns += 1
    for _ in range(4):
        t.send(b"\xc8")  # one byte: too short for any L2TP header
        t.malformed_too_short += 1
    return t
