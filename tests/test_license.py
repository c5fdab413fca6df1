"""The MIT licence ships in the wheel, declared the way current packaging expects (PEP 639)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_wheel_carries_the_license_without_a_deprecation_warning(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(PROJECT_ROOT / name, src / name)
    shutil.copytree(
        PROJECT_ROOT / "l2tpreorder", src / "l2tpreorder", ignore=shutil.ignore_patterns("*.pyc")
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    output = built.stdout + built.stderr
    # setuptools warned "`project.license` as a TOML table is deprecated" for `{ text = "MIT" }`.
    warned = [
        line
        for line in output.lower().splitlines()
        if "licen" in line and ("deprecat" in line or "warn" in line)
    ]
    assert warned == []
    (wheel,) = tmp_path.glob("l2tpreorder-*.whl")
    with zipfile.ZipFile(wheel) as z:
        info = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = z.read(info).decode()
        licence = z.read(info.replace("METADATA", "licenses/LICENSE")).decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "Copyright (c) 2026 The l2tpreorder authors" in licence
    assert licence == (PROJECT_ROOT / "LICENSE").read_text()
