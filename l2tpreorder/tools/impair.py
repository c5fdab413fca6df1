"""`l2tpreorder impair IN OUT`: a copy of a capture with reproducible reordering, loss,
duplication and jitter on the data messages towards the LNS (`--seed` makes it repeatable).

Real captures rarely show the problem (and most carry data without Ns at all: `--add-seq` gives
each session's data messages Ns/Nr as a sequencing LAC would, before anything is impaired), so
this turns clean traffic of a real shape into test input for `replay pcap` and the daemon.

Impairments work on each session's stream of *slots* (its packets' capture times): a swapped or
displaced packet leaves its slot and is sent right after the packet k slots later; a lost packet
takes its slot with it; a duplicate follows its original; jitter delays a packet by up to J, which
reorders it when J exceeds the packet spacing. Control messages and the other direction pass
untouched. Every packet draws the same number of random values, so a seed always gives the same
file for the same input. Streaming: memory is bounded by the packets in flight.
"""

from __future__ import annotations

import heapq
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from l2tpreorder.config import ConfigError
from l2tpreorder.core.fastpath import parse_header, with_sequence
from l2tpreorder.core.msgtype import MessageType
from l2tpreorder.tools import capture
from l2tpreorder.tools.capture import CaptureReader, UdpDatagram
from l2tpreorder.tools.direction import DirectionFinder, control_message_type
from l2tpreorder.tools.needs import Needs, flag, unmet
from l2tpreorder.tools.pcapwriter import PcapWriter, refuse_input_as_output

NUDGE = 1e-6  # a packet sent "right after" another is this much later


@dataclass(frozen=True, slots=True)
class ImpairConfig:
    seed: int = 0
    swap: float = 0.0  # probability that a packet is swapped with the next one
    displace: int = 0  # k: a displaced packet is sent after the next k packets
    displace_prob: float = 0.0
    loss: float = 0.0  # probability of losing one packet
    burst_loss: float = 0.0  # probability that a loss burst starts here
    burst_len: int = 3
    duplicate: float = 0.0
    jitter: float = 0.0  # seconds: each packet delayed by uniform(0, jitter)
    add_seq: bool = False
    both_directions: bool = False
    ports: tuple[int, ...] = (capture.L2TP_PORT,)
    lns_address: str | None = None

    def __post_init__(self) -> None:
        problems = range_problems(vars_of(self), lambda name: name)
        if problems:
            name, expected = problems[0]
            unit = " seconds" if name == "jitter" else ""
            raise ValueError(f"{name}={getattr(self, name)!r}: expected {expected}{unit}")


PROBABILITIES = ("swap", "displace_prob", "loss", "burst_loss", "duplicate")


def vars_of(config: ImpairConfig) -> dict[str, float]:
    names = (*PROBABILITIES, "displace", "burst_len", "jitter")
    return {name: getattr(config, name) for name in names}


def range_problems(
    values: dict[str, float], call: Callable[[str], str]
) -> list[tuple[str, str]]:
    """The ranges of ImpairConfig, declared once: (field, what is expected) for each value out
    of range; `call` names a field in the expectation (the config's word or the CLI flag)."""
    problems = [
        (name, "a probability 0..1") for name in PROBABILITIES if not 0.0 <= values[name] <= 1.0
    ]
    displace = values["displace"]
    if displace < 0 or (values["displace_prob"] and displace < 1):
        problems.append(("displace", f"K >= 1 with {call('displace_prob')}"))
    if values["burst_len"] < 1:
        problems.append(("burst_len", "N >= 1"))
    if not values["jitter"] >= 0:
        problems.append(("jitter", ">= 0"))
    return problems


@dataclass(slots=True)
class ImpairStats:
    data_in: int = 0
    seq_added: int = 0
    moved_with_ns: int = 0  # swapped or displaced, and carrying Ns: only these can be reordered
    swapped: int = 0
    displaced: int = 0
    lost: int = 0
    lost_in_bursts: int = 0
    duplicated: int = 0
    passed_through: int = 0
    written: int = 0
    capture: capture.CaptureStats = field(default_factory=capture.CaptureStats)


Out = tuple[float, int, bytes, tuple[str, int], tuple[str, int]]


class _SessionImpairer:
    __slots__ = ("burst_left", "dst", "held", "next_ns", "src")

    def __init__(self, src: tuple[str, int], dst: tuple[str, int]) -> None:
        self.src, self.dst = src, dst
        self.held: list[list[Any]] = []  # [slots still to wait, data, duplicate it?]
        self.burst_left = 0
        self.next_ns = 0


class Impairer:
    def __init__(self, config: ImpairConfig, writer: PcapWriter) -> None:
        self.config = config
        self.writer = writer
        self.rng = random.Random(config.seed)
        self.stats = ImpairStats()
        self._sessions: dict[tuple[object, int, int], _SessionImpairer] = {}
        self._heap: list[Out] = []
        self._seq = 0
        self._latest = float("-inf")
        self.directions = DirectionFinder(config.lns_address, config.ports)

    def _emit(self, ts: float, data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, self._seq, data, src, dst))

    def _flush_before(self, ts: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < ts:
            t, _, data, src, dst = heapq.heappop(heap)
            self.writer.write_udp(t, src[0], src[1], dst[0], dst[1], data)
            self.stats.written += 1

    def feed(self, d: UdpDatagram) -> None:
        self._flush_before(d.ts)
        self._latest = max(self._latest, d.ts)
        src, dst = (d.src, d.sport), (d.dst, d.dport)
        header = parse_header(d.payload)
        message_type = control_message_type(d.payload, header)
        conv, towards_lns = self.directions.find(src, dst, message_type)
        if (
            isinstance(header, str)
            or header.is_control
            or not (towards_lns or self.config.both_directions)
        ):
            if message_type in (MessageType.CDN, MessageType.StopCCN):
                # A packet held back must not come after the end of its session.
                self._flush_held(conv, d.ts)
            self.stats.passed_through += 1
            self._emit(d.ts, d.payload, src, dst)
            return
        key = (conv if towards_lns else (conv, "reverse"), header.tunnel_id, header.session_id)
        s = self._sessions.get(key)
        if s is None:
            s = self._sessions[key] = _SessionImpairer(src, dst)
        self._impair(s, d.ts, d.payload, header.ns is None, src, dst)

    def _impair(
        self,
        s: _SessionImpairer,
        ts: float,
        data: bytes,
        without_ns: bool,
        src: tuple[str, int],
        dst: tuple[str, int],
    ) -> None:
        c, st, rng = self.config, self.stats, self.rng
        st.data_in += 1
        if c.add_seq and without_ns:
            data = with_sequence(data, s.next_ns)
            s.next_ns = (s.next_ns + 1) & 0xFFFF
            st.seq_added += 1
        # the same six draws for every packet, jitter's too, whatever is switched on: turning
        # one impairment on or off leaves the dice of the others as they were for the seed
        r_loss, r_burst, r_swap, r_disp, r_dup, r_jitter = (rng.random() for _ in range(6))
        has_ns = c.add_seq or not without_ns
        jitter = r_jitter * c.jitter
        if s.burst_left:
            s.burst_left -= 1
            st.lost += 1
            st.lost_in_bursts += 1
            return
        if r_loss < c.loss:
            st.lost += 1
            return
        if r_burst < c.burst_loss:
            s.burst_left = c.burst_len - 1
            st.lost += 1
            st.lost_in_bursts += 1
            return
        if r_swap < c.swap:
            s.held.append([1, data, r_dup < c.duplicate])
            st.swapped += 1
            st.moved_with_ns += has_ns
            return
        if r_disp < c.displace_prob:
            s.held.append([c.displace, data, r_dup < c.duplicate])
            st.displaced += 1
            st.moved_with_ns += has_ns
            return
        t = ts + jitter
        self._send(t, data, r_dup < c.duplicate, src, dst)
        # this packet took a slot: held packets come due after it
        due = []
        for h in s.held:
            h[0] -= 1
            if h[0] <= 0:
                due.append(h)
        if due:
            s.held = [h for h in s.held if h[0] > 0]
            for i, h in enumerate(due, 1):
                self._send(t + i * 2 * NUDGE, h[1], h[2], src, dst)

    def _send(
        self, t: float, data: bytes, dup: bool, src: tuple[str, int], dst: tuple[str, int]
    ) -> None:
        self._emit(t, data, src, dst)
        if dup:
            self.stats.duplicated += 1
            self._emit(t + NUDGE, data, src, dst)

    def _flush_held(self, conv: object, ts: float) -> None:
        for key, s in self._sessions.items():
            if s.held and (key[0] == conv or key[0] == (conv, "reverse")):
                for h in s.held:
                    self._send(ts, h[1], h[2], s.src, s.dst)
                s.held = []

    def finish(self) -> None:
        """Held packets whose k later packets never came go out at the end of the capture."""
        for s in self._sessions.values():
            for i, h in enumerate(s.held, 1):
                self._send(self._latest + i * 2 * NUDGE, h[1], h[2], s.src, s.dst)
            s.held = []
        self._flush_before(float("inf"))


def impair_file(in_path: str, out_path: str, config: ImpairConfig) -> ImpairStats:
    refuse_input_as_output(in_path, out_path, "OUT")
    reader = CaptureReader(in_path, config.ports)
    with PcapWriter.create(out_path) as writer:
        imp = Impairer(config, writer)
        for item in reader:
            if isinstance(item, UdpDatagram):
                imp.feed(item)
        imp.finish()
    imp.stats.capture = reader.stats
    return imp.stats


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "input", metavar="IN", help="capture to read (pcap/pcapng; gzip'd too; - = standard input)"
    )
    parser.add_argument("output", metavar="OUT", help="pcap to write (raw IP link layer)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same file)")
    parser.add_argument(
        "--swap",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a packet is swapped with the next",
    )
    parser.add_argument(
        "--displace",
        type=int,
        metavar="K",
        help="displace packets by K positions (with --displace-prob)",
    )
    parser.add_argument(
        "--displace-prob",
        type=float,
        metavar="P",
        help="probability that a packet is displaced by --displace positions",
    )
    parser.add_argument(
        "--loss", type=float, default=0.0, metavar="P", help="probability of losing a single packet"
    )
    parser.add_argument(
        "--burst-loss",
        type=float,
        metavar="P",
        help="probability that a burst of --burst-len losses starts",
    )
    parser.add_argument(
        "--burst-len", type=int, metavar="N", help="packets lost in one burst (3)"
    )
    parser.add_argument(
        "--duplicate",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a packet is sent twice",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        metavar="MS",
        help="delay each packet by uniform(0, MS) milliseconds",
    )
    parser.add_argument(
        "--add-seq",
        action="store_true",
        help="give data messages without Ns an Ns/Nr (per-session counter)",
    )
    parser.add_argument(
        "--both-directions",
        action="store_true",
        help="impair LNS->LAC data too (default: only towards the LNS)",
    )
    parser.add_argument(
        "--port",
        type=int,
        action="append",
        metavar="PORT",
        help="UDP port carrying L2TP, repeatable (default 1701)",
    )
    parser.add_argument(
        "--lns",
        metavar="ADDR[:PORT]",
        help="the LNS's address, when guessing the direction from the capture is not enough",
    )


# Options that change nothing without another (option's dest, the one it needs): refused, not
# ignored, so that `--displace 3` alone does not look like it displaced anything. Given, even
# as 0 (a sweep of probabilities from 0), the partner is there: the defaults (None: not given)
# are filled in only after this check.
NEEDS = (
    Needs("displace", "displace_prob", metavar="P"),
    Needs("burst_len", "burst_loss", metavar="P"),
)
DEFAULTS: dict[str, float] = {"displace": 0, "burst_len": 3, "displace_prob": 0.0,
                              "burst_loss": 0.0}  # fmt: skip


def _flag_errors(args: Any) -> list[str]:
    """ImpairConfig's range checks in the operator's words: flag, value as typed, unit."""
    errors = unmet(args, NEEDS)
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    values = {name: getattr(args, name) for name in (*PROBABILITIES, "displace", "burst_len")}
    values["jitter"] = args.jitter  # milliseconds, as typed
    for name, expected in range_problems(values, flag):
        value = values[name]
        typed = f"{value:g}" if isinstance(value, float) else str(value)
        unit = " ms" if name == "jitter" else ""
        errors.append(f"{flag(name)} {typed}: expected {expected}{unit}")
    return errors


def main(args: Any) -> int:
    errors = _flag_errors(args)
    if errors:
        for e in errors:
            print(f"l2tpreorder impair: error: {e}", file=sys.stderr)
        return 2
    try:
        config = ImpairConfig(
            seed=args.seed,
            swap=args.swap,
            displace=args.displace,
            displace_prob=args.displace_prob,
            loss=args.loss,
            burst_loss=args.burst_loss,
            burst_len=args.burst_len,
            duplicate=args.duplicate,
            jitter=args.jitter / 1000.0,
            add_seq=args.add_seq,
            both_directions=args.both_directions,
            ports=tuple(args.port) if args.port else (capture.L2TP_PORT,),
            lns_address=args.lns,
        )
        stats = impair_file(args.input, args.output, config)
    except capture.CaptureFormatError as e:  # not a capture: as `replay pcap` says it
        print(f"l2tpreorder impair: {e}", file=sys.stderr)
        return 1
    except (ValueError, ConfigError) as e:
        print(f"l2tpreorder impair: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"l2tpreorder impair: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.output}: {stats.written:,} datagrams written; of {stats.data_in:,} data messages "
        f"impaired: {stats.swapped:,} swapped, {stats.displaced:,} displaced, {stats.lost:,} lost "
        f"({stats.lost_in_bursts:,} in bursts), {stats.duplicated:,} duplicated; "
        f"{stats.seq_added:,} given Ns; {stats.passed_through:,} passed through untouched"
    )
    for line in _prediction(stats):
        print(line)
    for line in capture.describe_unreadable(stats.capture):
        print(line)
    return 0


def _prediction(stats: ImpairStats) -> list[str]:
    """What replay will find reordered. A swap or displacement makes one packet early; replay
    counts it as reordered when the engine held it and released it in order (not when it was a
    session's first packet, or its gap was lost or given up). docs/reordered.md. Only a packet
    with Ns can be held: without Ns the relay cannot tell early from late and passes it on."""
    moved = stats.swapped + stats.displaced
    if not moved:
        return []
    if not stats.moved_with_ns:
        return [
            f"none of the {moved:,} moved packets can be reordered by the relay: they carry no "
            "Ns (it orders by Ns); add --add-seq to give them Ns as a sequencing LAC would"
        ]
    lines = [
        f"at most {stats.moved_with_ns:,} packets will be reordered "
        "(held, then released in order) by the relay"
    ]
    if stats.moved_with_ns < moved:
        lines.append(
            f"{moved - stats.moved_with_ns:,} moved packets carry no Ns and pass as they come "
            "(--add-seq gives them Ns)"
        )
    return lines
