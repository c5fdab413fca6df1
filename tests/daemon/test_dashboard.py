"""grafana/l2tpreorder.json: structurally sound, every query on the datasource variable, and the
panels the operator needs are there. The checker itself is shown to catch broken panels."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT
from tests.dashboard_check import dashboard_exprs, dashboard_problems

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
    ],
)
def test_operator_panels_present(needle: str, what: str) -> None:
    assert any(needle in expr for _, expr in dashboard_exprs(load())), what


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
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_checker_catches_broken_dashboard(name: str) -> None:
    mutate, expected = MUTATIONS[name]
    dash = load()
    mutate(dash)
    problems = dashboard_problems(dash)
    assert any(expected in p for p in problems), problems
