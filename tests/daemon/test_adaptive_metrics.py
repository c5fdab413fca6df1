"""The adaptive timeout's metrics (session timeouts as a gauge histogram, timeout grows) from a
real engine fed real datagrams, checked by promtool, and its dashboard panels."""

from __future__ import annotations

import json
import subprocess

import pytest
from prometheus_client import generate_latest

from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.daemon.metrics import MetricsConfig, build_registry
from tests.conftest import PROJECT_ROOT, need_tool
from tests.dashboard_check import dashboard_exprs, dashboard_problems
from tests.engine_helpers import FLOW, data
from tests.metrics_helpers import Source, parse, value

D = "lac_to_lns"
ADAPTIVE = EngineConfig(reorder_timeout=0.1, adaptive=True, min_timeout=0.002)


def driven_source() -> Source:
    """Session 1 learns 2 ms from small swaps, then sees one late packet (a grow); session 2
    has just started (at the cap, 100 ms)."""
    e = ReorderEngine(ADAPTIVE)
    t, ns = 0.0, 0
    e.receive(data(0, session=1), FLOW, t)
    for _ in range(80):
        e.receive(data(ns + 2, session=1), FLOW, t + 0.001)
        e.receive(data(ns + 1, session=1), FLOW, t + 0.0013)
        ns, t = ns + 2, t + 0.002
    e.receive(data(ns + 2, session=1), FLOW, t)
    while (deadline := e.next_deadline()) is not None and deadline <= t + 0.01:
        e.expire(deadline)
    e.receive(data(ns + 1, session=1), FLOW, t + 0.01)  # late: its gap was given up at 2 ms
    e.receive(data(0, session=2), FLOW, t + 0.01)
    e.take_output()  # what was sent is not what these tests look at
    return Source({D: e})


def scrape(source: Source) -> str:
    return generate_latest(build_registry(MetricsConfig(), source)).decode()  # type: ignore[arg-type]


def test_session_timeouts_and_grows_are_exported() -> None:
    source = driven_source()
    e = source.engines[D]
    assert e.counters.forwarded_late == 1 == e.counters.adaptive_grows  # delivered late
    s = parse(scrape(source))
    assert value(s, "l2tpreorder_adaptive_timeout_grows_total", direction=D) == 1
    name = "l2tpreorder_session_timeout_seconds"
    timeouts = sorted(x.timeout for x in e.sessions())
    assert timeouts[0] < 0.05 and timeouts[1] == 0.1  # learnt and grown vs new at the cap
    assert value(s, name + "_bucket", direction=D, le="0.05") == 1
    assert value(s, name + "_bucket", direction=D, le="0.1") == 2
    assert value(s, name + "_bucket", direction=D, le="+Inf") == 2
    assert value(s, name + "_gcount", direction=D) == 2
    assert value(s, name + "_gsum", direction=D) == pytest.approx(sum(timeouts))


def test_fixed_mode_reports_every_session_at_the_configured_timeout() -> None:
    e = ReorderEngine(EngineConfig(reorder_timeout=0.05))
    for session in (1, 2, 3):
        e.receive(data(0, session=session), FLOW, 0.0)
    s = parse(scrape(Source({D: e})))
    name = "l2tpreorder_session_timeout_seconds_bucket"
    assert value(s, name, direction=D, le="0.02") == 0
    assert value(s, name, direction=D, le="0.05") == 3
    assert value(s, "l2tpreorder_session_timeout_seconds_gsum", direction=D) == pytest.approx(0.15)
    assert value(s, "l2tpreorder_adaptive_timeout_grows_total", direction=D) == 0
    empty = parse(scrape(Source({D: ReorderEngine(EngineConfig(reorder_timeout=0.05))})))
    assert value(empty, name, direction=D, le="+Inf") == 0


@pytest.mark.integration
def test_promtool_accepts_the_adaptive_families() -> None:
    promtool = need_tool("promtool")
    run = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape(driven_source()), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "" and run.stderr.strip() == "", run.stdout + run.stderr


def test_dashboard_shows_session_timeouts_and_grows() -> None:
    dash = json.loads((PROJECT_ROOT / "grafana" / "l2tpreorder.json").read_text())
    assert dashboard_problems(dash) == []
    exprs = [expr for _, expr in dashboard_exprs(dash)]
    assert any("l2tpreorder_session_timeout_seconds_bucket" in x for x in exprs)
    assert any("l2tpreorder_adaptive_timeout_grows_total" in x for x in exprs)
