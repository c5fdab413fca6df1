"""Running `python -m l2tpreorder` as another user (nobody), wherever the clone sits.

A clone in a directory only root can enter (root's home is 0700 on Debian, so is `mktemp -d`)
cannot be read by nobody: `No module named l2tpreorder` (issue 24, item 17). So the package and
its runtime dependencies are copied into a world-readable directory for the unprivileged run,
and that run's interpreter is one nobody can read its own standard library from. `-S` keeps
the clone's venv (and its editable install, which points into the clone) out of the way.

Why the interpreter is checked too: `setpriv --reuid` still holds root's capabilities while it
execs, so it starts a python nobody could not reach at all; that python then loads its library
and standard library as nobody. A venv whose base interpreter lives under /root (pyenv, 0700
home) finds neither there and, on Debian, silently runs Debian's libpython and
/usr/lib/python3.X instead (seen here: 3.11.2 under a 3.11.7 venv). So a candidate must be
reachable by the user itself (`test -x` run as the user), and import what the daemon needs as
the user; the venv's python, its real file, then /usr/bin/python3 are tried in that order.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT, need

# What `l2tpreorder run/status` import (pyproject's dependencies), by distribution name.
RUNTIME_DISTRIBUTIONS = ("uvloop", "construct", "prometheus-client", "PyYAML", "dpkt")
PROBE = (
    "import l2tpreorder, l2tpreorder.cli, l2tpreorder.daemon.service, uvloop, yaml, "
    "prometheus_client; print(l2tpreorder.__file__)"
)


def as_user(uid: int, gid: int, argv: list[str]) -> list[str]:
    setpriv = shutil.which("setpriv")
    need(setpriv is not None, "setpriv")
    assert setpriv is not None
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


class OpenCopy:
    """The package and its dependencies under `root` (0755 all the way), and a python that
    user `uid` can run them with: `argv(...)`, `env()` and `cwd` for subprocess."""

    def __init__(self, root: Path, uid: int, gid: int) -> None:
        self.cwd = root
        self.site = root / "site"
        self.uid, self.gid = uid, gid
        self._copy()
        self.python = self._python()

    def _copy(self) -> None:
        self.site.mkdir(parents=True)
        shutil.copytree(
            PROJECT_ROOT / "l2tpreorder",
            self.site / "l2tpreorder",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for name in RUNTIME_DISTRIBUTIONS:
            dist = importlib.metadata.distribution(name)
            for file in dist.files or ():
                if ".." in file.parts or "__pycache__" in file.parts:
                    continue  # scripts outside site-packages; bytecode is rebuilt
                source = Path(str(dist.locate_file(file)))
                target = self.site / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        for path in [self.cwd, *self.cwd.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        return env | {"PYTHONPATH": str(self.site), "PYTHONDONTWRITEBYTECODE": "1"}

    def _python(self) -> str:
        """The first interpreter user `uid` can import the daemon with (see the module doc)."""
        candidates = [sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"]
        tried = []
        for python in dict.fromkeys(candidates):
            if not os.path.exists(python):
                continue
            if not self._reachable(os.path.realpath(python)):
                tried.append(f"{python}: {os.path.realpath(python)} is not reachable by the user")
                continue
            probe = subprocess.run(
                as_user(self.uid, self.gid, [python, "-S", "-c", PROBE]),
                cwd=self.cwd, env=self.env(), capture_output=True, text=True, timeout=60,
                check=False,
            )  # fmt: skip
            if probe.returncode == 0 and probe.stdout.startswith(str(self.site)):
                return python
            tried.append(f"{python}: {probe.stderr.strip().splitlines()[-1:]}")
        need(False, "a python that nobody can import the daemon with; tried " + "; ".join(tried))
        raise AssertionError("unreachable")

    def _reachable(self, path: str) -> bool:
        """Can the user reach `path` itself (every directory above it), without the
        capabilities setpriv still holds while it execs? `test` runs as the user."""
        test = shutil.which("test") or "/usr/bin/test"
        check = subprocess.run(
            as_user(self.uid, self.gid, [test, "-x", path]), timeout=60, check=False
        )
        return check.returncode == 0

    def argv(self, *args: str) -> list[str]:
        """`python -m l2tpreorder ARGS` as the user."""
        # -S: no site-packages (not the clone's venv, not its editable install): only the
        # standard library and the copy on PYTHONPATH.
        return as_user(self.uid, self.gid, [self.python, "-S", "-m", "l2tpreorder", *args])
