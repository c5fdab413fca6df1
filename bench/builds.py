"""Which daemon builds the bench measures: pure Python always, the mypyc-compiled one when built.

The contract with the compiled build (issue 23): `L2TPREORDER_BUILD=pure` in a process's
environment forces the pure-Python modules, `=compiled` makes `import l2tpreorder` fail loudly
when no compiled modules are there, and `l2tpreorder.BUILD` names the build that runs (as
`l2tpreorder --version` does). The check lives in this one function so that a change of that
contract is a change here only.
"""

from __future__ import annotations

import os
import subprocess
import sys

from l2tpreorder.build import ENV  # the one name of the switch

# Prints the build that `import l2tpreorder` chose; a tree from before issue 23 has no BUILD.
_PROBE = "import l2tpreorder as m; print(getattr(m, 'BUILD', 'pure (no build selection here)'))"


def compiled_unavailable() -> str | None:
    """None when the compiled build runs here, else why not (for the `n/a (why)` lines)."""
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, ENV: "compiled"},
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"compiled build not available: {e}"
    said = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0:  # L2TPREORDER_BUILD=compiled without compiled modules: ImportError
        return f"compiled build not available: {said[-1] if said else proc.returncode}"
    if said != ["compiled"]:
        return f"compiled build not available: {ENV}=compiled runs {' '.join(said)!r}"
    return None


def env(build: str) -> dict[str, str]:
    """The environment entry that makes a daemon run `build` ("pure" or "compiled")."""
    return {ENV: build}
