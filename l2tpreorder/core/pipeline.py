"""Both directions of the relay as one sans-IO state machine (the shape of aioquic's connection).

Adapters (the UDP relay, `replay pcap`, the in-path adapter) hand it every datagram with the side
it came from and take back what to send, in order:

    pipeline.from_lac(data, flow, now, tag)   # LAC -> LNS: reordered by `engine`
    pipeline.from_lns(data, flow, now, tag)   # LNS -> LAC: passed on, or reordered when configured
    pipeline.from_lac_many(datas, flows, now) # one read's LAC datagrams: from_lac for each
    pipeline.take_output()                    # [Output(to_lns, flow, data, tag), ...]
    pipeline.take_runs()                      # the same as [(to_lns, flow, [data, ...]), ...]
    pipeline.next_deadline() / expire(now)    # one timer for both directions

What an adapter learns besides the datagrams also comes through here, never from an engine
(tests/core/test_core_door.py checks that nothing outside core/ touches one):

    pipeline.take_events()                    # [Dropped | Malformed | SessionEnded | ...]
    pipeline.record_events(debug=, hold_samples=)   # what to record (nothing by default)
    pipeline.directions()                     # {direction: read-only DirectionView}
    pipeline.snapshot() / restore(state, now) # both directions' state, as plain data

The policy for a malformed L2TPv2 datagram is declared when the pipeline is made
(`MalformedPolicy`): DROP (relay, replay) or PASS untouched (in-path mode, which sits in the path
of traffic that is not all ours). Either way the core counts it once, by reason, and its
outcome says which (DROPPED_MALFORMED, FORWARDED_MALFORMED); a passed one appears in
`take_output()` in arrival order. No adapter adjusts a count afterwards.

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
Events are recorded only while switched on, and then by swapping `from_lac`/`from_lns` for
recording wrappers (and a None check on the engine's slow paths), so the hot path pays nothing
for them otherwise.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from enum import StrEnum
from typing import Final, Protocol

from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC
from l2tpreorder.core.engine import EngineConfig, EngineCounters, ReorderEngine, Session
from l2tpreorder.core.events import (
    EVENTS_KEPT,
    Dropped,
    Event,
    HoldSample,
    Malformed,
    Missed,
    SessionEnded,
)
from l2tpreorder.core.fastpath import T_BIT, control_fields, parse_header
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.core.snapshot import (
    PipelineState,
    Restored,
    engine_state,
    restore_engine,
)
from l2tpreorder.core.views import DirectionView

_FORWARDED_CONTROL: Final = int(Outcome.FORWARDED_CONTROL)
_FORWARDED_UNSEQUENCED: Final = int(Outcome.FORWARDED_UNSEQUENCED)
_DROPPED_MALFORMED: Final = int(Outcome.DROPPED_MALFORMED)
_FORWARDED_MALFORMED: Final = int(Outcome.FORWARDED_MALFORMED)
# The outcomes a debug event names (events.Dropped, events.Malformed).
_NOTED = frozenset(
    int(o)
    for o in (
        Outcome.DROPPED_DUPLICATE,
        Outcome.DROPPED_LATE,
        Outcome.DROPPED_STALE,
        Outcome.DROPPED_FAR_AHEAD,
        Outcome.DROPPED_MALFORMED,
        Outcome.FORWARDED_MALFORMED,
    )
)


# No flow: compares equal to none (a fresh object), so the first datagram starts a run.
_NO_FLOW: Final = object()


class MalformedPolicy(StrEnum):
    """What becomes of a datagram that is not usable L2TPv2, declared when a Pipeline is made."""

    DROP = "drop"  # the relay and replay: it is not passed on (DROPPED_MALFORMED)
    PASS = "pass"  # in-path mode: passed on untouched, in arrival order (FORWARDED_MALFORMED)


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

    # Bound per configuration (see _wire): with one engine and no debug events, `from_lac` IS
    # the engine's receive, which saves a Python call per datagram on the hot path. So an
    # adapter may keep `from_lac` in a local for a batch, but must fetch it again after
    # `reconfigure` or `record_events`.
    from_lac: _Receive
    from_lns: _Receive

    def __init__(
        self,
        config: EngineConfig,
        *,
        reorder_from_lns: bool = False,
        malformed: MalformedPolicy = MalformedPolicy.DROP,
    ) -> None:
        self.config = config
        self.malformed = malformed
        # The engines are the core's own: adapters read them through `directions()`.
        self.engine = self._new_engine(config)  # LAC -> LNS
        self.engine_to_lac: ReorderEngine | None = (
            self._new_engine(config) if reorder_from_lns else None
        )
        self._to_lac: list[Output] = []  # LNS datagrams passed on untouched, in order
        # Event recording (record_events): what is on, and the events the pipeline itself makes
        # (drops, malformed datagrams); the engines keep session ends and hold samples.
        self._record_debug = False
        self._record_holds = False
        self._events: list[Event] = []
        self._events_missed: dict[str, int] = {}
        self._wire()

    def _new_engine(self, config: EngineConfig) -> ReorderEngine:
        return ReorderEngine(config, pass_malformed=self.malformed is MalformedPolicy.PASS)

    def _wire(self) -> None:
        # from_lac_many hands a whole batch to the engine when from_lac IS its receive.
        self._lac_engine_only = self.engine_to_lac is None and not self._record_debug
        if self.engine_to_lac is None:
            self._from_lac: _Receive = self.engine.receive
            self._from_lns: _Receive = self._from_lns_passed
        else:
            self._from_lac = self._from_lac_both
            self._from_lns = self._from_lns_reordered
        if self._record_debug:
            self.from_lac = self._from_lac_recorded
            self.from_lns = self._from_lns_recorded
        else:
            self.from_lac = self._from_lac
            self.from_lns = self._from_lns

    # --- input ---------------------------------------------------------------------------------

    def from_lac_many(
        self,
        datas: list[bytes],
        flows: list[Hashable],
        now: float,
        tags: list[object] | None = None,
    ) -> None:
        """`from_lac(datas[i], flows[i], now, tags[i])` for each datagram of one read, in order:
        the same outcomes, output, counters and events
        (tests/core/test_pipeline_batch_equivalence.py). Compiled, the per-datagram loop then
        runs in the core instead of the adapter."""
        if self._lac_engine_only:
            self.engine.receive_many(datas, flows, now, tags)
            return
        if len(flows) != len(datas) or (tags is not None and len(tags) != len(datas)):
            raise ValueError("from_lac_many: datas, flows and tags differ in length")
        from_lac = self.from_lac
        for i in range(len(datas)):
            from_lac(datas[i], flows[i], now, None if tags is None else tags[i])

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

    def _from_lac_recorded(
        self, data: bytes, flow: Hashable, now: float, tag: object = None
    ) -> int:
        """`from_lac` while debug events are recorded: a drop or a malformed datagram is noted."""
        outcome = self._from_lac(data, flow, now, tag)
        if outcome in _NOTED:
            self._note(LAC_TO_LNS, outcome, data, flow)
        return outcome

    def _from_lns_recorded(
        self, data: bytes, flow: Hashable, now: float, tag: object = None
    ) -> int:
        outcome = self._from_lns(data, flow, now, tag)
        if outcome in _NOTED:
            self._note(LNS_TO_LAC, outcome, data, flow)
        return outcome

    def _note(self, direction: str, outcome: int, data: bytes, flow: Hashable) -> None:
        if len(self._events) >= EVENTS_KEPT:
            self._events_missed[direction] = self._events_missed.get(direction, 0) + 1
            return
        if outcome in (_DROPPED_MALFORMED, _FORWARDED_MALFORMED):
            reason = _malformed_reason(data)
            passed = outcome == _FORWARDED_MALFORMED
            self._events.append(Malformed(direction, flow, reason, passed))
            return
        h = parse_header(data)
        if isinstance(h, str) or h.ns is None:  # cannot be: the engine sequenced it
            return
        self._events.append(Dropped(direction, flow, outcome, h.tunnel_id, h.session_id, h.ns))

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

    def take_runs(self) -> list[tuple[bool, Hashable, list[bytes]]]:
        """`take_output()` cut into runs, without its per-datagram Output objects or tags:
        (to_lns, flow, [datagram, ...]) for each stretch of consecutive datagrams to one
        destination, in the same order (what itertools.groupby on (to_lns, flow) makes of
        take_output(): tests/core/test_pipeline_batch_equivalence.py). The relay sends a run at
        a time."""
        runs: list[tuple[bool, Hashable, list[bytes]]] = []
        _add_runs(runs, True, self.engine.take_output())
        if self._to_lac:
            _add_runs(runs, False, [(o.flow, o.data, o.tag) for o in self._to_lac])
            self._to_lac = []
        if self.engine_to_lac is not None:
            _add_runs(runs, False, self.engine_to_lac.take_output())
        return runs

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

    def note_bypass(self, now: float) -> int:
        """In-path fail-open passed LAC datagrams untouched (queue or socket full): see
        `ReorderEngine.note_bypass`; returns how many sessions wait for their witness."""
        return self.engine.note_bypass(now)

    def extend_bypass(self, now: float) -> None:
        """Another episode before the last one's backlog is read: the sessions' wait for their
        witness runs from `now` (`ReorderEngine.extend_bypass`)."""
        self.engine.extend_bypass(now)

    def hold_budget(self, limit: int) -> None:
        """At most `limit` LAC packets held (`ReorderEngine.hold_budget`; in-path mode), as of
        the latest time the engine saw."""
        engine = self.engine
        if engine.counters.held_packets > limit:
            engine.hold_budget(limit, engine.latest_time)

    def hold_before_bypass(
        self, data: bytes, flow: Hashable, now: float, tag: object = None
    ) -> int:
        """`from_lac` for a datagram of the backlog read after a bypass episode (it may have
        reached the queue before the bypassed ones): `ReorderEngine.hold_before_bypass`."""
        outcome = self.engine.hold_before_bypass(data, flow, now, tag)
        if data and data[0] & 0x80 and self.engine_to_lac is not None:
            self.engine_to_lac.observe_reverse(data, flow, now, authoritative=False)
        if self._record_debug and outcome in _NOTED:
            self._note(LAC_TO_LNS, outcome, data, flow)
        return outcome

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
            self.engine_to_lac = self._new_engine(config)
            self.engine_to_lac.set_recording(
                ends=self._record_debug, hold_samples=self._record_holds
            )
        elif self.engine_to_lac is not None:
            if reorder_from_lns:
                self.engine_to_lac.reconfigure(config, now)
            else:
                self.engine_to_lac.flush(now)
                self._to_lac += [
                    Output(False, f, d, t) for f, d, t in self.engine_to_lac.take_output()
                ]
                self._events += _engine_events(LNS_TO_LAC, self.engine_to_lac)
                self.engine_to_lac = None
        self._wire()

    # --- events ----------------------------------------------------------------------------------

    def record_events(self, *, debug: bool = False, hold_samples: bool = False) -> None:
        """Choose what `take_events` reports from now on (both off by default, and then nothing
        is recorded). `debug`: Dropped, Malformed and SessionEnded; `hold_samples`: one
        HoldSample per released packet (replay's percentiles). Switching one off discards
        what it recorded and was not taken yet."""
        self._record_debug = debug
        self._record_holds = hold_samples
        if not debug:
            self._events = [e for e in self._events if not isinstance(e, Dropped | Malformed)]
            self._events_missed.clear()
        for _, engine in self._engines():
            engine.set_recording(ends=debug, hold_samples=hold_samples)
        self._wire()

    def take_events(self) -> list[Event]:
        """What happened since the last call, as typed events; clears them. Ordered within
        one kind and direction; a `Missed` event says what a full buffer did not itemise."""
        events, self._events = self._events, []
        for direction, engine in self._engines():
            events += _engine_events(direction, engine)
        if self._events_missed:
            events += [Missed(d, "dropped", n) for d, n in self._events_missed.items()]
            self._events_missed.clear()
        return events

    # --- state across a restart ------------------------------------------------------------------

    def snapshot(self) -> PipelineState:
        """Both directions' sessions, ended-session memory and tunnel-ID pairs as plain data.
        Call after `flush(now)`: held packets are delivered, never saved."""
        return PipelineState(
            str(self.config.sequencing),
            {direction: engine_state(engine) for direction, engine in self._engines()},
        )

    def restore(
        self, state: PipelineState, now: float, elapsed: float = 0.0, *, passed: bool = False
    ) -> Restored:
        """Recreate what `snapshot` returned (`elapsed`: seconds since it was taken). A saved
        direction that does not reorder now is not restored: `Restored.ignored` says so.
        `passed`: traffic may have reached the far side untouched meanwhile (the in-path
        fail-open bypass): a restored session then follows the Ns the far side saw
        (core/ahead.py)."""
        engines = dict(self._engines())
        restored: dict[str, int] = {}
        ignored: dict[str, int] = {}
        for direction, saved in state.directions.items():
            engine = engines.get(direction)
            if engine is None:
                ignored[direction] = saved.live
                continue
            restored[direction] = restore_engine(
                engine, saved.sessions, saved.tunnels, now, elapsed, passed=passed
            )
        return Restored(restored, ignored)

    # --- read access for adapters (metrics, status, debug lines, replay) ------------------------

    def directions(self) -> dict[str, DirectionView]:
        """Direction label -> read-only view of its engine: LAC_TO_LNS always, LNS_TO_LAC while
        that direction reorders. Fetch it again after `reconfigure`."""
        return dict(self._engines())

    def _engines(self) -> list[tuple[str, ReorderEngine]]:
        engines = [(LAC_TO_LNS, self.engine)]
        if self.engine_to_lac is not None:
            engines.append((LNS_TO_LAC, self.engine_to_lac))
        return engines

    @property
    def counters(self) -> EngineCounters:
        """The LAC-to-LNS engine's counters (the direction always reordered)."""
        return self.engine.counters

    def sessions(self) -> Iterator[Session]:
        """The LAC-to-LNS sessions."""
        return self.engine.sessions()


def _add_runs(
    runs: list[tuple[bool, Hashable, list[bytes]]],
    to_lns: bool,
    out: list[tuple[Hashable, bytes, object]],
) -> None:
    """Append `out`'s datagrams to `runs`, continuing the last run while the destination is
    the same (an identity check first: a batch's flows are mostly the very same object)."""
    if not out:
        return
    flow: Hashable = _NO_FLOW
    datas: list[bytes] = []
    if runs and runs[-1][0] == to_lns:
        flow, datas = runs[-1][1], runs[-1][2]
    for f, data, _ in out:
        if f is not flow and f != flow:
            flow = f
            datas = []
            runs.append((to_lns, f, datas))
        datas.append(data)


def _engine_events(direction: str, engine: ReorderEngine) -> list[Event]:
    ends, ends_missed, holds, holds_missed = engine.take_records()
    events: list[Event] = [SessionEnded(direction, f, t, s, why) for f, t, s, why in ends]
    events += [HoldSample(direction, (f, t, s), waited) for f, t, s, waited in holds]
    if ends_missed:
        events.append(Missed(direction, "ended", ends_missed))
    if holds_missed:
        events.append(Missed(direction, "hold", holds_missed))
    return events


def _malformed_reason(data: bytes) -> str:
    """Why the engine found `data` malformed: its header, or (control) its AVP list."""
    header = parse_header(data)
    if isinstance(header, str):
        return header
    if header.flags & T_BIT:
        control = control_fields(data)
        if isinstance(control, str):
            return control
    return "unknown"
