"""`Pipeline.from_lac_many` (one recvmmsg's datagrams in one call) is `from_lac` per datagram.

Two pipelines get the same stream: one datagram at a time through `from_lac`, and in batches
(consecutive LAC datagrams joined at random, all at the batch's `now`, as the relay reads them)
through `from_lac_many`. After every batch and every other step both must have sent the same
datagrams (with their tags; or, read with `take_runs`, the same runs the relay used to make of
`take_output` with groupby), recorded the same events, and at the end have the same counters,
in both directions, with and without LNS-to-LAC reordering and event recording. `make test`
runs it on both builds (its name matches pytest-pure's `-k equivalence`), so this holds for the
compiled loop and the interpreted one.
"""

from __future__ import annotations

from collections.abc import Hashable
from itertools import groupby
from operator import attrgetter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.core.pipeline import MalformedPolicy, Output, Pipeline
from tests.core.test_fuzz_engine import FLOWS, Step, configs
from tests.core.test_pipeline_equivalence import _counters, both_sides
from tests.engine_helpers import FLOW, data


def _batches(plan: list[Step], joins: list[bool]) -> list[list[Step]]:
    """The plan cut into runs: consecutive "rx" steps joined where `joins` says, all else alone."""
    runs: list[list[Step]] = []
    for step, join in zip(plan, joins, strict=False):
        if join and runs and step.kind == "rx" and runs[-1][-1].kind == "rx":
            runs[-1].append(step)
        else:
            runs.append([step])
    runs += [[step] for step in plan[len(joins) :]]
    return runs


def _grouped(out: list[Output]) -> list[tuple[bool, Hashable, list[bytes]]]:
    """What the relay made of take_output() before take_runs(): groupby on (to_lns, flow)."""
    return [
        (to_lns, flow, [o.data for o in group])
        for (to_lns, flow), group in groupby(out, attrgetter("to_lns", "flow"))
    ]


def _same(one: Pipeline, many: Pipeline, runs: bool) -> None:
    """Same output (as runs: take_runs() against take_output() grouped), events, deadline."""
    if runs:
        assert many.take_runs() == _grouped(one.take_output())
    else:
        assert many.take_output() == one.take_output()
    assert many.take_events() == one.take_events()
    assert many.next_deadline() == one.next_deadline()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    configs,
    both_sides(),
    st.lists(st.booleans(), max_size=200),
    st.booleans(),
    st.sampled_from([(False, False), (True, False), (False, True), (True, True)]),
    st.booleans(),
    st.sampled_from(list(MalformedPolicy)),
    st.booleans(),
)
def test_batches_equal_one_by_one(
    config: EngineConfig,
    plan: list[Step],
    joins: list[bool],
    reorder_from_lns: bool,
    recording: tuple[bool, bool],
    tagged: bool,
    malformed: MalformedPolicy,
    runs: bool,
) -> None:
    one = Pipeline(config, reorder_from_lns=reorder_from_lns, malformed=malformed)
    many = Pipeline(config, reorder_from_lns=reorder_from_lns, malformed=malformed)
    for p in (one, many):
        p.record_events(debug=recording[0], hold_samples=recording[1])
    now = 100.0
    index = 0  # each datagram's tag (when tagged): its place in the plan
    for run in _batches(plan, joins):
        now += run[0].dt
        step = run[0]
        if step.kind == "rx":
            tags: list[object] = list(range(index, index + len(run)))
            for s, tag in zip(run, tags, strict=True):
                one.from_lac(s.data, s.flow, now, tag if tagged else None)
            datas = [s.data for s in run]
            flows = [s.flow for s in run]
            many.from_lac_many(datas, flows, now, tags if tagged else None)
        elif step.kind == "reverse":
            for p in (one, many):
                p.from_lns(step.data, step.flow, now, index)
        elif step.kind == "kernel_drops":
            for p in (one, many):
                p.note_kernel_drops(now, from_lac=True)
        elif step.kind == "expire":
            deadline = one.next_deadline()
            when = now if deadline is None else max(now, deadline)
            for p in (one, many):
                p.expire(when)
        else:
            assert many.end_flow(step.flow, now) == one.end_flow(step.flow, now)
        index += len(run)
        _same(one, many, runs)
    for p in (one, many):
        p.flush(now)
    _same(one, many, runs)
    assert _counters(many.engine) == _counters(one.engine)
    assert _counters(many.engine_to_lac) == _counters(one.engine_to_lac)
    assert [f for f in FLOWS if f in {s.flow for s in many.sessions()}] == [
        f for f in FLOWS if f in {s.flow for s in one.sessions()}
    ]


def test_a_batch_counts_every_datagram_once() -> None:
    """In order, a duplicate, a held one, the gap's filler, and garbage, in one call."""
    p = Pipeline(EngineConfig(reorder_timeout=1.0))
    batch = [data(0), data(0), data(2), data(1), b"\x00"]
    p.from_lac_many(batch, [FLOW] * len(batch), 0.0)
    c = p.counters
    assert (c.forwarded_in_order, c.dropped_duplicate, c.released, c.rx_malformed) == (2, 1, 1, 1)
    assert [o.data for o in p.take_output()] == [data(0), data(1), data(2)]


def test_lengths_that_differ_are_refused() -> None:
    for p in (Pipeline(EngineConfig()), Pipeline(EngineConfig(), reorder_from_lns=True)):
        with pytest.raises(ValueError):
            p.from_lac_many([data(0)], [], 0.0)
        with pytest.raises(ValueError):
            p.from_lac_many([data(0)], [FLOW], 0.0, [1, 2])
        assert p.counters.forwarded_in_order == 0 and p.take_output() == []
