"""Debian's Prometheus scrapes a real `l2tpreorder run` relaying impaired traffic over loopback UDP.

test LAC socket --udp--> daemon --udp--> test LNS socket (and back), all on 127.0.0.1. Then, over
Prometheus' HTTP API: every dashboard and alert expression returns data, and every counter equals
what the test's sockets did (swaps made, Ns withheld, datagrams and bytes sent and received,
ACL and peer-cap refusals, kernel socket drops, reloads).

No step waits a fixed time: the sender paces itself with barriers (an unsequenced datagram is
forwarded at once, so its arrival at the LNS proves everything sent before it was read), gaps are
known given up when the held successor arrives at the LNS, and Prometheus is polled until the
final values appear.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.wire import build_control, build_data
from tests.conftest import PROJECT_ROOT, need_tool
from tests.daemon_harness import WAIT, Daemon, free_udp_port, udp
from tests.dashboard_check import annotation_exprs, dashboard_exprs, expand, metric_names
from tests.impaired_traffic import (
    GAP_SESSION,
    SWAP_SESSION,
    TUNNEL,
    ImpairedTraffic,
    impaired_traffic,
)
from tests.metrics_helpers import daemon_socket_drops, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT_MS = 300  # long against scheduling noise between the two halves of a swap
# Not "l2tpreorder": the alerts and the dashboard must work under any job name (issue 24).
JOB = "l2tp-relays"
# What Grafana would put in place of the dashboard's variables.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$job": JOB, "$instance": ".*"}
ABSENT = "L2tpreorderMetricsAbsent"  # the one alert without a threshold
COMPARISON_AT_END = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.eE+-]+\s*$")
BARRIER_EVERY = 32  # datagrams in flight at most: far below the listen socket's receive buffer
SOCKET_BUFFER = 65536  # small, so a stopped daemon's queue overflows after a few hundred
FLOOD = 2000
REPLIES = 5  # LNS -> LAC datagrams
STRANGER = 2  # datagrams from a non-LNS source to the upstream socket (not_from_lns)
NOT_ALLOWED = 3  # datagrams from 127.0.0.2, outside `allow`
OVER_LIMIT = 3  # datagrams from a third LAC peer with max_peers 2


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrometheusServer:
    """Debian's prometheus on a loopback port with a temp config and storage dir."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = _free_tcp_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROJECT_ROOT / "prometheus" / "alerts.yml")],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_until(
        self,
        what: str,
        check: Callable[[], Any],
        limit: float = 30.0,
        explain: Callable[[], object] | None = None,
    ) -> None:
        """Poll `check()` until truthy; on failure say why (`explain()`) and show the log."""
        deadline = time.monotonic() + limit
        last: object = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                if check():
                    return
                last = None
            except OSError as error:  # not listening yet
                last = error
            time.sleep(0.25)
        if explain is not None:
            last = explain()
        pytest.fail(f"Prometheus: {what} not seen within {limit}s ({last}); log:\n"
                    + self.log.read_text()[-2000:])  # fmt: skip

    def scalar(self, expr: str) -> float | None:
        """The value of a one-series expression; None while it has no series."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _ready(prom: PrometheusServer) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/-/ready", timeout=5) as r:
        return bool(r.status == 200)


@dataclass
class Counted:
    """Datagrams and UDP payload bytes one test socket sent or received."""

    datagrams: int = 0
    bytes: int = 0

    def add(self, data: bytes) -> None:
        self.datagrams += 1
        self.bytes += len(data)


@dataclass
class Run:
    """Everything the test's sockets did, the source of every expected value."""

    traffic: ImpairedTraffic
    lac_sent: Counted = field(default_factory=Counted)  # every datagram sent to the listen port
    barriers: int = 0
    at_lns: Counted = field(default_factory=Counted)  # what the LNS socket received
    lns_sent: Counted = field(default_factory=Counted)  # replies the LNS sent
    stranger_sent: Counted = field(default_factory=Counted)  # to the upstream socket, not the LNS
    at_lac: Counted = field(default_factory=Counted)  # replies the LAC received
    flood_sent: Counted = field(default_factory=Counted)
    flood_read: Counted = field(default_factory=Counted)  # read by the daemon (seen at the LNS)
    kernel_drops: int = 0  # drops column of /proc/net/udp over the daemon's sockets
    metrics_text: str = ""


class Sides:
    """The test's LAC and LNS sockets around the daemon."""

    def __init__(self, listen: tuple[str, int], lns: socket.socket, run: Run) -> None:
        self.listen = listen
        self.lns = lns
        self.lac = udp()
        self.run = run
        self.upstream: set[tuple[str, int]] = set()  # the daemon's source address(es) at the LNS
        self.payloads: list[bytes] = []  # every datagram the LNS received, in order

    def send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendto(data, self.listen)
        self.run.lac_sent.add(data)

    def lns_until(self, what: str, done: Callable[[], bool], timeout: float = WAIT) -> None:
        """Read at the LNS until `done()`; fails after `timeout` seconds without it."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the LNS never saw {what} ({self.run.at_lns})")
            self.lns.settimeout(left)
            try:
                data, src = self.lns.recvfrom(65535)
            except TimeoutError:
                continue
            self.upstream.add(src[:2])
            self.payloads.append(data)
            self.run.at_lns.add(data)

    def barrier(self) -> None:
        """An unsequenced datagram is forwarded at once: when it reaches the LNS, everything the
        LAC sent before it has been read by the daemon (one socket, read in order)."""
        self.run.barriers += 1
        tag = f"barrier-{self.run.barriers}".encode()
        self.send(self.lac, build_data(TUNNEL, 99, tag))
        self.lns_until(tag.decode(), lambda: self.payloads[-1:] != [] and tag in self.payloads[-1])


def send_impaired(sides: Sides, traffic: ImpairedTraffic) -> int:
    """Send the script; returns how many of its datagrams the LNS must get.

    A script "wait" means: let the open gap be given up. Instead of sleeping, wait until the held
    successor reaches the LNS (everything forwardable so far has arrived); only then is the next
    packet, the withheld one, truly late: delivered with the next Ns (reorder.late's default).
    """
    seen: dict[int, set[int]] = {}
    forwardable = 0
    sent = 0

    def all_forwarded() -> bool:
        return sides.run.at_lns.datagrams == forwardable + sides.run.barriers

    for kind, item in traffic.events:
        if kind == "wait":
            sides.barrier()
            sides.lns_until("the held packet after its gap was given up", all_forwarded)
            continue
        assert isinstance(item, bytes)
        h = parse_header(item)
        if isinstance(h, str):
            pass  # malformed: dropped
        elif h.is_control or h.ns is None:
            forwardable += 1
        else:
            numbers = seen.setdefault(h.session_id, set())
            forwardable += h.ns not in numbers  # a late one too: delivered, not dropped
            numbers.add(h.ns)
        sides.send(sides.lac, item)
        sent += 1
        if sent % BARRIER_EVERY == 0:
            sides.barrier()
    sides.barrier()
    sides.lns_until("every forwardable datagram", all_forwarded)
    return forwardable


def wait_stopped(pid: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.01)
    raise AssertionError(f"daemon {pid} did not stop on SIGSTOP")


def drive_daemon(d: Daemon, sides: Sides, run: Run) -> None:
    t = run.traffic
    forwardable = send_impaired(sides, t)
    assert forwardable == t.datagrams - t.duplicates - t.malformed_too_short
    assert len(sides.upstream) == 1, sides.upstream
    upstream = next(iter(sides.upstream))

    # LNS -> LAC: replies on the upstream socket go back to the LAC.
    for i in range(REPLIES):
        reply = build_control(5, 0, 0, i, []) if i < 2 else build_data(5, 6, b"down-%d" % i)
        sides.lns.sendto(reply, upstream)
        run.lns_sent.add(reply)
    for _ in range(REPLIES):
        data, _src = sides.lac.recvfrom(65535)
        run.at_lac.add(data)
    # Only the LNS may speak on the upstream socket.
    with udp() as stranger:
        for i in range(STRANGER):
            junk = build_data(5, 6, b"stranger-%d" % i)
            stranger.sendto(junk, upstream)
            run.stranger_sent.add(junk)
    # Outside `allow` (127.0.0.0/8 is all loopback on Linux).
    with udp("127.0.0.2") as outsider:
        for i in range(NOT_ALLOWED):
            sides.send(outsider, build_data(TUNNEL, 98, b"outsider-%d" % i))

    # Kernel receive-queue drops: stop the daemon, overflow its listen socket, let it go on.
    flood = udp()
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    pid = d.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_stopped(pid)
        before = daemon_socket_drops(pid)
        for i in range(FLOOD):
            datagram = build_data(TUNNEL, 97, b"flood-%d" % i)
            sides.send(flood, datagram)
            run.flood_sent.add(datagram)
        run.kernel_drops = daemon_socket_drops(pid)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert before == 0, f"drops before the flood: {before}"
    assert 0 < run.kernel_drops < FLOOD, run.kernel_drops
    at_start = len(sides.payloads)
    sides.lns_until(
        f"{FLOOD - run.kernel_drops} flood datagrams",
        lambda: len(sides.payloads) - at_start >= FLOOD - run.kernel_drops,
    )
    for data in sides.payloads[at_start:]:
        assert b"flood-" in data, data  # forwarded unchanged (no Ns): the very bytes sent
        run.flood_read.add(data)
    flood.close()
    # A third LAC peer while two have upstream sockets (max_peers 2).
    with udp() as third:
        for i in range(OVER_LIMIT):
            sides.send(third, build_data(TUNNEL, 96, b"third-%d" % i))

    # SIGHUP with a good file, then with a bad one (the running config stays).
    good = yaml.safe_load(d.config_path.read_text())
    d.reload()
    d.write_config({**good, "reorder": {"timeout_ms": -1}})
    d.reload()
    d.wait_log("reload failed")
    d.write_config(good)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, Run]]:
    binary = need_tool("prometheus")
    tmp = tmp_path_factory.mktemp("daemon")
    listen = ("127.0.0.1", free_udp_port())
    lns_port = free_udp_port()
    metrics_port = _free_tcp_port()
    config = {
        "allow": ["127.0.0.1/32"],
        "max_peers": 2,
        "socket_buffer_bytes": SOCKET_BUFFER,
        "logging": {"level": "info", "drop_report_interval_ms": 1000},
        "metrics": {
            "enabled": True,
            "listen": "127.0.0.1",
            "port": metrics_port,
            "per_session": True,
            "per_session_top_n": 2,
        },
    }
    args = ["--listen", f"{listen[0]}:{listen[1]}", "--lns", f"127.0.0.1:{lns_port}",
            "--timeout", str(TIMEOUT_MS)]  # fmt: skip
    lns = udp(port=lns_port)
    lns.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    d = Daemon(tmp, config, args=args)
    prom: PrometheusServer | None = None
    run = Run(impaired_traffic(TIMEOUT_MS / 1000))
    sides = Sides(listen, lns, run)
    try:
        d.ready()
        d.wait_log(f"metrics: http://127.0.0.1:{metrics_port}/metrics")
        prom = PrometheusServer(
            binary, tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{metrics_port}"
        )
        server = prom
        prom.wait_until("ready", lambda: _ready(server))
        prom.wait_until("first scrape", lambda: server.query(f'up{{job="{JOB}"}} == 1'))
        drive_daemon(d, sides, run)
        expected = expected_values(run)
        prom.wait_until(
            "the final counters",
            lambda: not mismatches(server, expected),
            explain=lambda: mismatches(server, expected),
        )
        # Let the alert rules be evaluated at least once after the traffic.
        evaluated_after = time.time()
        prom.wait_until(
            "a rule evaluation",
            lambda: all(
                _rfc3339_seconds(g["lastEvaluation"]) > evaluated_after
                for g in server.get("/api/v1/rules")["data"]["groups"]
            ),
        )
        run.metrics_text = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        yield prom, run
    finally:
        if prom is not None:
            prom.close()
        d.stop()
        sides.lac.close()
        lns.close()


def _rfc3339_seconds(stamp: str) -> float:
    """Prometheus' lastEvaluation (RFC 3339, nanoseconds, maybe a zone) as epoch seconds."""
    from datetime import datetime

    stamp = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


UP = f'job="{JOB}", direction="lac_to_lns"'
DOWN = f'job="{JOB}", direction="lns_to_lac"'


def expected_values(run: Run) -> dict[str, float]:
    """PromQL -> the value the test's own sockets and the generator's script say it must have."""
    t = run.traffic
    relay_refused = NOT_ALLOWED + OVER_LIMIT
    unsequenced = t.data_without_ns + run.barriers + run.flood_read.datagrams
    return {
        # The engine, from the generator's script.
        f"l2tpreorder_released_packets_total{{{UP}}}": t.swaps + t.withheld,
        f'l2tpreorder_session_released_packets_total{{{UP}, session_id="{SWAP_SESSION}"}}': (
            t.swaps
        ),
        f'l2tpreorder_session_skipped_sequence_numbers_total{{{UP}, session_id="{GAP_SESSION}"}}': (
            t.withheld
        ),
        f'l2tpreorder_skipped_sequence_numbers_total{{{UP}, reason="timeout"}}': t.withheld,
        f'l2tpreorder_dropped_packets_total{{{UP}, reason="late"}}': 0,
        f'l2tpreorder_forwarded_packets_total{{{UP}, kind="data_late"}}': t.late,
        f'l2tpreorder_dropped_packets_total{{{UP}, reason="duplicate"}}': t.duplicates,
        f'l2tpreorder_dropped_packets_total{{{UP}, reason="malformed"}}': t.malformed_too_short,
        f'l2tpreorder_malformed_packets_total{{{UP}, reason="too_short"}}': t.malformed_too_short,
        f'l2tpreorder_received_packets_total{{{UP}, kind="data_with_ns"}}': sum(
            t.sequenced.values()
        ),
        f'l2tpreorder_received_packets_total{{{UP}, kind="control"}}': t.control,
        f'l2tpreorder_received_packets_total{{{UP}, kind="data_without_ns"}}': unsequenced,
        f"l2tpreorder_held_packets{{{UP}}}": 0,
        f"l2tpreorder_sessions{{{UP}}}": 3,
        f"l2tpreorder_session_series_omitted{{{UP}}}": 1,
        f"l2tpreorder_reorder_timeout_seconds{{{UP}}}": TIMEOUT_MS / 1000,
        # The relay's sockets, from what the test's sockets sent and received.
        f"l2tpreorder_socket_received_datagrams_total{{{UP}}}": (
            run.lac_sent.datagrams - run.kernel_drops
        ),
        f"l2tpreorder_socket_received_bytes_total{{{UP}}}": (
            run.lac_sent.bytes - run.flood_sent.bytes + run.flood_read.bytes
        ),
        f"l2tpreorder_socket_sent_datagrams_total{{{UP}}}": run.at_lns.datagrams,
        f"l2tpreorder_socket_sent_bytes_total{{{UP}}}": run.at_lns.bytes,
        f"l2tpreorder_socket_received_datagrams_total{{{DOWN}}}": (
            run.lns_sent.datagrams + run.stranger_sent.datagrams
        ),
        f"l2tpreorder_socket_received_bytes_total{{{DOWN}}}": (
            run.lns_sent.bytes + run.stranger_sent.bytes
        ),
        f"l2tpreorder_socket_sent_datagrams_total{{{DOWN}}}": run.at_lac.datagrams,
        f"l2tpreorder_socket_sent_bytes_total{{{DOWN}}}": run.at_lac.bytes,
        f'l2tpreorder_dropped_packets_total{{{UP}, reason="not_allowed"}}': NOT_ALLOWED,
        f'l2tpreorder_dropped_packets_total{{{UP}, reason="peer_limit"}}': OVER_LIMIT,
        f'l2tpreorder_dropped_packets_total{{{DOWN}, reason="not_from_lns"}}': STRANGER,
        f'l2tpreorder_socket_receive_drops_total{{job="{JOB}"}}': run.kernel_drops,
        f'l2tpreorder_send_errors_total{{job="{JOB}"}}': 0,
        f'l2tpreorder_peers{{job="{JOB}"}}': 2,
        f'l2tpreorder_config_reloads_total{{job="{JOB}", result="success"}}': 1,
        f'l2tpreorder_config_reloads_total{{job="{JOB}", result="failure"}}': 1,
        # Every datagram read from a LAC has one outcome: an engine count or a relay refusal.
        f"sum(l2tpreorder_received_packets_total{{{UP}}}) + {relay_refused}": (
            run.lac_sent.datagrams - run.kernel_drops
        ),
    }


def mismatches(prom: PrometheusServer, expected: dict[str, float]) -> dict[str, object]:
    """Expressions whose current value is not the expected one: expr -> (got, want)."""
    out: dict[str, object] = {}
    for expr, want in expected.items():
        got = prom.scalar(expr)
        if got is None or got != pytest.approx(want, rel=1e-9):
            out[expr] = (got, want)
    return out


def _dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads((PROJECT_ROOT / "grafana" / "l2tpreorder.json").read_text())
    out = []
    for title, expr in dashboard_exprs(dash):
        out.append((title, expand(expr, SUBSTITUTIONS)))
    return out


def _annotation_exprs() -> list[tuple[str, str]]:
    dash = json.loads((PROJECT_ROOT / "grafana" / "l2tpreorder.json").read_text())
    return [(name, expand(expr, SUBSTITUTIONS)) for name, expr in annotation_exprs(dash)]


def _alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((PROJECT_ROOT / "prometheus" / "alerts.yml").read_text())
    return [r for g in rules["groups"] for r in g["rules"]]


def test_counters_in_prometheus_equal_what_the_sockets_did(
    scraped: tuple[PrometheusServer, Run],
) -> None:
    prom, run = scraped
    t = run.traffic
    assert t.swaps == 30 and t.withheld == 5 and t.late == 3 and t.duplicates == 2
    # The fixture waited for these; a fresh query must still see every one.
    assert mismatches(prom, expected_values(run)) == {}
    # What the LNS got, from the generator's script alone: nothing lost, nothing doubled.
    forwarded = t.datagrams - t.duplicates - t.malformed_too_short  # late ones delivered
    assert run.at_lns.datagrams == forwarded + run.barriers + run.flood_read.datagrams
    assert run.flood_read.datagrams == FLOOD - run.kernel_drops
    assert run.at_lac.datagrams == REPLIES


def test_every_dashboard_expression_returns_data(scraped: tuple[PrometheusServer, Run]) -> None:
    prom, _ = scraped
    exprs = _dashboard_exprs()
    assert len(exprs) >= 25
    empty = [(title, expr) for title, expr in exprs if not prom.query(expr)]
    assert empty == []


def test_every_metric_a_panel_annotation_or_alert_reads_is_served(
    scraped: tuple[PrometheusServer, Run],
) -> None:
    """By name, against the live daemon's own /metrics: a renamed or dropped metric breaks
    this before it blanks a panel or silences an alert (annotations need not return data:
    they mark events, and this run had no restart)."""
    _, run = scraped
    served = set(re.findall(r"^(\w+)(?:\{| )", run.metrics_text, re.M))
    used = {
        name
        for _, expr in [*_dashboard_exprs(), *_annotation_exprs()]
        + [(r["alert"], r["expr"]) for r in _alert_rules()]
        for name in metric_names(expr)
    }
    new_panels = {
        "l2tpreorder_lns_unresponsive", "l2tpreorder_lns_icmp_errors_total",
        "l2tpreorder_config_last_reload_successful", "process_start_time_seconds",
        "l2tpreorder_config_last_reload_success_timestamp_seconds",
        "l2tpreorder_sessions_evicted_total", "l2tpreorder_malformed_packets_total",
    }  # fmt: skip
    assert new_panels <= used
    assert used - served == set()


def test_every_annotation_query_evaluates(scraped: tuple[PrometheusServer, Run]) -> None:
    prom, _ = scraped
    annotations = _annotation_exprs()
    assert len(annotations) >= 3
    for _, expr in annotations:
        prom.query(expr)  # valid PromQL against real data (the query asserts success)
    # The run reloaded (good, then refused) and never restarted. How long ago depends on how
    # fast the module's earlier tests ran: the windows are widened to the whole run.
    def whole_run(expr: str) -> str:
        widened = expr.replace("[5m]", "[1h]")
        assert widened != expr, expr
        return widened

    assert prom.query(whole_run(dict(annotations)["Config reloads refused"]))
    assert prom.query(whole_run(dict(annotations)["Restarts"])) == []


def test_every_alert_expression_evaluates_and_its_measure_returns_data(
    scraped: tuple[PrometheusServer, Run],
) -> None:
    prom, _ = scraped
    rules = _alert_rules()
    assert len(rules) == 12
    for rule in rules:
        prom.query(rule["expr"])  # valid PromQL against real data
        if rule["alert"] == ABSENT:  # no measure: it is about series being there at all
            continue
        measure = COMPARISON_AT_END.sub("", rule["expr"].strip())
        assert measure != rule["expr"].strip(), f"{rule['alert']}: no threshold at the end"
        assert prom.query(measure), f"{rule['alert']}: {measure} returned nothing"
    health = {
        r["name"]: r["health"]
        for g in prom.get("/api/v1/rules")["data"]["groups"]
        for r in g["rules"]
    }
    assert health == {r["alert"]: "ok" for r in rules}
    # l2tpreorder serves its series under this job name: nothing is absent.
    assert prom.query(_rule(ABSENT)["expr"]) == []
    # The run made both of these happen, so their alert conditions hold now.
    assert prom.query(_rule("L2tpreorderConfigReloadFailed")["expr"])
    assert prom.query(_rule("L2tpreorderSocketReceiveDrops")["expr"])


def _rule(name: str) -> dict[str, Any]:
    return next(r for r in _alert_rules() if r["alert"] == name)


def test_headline_ratio_sees_the_reordering(scraped: tuple[PrometheusServer, Run]) -> None:
    prom, run = scraped
    t = run.traffic
    share = (
        f'sum(rate(l2tpreorder_released_packets_total{{job="{JOB}"}}[5m])) / sum(rate('
        f'l2tpreorder_received_packets_total{{job="{JOB}", kind="data_with_ns"}}[5m]))'
    )
    assert prom.scalar(share) == pytest.approx(
        (t.swaps + t.withheld) / sum(t.sequenced.values()), rel=1e-6
    )


def test_promtool_check_metrics_on_the_daemons_output(
    scraped: tuple[PrometheusServer, Run],
) -> None:
    promtool = need_tool("promtool")
    text = scraped[1].metrics_text
    assert "l2tpreorder_session_released_packets_total" in text  # per-session series included
    assert "process_cpu_seconds_total" in text
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_readme_documents_every_family_and_reason_the_daemon_exports(
    scraped: tuple[PrometheusServer, Run],
) -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    monitoring = readme.split("\n## Monitoring\n", 1)[1].split("\n## ", 1)[0]
    families = set(re.findall(r"^# TYPE (l2tpreorder_\w+) ", scraped[1].metrics_text, re.M))
    assert len(families) >= 30
    undocumented = {f for f in families if f.removeprefix("l2tpreorder_") not in monitoring}
    assert undocumented == set()
    reasons = set(re.findall(r'reason="(\w+)"', scraped[1].metrics_text))
    assert {"late", "not_allowed", "peer_limit", "not_from_lns", "too_short"} <= reasons
    assert {r for r in reasons if f"`{r}`" not in monitoring} == set()
