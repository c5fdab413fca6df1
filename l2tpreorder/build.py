"""Which build runs: the mypyc-compiled hot path or the pure-Python modules (issue 23).

Both live in one tree. `make venv` compiles the per-packet modules (COMPILED_MODULES) into
`l2tpreorder/_compiled/` (extension modules under their package paths, plus mypyc's shared
runtime library and a manifest); the .py files stay where they are. At import time the package
`__init__` of each compiled subpackage calls `extend_path`, which puts the compiled directory in
front of the subpackage's `__path__`, so `import l2tpreorder.core.engine` finds the extension
first. With L2TPREORDER_BUILD=pure nothing is put in front and the .py files run.

The choice is made once per process, here, before any compiled module can load: the compiled
modules call each other directly in C, so mixing a compiled module with a pure one of the same
group would be unsafe. A compiled build whose sources changed since it was built is not used
(it would silently run old code): the manifest holds each source's SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Final

# The modules compiled with mypyc: the per-packet path of both modes. The rest of the daemon
# (configuration, metrics, control socket, the asyncio service) runs a few times a second at
# most and stays pure.
COMPILED_MODULES: Final = (
    "l2tpreorder.core.adaptive",
    "l2tpreorder.core.ahead",
    "l2tpreorder.core.behind",
    "l2tpreorder.core.checksum",
    "l2tpreorder.core.continuation",
    "l2tpreorder.core.counters",
    "l2tpreorder.core.engine",
    "l2tpreorder.core.engine_config",
    "l2tpreorder.core.engine_counters",
    "l2tpreorder.core.events",
    "l2tpreorder.core.fastpath",
    "l2tpreorder.core.msgtype",
    "l2tpreorder.core.pipeline",
    "l2tpreorder.core.reasons",
    "l2tpreorder.core.session_table",
    "l2tpreorder.core.snapshot",
    "l2tpreorder.core.views",
    "l2tpreorder.daemon.inpath.adapter",
    "l2tpreorder.daemon.inpath.nfqueue",
    "l2tpreorder.daemon.inpath.verdicts",
)
# The pure modules the compiled ones import: mypyc compiled against their types and constants
# (a Final is inlined), so an edit to one makes the build stale too. The Makefile's
# COMPILED_SRC lists them as well; tests/test_build.py checks both against the imports.
COMPILED_IMPORTS: Final = (
    "l2tpreorder.config.values",
    "l2tpreorder.daemon.inpath.errors",
    "l2tpreorder.daemon.mmsg",
)
DIGESTED_MODULES: Final = COMPILED_MODULES + COMPILED_IMPORTS

PACKAGE_DIR: Final = Path(__file__).resolve().parent
COMPILED_DIR: Final = PACKAGE_DIR / "_compiled"
MANIFEST: Final = COMPILED_DIR / "manifest.json"
# Written by the build step when it could not compile (no C compiler, no Python headers, a
# mypyc error): the one-line reason `run` logs.
NOT_BUILT: Final = COMPILED_DIR / "not-built.txt"
ENV: Final = "L2TPREORDER_BUILD"


def source_path(module: str) -> Path:
    """The .py file of one of our modules (`l2tpreorder.core.engine` -> .../core/engine.py)."""
    return PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")


def source_digest(module: str) -> str:
    return hashlib.sha256(source_path(module).read_bytes()).hexdigest()


def _current_manifest() -> dict[str, Any] | str:
    """The manifest when the compiled build is present, current and loadable here (read
    once: it also names the runtime to load); else why not."""
    if not MANIFEST.is_file():
        if NOT_BUILT.is_file():
            return NOT_BUILT.read_text().strip()
        return "compiled modules not built (make venv builds them)"
    try:
        manifest: dict[str, Any] = json.loads(MANIFEST.read_text())
    except (OSError, ValueError) as error:
        return f"unreadable {MANIFEST}: {error}"
    if manifest.get("ext_suffix") not in importlib.machinery.EXTENSION_SUFFIXES:
        return f"compiled for {manifest.get('ext_suffix')}, not this Python"
    digests: dict[str, str] = manifest.get("sources", {})
    for module in DIGESTED_MODULES:
        if digests.get(module) != source_digest(module):
            return f"compiled modules are older than {source_path(module).name} (run make venv)"
    return manifest


def _load_runtime(manifest: dict[str, Any]) -> None:
    """Load mypyc's shared library under the name the extension shims import it by.

    It is a top-level module (`l2tpreorder__mypyc`); registering it in sys.modules from its
    file avoids putting the compiled directory on sys.path.
    """
    name: str = manifest["runtime"]
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, COMPILED_DIR / manifest["runtime_file"])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {COMPILED_DIR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _select() -> tuple[str, str]:
    """("compiled" | "pure", why): from L2TPREORDER_BUILD and what was built."""
    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted not in ("", "pure", "compiled"):
        raise ImportError(f"{ENV}={wanted!r}: expected 'pure' or 'compiled'")
    if wanted == "pure":
        return "pure", f"{ENV}=pure"
    manifest = _current_manifest()
    if isinstance(manifest, str):  # why not
        if wanted == "compiled":
            # Asked for explicitly: running pure instead would hide exactly what was asked about.
            raise ImportError(f"{ENV}=compiled but {manifest}")
        return "pure", manifest
    _load_runtime(manifest)
    return "compiled", "mypyc"


BUILD, REASON = _select()


def extend_path(path: list[str], package: str) -> None:
    """Put the compiled modules of `package` in front of its `__path__` (compiled build only)."""
    if BUILD == "compiled":
        path.insert(0, str(COMPILED_DIR.joinpath(*package.split("."))))


def describe() -> str:
    """The one line `--version` and the daemon's start log show."""
    if BUILD == "compiled":
        return "compiled build (mypyc)"
    return f"pure-Python build: {REASON}"
