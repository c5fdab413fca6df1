"""Build the compiled hot path: `python -m l2tpreorder.mypyc_build` (run by `make venv`).

Compiles l2tpreorder.build.COMPILED_MODULES with mypyc into l2tpreorder/_compiled/, next to
(not over) the .py files, so that both builds exist in one tree and L2TPREORDER_BUILD picks one
at run time. Without a working C compiler and Python headers it writes the reason to
_compiled/not-built.txt, exits 0, and the daemon runs pure (and says so once when it starts).
Needs mypy (the `dev` extra), which is a build-time tool only: the daemon never imports it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from l2tpreorder.build import (
    COMPILED_DIR,
    COMPILED_MODULES,
    DIGESTED_MODULES,
    MANIFEST,
    NOT_BUILT,
    PACKAGE_DIR,
    source_digest,
    source_path,
)

GROUP = "l2tpreorder"  # mypyc's shared library is then `l2tpreorder__mypyc`


def compiler_problem(tmp: Path) -> str | None:
    """None if the C compiler builds a file that includes Python.h; else what is missing."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    probe = tmp / "probe.c"
    probe.write_text("#include <Python.h>\nint l2tpreorder_probe(void) { return 0; }\n")
    include = sysconfig.get_paths()["include"]
    argv = [*shlex.split(cc), "-c", str(probe), "-I", include, "-o", str(tmp / "probe.o")]
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"no C compiler at build time ({cc}: {error})"
    if run.returncode != 0:
        return f"no working C compiler or Python headers at build time ({cc} failed)"
    return None


def compile_into(staging: Path, tmp: Path) -> None:
    """mypyc + setuptools build_ext of COMPILED_MODULES, extension files under `staging`."""
    from mypyc.build import mypycify  # build-time only
    from setuptools import Distribution

    paths = [str(source_path(module)) for module in COMPILED_MODULES]
    config = str(PACKAGE_DIR.parent / "pyproject.toml")
    extensions = mypycify(
        ["--config-file", config, *paths],
        opt_level="3",
        multi_file=True,  # one C file per module: the two cores compile in parallel
        target_dir=str(tmp / "c"),
        group_name=GROUP,
    )
    dist = Distribution({"ext_modules": extensions})
    build_ext = dist.get_command_obj("build_ext")
    build_ext.build_lib = str(staging)
    build_ext.build_temp = str(tmp / "obj")
    build_ext.parallel = os.cpu_count() or 1
    build_ext.ensure_finalized()
    build_ext.run()


def write_manifest(staging: Path, digests: dict[str, str]) -> None:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    runtime = f"{GROUP}__mypyc"
    if not (staging / f"{runtime}{suffix}").is_file():
        raise SystemExit(f"mypyc_build: {runtime}{suffix} was not built in {staging}")
    manifest = {
        "runtime": runtime,
        "runtime_file": f"{runtime}{suffix}",
        "ext_suffix": suffix,
        "sources": digests,
    }
    (staging / MANIFEST.name).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def replace_compiled(staging: Path) -> None:
    """Swap the new build in: the old one goes first, so a failed swap leaves none (pure)."""
    if COMPILED_DIR.exists():
        shutil.rmtree(COMPILED_DIR)
    shutil.move(str(staging), COMPILED_DIR)


def not_built(reason: str) -> int:
    if COMPILED_DIR.exists():
        shutil.rmtree(COMPILED_DIR)
    COMPILED_DIR.mkdir()
    NOT_BUILT.write_text(reason + "\n")
    print(f"mypyc_build: pure-Python build: {reason}")
    return 0


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="l2tpreorder-mypyc-") as name:
        tmp = Path(name)
        problem = compiler_problem(tmp)
        if problem is not None:
            return not_built(problem)
        # Digests before compiling: a source edited during the build makes the build stale.
        digests = {module: source_digest(module) for module in DIGESTED_MODULES}
        staging = tmp / "out"
        try:
            compile_into(staging, tmp)
        except (Exception, SystemExit) as error:  # mypyc and distutils exit on errors
            if os.environ.get("L2TPREORDER_BUILD") == "compiled":
                raise
            return not_built(f"mypyc build failed ({type(error).__name__}: {error})")
        write_manifest(staging, digests)
        replace_compiled(staging)
    seconds = time.monotonic() - started
    print(f"mypyc_build: compiled {len(COMPILED_MODULES)} modules in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
