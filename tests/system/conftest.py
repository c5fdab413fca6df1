"""The .deb, built once per test session with `make deb` (into a temp dir, not the tree)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, need_tool


@pytest.fixture(scope="session")
def built_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("dpkg-buildpackage", "dpkg-parsechangelog", "git"):
        need_tool(tool)
    out = tmp_path_factory.mktemp("deb")
    res = subprocess.run(
        ["make", "-s", "deb", f"DEB_OUT={out}"], cwd=PROJECT_ROOT, capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (deb,) = out.glob("l2tpreorder_*_all.deb")
    return deb
