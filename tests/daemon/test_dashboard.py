"""grafana/l2tpreorder.json: structurally sound, every query on the datasource variable, and the
panels the operator needs are there. The checker itself is shown to catch broken panels."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, need_tool
from tests.dashboard_check import (
    annotation_exprs,
    dashboard_exprs,
    dashboard_problems,
    expand,
    metric_names,
)

DASHBOARD = PROJECT_ROOT / "grafana" / "l2tpreorder.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_dashboard_is_sound() -> None:
    assert dashboard_problems(load()) == []


def test_enough_panels_and_nothing_to_fill_in_on_import() -> None:
    """What dashboard_problems does not check (it already checks every panel's and query's
    datasource against the one datasource variable)."""
    dash = load()
    assert len([p for p in dash["panels"] if p["type"] != "row"]) >= 15
    assert "__inputs" not in dash


@pytest.mark.parametrize(
    ("needle", "what"),
    [
        ("l2tpreorder_socket_received_bytes_total", "throughput per direction"),
        ("l2tpreorder_released_packets_total", "share of packets reordered"),
        ("l2tpreorder_dropped_packets_total", "drops by reason"),
        ("l2tpreorder_skipped_sequence_numbers_total", "skipped Ns"),
        ('reason="late"', "late drops"),
        ('kind="data_late"', "late deliveries (reorder.late)"),
        ("histogram_quantile(0.99, sum by (direction, le) (rate(l2tpreorder_hold_time", "hold p99"),
        ("l2tpreorder_reorder_timeout_seconds", "timeout next to hold time"),
        ("l2tpreorder_session_held_packets_limit", "held packets vs cap"),
        ("l2tpreorder_held_bytes_limit", "held bytes vs cap"),
        ("l2tpreorder_sessions{", "sessions"),
        ("l2tpreorder_peers{", "peers"),
        ("l2tpreorder_socket_receive_drops_total", "socket drops"),
        ("process_cpu_seconds_total", "process CPU"),
        ("process_resident_memory_bytes", "process memory"),
        # What the critical alerts are about (issue 24): LNS health, the config file,
        # evictions, malformed input by reason.
        ("l2tpreorder_lns_unresponsive{", "LNS answering"),
        ("l2tpreorder_lns_icmp_errors_total{", "ICMP errors from the LNS"),
        ("l2tpreorder_config_last_reload_successful{", "config file loads"),
        ("l2tpreorder_config_last_reload_success_timestamp_seconds{", "config last loaded"),
        ("l2tpreorder_sessions_evicted_total{", "evictions"),
        ("l2tpreorder_sessions_evicted_active_total{", "active sessions evicted"),
        ("sum by (direction, reason) (rate(l2tpreorder_malformed_packets_total{", "malformed"),
    ],
)
def test_operator_panels_present(needle: str, what: str) -> None:
    assert any(needle in expr for _, expr in dashboard_exprs(load())), what


def test_every_alerted_family_has_a_panel() -> None:
    """An alert that fires should point at a picture: every l2tpreorder_* family an alert
    rule reads is drawn by some panel."""
    rules = yaml.safe_load((PROJECT_ROOT / "prometheus" / "alerts.yml").read_text())
    alerted = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in metric_names(rule["expr"])
        if name.startswith("l2tpreorder_")
    }
    drawn = {name for _, expr in dashboard_exprs(load()) for name in metric_names(expr)}
    assert len(alerted) >= 10
    assert alerted - drawn == set()


def test_reloads_and_restarts_are_annotated() -> None:
    annotations = dict(annotation_exprs(load()))
    assert set(annotations) == {"Restarts", "Config reloads", "Config reloads refused"}
    assert "process_start_time_seconds" in annotations["Restarts"]
    assert "l2tpreorder_config_last_reload_success_timestamp_seconds" in (
        annotations["Config reloads"]
    )
    # A restart loads the file too: it is a restart, not a reload.
    assert "unless on (job, instance) changes(process_start_time_seconds" in (
        annotations["Config reloads"]
    )
    assert 'result="failure"' in annotations["Config reloads refused"]


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """Every panel and annotation query is valid PromQL (the variables as Grafana fills them
    in), checked by Prometheus' own parser as recording rules."""
    promtool = need_tool("promtool")
    exprs = [*dashboard_exprs(load()), *annotation_exprs(load())]
    rules = [
        {"record": f"dashboard:query{i}", "expr": expand(expr)} for i, (_, expr) in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_hold_time_heatmap_present() -> None:
    heatmaps = [p for p in load()["panels"] if p["type"] == "heatmap"]
    assert heatmaps and all(t.get("format") == "heatmap" for p in heatmaps for t in p["targets"])


def _first_query_panel(d: dict[str, Any]) -> dict[str, Any]:
    panel: dict[str, Any] = next(p for p in d["panels"] if p["type"] != "row")
    return panel


def _set_grid(d: dict[str, Any], **kw: int) -> None:
    _first_query_panel(d)["gridPos"].update(kw)


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "panel datasource hard-coded": (
        lambda d: _first_query_panel(d).update(datasource={"type": "prometheus", "uid": "abc"}),
        "datasource must be",
    ),
    "panel datasource missing": (
        lambda d: _first_query_panel(d).pop("datasource"),
        "datasource must be",
    ),
    "query datasource missing": (
        lambda d: _first_query_panel(d)["targets"][0].pop("datasource"),
        "datasource must be",
    ),
    "no targets": (lambda d: _first_query_panel(d).update(targets=[]), "at least one query"),
    "empty expr": (lambda d: _first_query_panel(d)["targets"][0].update(expr=" "), "PromQL expr"),
    "unbalanced expr": (
        lambda d: _first_query_panel(d)["targets"][0].update(expr="sum(rate(x[5m])"),
        "unbalanced",
    ),
    "unknown variable": (
        lambda d: _first_query_panel(d)["targets"][0].update(expr='up{job=~"$nosuch"}'),
        "unknown variable $nosuch",
    ),
    "duplicate id": (
        lambda d: _first_query_panel(d).update(id=d["panels"][0]["id"]),
        "duplicate id",
    ),
    "grid too wide": (lambda d: _set_grid(d, x=20, w=8), "outside the 24-column grid"),
    "grid not integer": (lambda d: _set_grid(d, h="8"), "gridPos needs integer"),
    "overlapping panels": (
        lambda d: d["panels"].append({**copy.deepcopy(_first_query_panel(d)), "id": 999}),
        "overlaps",
    ),
    "unknown panel type": (lambda d: _first_query_panel(d).update(type="graphx"), "unknown panel"),
    "no fieldConfig": (lambda d: _first_query_panel(d).pop("fieldConfig"), "fieldConfig"),
    "no datasource variable": (
        lambda d: d["templating"]["list"].pop(0),
        "exactly one Prometheus datasource variable",
    ),
    "no schemaVersion": (lambda d: d.pop("schemaVersion"), "schemaVersion"),
    "annotation datasource hard-coded": (
        lambda d: d["annotations"]["list"][1].update(datasource={"type": "prometheus", "uid": "x"}),
        "datasource must be",
    ),
    "annotation without expr": (
        lambda d: d["annotations"]["list"][1].pop("expr"),
        "needs a PromQL expr",
    ),
    "annotation unknown variable": (
        lambda d: d["annotations"]["list"][1].update(expr='changes(x{job=~"$nojob"}[2m]) > 0'),
        "unknown variable $nojob",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_checker_catches_broken_dashboard(name: str) -> None:
    mutate, expected = MUTATIONS[name]
    dash = load()
    mutate(dash)
    problems = dashboard_problems(dash)
    assert any(expected in p for p in problems), problems
