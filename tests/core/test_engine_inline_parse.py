"""Property tests: `ReorderEngine.receive` inlines engine_helpers.sequenced_data; they agree.

1. Any datagram (the equivalence test's generator: every flag combination, lying Length values,
   offsets, truncation) fed to a fresh engine takes the inlined fast route exactly when
   sequenced_data returns a result, and ends as fastpath says it is: sequenced data opens
   a session under (tunnel_id, session_id) at that Ns; everything else takes the path
   `parse_header` names (malformed reason, control, unsequenced, or sequenced with an offset).
2. Sequences of such datagrams, mixed with in-order/swapped/far-behind data for a few sessions,
   give the same outcomes, output and counters as a reference engine that calls
   `sequenced_data` and sends every sequenced packet down the general path.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from l2tpreorder import BUILD, wire
from l2tpreorder.core import fastpath
from l2tpreorder.core.engine import MASK, EngineConfig, ReorderEngine, Sequencing
from l2tpreorder.core.reasons import Outcome
from tests.core.test_fastpath_equivalence import headers
from tests.engine_helpers import FLOW, check_invariants, sequenced_data, slot_names


class ReferenceEngine:
    """No inlining at all: every datagram is classified by sequenced_data and every
    sequenced one takes the general path (`_receive_sequenced`), never the in-order shortcut.
    So this checks the inlined parse AND the inlined in-order shortcut against independent
    code, not against a copy of themselves. It wraps an engine rather than subclassing it:
    the compiled build's ReorderEngine (l2tpreorder.build) cannot be subclassed in Python."""

    def __init__(self, config: EngineConfig) -> None:
        self.engine = ReorderEngine(config)

    def receive(self, data: bytes, flow: Hashable, now: float, tag: object = None) -> int:
        fast = sequenced_data(data)
        if fast is None:
            return self.engine._receive_other(data, flow, now, tag)
        key, ns, ns_offset = fast
        return self.engine._receive_sequenced(data, flow, key, ns, ns_offset, now, tag)


def route_recorder() -> tuple[ReorderEngine, list[bytes] | None]:
    """An engine, and the datagrams its inlined parse handed to the slow path: recorded by a
    subclass on the pure build only (a compiled class cannot be subclassed in Python; `make
    test` runs this file on the pure build too, the same source)."""
    if BUILD != "pure":
        return ReorderEngine(EngineConfig()), None

    class RouteRecorder(ReorderEngine):
        slow: list[bytes]

        def _receive_other(self, data: bytes, flow: Hashable, now: float, tag: object) -> int:
            self.slow.append(data)
            return super()._receive_other(data, flow, now, tag)

    e = RouteRecorder(EngineConfig())
    e.slow = []
    return e, e.slow


def _counters(e: ReorderEngine) -> dict[str, object]:
    c = e.counters
    return {
        name: (dict(v) if isinstance(v, dict) else getattr(v, "counts", v))
        for name in slot_names(type(c))
        for v in [getattr(c, name)]
    }


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers())
@example(b"\x48\x02\x00\x0e" + bytes(10) + b"pad")  # Length < datagram: padding (issue 21)
@example(b"\x48\x02\x00\x20" + bytes(10))  # Length > datagram: malformed
def test_fresh_engine_classifies_like_fastpath(data: bytes) -> None:
    e, slow = route_recorder()
    outcome = e.receive(data, FLOW, 1.0)
    fast = sequenced_data(data)
    header = fastpath.parse_header(data)
    # The inlined parse takes the fast route exactly when sequenced_data returns a result.
    if slow is not None:
        assert slow == ([] if fast is not None else [data])
    if fast is not None:
        key, ns, _ = fast
        assert isinstance(header, fastpath.Header) and header.ns == ns
        assert key == (header.tunnel_id << 16) | header.session_id
        assert outcome == Outcome.FORWARDED_IN_ORDER
        s = e.session(FLOW, key >> 16, key & MASK)
        assert s is not None and s.expected == (ns + 1) & MASK
        assert e.take_output() == [(FLOW, data, None)]
    elif isinstance(header, str):
        assert outcome == Outcome.DROPPED_MALFORMED
        assert e.counters.malformed[header] == 1
    elif header.is_control:
        control = wire.parse_control(data)
        if isinstance(control, str):
            assert outcome == Outcome.DROPPED_MALFORMED
            assert e.counters.malformed[control] == 1
        else:
            assert outcome == Outcome.FORWARDED_CONTROL
    elif header.ns is None:
        assert outcome == Outcome.FORWARDED_UNSEQUENCED
    else:
        # Sequenced data of a shape the fast path leaves alone (offset field): same engine path.
        assert header.has_offset
        assert outcome == Outcome.FORWARDED_IN_ORDER
        s = e.session(FLOW, header.tunnel_id, header.session_id)
        assert s is not None and s.expected == (header.ns + 1) & MASK
    check_invariants(e)


@st.composite
def sessions_traffic(draw: st.DrawFn) -> list[bytes]:
    """In-order, swapped, repeated and lost data for 3 sessions (both header shapes), mixed
    with arbitrary headers; tunnel/session ids collide on purpose."""
    out: list[bytes] = []
    next_ns = [draw(st.integers(0, MASK)) for _ in range(3)]
    for _ in range(draw(st.integers(1, 40))):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            out.append(draw(headers()))
            continue
        i = draw(st.integers(0, 2))
        ns = next_ns[i]
        step = draw(st.sampled_from([0, 0, 0, 1, 2, -1, 3, -1000]))
        ns = (ns + step) & MASK
        if step == -1000:
            # A far-behind packet (a stale replay or a restarting peer) interleaved with the
            # live stream, which carries on where it was: exercises the resync run counting.
            out.append(wire.build_data(1, i + 1, struct.pack("!I", ns), ns=ns))
            continue
        next_ns[i] = (ns + 1) & MASK
        length = draw(st.booleans())
        payload = struct.pack("!I", ns) + bytes(draw(st.integers(0, 8)))
        out.append(wire.build_data(1, i + 1, payload, ns=ns, length=length,
                                   priority=draw(st.booleans())))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sessions_traffic(),
    st.sampled_from(list(Sequencing)),
    st.sampled_from([0.0, 0.05]),
)
def test_receive_matches_the_reference_engine(
    packets: list[bytes], mode: Sequencing, timeout: float
) -> None:
    config = EngineConfig(
        reorder_timeout=timeout, sequencing=mode, max_held_per_session=4, resync_after=2
    )
    engine, wrapper = ReorderEngine(config), ReferenceEngine(config)
    ref = wrapper.engine
    now = 1.0
    for data in packets:
        assert engine.receive(data, FLOW, now) == wrapper.receive(data, FLOW, now)
        assert engine.take_output() == ref.take_output()
        now += 0.01
        engine.expire(now)
        ref.expire(now)
        assert engine.take_output() == ref.take_output()
    assert _counters(engine) == _counters(ref)
    check_invariants(engine)
