"""`inpath.allow` (issue 21, point 6) with real parts: a real `l2tpreorder run` (mode: inpath)
behind a real NFQUEUE rule in a network namespace named with the pid, the test as LAC, LNS and
a host outside `allow` flooding UDP port 1701 beside one real session with swaps.

Two rule sets: a broad rule that queues every source (the daemon itself must pass the flood
untouched, count it and make no session of it), and the INPUT rules `l2tpreorder rules` prints
for the same config (the flood never reaches the queue at all)."""

from __future__ import annotations

import random
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2tpreorder.config import config_from_dict
from l2tpreorder.tools.rules import render
from tests.conftest import need_tool
from tests.engine_helpers import randomly_swapped
from tests.integration.inpath_helpers import (
    InPathDaemon,
    data,
    frame_of,
    metric,
    ns_of,
    queued_namespace,
    quiet,
    receive_all,
)
from tests.integration.test_inpath_control import cli, rewrite, sessions, status
from tests.netns import NetNs, wait_until

pytestmark = [pytest.mark.integration]

QUEUE = 3
LNS = ("127.0.0.1", 1701)
LAC = ("127.0.0.2", 40021)
STRANGER = ("127.0.0.5", 40022)
# The flood's destination: port 1701 (the queue rule's) on an address nobody listens on, so
# the LNS socket's buffer holds only the real session (the judge stays exact).
SINK = ("127.0.0.9", 1701)
ALLOW = ["127.0.0.2/32", "2001:db8:1::/48"]
REAL = 400
FLOOD_PER_REAL = 50  # 20,000 datagrams from outside `allow`


@pytest.fixture(params=["broad", "printed"])
def lab(request: pytest.FixtureRequest) -> Iterator[tuple[NetNs, str]]:
    need_tool("ip6tables")
    broad = request.param == "broad"
    with queued_namespace("inallow", QUEUE if broad else None) as space:
        if not broad:  # the rules `l2tpreorder rules` prints for this allow list
            config = config_from_dict(
                {"mode": "inpath", "inpath": {"queue": QUEUE, "allow": ALLOW}}
            )
            block = render(config).split("# --- A. the same with nft")[0]
            for line in block.splitlines():
                if line.startswith(("iptables", "ip6tables")) and "OUTPUT" not in line:
                    space.run(*shlex.split(line))
        yield space, request.param


def flood(rng: random.Random) -> bytes:
    """What a stranger sends: L2TPv2 data with Ns, often the real session's own IDs (were it
    ordered, it would create sessions and move the real one's numbering)."""
    tunnel, session = (7, 9) if rng.random() < 0.5 else (rng.randrange(1, 65536), 1)
    return data(rng.randrange(65536), tunnel=tunnel, session=session)


def test_a_flood_from_outside_allow_leaves_the_real_session_untouched(
    lab: tuple[NetNs, str], tmp_path: Path
) -> None:
    ns, rules = lab
    daemon = InPathDaemon(ns, tmp_path, QUEUE, inpath={"queue": QUEUE, "allow": ALLOW})
    daemon.start()
    assert "accepts every source" not in daemon.log.read_text()  # allow set: no warning
    lns = ns.udp(*LNS)
    lac = ns.udp(*LAC)
    stranger = ns.udp(*STRANGER)
    rng = random.Random(21)
    order = randomly_swapped(REAL, seed=6)
    assert order != sorted(order)
    for n in order:
        lac.sendto(data(n), LNS)
        for _ in range(FLOOD_PER_REAL):
            stranger.sendto(flood(rng), SINK)
    got = receive_all(lns, REAL, timeout=60)
    assert {addr for _, addr in got} == {LAC}
    assert [frame_of(d) for d, _ in got] == list(range(REAL))  # the LAC's order
    assert [ns_of(d) for d, _ in got] == list(range(REAL))  # no Ns moved or repeated
    assert quiet(lns)
    answer = status(daemon)
    assert [p["lac"] for p in answer["peers"]] == ["127.0.0.2:40021"]
    assert len(sessions(answer)) == 1
    flooded = REAL * FLOOD_PER_REAL

    def counted() -> tuple[float, float]:
        text = daemon.scrape()
        q = str(QUEUE)
        return (
            metric(text, "l2tpreorder_inpath_passed_not_ours_total", queue=q, reason="not_allowed"),
            metric(text, "l2tpreorder_inpath_queued_packets_total", queue=q),
        )

    if rules == "broad":  # every stranger's datagram reached us: passed, counted, no session
        wait_until("the flood counted", lambda: counted() == (flooded, flooded + REAL))
        assert answer["queues"][0]["counters"]["not_allowed"] == flooded
    else:  # the printed rules queue only the allowed source: the flood never reached us
        assert counted() == (0, REAL)
    text = daemon.scrape()
    assert metric(text, "l2tpreorder_received_packets_total", direction="lac_to_lns") == REAL
    if rules == "broad":
        # A reload applies a new allow: the stranger is ours from now on.
        rewrite(daemon, inpath={"queue": QUEUE, "allow": ["127.0.0.0/8"]})
        r = cli("reload", "--config", str(daemon.config))
        assert r.returncode == 0, r.stderr
        assert "accepts every source" not in daemon.log.read_text()
        stranger.sendto(data(0, tunnel=70, session=90), LNS)
        assert receive_all(lns, 1)[0][1] == STRANGER
        assert len(sessions(status(daemon))) == 2
    assert daemon.stop() == 0
