"""The command line as an operator pipes it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_reader_closing_the_pipe_early_gives_no_traceback() -> None:
    """`l2tpreorder check-config FILE | head -1` must not end in a BrokenPipeError traceback."""
    cmd = (
        f"{sys.executable} -m l2tpreorder check-config {PROJECT_ROOT / 'config.example.yaml'}"
        " | head -c 1"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert done.stdout  # head did read something, so the pipe really closed early
    assert "Traceback" not in done.stderr, done.stderr
