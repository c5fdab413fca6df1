"""The compiled build (issue 23, l2tpreorder/build.py): it loads when it was built, it is chosen
or refused as L2TPREORDER_BUILD says, a stale one is never run, and without a C compiler the
build step leaves a pure tree that says why."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from l2tpreorder.build import (
    COMPILED_DIR,
    COMPILED_IMPORTS,
    COMPILED_MODULES,
    MANIFEST,
    NOT_BUILT,
    source_path,
)
from l2tpreorder.daemon.inpath.verdicts import InPathCounters
from tests.conftest import PROJECT_ROOT, need
from tests.daemon_harness import Daemon, free_udp_port
from tests.engine_helpers import slot_names

# A fresh interpreter: which build it chose, and the file each compiled module came from.
_PROBE = """
import importlib, sys
import l2tpreorder
from l2tpreorder.build import COMPILED_MODULES, describe
print(l2tpreorder.BUILD)
print(describe())
for name in COMPILED_MODULES:
    print(importlib.import_module(name).__file__)
"""


def probe(
    cwd: Path = PROJECT_ROOT, build: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run _PROBE with L2TPREORDER_BUILD=`build` (None: unset) from `cwd` (a package copy)."""
    env = {k: v for k, v in os.environ.items() if k != "L2TPREORDER_BUILD"}
    if build is not None:
        env["L2TPREORDER_BUILD"] = build
    return subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )


def copy_package(tmp: Path, with_compiled: bool) -> Path:
    """The package (and pyproject.toml) copied to `tmp`, with or without its compiled build:
    `python -c` run there imports the copy (the current directory comes first on sys.path)."""
    skip = shutil.ignore_patterns("__pycache__", *(() if with_compiled else ("_compiled",)))
    shutil.copytree(PROJECT_ROOT / "l2tpreorder", tmp / "l2tpreorder", ignore=skip)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp)
    return tmp


def require_built() -> None:
    """Skip (fail under CI=true) only where the build step found no C compiler; any other
    missing build fails."""
    if NOT_BUILT.is_file() and NOT_BUILT.read_text().startswith("no "):
        need(False, f"a C compiler for the compiled build ({NOT_BUILT.read_text().strip()})")
    why = NOT_BUILT.read_text().strip() if NOT_BUILT.is_file() else "run make venv"
    assert MANIFEST.is_file(), f"no compiled build in {COMPILED_DIR}: {why}"


def test_the_compiled_modules_load_when_built() -> None:
    """Built but silently not loaded (stale, wrong Python, a path mistake) fails here."""
    require_built()
    for build in (None, "compiled"):
        run = probe(build=build)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert lines[:2] == ["compiled", "compiled build (mypyc)"], (build, lines)
        files = lines[2:]
        assert len(files) == len(COMPILED_MODULES)
        assert all(f.startswith(str(COMPILED_DIR)) and f.endswith(".so") for f in files), files


def test_pure_is_chosen_even_when_compiled_is_built() -> None:
    run = probe(build="pure")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[:2] == ["pure", "pure-Python build: L2TPREORDER_BUILD=pure"]
    assert all(f.endswith(".py") for f in lines[2:]), lines


def test_explicit_compiled_without_a_build_fails_loudly(tmp_path: Path) -> None:
    tree = copy_package(tmp_path, with_compiled=False)
    run = probe(tree, build="compiled")
    assert run.returncode != 0
    assert "L2TPREORDER_BUILD=compiled but compiled modules not built" in run.stderr
    default = probe(tree)
    assert default.returncode == 0, default.stderr
    assert default.stdout.splitlines()[:2] == [
        "pure",
        "pure-Python build: compiled modules not built (make venv builds them)",
    ]


def test_a_stale_build_is_not_run(tmp_path: Path) -> None:
    """A source edited after the build: its old compiled code must not run in its place."""
    require_built()
    tree = copy_package(tmp_path, with_compiled=True)
    assert probe(tree).stdout.splitlines()[0] == "compiled"  # the copy's build is current
    with (tree / "l2tpreorder" / "core" / "fastpath.py").open("a") as f:
        f.write("# edited\n")
    run = probe(tree)
    assert run.stdout.splitlines()[:2] == [
        "pure",
        "pure-Python build: compiled modules are older than fastpath.py (run make venv)",
    ]
    assert probe(tree, build="compiled").returncode != 0


def our_imports(module: str) -> set[str]:
    """The l2tpreorder modules `module` imports (a package's submodule named by
    `from package import name` counts as that submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source_path(module).read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("l2tpreorder."))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("l2tpreorder"):
            assert node.module is not None
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if source_path(sub).is_file() else node.module)
    return found


def test_the_build_is_stale_when_a_module_the_compiled_code_imports_changes() -> None:
    """mypyc compiled against the pure modules the compiled ones import (their constants are
    inlined): each is in the manifest's digests and in the Makefile's COMPILED_SRC."""
    imported = set().union(*(our_imports(m) for m in COMPILED_MODULES))
    # the package __init__s and build.py itself only choose the build
    pure = {m for m in imported - set(COMPILED_MODULES) if source_path(m).name != "__init__.py"}
    pure.discard("l2tpreorder.build")
    assert pure == set(COMPILED_IMPORTS)
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    listed = re.search(r"^COMPILED_SRC\s*:=((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert listed is not None
    for module in COMPILED_IMPORTS:
        assert str(source_path(module).relative_to(PROJECT_ROOT)) in listed.group(1).split()


def test_a_stale_import_makes_the_build_stale(tmp_path: Path) -> None:
    require_built()
    tree = copy_package(tmp_path, with_compiled=True)
    with (tree / "l2tpreorder" / "daemon" / "mmsg.py").open("a") as f:
        f.write("# edited\n")
    assert probe(tree).stdout.splitlines()[:2] == [
        "pure",
        "pure-Python build: compiled modules are older than mmsg.py (run make venv)",
    ]


def test_without_a_c_compiler_the_build_step_leaves_a_pure_tree(tmp_path: Path) -> None:
    tree = copy_package(tmp_path, with_compiled=False)
    env = dict(os.environ, CC="/bin/false")
    env.pop("L2TPREORDER_BUILD", None)
    build = subprocess.run(
        [sys.executable, "-m", "l2tpreorder.mypyc_build"], cwd=tree, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert build.returncode == 0, build.stderr
    why = "no working C compiler or Python headers at build time (/bin/false failed)"
    assert f"pure-Python build: {why}" in build.stdout
    run = probe(tree)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:2] == ["pure", f"pure-Python build: {why}"]


@pytest.mark.parametrize("build", ["pure", None])
def test_run_logs_one_line_when_pure(tmp_path: Path, build: str | None) -> None:
    if build is None:
        require_built()
    config = {
        "listen": [f"127.0.0.1:{free_udp_port()}"],
        "lns": f"127.0.0.1:{free_udp_port()}",
        "logging": {"level": "info"},
        "metrics": {"enabled": False},
    }
    env = {"L2TPREORDER_BUILD": build or "compiled"}
    daemon = Daemon(tmp_path, config, env)
    try:
        daemon.ready()
        lines = [line for line in daemon.log().splitlines() if "pure-Python build" in line]
    finally:
        daemon.stop()
    if build == "pure":
        assert len(lines) == 1 and lines[0].endswith("pure-Python build: L2TPREORDER_BUILD=pure")
    else:
        assert lines == []


def test_in_path_counters_report_every_field() -> None:
    """`as_dict` (the in-path worker's status) works on a compiled class, which has no
    `__slots__` at run time."""
    assert set(InPathCounters().as_dict()) == set(slot_names(InPathCounters))
    assert len(slot_names(InPathCounters)) >= 14


def test_version_names_the_build() -> None:
    for build, expect in (("pure", "pure-Python build: L2TPREORDER_BUILD=pure"), (None, None)):
        env = {k: v for k, v in os.environ.items() if k != "L2TPREORDER_BUILD"}
        if build is not None:
            env["L2TPREORDER_BUILD"] = build
        run = subprocess.run(
            [sys.executable, "-m", "l2tpreorder", "--version"], cwd=PROJECT_ROOT, env=env,
            capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr
        line = run.stdout.strip()
        assert line.startswith("l2tpreorder 0.") and line.count("\n") == 0, line
        if expect is not None:
            assert line.endswith(f", {expect}"), line
        elif MANIFEST.is_file():
            assert line.endswith(", compiled build (mypyc)"), line
