"""`l2tpreorder check-config FILE`: validate, name every mistake, then print every effective
setting as a YAML file that means the same (like `nginx -T`: the output loads again)."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import yaml

from l2tpreorder.config.errors import ConfigError, ConfigErrors
from l2tpreorder.config.host import check_host
from l2tpreorder.config.load import DEFAULT_CONFIG, config_file, load_config
from l2tpreorder.config.model import Config
from l2tpreorder.config.settings import SETTINGS, Setting, shown, value_of


def effective(config: Config) -> list[tuple[str, str]]:
    """(key, value as the file would spell it) for every setting, defaults included."""
    return [(s.key, shown(s, config)) for s in SETTINGS if s.listed]


def as_yaml_data(setting: Setting, value: Any) -> object:
    """The program value as YAML data the file may hold: what show() spells, read back as YAML,
    when that parses to the same value again; else the spelling as a string."""
    if setting.dump is not None:
        return setting.dump(value)
    text = setting.show(value)
    try:
        data = yaml.safe_load(text)
        same = bool(setting.parse(setting.key, data) == value)
    except (yaml.YAMLError, ConfigError):
        same = False
    return data if same else text


def describe(config: Config) -> str:
    """Every effective setting as nested YAML, in the file's order and sections; loading it
    gives the same configuration (check-config prints it)."""
    document: dict[str, Any] = {}
    for setting in SETTINGS:
        value = value_of(setting, config)
        if not (setting.listed if setting.spells is None else setting.spells(value)):
            continue  # another key spells it (one in-path queue: `queue: N`)
        data = as_yaml_data(setting, value)
        if setting.section:
            document.setdefault(setting.section, {})[setting.name] = data
        else:
            document[setting.key] = data
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).rstrip("\n")


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
    parser.add_argument(
        "file", nargs="?", help=f"YAML configuration file to validate (default {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--config", "-c", metavar="FILE", dest="config", help="the same, as `run` takes it"
    )


def main(args: Any) -> int:
    if args.config and args.file and args.config != args.file:
        print("error: give one configuration file: FILE or --config FILE", file=sys.stderr)
        return 2
    path = config_file(args.config or args.file)
    if path is None:
        print(
            f"error: no configuration file: give FILE or --config FILE ({DEFAULT_CONFIG}, "
            "the default, does not exist)",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config(path)
        check_host(config)
    except ConfigErrors as e:
        for error in e.errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"# {path}: OK; every effective setting, defaults included:")
    print(describe(config))
    if replace(config, source=None) == Config():
        print("note: every value is the default (the file changes nothing)", file=sys.stderr)
    for note in notes(config):
        print(f"note: {note}", file=sys.stderr)
    return 0
