"""`run`'s override flags, generated from config.SETTINGS: each setting with a flag is an option
of `run`, and survives the round trip to argv (the in-path supervisor hands them to every
worker), so none is silently dropped; the flags are written out in one place only."""

from __future__ import annotations

import argparse
import subprocess
import sys

from l2tpreorder.config import SETTINGS, load_from_args
from l2tpreorder.daemon.service import add_arguments, override_argv
from tests.conftest import PROJECT_ROOT

NOT_OVERRIDES = {"help", "config", "inpath_worker"}  # the file itself; the worker's own flag
FLAGGED = [s for s in SETTINGS if s.flag is not None]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_every_override_flag_survives_the_round_trip() -> None:
    argv = [
        "--config", "/etc/x.yaml", "--listen", "192.0.2.1:1701", "--listen", "[2001:db8::1]:1701",
        "--lns", "127.0.0.1:1702", "--timeout", "12.5", "--log-level", "debug",
        "--socket-buffer", "4194304", "--udp-gso", "--inpath-worker", "3",
        "--sequencing", "strip", "--max-held", "9", "--adaptive", "false",
    ]  # fmt: skip
    args = parser().parse_args(argv)
    again = parser().parse_args(override_argv(args))
    overrides = {a.dest for a in parser()._actions} - NOT_OVERRIDES
    assert overrides == {s.flag.dest for s in FLAGGED if s.flag is not None}
    for dest in overrides:
        assert getattr(args, dest) is not None, f"{dest}: give it a value in argv above"
        assert getattr(again, dest) == getattr(args, dest), dest
    assert again.config is None and again.inpath_worker is None


def test_flags_reach_the_config_in_program_units() -> None:
    args = parser().parse_args(
        ["--timeout", "12.5", "--max-held", "9", "--sequencing", "strip", "--udp-gso",
         "--adaptive", "false"]
    )  # fmt: skip
    config = load_from_args(args)
    assert config.engine.adaptive is False  # the file's default is true (issue 22)
    assert config.engine.reorder_timeout == 0.0125
    assert config.engine.max_held_per_session == 9
    assert config.engine.sequencing.value == "strip"
    assert config.udp_gso is True


def test_no_flags_no_overrides() -> None:
    assert override_argv(parser().parse_args([])) == []


def test_every_setting_with_a_flag_is_in_run_help() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "l2tpreorder", "run", "--help"],
        capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    help_text = " ".join(res.stdout.split())  # argparse wraps lines
    for setting in FLAGGED:
        assert setting.flag is not None
        assert setting.flag.name in help_text, setting.key
        assert f"(overrides {setting.key})" in help_text, setting.key
    assert "--inpath-worker" not in help_text  # internal


def test_each_flag_is_written_out_once_in_the_source() -> None:
    """One declaration per setting: `run`, the override handling, the reload report and
    `replay pcap` all take the flag from SETTINGS, not from a copy of its name."""
    # `--lns` of the capture tools is another option: the LNS address in a capture.
    other_meaning = {
        "--lns": ["tools/direction.py", "tools/impair.py", "tools/replay.py"],
    }
    sources = sorted((PROJECT_ROOT / "l2tpreorder").rglob("*.py"))
    for setting in FLAGGED:
        assert setting.flag is not None
        needle = f'"{setting.flag.name}"'
        where = [str(p.relative_to(PROJECT_ROOT / "l2tpreorder")) for p in sources]
        where = [w for w, p in zip(where, sources, strict=True) if needle in p.read_text()]
        expected = ["config/settings.py", *other_meaning.get(setting.flag.name, [])]
        assert where == expected, (setting.flag.name, where)
