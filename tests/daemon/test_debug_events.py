"""The debug lines read the pipeline's events (issue 20): their words, both directions, what
the policy did with a malformed datagram, and nothing recorded once debug is off again. The
live relay's lines are tests/daemon/test_debug_log.py."""

from __future__ import annotations

import logging

import pytest

from l2tpreorder import wire
from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.core.pipeline import MalformedPolicy, Pipeline
from l2tpreorder.daemon.debug_log import DebugEvents

LAC = ("192.0.2.7", 1701)
TOO_SHORT = b"\x02\x02"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]


@pytest.mark.parametrize("policy", list(MalformedPolicy))
def test_drops_ends_and_malformed_datagrams_of_both_directions(
    caplog: pytest.LogCaptureFixture, policy: MalformedPolicy
) -> None:
    caplog.set_level(logging.DEBUG, logger="l2tpreorder")
    p = Pipeline(EngineConfig(), reorder_from_lns=True, malformed=policy)
    debug = DebugEvents(p)
    p.from_lac(wire.build_data(7, 9, b"x", ns=5), LAC, 0.0)
    p.from_lac(wire.build_data(7, 9, b"x", ns=5), LAC, 0.1)
    p.from_lns(wire.build_data(40, 41, b"y", ns=3), LAC, 0.2)
    p.from_lns(wire.build_data(40, 41, b"y", ns=3), LAC, 0.3)
    p.from_lac(TOO_SHORT, LAC, 0.4)
    cdn = wire.build_control(7, 9, 1, 1, [wire.avp_message_type(wire.MessageType.CDN)])
    p.from_lac(cdn, LAC, 0.5)
    debug.drain(0.5)
    done = "passed untouched" if policy is MalformedPolicy.PASS else "dropped"
    assert lines(caplog) == [
        "dropped from LAC 192.0.2.7:1701: tunnel_id 7 session_id 9 Ns 5: "
        "duplicate (this Ns was delivered already)",
        "dropped from the LNS towards LAC 192.0.2.7:1701: tunnel_id 40 session_id 41 Ns 3: "
        "duplicate (this Ns was delivered already)",
        f"{done} from LAC 192.0.2.7:1701: malformed (too_short)",
        "session ended: LAC 192.0.2.7:1701 tunnel_id 7 session_id 9, CDN from the LAC side",
    ]
    caplog.clear()
    debug.close()
    p.from_lac(wire.build_data(7, 9, b"x", ns=6), LAC, 1.0)
    p.from_lac(wire.build_data(7, 9, b"x", ns=6), LAC, 1.1)
    assert p.take_events() == []  # off again: nothing recorded
    assert p.counters.dropped_duplicate == 2
