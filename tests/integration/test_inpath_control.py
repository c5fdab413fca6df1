"""`l2tpreorder status` and `reload` in in-path mode, with real parts: a real `l2tpreorder run`
(mode: inpath) behind a real iptables NFQUEUE rule in a network namespace named with the pid,
the test as LAC and LNS, and the real CLI talking to the real control socket (one queue: the
worker serves it; two: the supervisor, asking each worker over its own socket)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from tests.integration.inpath_helpers import (
    InPathDaemon,
    data,
    frame_of,
    metric,
    queued_namespace,
    quiet,
    receive_all,
    scrape,
)
from tests.netns import NetNs, wait_until

pytestmark = [pytest.mark.integration]

LNS = ("127.0.0.1", 1701)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, outside the namespace: the control socket is a file, not a network."""
    return subprocess.run(
        [sys.executable, "-m", "l2tpreorder", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def status(daemon: InPathDaemon) -> dict[str, Any]:
    r = cli("status", "--config", str(daemon.config), "--json")
    assert r.returncode == 0, r.stderr
    answer: dict[str, Any] = json.loads(r.stdout)
    return answer


def sessions(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in answer["peers"] for s in p["sessions"]]


def rewrite(daemon: InPathDaemon, **changes: object) -> None:
    document = yaml.safe_load(daemon.config.read_text())
    document.update(changes)
    daemon.config.write_text(yaml.safe_dump(document))


def break_config(daemon: InPathDaemon) -> None:
    """Broken YAML after a valid control_socket line: the client still finds the socket."""
    document = yaml.safe_load(daemon.config.read_text())
    daemon.config.write_text(f"control_socket: '{document['control_socket']}'\nreorder: [\n")


@pytest.fixture
def ns() -> Iterator[NetNs]:
    with queued_namespace("ipctl", 3) as space:
        yield space


@pytest.fixture
def ns2() -> Iterator[NetNs]:
    with queued_namespace("ipctl2", "4-5") as space:
        yield space


def start(ns: NetNs, tmp_path: Path, queues: str | int, timeout_ms: int) -> InPathDaemon:
    sock = tmp_path / "control.sock"  # InPathDaemon's control_socket
    daemon = InPathDaemon(ns, tmp_path, queues, reorder={"timeout_ms": timeout_ms})
    daemon.start()
    wait_until("the control socket", sock.exists)
    return daemon


def test_single_queue_status_lists_the_held_packet_and_reload_answers(
    ns: NetNs, tmp_path: Path
) -> None:
    daemon = start(ns, tmp_path, 3, timeout_ms=30000)
    sock = tmp_path / "control.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    lns = ns.udp(*LNS)
    lac = ns.udp("127.0.0.2", 40001)
    lac.sendto(data(0, tunnel=7, session=9), LNS)
    lac.sendto(data(2, tunnel=7, session=9), LNS)  # held: 1 is missing
    assert frame_of(receive_all(lns, 1)[0][0]) == 0
    wait_until("status shows the held packet", lambda: status(daemon)["totals"]["held"] == 1)
    answer = status(daemon)
    assert answer["mode"] == "inpath"
    [peer] = answer["peers"]
    assert peer["lac"] == "127.0.0.2:40001"  # the LAC's real address: the LNS sees it too
    assert peer["queue"] == 3
    [s] = peer["sessions"]
    assert (s["tunnel_id"], s["session_id"], s["held"], s["packets"]) == (7, 9, 1, 2)
    assert s["timeout_ms"] == 30000
    [q] = answer["queues"]
    assert q["queue"] == 3 and q["awaiting_verdict"] == 1
    assert q["kernel"] is not None and q["kernel"]["queue_full_drops"] == 0
    table = cli("status", "--config", str(daemon.config))
    assert table.returncode == 0, table.stderr
    assert "LAC 127.0.0.2:40001  on NFQUEUE 3" in table.stdout, table.stdout
    assert "NFQUEUE 3: worker pid" in table.stdout, table.stdout

    rewrite(daemon, reorder={"timeout_ms": 25000})
    r = cli("reload", "--config", str(daemon.config))
    assert r.returncode == 0, r.stderr
    assert "reorder timeout 25000 ms" in r.stdout, r.stdout
    assert sessions(status(daemon))[0]["timeout_ms"] == 25000  # applied when answered

    break_config(daemon)
    r = cli("reload", "--config", str(daemon.config))
    assert r.returncode == 1, r.stderr
    assert "reload refused" in r.stderr and "line 3, column 1" in r.stderr, r.stderr
    answer = status(daemon)  # still running, the old configuration and the held packet kept
    assert sessions(answer)[0]["timeout_ms"] == 25000 and answer["totals"]["held"] == 1
    lac.sendto(data(1, tunnel=7, session=9), LNS)
    assert [frame_of(d) for d, _ in receive_all(lns, 2)] == [1, 2]
    assert daemon.stop() == 0
    assert not sock.exists()


def test_two_workers_status_by_queue_and_reload_waits_for_both(
    ns2: NetNs, tmp_path: Path
) -> None:
    daemon = start(ns2, tmp_path, "4-5", timeout_ms=30000)
    assert daemon.proc is not None
    lns = ns2.udp(*LNS)
    lacs = [ns2.udp(f"127.0.0.{i}", 1701) for i in range(2, 14)]
    for i, lac in enumerate(lacs):
        lac.sendto(data(0, tunnel=i + 1), LNS)
        lac.sendto(data(2, tunnel=i + 1), LNS)  # held by its worker: 1 is missing
    receive_all(lns, len(lacs))
    wait_until(
        "every LAC's held packet in the merged status",
        lambda: status(daemon)["totals"].get("held") == len(lacs),
    )
    answer = status(daemon)
    assert answer["mode"] == "inpath" and answer["pid"] == daemon.proc.pid  # the supervisor
    assert sorted(q["queue"] for q in answer["queues"]) == [4, 5]
    pids = {q["queue"]: q["pid"] for q in answer["queues"]}
    assert len(set(pids.values())) == 2 and daemon.proc.pid not in pids.values()
    by_lac = {p["lac"]: p for p in answer["peers"]}
    assert set(by_lac) == {f"127.0.0.{i}:1701" for i in range(2, 14)}
    assert {p["queue"] for p in by_lac.values()} == {4, 5}, "the rule spreads LACs over both"
    for i in range(len(lacs)):
        peer = by_lac[f"127.0.0.{i + 2}:1701"]
        [s] = peer["sessions"]
        assert (s["tunnel_id"], s["session_id"], s["held"]) == (i + 1, 9, 1)
        assert s["queue"] == peer["queue"]
    text = daemon.scrape_or_none()  # the worker that counted a LAC's packets is its queue
    assert text is not None
    for q in (4, 5):
        n = sum(1 for p in by_lac.values() if p["queue"] == q)
        assert metric(text, "l2tpreorder_inpath_queued_packets_total", queue=str(q)) == 2 * n
    table = cli("status", "--config", str(daemon.config))
    assert table.returncode == 0, table.stderr
    assert "NFQUEUE 4: worker pid" in table.stdout and "NFQUEUE 5: worker pid" in table.stdout

    rewrite(daemon, reorder={"timeout_ms": 25000})
    r = cli("reload", "--config", str(daemon.config))
    assert r.returncode == 0, r.stderr
    # Answered only once both workers applied it: every session shows the new timeout now.
    assert {s["timeout_ms"] for s in sessions(status(daemon))} == {25000}

    good = daemon.config.read_text()
    break_config(daemon)
    r = cli("reload", "--config", str(daemon.config))
    assert r.returncode == 1, r.stderr
    assert "queue 4: " in r.stderr and "queue 5: " in r.stderr, r.stderr
    assert "line 3, column 1" in r.stderr, r.stderr
    answer = status(daemon)  # the same workers run on with what they held
    assert {q["queue"]: q["pid"] for q in answer["queues"]} == pids
    assert answer["totals"]["held"] == len(lacs)
    assert {s["timeout_ms"] for s in sessions(answer)} == {25000}
    for i, lac in enumerate(lacs):
        lac.sendto(data(1, tunnel=i + 1), LNS)
    got = receive_all(lns, 2 * len(lacs))
    for i in range(len(lacs)):  # per LAC, in order
        frames = [frame_of(d) for d, addr in got if addr == (f"127.0.0.{i + 2}", 1701)]
        assert frames == [1, 2], (i, frames)
    assert quiet(lns)

    # A worker killed with -9 leaves its socket file; its restart (which reads the file: a good
    # one again) binds it again.
    daemon.config.write_text(good)
    os.kill(pids[4], signal.SIGKILL)

    def restarted() -> bool:
        queues = {q["queue"]: q for q in status(daemon)["queues"]}
        return "pid" in queues[4] and queues[4]["pid"] != pids[4]

    wait_until("worker 4 restarted and answering status", restarted, timeout=40)
    assert status(daemon)["queues"][0]["restarts"] == 1
    assert daemon.stop() == 0
    assert not (tmp_path / "control.sock").exists()
    assert not any(p.name.startswith("control.sock.queue") for p in tmp_path.iterdir())


def test_two_workers_run_with_the_command_lines_overrides(ns2: NetNs, tmp_path: Path) -> None:
    """`run --timeout` with several queues: each worker is started with the flag too, so its
    engine runs with the command line's timeout, not the file's."""
    daemon = InPathDaemon(ns2, tmp_path, "4-5", reorder={"timeout_ms": 30000})
    daemon.start("--timeout", "1234", "--log-level", "info")
    try:
        text = daemon.scrape()
        for q in ("4", "5"):
            seconds = metric(text, "l2tpreorder_reorder_timeout_seconds", queue=q)
            assert seconds == 1.234, (q, seconds)
    finally:
        assert daemon.stop() == 0


def test_single_queue_reload_refuses_a_new_queue_and_says_so(ns: NetNs, tmp_path: Path) -> None:
    """The queue is bound once: a reload naming another one is applied except for that, and
    the answer says it needs a restart (the worker keeps reading queue 3)."""
    daemon = start(ns, tmp_path, 3, timeout_ms=30000)
    try:
        document = yaml.safe_load(daemon.config.read_text())
        document["inpath"]["queue"] = 7
        document["reorder"] = {"timeout_ms": 25000}
        daemon.config.write_text(yaml.safe_dump(document))
        r = cli("reload", "--config", str(daemon.config))
        assert r.returncode == 0, r.stderr
        assert "but a reload cannot apply it (still 3): restart the service" in r.stderr, r.stderr
        assert "in-path on NFQUEUE 3, reorder timeout 25000 ms" in r.stdout, r.stdout
        [q] = status(daemon)["queues"]
        assert q["queue"] == 3
    finally:
        assert daemon.stop() == 0


def test_two_workers_reload_moves_the_supervisors_metrics(ns2: NetNs, tmp_path: Path) -> None:
    """Several queues: the one `/metrics` is the supervisor's, and a reload that changes
    `metrics:` moves it (as with one queue, where the worker is the service)."""
    daemon = start(ns2, tmp_path, "4-5", timeout_ms=30000)
    try:
        wait_until("/metrics of both workers", lambda: daemon.scrape_or_none() is not None)
        before = daemon.scrape_or_none() or ""
        assert "l2tpreorder_inpath_queued_packets_total" in before
        assert "l2tpreorder_session_series_omitted" not in before  # per_session off
        rewrite(
            daemon,
            metrics={"enabled": True, "listen": "127.0.0.1", "port": 9110, "per_session": True},
        )
        r = cli("reload", "--config", str(daemon.config))
        assert r.returncode == 0, r.stderr
        wait_until("/metrics on the new port", lambda: _scrape_or_none(ns2, 9110) is not None)
        text = _scrape_or_none(ns2, 9110)
        assert text is not None and "l2tpreorder_inpath_queued_packets_total" in text
        # per_session is the workers' to apply: each restarts its loopback endpoint with it.
        wait_until(
            "per-session series from the workers",
            lambda: "l2tpreorder_session_series_omitted" in (_scrape_or_none(ns2, 9110) or ""),
        )
        assert daemon.scrape_or_none() is None, "the old port still answers"
        rewrite(daemon, metrics={"enabled": False})
        os.kill(daemon.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
        wait_until("/metrics off", lambda: _scrape_or_none(ns2, 9110) is None)
    finally:
        assert daemon.stop() == 0


def _scrape_or_none(ns: NetNs, port: int) -> str | None:
    try:
        return scrape(ns, port)
    except OSError:
        return None


def test_no_daemon_in_inpath_mode_is_exit_2(tmp_path: Path) -> None:
    """Without a running daemon, in-path mode reads like relay mode: "is it running?"."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"mode: inpath\ncontrol_socket: {tmp_path / 'none.sock'}\n")
    for command in ("status", "reload"):
        r = cli(command, "--config", str(cfg))
        assert r.returncode == 2
        assert "is l2tpreorder running?" in r.stderr, r.stderr



def test_two_workers_reload_to_a_taken_metrics_port_keeps_the_old_one(
    ns2: NetNs, tmp_path: Path
) -> None:
    daemon = start(ns2, tmp_path, "4-5", timeout_ms=30000)
    held = ns2.socket(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 9110))
    held.listen()
    try:
        rewrite(daemon, metrics={"enabled": True, "listen": "127.0.0.1", "port": 9110})
        answer = cli("reload", "--config", str(daemon.config))
        assert answer.returncode == 0, answer.stderr
        # the answer says it too, as the one-process service's does
        assert "still serving on 127.0.0.1:9109" in answer.stderr, answer.stderr
        wait_until(
            "the supervisor says why",
            lambda: "still serving on 127.0.0.1:9109" in daemon.log.read_text(),
        )
        assert "metrics: cannot listen on 127.0.0.1:9110" in daemon.log.read_text()
        assert daemon.scrape_or_none() is not None, "the old endpoint stopped serving"
        held.close()
        # Not applied, so the next reload tries again: with the port free now, it moves.
        assert cli("reload", "--config", str(daemon.config)).returncode == 0
        wait_until("/metrics on the new port", lambda: _scrape_or_none(ns2, 9110) is not None)
        assert daemon.scrape_or_none() is None, "the old port still answers"
    finally:
        held.close()
        assert daemon.stop() == 0
