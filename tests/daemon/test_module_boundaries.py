"""The daemon's layout holds: one shared service, two mode packages that never load each other,
and no import tucked inside a function (the way a cycle gets hidden)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from l2tpreorder.daemon.service import MODE_ENTRIES
from tests.conftest import PROJECT_ROOT

DAEMON = PROJECT_ROOT / "l2tpreorder" / "daemon"
RELAY, INPATH = "l2tpreorder.daemon.relay", "l2tpreorder.daemon.inpath"

# Function-level imports allowed in l2tpreorder/daemon, each with why. Empty: `run` picks its
# mode's package by name (`service.MODE_ENTRIES`, importlib), not with an import statement.
ALLOWED_FUNCTION_IMPORTS: dict[str, str] = {}


def _modules() -> list[str]:
    names = []
    for path in sorted(DAEMON.rglob("*.py")):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _loaded_by(modules: list[str]) -> dict[str, list[str]]:
    """Each module imported alone in a fresh interpreter: the l2tpreorder modules it loaded."""
    script = (
        "import importlib, json, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('l2tpreorder'))))\n"
    )
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", script, name],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in modules
    }
    loaded = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"import {name} failed: {err.decode()}"
        loaded[name] = json.loads(out)
    return loaded


def test_mode_packages_do_not_load_each_other_and_shared_modules_load_neither() -> None:
    modules = _modules()
    assert f"{RELAY}.adapter" in modules and f"{INPATH}.worker" in modules
    problems = []
    for name, loaded in _loaded_by(modules).items():
        if name.startswith(INPATH):
            forbidden = [m for m in loaded if m.startswith(RELAY)]
        elif name.startswith(RELAY):
            forbidden = [m for m in loaded if m.startswith(INPATH)]
        else:  # shared: the service and what it stands on know no mode
            forbidden = [m for m in loaded if m.startswith((RELAY, INPATH))]
        if forbidden:
            problems.append(f"{name} loads {forbidden}")
    assert problems == []


def test_no_import_inside_a_function_in_the_daemon() -> None:
    found = []
    for path in sorted(DAEMON.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    where = f"{path.relative_to(PROJECT_ROOT)}:{func.name}"
                    if where not in ALLOWED_FUNCTION_IMPORTS:
                        found.append(f"{where} (line {node.lineno})")
    assert found == []


def test_the_check_sees_a_function_level_import() -> None:
    """The AST walk above is not vacuous: it flags the shape it forbids."""
    tree = ast.parse("def f():\n    import os\n")
    func = tree.body[0]
    assert any(isinstance(n, ast.Import) for n in ast.walk(func))


def test_run_knows_both_modes_by_name_only() -> None:
    """`run` reaches a mode through its entry module; each has `launch`."""
    assert set(MODE_ENTRIES) == {"relay", "inpath"}
    for module in MODE_ENTRIES.values():
        source = (PROJECT_ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
        assert "\ndef launch(run: Launch) -> int:" in source, module
