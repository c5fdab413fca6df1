"""`status` at scale (issue 24 item 9): filters, sort, top and the one-screen summary, against
a real daemon in both modes (tests/mode_harness.py). The daemon applies the selection itself
(checked on its raw answer), the client prints it."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l2tpreorder.commands.client import request
from tests.integration.inpath_helpers import data, queued_namespace, receive_all
from tests.integration.test_inpath_control import LNS, start
from tests.integration.test_inpath_control import cli as inpath_cli
from tests.integration.test_inpath_control import status as inpath_status
from tests.mode_harness import ModeRig, cli
from tests.netns import NetNs, wait_until

pytestmark = [pytest.mark.integration]


def three_sessions(rig: ModeRig) -> None:
    """7/9 holds one packet (Ns 1 missing), 7/10 had one packet dropped (Ns 1 twice),
    8/11 is plain: each a different answer to a different selection."""
    rig.start({"reorder": {"timeout_ms": 30000}})
    rig.send_to_lns(data(0, tunnel=7, session=9), data(2, tunnel=7, session=9))
    rig.send_to_lns(*(data(n, tunnel=7, session=10) for n in (0, 1, 2)))
    rig.send_to_lns(data(0, tunnel=8, session=11))
    rig.lns_receive(5)  # everything but the held packet
    rig.send_to_lns(data(1, tunnel=7, session=10))  # again: dropped

    def settled() -> bool:
        t = status_json(rig)["totals"]
        drops = t["dropped_late"] + t["dropped_duplicate"] + t["dropped_stale"]
        return bool(t["sessions"] == 3 and t["held"] == 1 and drops == 1)

    wait_until("3 sessions, 1 held, 1 dropped", settled)


def status_json(rig: ModeRig, *args: str) -> dict[str, Any]:
    r = cli("status", "--config", str(rig.d.config_path), "--json", *args)
    assert r.returncode == 0, r.stderr
    answer: dict[str, Any] = json.loads(r.stdout)
    return answer


def ids(answer: dict[str, Any]) -> list[tuple[int, int]]:
    return [(s["tunnel_id"], s["session_id"]) for p in answer["peers"] for s in p["sessions"]]


def test_filters_sort_and_top_select_sessions(rig: ModeRig) -> None:
    three_sessions(rig)
    assert sorted(ids(status_json(rig))) == [(7, 9), (7, 10), (8, 11)]  # unchanged default
    top = status_json(rig, "--sort", "held", "--top", "1")
    assert ids(top) == [(7, 9)]
    assert top["selection"] == {"sort": "held", "top": 1, "matched": 3, "shown": 1}
    assert ids(status_json(rig, "--sort", "drops", "--top", "1")) == [(7, 10)]
    assert ids(status_json(rig, "--sort", "packets", "--top", "1")) == [(7, 10)]
    assert ids(status_json(rig, "--tunnel", "8")) == [(8, 11)]
    assert ids(status_json(rig, "--session", "10")) == [(7, 10)]
    assert ids(status_json(rig, "--tunnel", "7", "--session", "11")) == []
    host = rig.lac_address.rpartition(":")[0]
    assert sorted(ids(status_json(rig, "--peer", rig.lac_address))) == [(7, 9), (7, 10), (8, 11)]
    assert len(ids(status_json(rig, "--peer", host))) == 3  # a host alone: any port
    assert status_json(rig, "--peer", "192.0.2.99")["peers"] == []

    table = cli("status", "--config", str(rig.d.config_path), "--sort", "held", "--top", "2")
    assert table.returncode == 0, table.stderr
    assert "showing 2 of 3 matching sessions, by held" in table.stdout, table.stdout
    rows = [line.split() for line in table.stdout.splitlines() if line.startswith("  ")]
    assert [r[:2] for r in rows[1:]] == [["7", "9"], ["7", "10"]], table.stdout


def test_the_daemon_applies_the_selection_before_answering(rig: ModeRig) -> None:
    """The raw answer (no client-side cutting) already holds only the selected sessions, and
    says how many matched; a selection it cannot apply is refused, naming the field."""
    three_sessions(rig)
    raw = request("status", str(rig.d.config_path), fields={"sort": "held", "top": 1})
    assert raw["ok"] is True
    assert ids(raw) == [(7, 9)]
    assert raw["totals"]["sessions_matched"] == 3 and raw["totals"]["sessions"] == 3
    none = request("status", str(rig.d.config_path), fields={"top": 0})
    assert ids(none) == [] and none["totals"]["held"] == 1
    assert none["peers"] == [], none["peers"]  # totals alone, in both modes
    bad = request("status", str(rig.d.config_path), fields={"sort": "loudest"})
    assert bad["ok"] is False and "sort: 'loudest'" in bad["error"], bad
    bad = request("status", str(rig.d.config_path), fields={"top": -1})
    assert bad["ok"] is False and "top" in bad["error"], bad


def test_summary_is_one_screen_with_drops_by_reason(rig: ModeRig) -> None:
    three_sessions(rig)
    r = cli("status", "--config", str(rig.d.config_path), "--summary")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"l2tpreorder pid {rig.d.proc.pid}, up ")
    assert "1 LAC peer, 3 sessions, 1 held now" in lines[1]
    [dropped] = [line for line in lines if line.startswith("dropped: ")]
    assert "far ahead" in dropped and "malformed" in dropped
    assert not any(line.startswith("LAC ") for line in lines), r.stdout
    if rig.mode == "relay":
        assert any(line.startswith("LNS ") for line in lines), r.stdout  # its health
    else:
        assert any(line.startswith(f"NFQUEUE {7}: worker pid") for line in lines), r.stdout
    assert len(lines) <= 12
    summary = status_json(rig, "--summary")
    assert "peers" not in summary and summary["totals"]["sessions"] == 3


def test_default_view_lists_sessions_only_when_they_fit_on_a_screen(rig: ModeRig) -> None:
    rig.start({})
    rig.send_to_lns(*(data(0, tunnel=1, session=s) for s in range(1, 26)))
    rig.lns_receive(25)
    wait_until("25 sessions", lambda: status_json(rig)["totals"]["sessions"] == 25)
    r = cli("status", "--config", str(rig.d.config_path))
    assert r.returncode == 0, r.stderr
    assert "25 sessions" in r.stdout
    assert "--all" in r.stdout, r.stdout
    assert not any(line.startswith("LAC ") for line in r.stdout.splitlines()), r.stdout
    full = cli("status", "--config", str(rig.d.config_path), "--all")
    assert full.returncode == 0, full.stderr
    rows = [line.split() for line in full.stdout.splitlines() if line.startswith("  ")]
    assert sorted(int(r[1]) for r in rows if r[0] == "1") == list(range(1, 26)), full.stdout


# --- in-path with two workers: the supervisor forwards the selection, the client cuts again ---


@pytest.fixture
def ns2() -> Iterator[NetNs]:
    with queued_namespace("ipsel2", "4-5") as space:
        yield space


def test_two_workers_each_select_and_the_client_cuts_the_merged_answer(
    ns2: NetNs, tmp_path: Path
) -> None:
    daemon = start(ns2, tmp_path, "4-5", timeout_ms=30000)
    try:
        lns = ns2.udp(*LNS)
        lacs = [ns2.udp(f"127.0.0.{i}", 1701) for i in range(2, 14)]
        for i, lac in enumerate(lacs):
            lac.sendto(data(0, tunnel=i + 1), LNS)
            for ns in (2, 3, 4)[: 3 if i == 5 else 1]:  # tunnel 6 holds 3 packets, the others 1
                lac.sendto(data(ns, tunnel=i + 1), LNS)
        receive_all(lns, len(lacs))
        wait_until("14 held", lambda: inpath_status(daemon)["totals"].get("held") == 14)
        raw = request("status", str(daemon.config), fields={"sort": "held", "top": 1})
        assert raw["ok"] is True and raw["totals"]["sessions_matched"] == 12
        assert len(ids(raw)) == 1  # each worker's own top 1, merged and cut to 1 (as relay)
        top = json.loads(
            inpath_cli("status", "--config", str(daemon.config), "--json", "--sort", "held",
                       "--top", "1").stdout
        )  # fmt: skip
        assert ids(top) == [(6, 9)] and top["peers"][0]["lac"] == "127.0.0.7:1701"
        assert top["selection"]["matched"] == 12 and top["selection"]["shown"] == 1
        one = json.loads(
            inpath_cli("status", "--config", str(daemon.config), "--json", "--tunnel", "5").stdout
        )
        assert ids(one) == [(5, 9)]
        summary = inpath_cli("status", "--config", str(daemon.config), "--summary").stdout
        assert "12 LAC peers, 12 sessions, 14 held now" in summary, summary
        assert "NFQUEUE 4: worker pid" in summary and "NFQUEUE 5: worker pid" in summary
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None:  # a failed assertion: stop it all the same
            daemon.stop(signal.SIGKILL)
