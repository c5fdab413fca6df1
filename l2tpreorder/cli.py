"""The `l2tpreorder` command line: one sub-command per module, dispatched from one table.

Each command module exposes `add_arguments(parser)` and `main(args) -> int`. Keeping the table
here (and the code in the modules) lets a newcomer find a command's behaviour in one file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from l2tpreorder import __version__
from l2tpreorder.build import describe

# name -> (module, one-line help). `replay pcap` is nested: the module adds its own sub-parser.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("l2tpreorder.daemon.service", "run the daemon (relay or in-path mode, per the config)"),
    "check-config": ("l2tpreorder.config", "validate a configuration file and exit"),
    "status": ("l2tpreorder.commands.status", "show the running daemon's LAC peers and sessions"),
    "reload": (
        "l2tpreorder.commands.reload",
        "make the running daemon re-read its file; wait for it",
    ),
    "replay": (
        "l2tpreorder.tools.replay",
        "replay a capture through the engine (replay pcap FILE)",
    ),
    "rules": ("l2tpreorder.tools.rules", "print the firewall rules for in-path mode (NFQUEUE)"),
    "impair": ("l2tpreorder.tools.impair", "write a capture with reproducible reordering/loss"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2tpreorder",
        description="L2TPv2 data-plane reorder relay for an LNS such as xl2tpd.",
    )
    parser.add_argument(
        "--version", action="version", version=f"l2tpreorder {__version__}, {describe()}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args._module.main(args)
    except BrokenPipeError:
        # The reader went away (`replay pcap x | head`): stop quietly, as other tools do. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
