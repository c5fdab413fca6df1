"""`l2tpreorder reload`: make the running daemon re-read its file; returns when it was applied
(exit 0) or refused (exit 1), so it can be the unit's ExecReload."""

from __future__ import annotations

import argparse
import sys

from l2tpreorder.commands.client import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    ControlError,
    add_config_argument,
    request,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def main(args: argparse.Namespace) -> int:
    """Ask the daemon to re-read its file; returns when it was applied (0) or refused (1)."""
    try:
        answer = request("reload", args.config)
    except ControlError as e:
        print(f"l2tpreorder: reload: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        print(f"l2tpreorder: reload refused: {answer.get('error')}", file=sys.stderr)
        return EXIT_REFUSED
    for note in answer.get("not_applied", []):
        print(f"l2tpreorder: reload: {note}", file=sys.stderr)
    print(f"reloaded: {answer.get('status', '')}")
    return EXIT_OK
