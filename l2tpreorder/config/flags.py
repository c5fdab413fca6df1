"""Command-line flags that override the file, generated from SETTINGS.

`run` gets one option per Setting that declares a `Flag` (`add_run_arguments`); the parsed
options become the file's overrides (`load_from_args`) and argv again for the in-path workers
(`override_argv`). `replay pcap` takes the engine's subset the same way. Flags win over the file,
also on reload, and are checked with the file's rules; errors name the flag (`--timeout = -1`).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from l2tpreorder.config.load import load_config
from l2tpreorder.config.model import Config, check_late, check_lns, check_upstream_bind
from l2tpreorder.config.settings import SETTINGS, Flag, Setting
from l2tpreorder.config.values import format_address

FLAGGED: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.flag is not None)
RUN_FLAGS = tuple(s.key for s in FLAGGED)  # `run` takes every one


def _flagged(keys: Iterable[str]) -> list[tuple[Setting, Flag]]:
    wanted = set(keys)
    unknown = wanted - {s.key for s in FLAGGED}
    if unknown:
        raise KeyError(f"no flag overrides {sorted(unknown)}")
    return [(s, s.flag) for s in FLAGGED if s.key in wanted and s.flag is not None]


def add_setting_arguments(parser: argparse.ArgumentParser, keys: Iterable[str]) -> None:
    """One option per setting in `keys` (file keys, e.g. "reorder.timeout_ms")."""
    for setting, flag in _flagged(keys):
        kwargs: dict[str, Any] = {"help": f"{flag.help} (overrides {setting.key})"}
        if flag.action == "store_true":
            kwargs.update(action="store_true", default=None)
        else:
            if flag.action is not None:
                kwargs["action"] = flag.action
            if flag.metavar is not None:
                kwargs["metavar"] = flag.metavar
            if flag.type is not None:
                kwargs["type"] = flag.type
            if flag.choices is not None:
                kwargs["choices"] = flag.choices
        parser.add_argument(flag.name, **kwargs)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """`run`'s options: the file, every overriding flag, and the in-path worker's own."""
    parser.add_argument(
        "--config", "-c", metavar="FILE",
        help="YAML configuration file (default /etc/l2tpreorder/config.yaml when it exists, "
        "else the built-in defaults)",
    )  # fmt: skip
    add_setting_arguments(parser, RUN_FLAGS)
    # mode: inpath with several queues: the supervisor starts itself once per queue with this.
    parser.add_argument("--inpath-worker", type=int, metavar="QUEUE", help=argparse.SUPPRESS)


def overrides_from_args(
    args: argparse.Namespace, keys: Iterable[str] = RUN_FLAGS
) -> dict[str, Any]:
    """The parsed flags as with_overrides() keywords (None: not given)."""
    return {s.override: getattr(args, f.dest) for s, f in _flagged(keys) if s.override}


def override_argv(args: argparse.Namespace, keys: Iterable[str] = RUN_FLAGS) -> list[str]:
    """The flags that override the file, as argv again: the in-path supervisor starts its
    workers with them, so every queue runs with what the operator asked for, not the file's."""
    out: list[str] = []
    for _, flag in _flagged(keys):
        value = getattr(args, flag.dest)
        if value is None:
            continue
        if flag.action == "store_true":
            out += [flag.name] if value else []
        elif flag.action == "append":
            for item in value:
                out += [flag.name, str(item)]
        else:
            out += [flag.name, repr(value) if isinstance(value, float) else str(value)]
    return out


def load_from_args(args: argparse.Namespace, keys: Iterable[str] = RUN_FLAGS) -> Config:
    """`--config FILE` (defaults without one) with the flags in `keys` on top."""
    return load_with_overrides(args.config, **overrides_from_args(args, keys))


def load_file_only(args: argparse.Namespace) -> Config:
    """`--config FILE` alone: what the file says, to name the settings a flag overrides."""
    return load_with_overrides(args.config)


def with_overrides(config: Config, **flags: Any) -> Config:
    """Apply command-line flags on top of the file (they win, also on reload).

    `flags` are the `override` keywords of SETTINGS (None: not given). Flags are checked with
    the file's rules and errors name the flag (`--timeout = -1: ...`).
    """
    raw_lns, lns_flag = flags.get("lns"), "relay.lns"
    parsed: dict[str, dict[str, Any]] = {"": {}, "engine": {}}
    for setting in FLAGGED:
        value = flags.pop(setting.override, None) if setting.override else None
        if value is None or value == []:
            continue
        assert setting.flag is not None
        parse = setting.parse_flag or setting.parse
        where, _, attr = setting.field.rpartition(".")
        parsed[where][attr] = parse(setting.flag.name, value)
        if setting.field == "lns":
            lns_flag = setting.flag.name
    if flags:
        raise TypeError(f"with_overrides: no setting is overridden by {sorted(flags)}")
    if not parsed[""] and not parsed["engine"]:
        return config
    kw = parsed[""]
    if parsed["engine"]:
        kw["engine"] = replace(config.engine, **parsed["engine"])
    new = replace(config, **kw)
    # named as given: the flag's value, or the file's lns that --listen now covers
    check_lns(lns_flag, raw_lns if "lns" in kw else format_address(new.lns), new)
    check_upstream_bind("relay.upstream_bind", new)  # --lns of the other family
    # --sequencing preserve over a file's late: deliver: the refusal names the flag
    preserve_from = "sequencing" in parsed["engine"]
    check_late(new, "--sequencing preserve" if preserve_from else "reorder.sequencing: preserve")
    return new


def load_with_overrides(path: str | Path | None, **flags: Any) -> Config:
    """The file (all defaults without one) with `with_overrides(**flags)` on top.

    `run` and `replay pcap` both build their configuration here, so a capture is replayed with
    exactly the engine settings the daemon would run with.
    """
    return with_overrides(load_config(path) if path else Config(), **flags)
