"""The bench's C programs (bench/c/): built with gcc at run time into bench/c/build/ (gitignored).

Why C at all: the Python load generator tops out near 150-200k datagrams/s on one core, under
what in-path mode can take, and the in-path ceiling (a minimal NFQUEUE reader) must not be
limited by Python either. Both are optional: without gcc the bench falls back to the Python
generator and prints `n/a (why)` for the ceiling.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

C_DIR = Path(__file__).resolve().parent / "c"
BUILD_DIR = C_DIR / "build"
# program name -> its one source file
PROGRAMS = {"loadgen": "loadgen.c", "nfq_reader": "nfq_reader.c"}
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]


class CUnavailable(RuntimeError):
    """No compiler, or the program did not build: the message says which (for `n/a (why)`)."""


def build(name: str, build_dir: Path = BUILD_DIR) -> Path:
    """The built program `name` (compiled now if missing or older than its source)."""
    src = C_DIR / PROGRAMS[name]
    out = build_dir / name
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        raise CUnavailable(f"no C compiler ({os.environ.get('CC', 'gcc')} not found)")
    build_dir.mkdir(parents=True, exist_ok=True)
    # Built under a private name and renamed: a test and a bench may build at the same time.
    tmp = build_dir / f".{name}.{os.getpid()}"
    proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(src)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise CUnavailable(f"{src.name} did not compile: {first}")
    os.replace(tmp, out)
    return out


def try_build(name: str) -> tuple[Path | None, str]:
    """(the program, "") or (None, why it is unavailable)."""
    try:
        return build(name), ""
    except (CUnavailable, OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
