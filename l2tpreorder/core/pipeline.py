"""Both directions of the relay as one sans-IO state machine (the shape of aioquic's connection).

Adapters (the UDP relay, `replay pcap`, the in-path adapter) hand it every datagram with the side
it came from and take back what to send, in order:

    pipeline.from_lac(data, flow, now, tag)   # LAC -> LNS: reordered by `engine`
    pipeline.from_lns(data, flow, now, tag)   # LNS -> LAC: passed on, or reordered when configured
    pipeline.take_output()                    # [Output(to_lns, flow, data, tag), ...]
    pipeline.next_deadline() / expire(now)    # one timer for both directions

`flow` names one LAC peer (the relay uses its (ip, port)); the same flow is used for both of its
directions. The session-lifecycle rules live here and in the engine, never in an adapter: a control
message from either side is read for the session it starts or ends, so no adapter tests the T bit
itself. A CDN or StopCCN from the LNS is authoritative (only the LNS can send on that side; it
ended the session itself): the LAC-to-LNS engine forgets the session for good. One from the LAC's
side may be spoofed: the engine it reaches remembers the session's numbering for a while, so a
stream that carries on shows the receiver no jump (`observe_reverse(authoritative=False)` for the
LNS-to-LAC engine; the LAC-to-LNS engine's own `receive` does the same).

`next_deadline()` covers both the hold deadlines and the session idle expiry
(`reorder.session_idle_timeout_ms`) of both engines, so an adapter keeping one timer on it
forgets silent sessions without a housekeeping call of its own.

Every datagram has exactly one outcome (`reasons.Outcome`): an LNS datagram passed on untouched
(LNS-to-LAC reordering off) counts as FORWARDED_CONTROL or FORWARDED_UNSEQUENCED by its T bit.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Protocol

from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC
from l2tpreorder.core.engine import EngineConfig, EngineCounters, ReorderEngine, Session
from l2tpreorder.core.reasons import Outcome

_FORWARDED_CONTROL = int(Outcome.FORWARDED_CONTROL)
_FORWARDED_UNSEQUENCED = int(Outcome.FORWARDED_UNSEQUENCED)


class Output:
    """One datagram to send: towards the LNS (`to_lns`) or back to the LAC peer `flow`."""

    __slots__ = ("data", "flow", "tag", "to_lns")

    def __init__(self, to_lns: bool, flow: Hashable, data: bytes, tag: object = None) -> None:
        self.to_lns = to_lns
        self.flow = flow
        self.data = data
        self.tag = tag

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Output):
            return NotImplemented
        return (self.to_lns, self.flow, self.data, self.tag) == (
            other.to_lns,
            other.flow,
            other.data,
            other.tag,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        side = "to_lns" if self.to_lns else "to_lac"
        return f"Output({side}, {self.flow!r}, {len(self.data)} bytes, tag={self.tag!r})"


class _Receive(Protocol):
    def __call__(self, data: bytes, flow: Hashable, now: float, tag: object = None) -> int: ...


class Pipeline:
    """The LAC-to-LNS engine, the optional LNS-to-LAC engine, and the rules joining them."""

    # Bound per configuration (see _wire): with one engine, `from_lac` IS the engine's
    # receive, which saves a Python call per datagram on the hot path. So an adapter may keep
    # `from_lac` in a local for a batch, but must fetch it again after `reconfigure`.
    from_lac: _Receive
    from_lns: _Receive

    def __init__(self, config: EngineConfig, *, reorder_from_lns: bool = False) -> None:
        self.config = config
        self.engine = ReorderEngine(config)  # LAC -> LNS
        self.engine_to_lac: ReorderEngine | None = (
            ReorderEngine(config) if reorder_from_lns else None
        )
        self._to_lac: list[Output] = []  # LNS datagrams passed on untouched, in order
        self._wire()

    def _wire(self) -> None:
        if self.engine_to_lac is None:
            self.from_lac = self.engine.receive
            self.from_lns = self._from_lns_passed
        else:
            self.from_lac = self._from_lac_both
            self.from_lns = self._from_lns_reordered

    # --- input ---------------------------------------------------------------------------------

    def _from_lac_both(self, data: bytes, flow: Hashable, now: float, tag: object = None) -> int:
        """A LAC datagram when both directions reorder: the LNS-to-LAC engine learns from its
        control messages too (a CDN from the LAC ends that direction's session as well)."""
        outcome = self.engine.receive(data, flow, now, tag)
        if data and data[0] & 0x80:
            assert self.engine_to_lac is not None
            # From the LAC's side: may be spoofed, so remembered, not forgotten.
            self.engine_to_lac.observe_reverse(data, flow, now, authoritative=False)
        return outcome

    def _from_lns_passed(self, data: bytes, flow: Hashable, now: float, tag: object = None) -> int:
        """An LNS datagram passed on untouched; its control messages still end our sessions."""
        self._to_lac.append(Output(False, flow, data, tag))
        if data and data[0] & 0x80:
            self.engine.observe_reverse(data, flow, now, authoritative=True)
            return _FORWARDED_CONTROL
        return _FORWARDED_UNSEQUENCED

    def _from_lns_reordered(
        self, data: bytes, flow: Hashable, now: float, tag: object = None
    ) -> int:
        if data and data[0] & 0x80:
            self.engine.observe_reverse(data, flow, now, authoritative=True)
        assert self.engine_to_lac is not None
        return self.engine_to_lac.receive(data, flow, now, tag)

    # --- output and time -----------------------------------------------------------------------

    def take_output(self) -> list[Output]:
        """Everything ready to send, in send order for each destination; clears it.

        Towards the LNS first, then towards LACs: the two go out on different sockets, so only
        the order within each direction (and each flow) matters, and that is kept.
        """
        out = [Output(True, f, d, t) for f, d, t in self.engine.take_output()]
        if self._to_lac:  # passed on before any LNS-to-LAC engine's output (see reconfigure)
            out += self._to_lac
            self._to_lac = []
        if self.engine_to_lac is not None:
            out += [Output(False, f, d, t) for f, d, t in self.engine_to_lac.take_output()]
        return out

    def next_deadline(self) -> float | None:
        """The earliest time `expire` has work, in either direction, or None: a held packet's
        deadline or a silent session's idle expiry (`next_hold_deadline` is the former only)."""
        deadline = self.next_hold_deadline()
        for engine in (self.engine, self.engine_to_lac):
            if engine is not None:
                other = engine.next_idle_deadline()
                if other is not None and (deadline is None or other < deadline):
                    deadline = other
        return deadline

    def next_hold_deadline(self) -> float | None:
        """The earliest time `expire` will release a held packet, in either direction, or None
        (`replay` drains these after the capture's last packet; idle expiry is not a release)."""
        deadline = self.engine.next_deadline()
        if self.engine_to_lac is not None:
            other = self.engine_to_lac.next_deadline()
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def expire(self, now: float) -> None:
        self.engine.expire(now)
        if self.engine_to_lac is not None:
            self.engine_to_lac.expire(now)

    def flush(self, now: float) -> None:
        """Shutdown: release everything held, in order, in both directions. Sessions stay."""
        self.engine.flush(now)
        if self.engine_to_lac is not None:
            self.engine_to_lac.flush(now)

    # --- lifecycle from the adapter ------------------------------------------------------------

    def end_flow(self, flow: Hashable, now: float) -> int:
        """The peer is gone (idle, no longer allowed): end its sessions in both directions."""
        ended = self.engine.end_flow(flow, now)
        if self.engine_to_lac is not None:
            ended += self.engine_to_lac.end_flow(flow, now)
        return ended

    def note_kernel_drops(self, now: float, *, from_lac: bool = True) -> None:
        """The kernel dropped datagrams arriving from the LAC side (or the LNS side): see
        `ReorderEngine.note_kernel_drops`. Drops from the LNS matter only when reordered."""
        if from_lac:
            self.engine.note_kernel_drops(now)
        elif self.engine_to_lac is not None:
            self.engine_to_lac.note_kernel_drops(now)

    def reconfigure(
        self, config: EngineConfig, now: float, *, reorder_from_lns: bool | None = None
    ) -> None:
        """Apply a new config (SIGHUP) keeping sessions and held packets; switching LNS-to-LAC
        reordering off releases what that direction holds (it appears in take_output)."""
        self.config = config
        self.engine.reconfigure(config, now)
        if reorder_from_lns is None:
            reorder_from_lns = self.engine_to_lac is not None
        if reorder_from_lns and self.engine_to_lac is None:
            self.engine_to_lac = ReorderEngine(config)
        elif self.engine_to_lac is not None:
            if reorder_from_lns:
                self.engine_to_lac.reconfigure(config, now)
            else:
                self.engine_to_lac.flush(now)
                self._to_lac += [
                    Output(False, f, d, t) for f, d, t in self.engine_to_lac.take_output()
                ]
                self.engine_to_lac = None
        self._wire()

    # --- read access for adapters (metrics, state file, status) --------------------------------

    @property
    def engines(self) -> dict[str, ReorderEngine]:
        """Direction label -> engine (what metrics and the state file read)."""
        engines = {LAC_TO_LNS: self.engine}
        if self.engine_to_lac is not None:
            engines[LNS_TO_LAC] = self.engine_to_lac
        return engines

    @property
    def counters(self) -> EngineCounters:
        """The LAC-to-LNS engine's counters (the direction always reordered)."""
        return self.engine.counters

    def sessions(self) -> Iterator[Session]:
        """The LAC-to-LNS sessions."""
        return self.engine.sessions()
