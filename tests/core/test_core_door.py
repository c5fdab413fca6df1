"""The Pipeline is the only door to the core (issue 20): nothing in l2tpreorder/ outside core/
touches an engine. Adapters drive `Pipeline`, read `Pipeline.directions()` (read-only views),
take `take_output()` and `take_events()`, and save/restore through `snapshot()`/`restore()`.

Read from the syntax tree, not by text, so `config.engine` (the EngineConfig) stays allowed and a
reach-in split over lines is still found. Tests may build engines; the package may not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import l2tpreorder

PACKAGE = Path(l2tpreorder.__file__).parent

# Attributes that only an engine (or the pipeline's own engine slots) has, or had: the side
# entrances the door replaced.
ENGINE_ONLY = frozenset(
    {
        "engine_to_lac",  # the pipeline's LNS-to-LAC engine
        "disown_malformed",  # taking a count back: the malformed policy is declared up front
        "end_log",  # session ends: events.SessionEnded
        "end_log_missed",
        "hold_times",  # hold samples: events.HoldSample
        "take_records",  # the engine's raw records behind take_events
        "set_recording",  # switching them on: Pipeline.record_events
    }
)
# Names that are the engine's machinery itself.
ENGINE_NAMES = frozenset({"ReorderEngine", "SessionTable"})


def _is_pipeline(node: ast.expr) -> bool:
    """`pipeline`, `self.pipeline`, `self._pipeline`, `relay.pipeline`, `p.pipeline()`..."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return "pipeline" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return "pipeline" in node.attr.lower()
    return False


def reach_ins(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every access past the Pipeline in one module's syntax tree."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in ENGINE_ONLY:
                found.append((node.lineno, f".{node.attr}"))
            elif _is_pipeline(node.value) and (node.attr == "engine" or node.attr.startswith("_")):
                found.append((node.lineno, f"pipeline.{node.attr}"))
        elif isinstance(node, ast.Name) and node.id in ENGINE_NAMES:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in ENGINE_NAMES:
                    found.append((node.lineno, f"import {alias.name}"))
            if node.module in ("l2tpreorder.core.session_table",):
                found.append((node.lineno, f"from {node.module} import"))
    return sorted(set(found))


def package_reach_ins(package: Path) -> list[str]:
    """`path:line: what` for every module of `package` outside its core/."""
    lines = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] == "core":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        lines += [f"{relative}:{line}: {what}" for line, what in reach_ins(tree)]
    return lines


def test_nothing_outside_core_touches_an_engine() -> None:
    found = package_reach_ins(PACKAGE)
    assert not found, "reach-ins past core.pipeline.Pipeline:\n" + "\n".join(found)


def test_the_check_finds_each_kind_of_reach_in() -> None:
    """The check cannot pass vacuously: each side entrance it forbids is found, with its line."""
    source = """
from l2tpreorder.core.engine import EngineConfig, ReorderEngine
from l2tpreorder.core.session_table import Session

def f(relay, pipeline, config, p):
    relay.pipeline.engine.counters
    pipeline.engine_to_lac
    relay.pipeline.engine.disown_malformed()
    e = ReorderEngine(config.engine)
    s.hold_times
    self._pipeline.engine.end_log = []
    pipeline._wire()
"""
    found = reach_ins(ast.parse(source))
    assert found == [
        (2, "import ReorderEngine"),
        (3, "from l2tpreorder.core.session_table import"),
        (6, "pipeline.engine"),
        (7, ".engine_to_lac"),
        (8, ".disown_malformed"),
        (8, "pipeline.engine"),
        (9, "ReorderEngine"),
        (10, ".hold_times"),
        (11, ".end_log"),
        (11, "pipeline.engine"),
        (12, "pipeline._wire"),
    ]


def test_what_the_door_allows_is_not_flagged() -> None:
    source = """
def f(config, options, new, pipeline, view):
    config.engine.reorder_timeout
    options.engine
    pipeline.reconfigure(new.engine, 0.0)
    pipeline.directions()["lac_to_lns"].sessions()
    pipeline.take_events()
    pipeline.snapshot()
"""
    assert reach_ins(ast.parse(source)) == []
