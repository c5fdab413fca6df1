"""The coverage-guided fuzzer (fuzz/fuzz_engine.py): a bounded run in the suite, and every saved
crash input (tests/core/regressions/) and seed replayed through the same checks."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import PROJECT_ROOT, need

HARNESS = PROJECT_ROOT / "fuzz" / "fuzz_engine.py"
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
FUZZ_SECONDS = 15


def load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_engine", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bounded_atheris_run_finds_no_crash(tmp_path: Path) -> None:
    need(importlib.util.find_spec("atheris") is not None, "the atheris package (extra 'fuzz')")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            f"-max_total_time={FUZZ_SECONDS}",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 120,
        cwd=PROJECT_ROOT,
    )
    log = proc.stderr[-4000:]
    assert proc.returncode == 0, log
    assert not list(tmp_path.glob("crash-*")), log
    runs = re.search(r"Done (\d+) runs in (\d+) second", proc.stderr)
    assert runs is not None, log
    assert int(runs.group(1)) > 0
    assert len(list(corpus.iterdir())) > len(load_harness().seed_inputs()), "no coverage growth"
    print(f"atheris: {runs.group(0)}s, corpus {len(list(corpus.iterdir()))} inputs")


def replay_cases() -> list[tuple[str, bytes]]:
    """Saved crash inputs (tests/core/regressions/*.bin) and the harness's seeds."""
    cases = [(p.name, p.read_bytes()) for p in sorted(REGRESSIONS.glob("*.bin"))]
    cases += [(f"seed-{i:02d}", seed) for i, seed in enumerate(load_harness().seed_inputs())]
    return cases


@pytest.mark.parametrize(
    ("name", "data"), replay_cases(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_saved_input_passes_the_harness_checks(name: str, data: bytes) -> None:
    load_harness().check_input(data)
