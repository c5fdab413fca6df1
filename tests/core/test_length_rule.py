"""Issue 21 (7): one rule for a data message whose L2TP Length disagrees with the datagram.

- Length > datagram (the message says it is longer than what came: truncated): malformed,
  `length_exceeds_datagram`; Length < its own header: malformed, `length_below_header`.
- Length < datagram: the message is its first Length bytes, the rest is padding: it is
  ordered like any other (all three parsers agree: tests/core/test_fastpath_equivalence.py,
  test_engine_inline_parse.py) and forwarded with the padding untouched.
- A malformed data message whose Ns is readable is never passed on with its raw Ns while the
  LNS sees our numbering (renumber, strip): it is dropped (`dropped{reason="malformed"}`),
  also in in-path mode (which passes every other malformed datagram untouched). Its raw Ns
  would otherwise repeat one renumbering hands out.

The property: whatever such datagrams are mixed into a few sessions' swapped streams, under
both malformed policies, the Ns the LNS receives per session never repeat (renumber), and
no datagram reaches it with an Ns (strip).
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from l2tpreorder import wire
from l2tpreorder.core.engine import EngineConfig, Sequencing
from l2tpreorder.core.pipeline import MalformedPolicy, Pipeline
from l2tpreorder.core.reasons import LENGTH_BELOW_HEADER, LENGTH_EXCEEDS_DATAGRAM, Outcome

FLOW = ("192.0.2.1", 1701)
SESSIONS = ((7, 9), (7, 10))


def with_length(tunnel: int, session: int, ns: int, kind: str) -> bytes:
    """A data message with Length, made to disagree with its datagram as `kind` says."""
    good = wire.build_data(tunnel, session, b"frame-%05d" % ns, ns=ns, length=True)
    if kind == "exceeds":  # Length says more than came (a truncated message)
        return good[:2] + struct.pack("!H", len(good) + 7) + good[4:]
    if kind == "below_header":
        return good[:2] + struct.pack("!H", 8) + good[4:]
    if kind == "padded":  # Length says less: the rest is padding
        return good + b"\0" * 5
    return good


def lns_view_ns(data: bytes) -> tuple[int, int, int] | None:
    """(tunnel, session, Ns) as an LNS that ignores Length (the kernel's L2TP) reads a data
    message; None for control, no Ns, or too short to hold one."""
    if len(data) < 2 or data[0] & 0x80 or not data[0] & 0x08 or data[1] & 0x0F != 2:
        return None
    at = 4 if data[0] & 0x40 else 2
    if len(data) < at + 6:
        return None
    tunnel, session, ns = struct.unpack_from("!HHH", data, at)
    return tunnel, session, ns


KINDS = st.sampled_from(["good", "good", "good", "exceeds", "below_header", "padded"])
EVENT = st.tuples(st.sampled_from(range(len(SESSIONS))), st.integers(0, 40), KINDS)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(EVENT, max_size=120),
    policy=st.sampled_from(list(MalformedPolicy)),
    sequencing=st.sampled_from([Sequencing.RENUMBER, Sequencing.STRIP]),
    timeout=st.sampled_from([0.0, 0.05]),
)
def test_renumbering_never_hands_out_an_ns_twice(
    events: list[tuple[int, int, str]],
    policy: MalformedPolicy,
    sequencing: Sequencing,
    timeout: float,
) -> None:
    config = EngineConfig(reorder_timeout=timeout, sequencing=sequencing)
    pipeline = Pipeline(config, malformed=policy)
    out: list[bytes] = []
    now = 0.0
    for i, (which, ns, kind) in enumerate(events):
        tunnel, session = SESSIONS[which]
        outcome = pipeline.from_lac(with_length(tunnel, session, ns, kind), FLOW, now, i)
        if kind in ("exceeds", "below_header"):
            assert outcome == Outcome.DROPPED_MALFORMED
        now += 0.01
        pipeline.expire(now)
        out.extend(o.data for o in pipeline.take_output())
    pipeline.flush(now + 1)
    out.extend(o.data for o in pipeline.take_output())
    seen: set[tuple[int, int, int]] = set()
    for data in out:
        got = lns_view_ns(data)
        if sequencing is Sequencing.STRIP:
            assert got is None, data
            continue
        assert got is not None
        assert got not in seen, f"Ns {got} handed out twice"
        seen.add(got)
    c = pipeline.directions()["lac_to_lns"].counters
    bad = sum(1 for _, _, kind in events if kind in ("exceeds", "below_header"))
    assert c.malformed[LENGTH_EXCEEDS_DATAGRAM] + c.malformed[LENGTH_BELOW_HEADER] == bad
    assert c.dropped_malformed == bad and c.forwarded_malformed == 0


def test_padding_after_length_is_ordered_and_kept() -> None:
    """Length < datagram: ordered and renumbered by its Length-bounded header; the padding
    goes on untouched."""
    pipeline = Pipeline(EngineConfig(reorder_timeout=1.0), malformed=MalformedPolicy.PASS)
    padded = with_length(7, 9, 1, "padded")
    assert pipeline.from_lac(with_length(7, 9, 0, "good"), FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER
    assert pipeline.from_lac(with_length(7, 9, 2, "padded"), FLOW, 0.0) == Outcome.HELD
    assert pipeline.from_lac(padded, FLOW, 0.0) == Outcome.FORWARDED_IN_ORDER
    data = [o.data for o in pipeline.take_output()]
    assert data[1] == padded and data[2].endswith(b"\0" * 5)
    assert [lns_view_ns(d) for d in data] == [(7, 9, 0), (7, 9, 1), (7, 9, 2)]


def test_preserve_passes_a_malformed_message_untouched_in_path() -> None:
    """With `preserve` the LNS judges the LAC's own Ns: a malformed message's raw Ns is no
    stranger there, so in-path mode still passes it untouched (do no harm)."""
    config = EngineConfig(sequencing=Sequencing.PRESERVE)
    pipeline = Pipeline(config, malformed=MalformedPolicy.PASS)
    bad = with_length(7, 9, 3, "exceeds")
    assert pipeline.from_lac(bad, FLOW, 0.0) == Outcome.FORWARDED_MALFORMED
    assert [o.data for o in pipeline.take_output()] == [bad]
