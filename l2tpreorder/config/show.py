"""`l2tpreorder check-config FILE`: validate, then list every effective setting by its key."""

from __future__ import annotations

import sys
from typing import Any

from l2tpreorder.config.errors import ConfigError
from l2tpreorder.config.host import check_host
from l2tpreorder.config.load import load_config
from l2tpreorder.config.model import Config
from l2tpreorder.config.settings import SETTINGS, shown


def effective(config: Config) -> list[tuple[str, str]]:
    """(key, value as the file would spell it) for every setting, defaults included."""
    return [(s.key, shown(s, config)) for s in SETTINGS if s.listed]


def describe(config: Config) -> str:
    """Every effective setting, one per line (check-config prints it)."""
    return "\n".join(f"{key}: {value}" for key, value in effective(config))


def notes(config: Config) -> list[str]:
    """What a valid config means but its values do not say (check-config prints these too)."""
    e = config.engine
    if e.adaptive and 0 < e.reorder_timeout < e.min_timeout:
        return [
            f"reorder.min_timeout_ms is above reorder.timeout_ms: the adaptive timeout stays at "
            f"{e.reorder_timeout * 1000:g} ms (the cap wins)"
        ]
    if e.adaptive and e.reorder_timeout == 0:
        return ["reorder.adaptive has no effect with reorder.timeout_ms 0 (nothing is held)"]
    return []


def add_arguments(parser: Any) -> None:
    parser.add_argument("file", nargs="?", help="YAML configuration file to validate")
    parser.add_argument(
        "--config", "-c", metavar="FILE", dest="config", help="the same, as `run` takes it"
    )


def main(args: Any) -> int:
    path = args.config or args.file
    if path is None or (args.config and args.file and args.config != args.file):
        print("error: give one configuration file: FILE or --config FILE", file=sys.stderr)
        return 2
    try:
        config = load_config(path)
        check_host(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: OK")
    print(describe(config))
    for note in notes(config):
        print(f"note: {note}", file=sys.stderr)
    return 0
