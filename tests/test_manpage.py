"""man/l2tpreorder.8 (written by hand) describes exactly the CLI's commands and options."""

from __future__ import annotations

import argparse
import re
import subprocess

from l2tpreorder.cli import build_parser
from tests.conftest import PROJECT_ROOT, need_tool

MANPAGE = PROJECT_ROOT / "man" / "l2tpreorder.8"


def _sections() -> dict[str, str]:
    """`.SS NAME` -> its text, with roff's `\\-` read as `-`."""
    sections: dict[str, str] = {}
    name = ""
    for line in MANPAGE.read_text().replace("\\-", "-").splitlines():
        if line.startswith(".SS "):
            name = line[4:].strip().strip('"')
            sections[name] = ""
        elif line.startswith(".SH "):
            name = ""
        elif name:
            sections[name] += line + "\n"
    return sections


def _leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, set[str]]:
    """Each runnable command ("run", "replay pcap") -> its option strings (without -h)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        options = {  # hidden options (help=SUPPRESS) are internal: not documented
            s
            for a in parser._actions
            if a.help != argparse.SUPPRESS
            for s in a.option_strings
            if s not in ("-h", "--help")
        }
        return {prefix.strip(): options}
    leaves: dict[str, set[str]] = {}
    for name, sub in subs[0].choices.items():
        leaves.update(_leaf_commands(sub, f"{prefix} {name}"))
    return leaves


def test_every_command_and_option_is_in_the_man_page() -> None:
    sections = _sections()
    leaves = _leaf_commands(build_parser())
    assert "run" in leaves and "replay pcap" in leaves  # the walk itself works
    for command, options in leaves.items():
        assert command in sections, f"man/l2tpreorder.8 has no section (.SS) for {command}"
        text = sections[command]
        for option in sorted(options):
            pattern = rf"(?<![\w-]){re.escape(option)}(?![\w-])"
            assert re.search(pattern, text), (
                f"{command} {option} is not in the man page: describe it in man/l2tpreorder.8"
            )


def test_every_command_in_the_man_page_exists() -> None:
    leaves = _leaf_commands(build_parser())
    stale = set(_sections()) - set(leaves)
    assert not stale, f"the man page describes commands the CLI does not have: {stale}"


def test_man_page_renders_without_warnings() -> None:
    man = need_tool("man")
    res = subprocess.run(
        [man, "--warnings", "-l", str(MANPAGE)],
        capture_output=True, text=True, timeout=60, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "check-config" in res.stdout
