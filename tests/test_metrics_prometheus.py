"""A real Prometheus scrapes a relay carrying impaired traffic; every dashboard and alert
expression must return data, and the counters must equal what the traffic generator did."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2tpreorder.metrics import MetricsConfig, start_metrics_server
from tests.conftest import PROJECT_ROOT, need_tool
from tests.dashboard_check import dashboard_exprs
from tests.impaired_traffic import GAP_SESSION, SWAP_SESSION, impaired_traffic
from tests.metrics_helpers import Source, drive

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT = 0.05
PEER = ("192.0.2.10", 1701)
JOB = "l2tpreorder"
# What Grafana would put in place of the dashboard's variables.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$job": JOB, "$instance": ".*"}
COMPARISON_AT_END = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.eE+-]+\s*$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrometheusServer:
    """Debian's prometheus on a loopback port with a temp config and storage dir."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = _free_port()
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

    def wait_until(self, what: str, check: Any, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        last: object = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                if check():
                    return
            except OSError as error:  # not listening yet
                last = error
            time.sleep(0.25)
        pytest.fail(f"Prometheus: {what} not seen within {limit}s ({last}); log:\n"
                    + self.log.read_text()[-2000:])  # fmt: skip

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

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


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, Any]]:
    binary = need_tool("prometheus")
    source = Source.with_timeout(TIMEOUT)
    server = start_metrics_server(
        MetricsConfig(port=0, per_session=True, per_session_top_n=2), source
    )
    prom = PrometheusServer(
        binary, tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{server.port}"
    )
    try:
        prom.wait_until("ready", lambda: _ready(prom))
        prom.wait_until("first scrape", lambda: prom.query(f'up{{job="{JOB}"}} == 1'))
        traffic = impaired_traffic(TIMEOUT)
        # Test-side adapter: the datagrams reach the engine by function call, so this adapter
        # does the socket layer's counting itself.
        drive(source.engines["lac_to_lns"], traffic, PEER)
        source.relay.rx_datagrams_lac += traffic.datagrams
        source.relay.rx_bytes_lac += traffic.bytes_sent
        expected = traffic.swaps + traffic.withheld
        prom.wait_until(
            "the traffic's counters",
            lambda: prom.query(
                f'l2tpreorder_released_packets_total{{direction="lac_to_lns"}} == {expected}'
            ),
        )
        # Let the alert rules be evaluated at least once after the traffic.
        prom.wait_until(
            "a rule evaluation",
            lambda: all(
                g["lastEvaluation"] > "2000" for g in prom.get("/api/v1/rules")["data"]["groups"]
            ),
        )
        yield prom, traffic
    finally:
        prom.close()
        server.close()


def _dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads((PROJECT_ROOT / "grafana" / "l2tpreorder.json").read_text())
    out = []
    for title, expr in dashboard_exprs(dash):
        for var, value in SUBSTITUTIONS.items():
            expr = expr.replace(var, value)
        out.append((title, expr))
    return out


def _alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((PROJECT_ROOT / "prometheus" / "alerts.yml").read_text())
    return [r for g in rules["groups"] for r in g["rules"]]


def test_every_dashboard_expression_returns_data(scraped: tuple[PrometheusServer, Any]) -> None:
    prom, _ = scraped
    exprs = _dashboard_exprs()
    assert len(exprs) >= 25
    empty = [(title, expr) for title, expr in exprs if not prom.query(expr)]
    assert empty == []


def test_every_alert_expression_evaluates_and_its_measure_returns_data(
    scraped: tuple[PrometheusServer, Any],
) -> None:
    prom, _ = scraped
    rules = _alert_rules()
    assert len(rules) == 7
    for rule in rules:
        prom.query(rule["expr"])  # valid PromQL against real data
        measure = COMPARISON_AT_END.sub("", rule["expr"].strip())
        assert measure != rule["expr"].strip(), f"{rule['alert']}: no threshold at the end"
        assert prom.query(measure), f"{rule['alert']}: {measure} returned nothing"
    health = {
        r["name"]: r["health"]
        for g in prom.get("/api/v1/rules")["data"]["groups"]
        for r in g["rules"]
    }
    assert health == {r["alert"]: "ok" for r in rules}


def test_counters_in_prometheus_equal_what_the_generator_did(
    scraped: tuple[PrometheusServer, Any],
) -> None:
    prom, t = scraped
    d = 'job="l2tpreorder", direction="lac_to_lns"'
    assert prom.scalar(f"l2tpreorder_released_packets_total{{{d}}}") == t.swaps + t.withheld
    per_session = f'l2tpreorder_session_released_packets_total{{{d}, session_id="{SWAP_SESSION}"}}'
    assert prom.scalar(per_session) == t.swaps
    skipped = (
        f'l2tpreorder_session_skipped_sequence_numbers_total{{{d}, session_id="{GAP_SESSION}"}}'
    )
    assert prom.scalar(skipped) == t.withheld
    skipped_total = f'l2tpreorder_skipped_sequence_numbers_total{{{d}, reason="timeout"}}'
    assert prom.scalar(skipped_total) == t.withheld
    assert prom.scalar(f'l2tpreorder_dropped_packets_total{{{d}, reason="late"}}') == t.late
    duplicates = f'l2tpreorder_dropped_packets_total{{{d}, reason="duplicate"}}'
    assert prom.scalar(duplicates) == t.duplicates
    malformed = f'l2tpreorder_malformed_packets_total{{{d}, reason="too_short"}}'
    assert prom.scalar(malformed) == t.malformed_too_short
    received = f'l2tpreorder_received_packets_total{{{d}, kind="data_with_ns"}}'
    assert prom.scalar(received) == sum(t.sequenced.values())
    assert prom.scalar(f"l2tpreorder_socket_received_datagrams_total{{{d}}}") == t.datagrams
    assert prom.scalar(f"l2tpreorder_session_series_omitted{{{d}}}") == 1
    # The dashboard's headline ratios see the reordering and the loss.
    share = (
        'sum(rate(l2tpreorder_released_packets_total{job="l2tpreorder"}[1m])) / sum(rate('
        'l2tpreorder_received_packets_total{job="l2tpreorder", kind="data_with_ns"}[1m]))'
    )
    assert prom.scalar(share) == pytest.approx(
        (t.swaps + t.withheld) / sum(t.sequenced.values()), rel=1e-6
    )
