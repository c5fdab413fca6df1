"""The pipeline does what the relay did by hand before it existed (a proof for the refactor).

The reference below is the pre-pipeline relay's logic, written out with two bare engines: LAC
datagrams to the LAC-to-LNS engine (and their control messages to the LNS-to-LAC engine's
`observe_reverse`), LNS datagrams' control messages to the first engine's `observe_reverse` and
then to the second engine or straight on, two deadlines merged by hand. Hostile and valid
traffic from test_fuzz_engine's generator, both directions, with and without LNS-to-LAC
reordering: every outcome, every datagram sent (per direction, in order), every deadline and
every counter must be the same.
"""

from __future__ import annotations

from collections.abc import Hashable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.wire import (
    MessageType,
    avp_assigned_session_id,
    avp_assigned_tunnel_id,
    avp_message_type,
    avp_result_code,
    build_control,
    build_data,
)
from tests.core.test_fuzz_engine import FLOWS, SESSIONS, Step, configs, steps
from tests.engine_helpers import slot_names

TUNNELS = sorted({t for t, _ in SESSIONS} | {9})
SESSION_IDS = sorted({s for _, s in SESSIONS})


@st.composite
def lns_message(draw: st.DrawFn) -> bytes:
    """What an LNS says that matters to our sessions: tunnel pairing (SCCRP), confirmations
    (ICRP), ends (CDN, StopCCN), all naming IDs our sessions use; and its own sequenced data."""
    theirs = draw(st.sampled_from(TUNNELS))  # the LAC's tunnel ID, in the LNS's headers
    kind = draw(st.sampled_from(["SCCRP", "ICRP", "CDN", "StopCCN", "data", "data"]))
    if kind == "data":
        session = draw(st.sampled_from(SESSIONS))
        return build_data(*session, b"lns", ns=draw(st.integers(0, 6)))
    avps = [avp_message_type(MessageType[kind])]
    if kind in ("SCCRP", "StopCCN"):
        avps.append(avp_assigned_tunnel_id(draw(st.sampled_from(TUNNELS))))
    if kind in ("ICRP", "CDN"):
        avps.append(avp_assigned_session_id(draw(st.sampled_from(SESSION_IDS))))
    if kind in ("CDN", "StopCCN"):
        avps.append(avp_result_code(1))
    return build_control(theirs, draw(st.integers(0, 3)), 0, 0, avps)


@st.composite
def both_sides(draw: st.DrawFn) -> list[Step]:
    """test_fuzz_engine's plan with LNS messages that name our sessions mixed in."""
    plan = draw(steps())
    for _ in range(draw(st.integers(0, 30))):
        at = draw(st.integers(0, len(plan)))
        flow = draw(st.sampled_from(FLOWS))
        dt = draw(st.sampled_from([0.0, 0.01]))
        plan.insert(at, Step("reverse", flow, draw(lns_message()), dt))
    return plan

Sent = list[tuple[Hashable, bytes]]


class HandWired:
    """The relay's wiring before the pipeline (relay.py at commit 0bdd9f6, with branch
    engine's changes: the LAC side's control is not authoritative for the LNS-to-LAC engine;
    sessions' idle expiry is a deadline too)."""

    def __init__(self, config: EngineConfig, reorder_from_lns: bool) -> None:
        self.up = ReorderEngine(config)
        self.down = ReorderEngine(config) if reorder_from_lns else None
        self.passed: Sent = []

    def from_lac(self, data: bytes, flow: Hashable, now: float) -> int:
        outcome = self.up.receive(data, flow, now)
        if self.down is not None and data and data[0] & 0x80:
            self.down.observe_reverse(data, flow, now, authoritative=False)
        return outcome

    def from_lns(self, data: bytes, flow: Hashable, now: float) -> None:
        if data and data[0] & 0x80:
            self.up.observe_reverse(data, flow, now)
        if self.down is not None:
            self.down.receive(data, flow, now)
        else:
            self.passed.append((flow, data))

    def next_deadline(self) -> float | None:
        candidates = [self.up.next_deadline(), self.up.next_idle_deadline()]
        if self.down is not None:
            candidates += [self.down.next_deadline(), self.down.next_idle_deadline()]
        return min((d for d in candidates if d is not None), default=None)

    def take(self) -> tuple[Sent, Sent]:
        to_lns = [(f, d) for f, d, _ in self.up.take_output()]
        to_lac, self.passed = self.passed, []
        if self.down is not None:
            to_lac += [(f, d) for f, d, _ in self.down.take_output()]
        return to_lns, to_lac


def _take(p: Pipeline, plan: list[Step], tags: set[object]) -> tuple[Sent, Sent]:
    """The pipeline's output per direction; each tag names the step its datagram came in by,
    from the matching side, and comes out once."""
    out = p.take_output()
    for o in out:
        assert isinstance(o.tag, int) and o.tag not in tags
        tags.add(o.tag)
        assert plan[o.tag].kind == ("rx" if o.to_lns else "reverse")
        assert plan[o.tag].flow == o.flow
    to_lns = [(o.flow, o.data) for o in out if o.to_lns]
    return to_lns, [(o.flow, o.data) for o in out if not o.to_lns]


def _counters(e: ReorderEngine | None) -> object:
    if e is None:
        return None
    c = e.counters
    return {
        name: (dict(v) if isinstance(v, dict) else getattr(v, "counts", v))
        for name in slot_names(type(c))
        for v in [getattr(c, name)]
    }


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(configs, both_sides(), st.booleans())
def test_pipeline_equals_the_hand_wired_relay(
    config: EngineConfig, plan: list[Step], reorder_from_lns: bool
) -> None:
    p = Pipeline(config, reorder_from_lns=reorder_from_lns)
    ref = HandWired(config, reorder_from_lns)
    now = 100.0
    tags: set[object] = set()
    for i, step in enumerate(plan):
        now += step.dt
        if step.kind == "rx":
            outcome = ref.from_lac(step.data, step.flow, now)
            assert p.from_lac(step.data, step.flow, now, i) == outcome
        elif step.kind == "reverse":
            p.from_lns(step.data, step.flow, now, i)
            ref.from_lns(step.data, step.flow, now)
        elif step.kind == "kernel_drops":
            p.note_kernel_drops(now, from_lac=True)
            ref.up.note_kernel_drops(now)
        elif step.kind == "expire":
            assert p.next_deadline() == ref.next_deadline()
            deadline = p.next_deadline()
            when = now if deadline is None else max(now, deadline)
            p.expire(when)
            ref.up.expire(when)
            if ref.down is not None:
                ref.down.expire(when)
        else:
            assert p.end_flow(step.flow, now) == ref.up.end_flow(step.flow, now) + (
                ref.down.end_flow(step.flow, now) if ref.down is not None else 0
            )
        assert _take(p, plan, tags) == ref.take()
    p.flush(now)
    ref.up.flush(now)
    if ref.down is not None:
        ref.down.flush(now)
    assert _take(p, plan, tags) == ref.take()
    assert _counters(p.engine) == _counters(ref.up)
    assert _counters(p.engine_to_lac) == _counters(ref.down)
