"""The core is sans-IO and dependency-free: importing it loads only the standard library."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import l2tpreorder.core
from l2tpreorder.mypyc_build import GROUP

CORE_MODULES = sorted(
    f"l2tpreorder.core.{m.name}" for m in pkgutil.iter_modules(l2tpreorder.core.__path__)
)

_PROBE = """
import importlib, json, sys
before = set(sys.modules)
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_core_imports_only_stdlib_and_itself() -> None:
    assert "l2tpreorder.core.engine" in CORE_MODULES  # the walk found the package's modules
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, *CORE_MODULES],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded = json.loads(run.stdout)
    assert set(CORE_MODULES) <= set(loaded)
    foreign = [
        name
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names
        # the build selection (l2tpreorder.build) and, on the compiled build, mypyc's runtime
        and name not in ("l2tpreorder", "l2tpreorder.build", "l2tpreorder.core")
        and name != f"{GROUP}__mypyc"
        and not name.startswith("l2tpreorder.core.")
    ]
    assert foreign == []


def test_the_probe_sees_a_foreign_import() -> None:
    """The check above can fail: the same probe run on `wire` reports construct."""
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, "l2tpreorder.wire"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "construct" in json.loads(run.stdout)
