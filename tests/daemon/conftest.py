"""The daemon tests' shared fixture: `rig`, one real `l2tpreorder run` in each mode
(tests/mode_harness.py), for the behaviours written once for both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mode_harness import MODES, ModeRig, open_rig


@pytest.fixture(params=MODES)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModeRig]:
    """Relay mode, then in-path mode (a test may name other modes: parametrize indirect)."""
    with open_rig(request.param, tmp_path) as r:
        yield r
