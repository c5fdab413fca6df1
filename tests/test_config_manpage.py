"""man/l2tpreorder.yaml.5: generated from the settings table and config.example.yaml's comments
(man/config_page.py), up to date, every key documented, rendered by man without warnings."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from types import ModuleType

import pytest

from l2tpreorder.cli import build_parser
from l2tpreorder.config import SETTINGS, Config
from l2tpreorder.config.settings import shown
from tests.conftest import PROJECT_ROOT, need_tool

PAGE = PROJECT_ROOT / "man" / "l2tpreorder.yaml.5"
GENERATOR = PROJECT_ROOT / "man" / "config_page.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_page", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def documented_keys() -> dict[str, str]:
    """Each `.TP` entry's keys -> the text under it, roff's `\\-` read as `-`."""
    text = PAGE.read_text().replace("\\-", "-")
    entries: dict[str, str] = {}
    for block in text.split("\n.TP\n")[1:]:
        heading, _, body = block.partition("\n")
        body = body.split("\n.S")[0]
        for key in re.findall(r"\\fB([a-z_.]+)\\fR", heading):
            entries[key] = body
    return entries


def test_the_page_is_what_the_generator_writes() -> None:
    checked = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], cwd=PROJECT_ROOT, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_every_key_is_documented_with_its_default() -> None:
    entries = documented_keys()
    assert set(entries) == {s.key for s in SETTINGS}
    defaults = Config()
    for s in SETTINGS:
        body = entries[s.key]
        assert len(body.split()) >= 8, (s.key, body)  # a sentence, not just the facts line
        if s.listed:
            assert f"Default: {shown(s, defaults)}." in body, (s.key, body)
        if s.flag is not None:
            assert f"run {s.flag.name}" in body, (s.key, body)
        if s.old_key is not None:
            assert f"top-level key {s.old_key}" in body, (s.key, body)
        assert ("restart the daemon" in body) == s.restart, (s.key, body)


def test_a_key_the_example_does_not_explain_stops_the_generator() -> None:
    gen = generator()
    example = (PROJECT_ROOT / "config.example.yaml").read_text()
    said = gen.read_example(example)
    assert said.keys["reorder.timeout_ms"].startswith("Longest a data packet is held")
    del said.keys["reorder.timeout_ms"]
    timeout = next(s for s in SETTINGS if s.key == "reorder.timeout_ms")
    with pytest.raises(SystemExit, match=re.escape("reorder.timeout_ms")):
        gen.entry([timeout], said, Config())


def test_page_renders_without_warnings() -> None:
    man = need_tool("man")
    res = subprocess.run(
        [man, "--warnings", "-l", str(PAGE)],
        capture_output=True, text=True, timeout=60,
        env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "relay.listen" in res.stdout and "EXAMPLES" in res.stdout


def test_l2tpreorder_8_examples_are_commands_the_cli_accepts() -> None:
    """Each `l2tpreorder ...` line of l2tpreorder(8)'s EXAMPLES parses with the real CLI."""
    text = (PROJECT_ROOT / "man" / "l2tpreorder.8").read_text().replace("\\-", "-")
    examples = text.split("\n.SH EXAMPLES\n", 1)[1].split("\n.SH ", 1)[0]
    lines = [ln for ln in examples.splitlines() if ln.startswith("l2tpreorder ")]
    assert len(lines) >= 6, lines
    parser = build_parser()
    for line in lines:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit as refused:  # argparse's way of saying no
            pytest.fail(f"l2tpreorder(8) EXAMPLES: {line!r} is refused ({refused})")
    assert "l2tpreorder.yaml (5)" in text.split("\n.SH SEE ALSO\n", 1)[1]
