"""`reorder.adaptive`, `reorder.min_timeout_ms` and `reorder.late` in the config file and
`check-config`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from l2tpreorder.config import (
    Config,
    ConfigError,
    config_from_dict,
    effective,
    notes,
    with_overrides,
)
from l2tpreorder.core.engine import Late
from tests.test_config import check_config_listing

ISSUE_EXAMPLE = "reorder: {adaptive: true, timeout_ms: 100}\n"


def test_defaults_are_adaptive_between_2_and_100_ms() -> None:
    """Issue 22: adaptive on by default in the file (and so in `run` and `replay`), now that a
    packet whose timeout was too short is delivered late instead of lost; EngineConfig() itself
    keeps the fixed timeout (the engine's unit tests are written against it)."""
    e = Config().engine
    assert (e.adaptive, e.min_timeout, e.reorder_timeout) == (True, 0.002, 0.1)
    assert config_from_dict(None).engine == e == config_from_dict({"reorder": {}}).engine
    assert config_from_dict({"reorder": {"adaptive": False}}).engine.adaptive is False
    shown = dict(effective(Config()))
    assert (shown["reorder.adaptive"], shown["reorder.min_timeout_ms"]) == ("true", "2")
    assert notes(Config()) == []


def test_file_keys_reach_the_engine_config() -> None:
    c = config_from_dict({"reorder": {"adaptive": True, "min_timeout_ms": 5, "timeout_ms": 80}})
    assert (c.engine.adaptive, c.engine.min_timeout, c.engine.reorder_timeout) == (
        True,
        0.005,
        0.08,
    )
    shown = dict(effective(c))
    assert (shown["reorder.adaptive"], shown["reorder.min_timeout_ms"]) == ("true", "5")
    assert notes(c) == []
    # a floor above the cap: the cap wins (said so, not refused)
    c = config_from_dict({"reorder": {"adaptive": True, "min_timeout_ms": 500}})
    (note,) = notes(c)
    assert "the adaptive timeout stays at 100 ms" in note


@pytest.mark.parametrize(
    ("reorder", "message"),
    [
        ({"adaptive": "yes"}, "reorder.adaptive = 'yes': expected true or false"),
        ({"min_timeout_ms": 0}, "min_timeout_ms = 0: expected a number of milliseconds > 0 "),
        ({"min_timeout_ms": -1}, "reorder.min_timeout_ms = -1"),
        ({"min_timeout_ms": 60_001}, "<= 60000"),
    ],
)
def test_bad_values_name_the_key(reorder: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"reorder": reorder})
    assert message in str(err.value)


def test_check_config_accepts_the_issue_example_and_says_what_it_means(tmp_path: Path) -> None:
    path = tmp_path / "adaptive.yaml"
    path.write_text(ISSUE_EXAMPLE)
    run = subprocess.run(
        [sys.executable, "-m", "l2tpreorder", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    shown = check_config_listing(run.stdout)
    assert shown["reorder.adaptive"] is True
    assert (shown["reorder.timeout_ms"], shown["reorder.min_timeout_ms"]) == (100, 2)
    # no note about the timeouts (the example is today's default: check-config says so)
    assert "note: reorder" not in run.stderr


def test_check_config_notes_a_floor_above_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "floor.yaml"
    path.write_text("reorder: {adaptive: true, timeout_ms: 10, min_timeout_ms: 20}\n")
    run = subprocess.run(
        [sys.executable, "-m", "l2tpreorder", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "note: reorder.min_timeout_ms is above reorder.timeout_ms" in run.stderr
    assert "stays at 10 ms" in run.stderr


def test_late_is_auto_by_default_and_deliver_is_refused_with_preserve() -> None:
    """`reorder.late` (issue 22): auto delivers late packets in renumber and strip mode and
    drops them in preserve mode; asking to deliver them in preserve mode names both keys."""
    assert dict(effective(Config()))["reorder.late"] == "auto"
    assert config_from_dict({"reorder": {"late": "drop"}}).engine.late is Late.DROP
    c = config_from_dict({"reorder": {"late": "deliver", "sequencing": "strip"}})
    assert c.engine.late is Late.DELIVER
    with pytest.raises(ConfigError) as e:
        config_from_dict({"reorder": {"late": "deliver", "sequencing": "preserve"}})
    assert "reorder.late" in str(e.value) and "reorder.sequencing: preserve" in str(e.value)
    base = config_from_dict({"reorder": {"late": "deliver"}})
    with pytest.raises(ConfigError, match=r"--sequencing preserve"):  # the flag, not the file
        with_overrides(base, sequencing="preserve")
    with pytest.raises(ConfigError, match="expected one of auto, deliver, drop"):
        config_from_dict({"reorder": {"late": "keep"}})
