"""Every datagram has exactly one counted outcome, under both malformed policies (issue 20).

Valid and hostile traffic (tests/core/test_fuzz_engine.py's strategies) goes through a Pipeline
from both sides. Per direction that an engine counts, the sum of the outcome counters equals the
datagrams fed, the outcome `from_lac`/`from_lns` returned for each datagram is the one counted,
and what goes out is exactly the forwarded and released datagrams, each once: a malformed one
is dropped under MalformedPolicy.DROP and passes untouched, at once, in arrival order, under
MalformedPolicy.PASS. Nothing is counted twice and no adapter has a count to take back.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC
from l2tpreorder.core.engine import EngineConfig, Sequencing
from l2tpreorder.core.events import Malformed
from l2tpreorder.core.fastpath import raw_ns_readable
from l2tpreorder.core.pipeline import MalformedPolicy, Pipeline
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.core.views import EngineCounters
from tests.core.test_fuzz_engine import Step, configs, steps

DROPS = (
    Outcome.DROPPED_DUPLICATE,
    Outcome.DROPPED_LATE,
    Outcome.DROPPED_STALE,
    Outcome.DROPPED_FAR_AHEAD,
)
MALFORMED = (Outcome.DROPPED_MALFORMED, Outcome.FORWARDED_MALFORMED)


def counted(c: EngineCounters) -> dict[Outcome, int]:
    """The outcome counters by Outcome (HELD ones are `released` once the pipeline flushed)."""
    return {
        Outcome.FORWARDED_CONTROL: c.forwarded_control,
        Outcome.FORWARDED_UNSEQUENCED: c.forwarded_unsequenced,
        Outcome.FORWARDED_IN_ORDER: c.forwarded_in_order,
        Outcome.FORWARDED_OUT_OF_ORDER: c.forwarded_out_of_order,
        Outcome.FORWARDED_LATE: c.forwarded_late,
        Outcome.HELD: c.released + c.held_packets,
        Outcome.DROPPED_DUPLICATE: c.dropped_duplicate,
        Outcome.DROPPED_LATE: c.dropped_late,
        Outcome.DROPPED_MALFORMED: c.dropped_malformed,
        Outcome.DROPPED_STALE: c.dropped_stale,
        Outcome.DROPPED_FAR_AHEAD: c.dropped_far_ahead,
        Outcome.FORWARDED_MALFORMED: c.forwarded_malformed,
    }


class Run:
    """Feeds steps into a pipeline and tallies what it said about each datagram."""

    def __init__(self, config: EngineConfig, both: bool, policy: MalformedPolicy) -> None:
        self.p = Pipeline(config, reorder_from_lns=both, malformed=policy)
        self.p.record_events(debug=True)
        self.policy = policy
        self.sequencing = config.sequencing
        self.now = 0.0
        self.fed: Counter[str] = Counter()
        self.outcomes: dict[str, Counter[Outcome]] = {LAC_TO_LNS: Counter(), LNS_TO_LAC: Counter()}
        self.sent: dict[int, bytes] = {}  # tag -> datagram, for what may still go out
        self.out: Counter[int] = Counter()  # tag -> times it went out
        self.given: dict[int, bytes] = {}
        self.tag = 0

    def feed(self, step: Step, from_lns: bool) -> None:
        self.now += step.dt
        direction = LNS_TO_LAC if from_lns else LAC_TO_LNS
        receive = self.p.from_lns if from_lns else self.p.from_lac
        self.tag += 1
        self.given[self.tag] = step.data
        outcome = Outcome(receive(step.data, step.flow, self.now, self.tag))
        self.fed[direction] += 1
        self.outcomes[direction][outcome] += 1
        if outcome in MALFORMED:
            # Passed (in-path), except a raw Ns the LNS would read among ours (issue 21)
            passes = self.policy is MalformedPolicy.PASS and (
                self.sequencing is Sequencing.PRESERVE or not raw_ns_readable(step.data)
            )
            expected = Outcome.FORWARDED_MALFORMED if passes else Outcome.DROPPED_MALFORMED
            assert outcome == expected
        out = self.take()
        if outcome == Outcome.FORWARDED_MALFORMED:
            # Untouched, and at once: the last datagram out of its direction now.
            mine = [o for o in out if o.to_lns != from_lns]
            assert mine and mine[-1].tag == self.tag and mine[-1].data is step.data
        if outcome in (*DROPS, Outcome.DROPPED_MALFORMED):
            assert self.out[self.tag] == 0

    def take(self) -> list[object]:
        out = self.p.take_output()
        for o in out:
            assert isinstance(o.tag, int)
            self.out[o.tag] += 1
        return list(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=steps(),
    config=configs,
    both=st.booleans(),
    policy=st.sampled_from(list(MalformedPolicy)),
    sides=st.lists(st.booleans(), min_size=120, max_size=120),
)
def test_every_datagram_has_exactly_one_counted_outcome(
    ops: list[Step], config: EngineConfig, both: bool, policy: MalformedPolicy, sides: list[bool]
) -> None:
    run = Run(config, both, policy)
    for step, flip in zip(ops, sides, strict=False):
        if step.kind in ("rx", "reverse"):
            # "reverse" comes from the LNS; with both directions reordered, so may data.
            run.feed(step, from_lns=step.kind == "reverse" or (both and flip))
        elif step.kind == "expire":
            run.now += step.dt
            run.p.expire(run.now)
            run.take()
        elif step.kind == "end":
            run.p.end_flow(step.flow, run.now)
            run.take()
    run.p.flush(run.now)
    run.take()
    views = run.p.directions()
    assert set(views) == ({LAC_TO_LNS, LNS_TO_LAC} if both else {LAC_TO_LNS})
    for direction, view in views.items():
        c = view.counters
        # Sum of outcome counters == datagrams fed, and each datagram's returned outcome is the
        # one counted (HELD ones were all released by the flush).
        assert c.received == c.accounted == run.fed[direction] == sum(counted(c).values())
        assert c.held_packets == 0
        assert counted(c) == {o: run.outcomes[direction][o] for o in counted(c)}, direction
        assert c.rx_malformed == sum(c.malformed.values())
    if not both:  # passed on untouched by the pipeline, never counted by an engine
        passed = run.outcomes[LNS_TO_LAC]
        assert set(passed) <= {Outcome.FORWARDED_CONTROL, Outcome.FORWARDED_UNSEQUENCED}
    # What went out: everything not dropped, exactly once (held ones after their release).
    dropped = {
        tag
        for tag in run.given
        if run.out[tag] == 0  # checked per outcome in feed; here: nothing went out twice
    }
    assert all(n == 1 for n in run.out.values())
    total_out = sum(run.out.values())
    total_dropped = sum(
        run.outcomes[d][o] for d in run.outcomes for o in (*DROPS, Outcome.DROPPED_MALFORMED)
    )
    assert total_out + total_dropped == run.tag
    assert len(dropped) == total_dropped
    # The debug events name every malformed datagram once, with what became of it.
    malformed = [e for e in run.p.take_events() if isinstance(e, Malformed)]
    counted_malformed = sum(v.counters.rx_malformed for v in views.values())
    assert len(malformed) == counted_malformed
    forwarded = sum(v.counters.forwarded_malformed for v in views.values())
    assert sum(e.passed for e in malformed) == forwarded
    assert forwarded == 0 or policy is MalformedPolicy.PASS
