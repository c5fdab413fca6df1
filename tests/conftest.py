"""Shared test helpers: real tools are required under CI=true, optional on a laptop."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = PROJECT_ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, what: str) -> None:
    """Skip the test when `what` is unavailable, but fail under CI=true: CI never skips."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {what} is unavailable", pytrace=False)
    pytest.skip(f"{what} is unavailable")


def need_tool(name: str) -> str:
    """Path of an executable on PATH, or skip (fail under CI)."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    need(path is not None, f"the program {name!r}")
    assert path is not None
    return path


def need_root() -> None:
    need(os.geteuid() == 0, "root (network namespaces)")


def shared_pcap(name: str) -> Path:
    """A capture from ../shared/pcaps, or skip (fail under CI) when ../shared is absent."""
    path = SHARED_DIR / "pcaps" / name
    need(path.is_file(), f"shared capture {path}")
    return path
