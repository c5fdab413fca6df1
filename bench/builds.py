"""Which daemon builds the bench measures: pure Python always, the mypyc-compiled one when built.

The contract with the compiled build (issue 23): `L2TPREORDER_BUILD=pure` in a process's
environment forces the pure-Python modules, `=compiled` makes `import l2tpreorder` fail loudly
when no compiled modules are there, and `l2tpreorder --version` names the build that runs. The
check lives in this one function so that a change of that contract is a change here only.
"""

from __future__ import annotations

import os
import subprocess
import sys

ENV = "L2TPREORDER_BUILD"


def compiled_unavailable() -> str | None:
    """None when the compiled build runs here, else why not (for the `n/a (why)` lines)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "l2tpreorder", "--version"],
                              env={**os.environ, ENV: "compiled"}, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"compiled build not available: `l2tpreorder --version` failed: {e}"
    said = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0:
        return f"compiled build not available: {said[-1] if said else proc.returncode}"
    version = " ".join(said)
    if "compiled build" not in version:
        return f"compiled build not available: `l2tpreorder --version` says {version!r}"
    return None


def env(build: str) -> dict[str, str]:
    """The environment entry that makes a daemon run `build` ("pure" or "compiled")."""
    return {ENV: build}
