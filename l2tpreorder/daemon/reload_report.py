"""What a reload changed, in the file's keys and units (`reorder.timeout_ms: 100 -> 40`).

Derived from config.SETTINGS, the one declaration of every setting: `changes(old, new)` names
each setting whose value differs; `overridden(file, effective)` names the settings where a
command-line flag wins over the file (flags win on reload too, which surprises when the file
was edited to change exactly that setting); `restart_needed(old, new)` names the changes a
reload cannot apply (new sockets, another mode, other queues, another user).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from l2tpreorder.config import SETTINGS, Config, Setting
from l2tpreorder.config.settings import shown, value_of

RESTART = "restart the service to apply it"


def _same(setting: Setting, a: Any, b: Any) -> bool:
    if setting.field == "listen":  # the order of the sockets does not matter
        return set(a) == set(b)
    return bool(a == b)


def _differing(old: Config, new: Config) -> Iterator[tuple[Setting, str, str]]:
    """(setting, old as the file spells it, new likewise) for every listed setting that
    differs."""
    for setting in SETTINGS:
        if setting.listed and value_of(setting, old) != value_of(setting, new):
            yield setting, shown(setting, old), shown(setting, new)


def changes(old: Config, new: Config) -> list[str]:
    """`key: old -> new` for every setting that differs, in the file's units."""
    return [f"{s.key}: {a} -> {b}" for s, a, b in _differing(old, new)]


def overridden(file: Config, effective: Config) -> list[str]:
    """Settings where a command-line flag replaced the file's value."""
    out = []
    for setting, a, b in _differing(file, effective):
        flag = setting.flag.name if setting.flag is not None else "a command-line flag"
        out.append(f"{setting.key} = {b} from {flag} overrides the file's {a}")
    return out


def _applies_to(setting: Setting, mode: str) -> bool:
    """Relay-only settings matter to a relay, in-path-only ones to in-path workers."""
    return setting.section not in ("relay", "inpath") or setting.section == mode


def _needing_restart(old: Config, new: Config) -> Iterator[Setting]:
    for setting in SETTINGS:
        if not (setting.restart and setting.listed and _applies_to(setting, old.mode)):
            continue
        if not _same(setting, value_of(setting, old), value_of(setting, new)):
            yield setting


def restart_fields(old: Config, new: Config) -> list[str]:
    """The `Config` fields of `restart_needed`: a reload keeps their running values."""
    return [s.field for s in _needing_restart(old, new)]


def restart_needed(old: Config, new: Config) -> list[str]:
    """The changed settings a reload cannot apply (the running values stay), one line each."""
    out = []
    for setting in _needing_restart(old, new):
        out.append(
            f"{setting.key} changed to {shown(setting, new)} but a reload cannot apply it "
            f"(still {shown(setting, old)}): {RESTART}"
        )
    return out
