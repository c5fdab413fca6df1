"""A structural check of a Grafana dashboard JSON model; returns problems, empty when sound.

Field names and types follow the classic dashboard model in `@grafana/schema`
(raw/dashboard/x/types.gen: Dashboard, Panel, RowPanel, GridPos, FieldConfigSource,
VariableModel); on top of that it enforces what makes a dashboard work on import here: every
panel and query names the `datasource` template variable, every query has a PromQL expression
with balanced brackets and only known `$variables`, ids are unique, panels fit the 24-column grid
and do not overlap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

GRID_COLUMNS = 24
PANEL_TYPES = {
    "row", "timeseries", "stat", "gauge", "bargauge", "heatmap", "table", "text", "piechart",
    "histogram", "state-timeline", "status-history", "barchart",
}  # fmt: skip
VARIABLE_TYPES = {
    "query", "adhoc", "groupby", "constant", "datasource", "interval", "textbox", "custom",
    "switch", "system", "snapshot",
}  # fmt: skip
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
VARIABLE_REF = re.compile(r"\$\{?(\w+)")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    in_string = False
    for i, ch in enumerate(expr):
        if ch == '"' and (i == 0 or expr[i - 1] != "\\"):
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not in_string


def dashboard_problems(dash: Any) -> list[str]:
    problems: list[str] = []
    bad = problems.append
    if not isinstance(dash, dict):
        return ["dashboard: not a JSON object"]
    if not _is_int(dash.get("schemaVersion")):
        bad("schemaVersion: required integer")
    for key in ("title", "uid"):
        if not isinstance(dash.get(key), str) or not dash.get(key):
            bad(f"{key}: required non-empty string")
    if not isinstance(dash.get("time"), dict) or not all(
        isinstance(dash["time"].get(k), str) for k in ("from", "to")
    ):
        bad("time: needs string from and to")
    if dash.get("graphTooltip", 0) not in (0, 1, 2):
        bad("graphTooltip: expected 0, 1 or 2")

    variables = dash.get("templating", {}).get("list")
    if not isinstance(variables, list):
        return [*problems, "templating.list: required list"]
    names: set[str] = set()
    datasource_vars: list[str] = []
    for i, var in enumerate(variables):
        where = f"templating.list[{i}]"
        if not isinstance(var, dict) or not isinstance(var.get("name"), str):
            bad(f"{where}: needs a name")
            continue
        if var.get("type") not in VARIABLE_TYPES:
            bad(f"{where} ({var['name']}): unknown type {var.get('type')!r}")
        if var["name"] in names:
            bad(f"{where}: duplicate variable {var['name']!r}")
        names.add(var["name"])
        if var.get("type") == "datasource":
            if var.get("query") == "prometheus":
                datasource_vars.append(var["name"])
            else:
                bad(f"{where}: datasource variable must select type 'prometheus'")
    if len(datasource_vars) != 1:
        return [*problems, "templating: needs exactly one Prometheus datasource variable"]
    wanted_ds = {"type": "prometheus", "uid": "${" + datasource_vars[0] + "}"}
    for i, var in enumerate(variables):
        if (
            isinstance(var, dict)
            and var.get("type") == "query"
            and var.get("datasource") != wanted_ds
        ):
            bad(f"templating.list[{i}] ({var.get('name')}): datasource must be {wanted_ds}")

    panels = dash.get("panels")
    if not isinstance(panels, list) or not panels:
        return [*problems, "panels: required non-empty list"]
    flat: list[tuple[str, dict[str, Any]]] = []
    for i, panel in enumerate(panels):
        flat.append((f"panels[{i}]", panel))
        if isinstance(panel, dict) and panel.get("type") == "row":
            for j, inner in enumerate(panel.get("panels") or []):
                flat.append((f"panels[{i}].panels[{j}]", inner))
    ids: set[int] = set()
    placed: list[tuple[str, int, int, int, int]] = []
    for where, panel in flat:
        if not isinstance(panel, dict):
            bad(f"{where}: not an object")
            continue
        title = panel.get("title")
        where = f"{where} ({title!r})"
        kind = panel.get("type")
        if kind not in PANEL_TYPES:
            bad(f"{where}: unknown panel type {kind!r}")
        if not isinstance(title, str) or not title:
            bad(f"{where}: needs a title")
        pid = panel.get("id")
        if not _is_int(pid):
            bad(f"{where}: id must be an integer")
        elif pid in ids:
            bad(f"{where}: duplicate id {pid}")
        else:
            ids.add(pid)
        grid = panel.get("gridPos")
        if not isinstance(grid, dict) or not all(_is_int(grid.get(k)) for k in "hwxy"):
            bad(f"{where}: gridPos needs integer h, w, x, y")
        else:
            h, w, x, y = (grid[k] for k in "hwxy")
            if h < 1 or w < 1 or x < 0 or y < 0 or x + w > GRID_COLUMNS:
                bad(f"{where}: gridPos {grid} outside the {GRID_COLUMNS}-column grid")
            for other, ox, oy, ow, oh in placed:
                if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                    bad(f"{where}: gridPos overlaps {other}")
            placed.append((where, x, y, w, h))
        if kind == "row":
            if not isinstance(panel.get("collapsed"), bool):
                bad(f"{where}: row needs boolean collapsed")
            if not isinstance(panel.get("panels"), list):
                bad(f"{where}: row needs a panels list")
            if panel.get("targets"):
                bad(f"{where}: a row has no queries")
            continue
        if panel.get("datasource") != wanted_ds:
            bad(f"{where}: datasource must be {wanted_ds}, got {panel.get('datasource')}")
        field_config = panel.get("fieldConfig")
        if not (
            isinstance(field_config, dict)
            and isinstance(field_config.get("defaults"), dict)
            and isinstance(field_config.get("overrides"), list)
        ):
            bad(f"{where}: fieldConfig needs defaults and overrides")
        elif not isinstance(field_config["defaults"].get("unit", ""), str):
            bad(f"{where}: fieldConfig.defaults.unit must be a string")
        if "options" in panel and not isinstance(panel["options"], dict):
            bad(f"{where}: options must be an object")
        targets = panel.get("targets")
        if not isinstance(targets, list) or not targets:
            bad(f"{where}: needs at least one query in targets")
            continue
        ref_ids: set[str] = set()
        for k, target in enumerate(targets):
            t_where = f"{where} targets[{k}]"
            if not isinstance(target, dict):
                bad(f"{t_where}: not an object")
                continue
            ref = target.get("refId")
            if not isinstance(ref, str) or not ref or ref in ref_ids:
                bad(f"{t_where}: needs a unique refId")
            else:
                ref_ids.add(ref)
            if target.get("datasource") != wanted_ds:
                bad(f"{t_where}: datasource must be {wanted_ds}")
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                bad(f"{t_where}: needs a PromQL expr")
                continue
            _check_expr(t_where, expr, names, bad)
    _check_annotations(dash, wanted_ds, names, bad)
    return problems


def _check_expr(where: str, expr: str, names: set[str], bad: Callable[[str], None]) -> None:
    if not _balanced(expr):
        bad(f"{where}: unbalanced brackets or quotes in {expr!r}")
    for ref_name in VARIABLE_REF.findall(expr):
        if ref_name not in names and ref_name not in BUILTIN_VARIABLES:
            bad(f"{where}: unknown variable ${ref_name}")


def _check_annotations(
    dash: dict[str, Any], wanted_ds: dict[str, str], names: set[str], bad: Callable[[str], None]
) -> None:
    """Query annotations (all but Grafana's built-in one) follow the panels' rules: the
    datasource variable, a PromQL expr, known variables; and they need a name."""
    annotations = dash.get("annotations", {}).get("list", [])
    if not isinstance(annotations, list):
        bad("annotations.list: must be a list")
        return
    for i, ann in enumerate(annotations):
        where = f"annotations.list[{i}]"
        if not isinstance(ann, dict) or not isinstance(ann.get("name"), str) or not ann["name"]:
            bad(f"{where}: needs a name")
            continue
        where = f"{where} ({ann['name']!r})"
        if ann.get("builtIn") == 1:
            continue
        if ann.get("datasource") != wanted_ds:
            bad(f"{where}: datasource must be {wanted_ds}")
        expr = ann.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            bad(f"{where}: needs a PromQL expr")
            continue
        _check_expr(where, expr, names, bad)


def annotation_exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(annotation name, expr) for every query annotation."""
    return [
        (a["name"], a["expr"]) for a in dash.get("annotations", {}).get("list", []) if "expr" in a
    ]


def dashboard_exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, rows' children included."""
    out: list[tuple[str, str]] = []
    for panel in dash["panels"]:
        for p in [panel, *(panel.get("panels") or [])]:
            for target in p.get("targets") or []:
                out.append((p["title"], target["expr"]))
    return out


# What Grafana puts in place of the variables, for running a query outside it.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$job": ".+", "$instance": ".*"}
# Names the target serves (`up` is Prometheus' own).
METRIC_NAME = re.compile(r"\b(?:l2tpreorder|process|python)_\w+")
LABEL_MATCHER_VALUE = re.compile(r'"(?:[^"\\]|\\.)*"')


def expand(expr: str, substitutions: dict[str, str] | None = None) -> str:
    for var, value in (substitutions or SUBSTITUTIONS).items():
        expr = expr.replace(var, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a query reads (series names, `_bucket` etc. included as written);
    quoted label values are left out."""
    return set(METRIC_NAME.findall(LABEL_MATCHER_VALUE.sub('""', expr)))
