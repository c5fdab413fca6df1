"""What a reload changed, in words an operator can check against the file.

`changes(old, new)` walks the two frozen configurations (nested dataclasses) and names every
field whose value differs; `overridden(file, effective)` names the settings where a command-line
flag wins over what the file says (flags win on reload too, which surprises when the file was
edited to change exactly that setting).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from l2tpreorder.config import format_address

SKIP = frozenset({"source"})
# Config field -> the command-line flag that sets it (service.add_arguments).
FLAGS = {
    "listen": "--listen",
    "lns": "--lns",
    "engine.reorder_timeout": "--timeout",
    "log_level": "--log-level",
    "socket_buffer_bytes": "--socket-buffer",
    "udp_gso": "--udp-gso",
}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return {prefix: value}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        if f.name in SKIP:
            continue
        out.update(_flatten(getattr(value, f.name), f"{prefix}{f.name}."))
    return {k.rstrip("."): v for k, v in out.items()}


def show(value: Any) -> str:
    """A value as the file would spell it, where that is easy to tell."""
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) for v in value):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return format_address((str(value[0]), value[1]))
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if hasattr(value, "value") and isinstance(value.value, str):  # enums (sequencing)
        return str(value.value)
    return str(value)


def changes(old: Any, new: Any) -> list[str]:
    """`key: old -> new` for every setting that differs (program units, e.g. seconds)."""
    a, b = _flatten(old), _flatten(new)
    return [f"{key}: {show(a[key])} -> {show(b[key])}" for key in a if a[key] != b.get(key)]


def overridden(file: Any, effective: Any) -> list[str]:
    """Settings where a command-line flag replaced the file's value."""
    a, b = _flatten(file), _flatten(effective)
    out = []
    for key in a:
        if a[key] != b.get(key):
            flag = FLAGS.get(key, "a command-line flag")
            out.append(f"{key} = {show(b[key])} from {flag} overrides the file's {show(a[key])}")
    return out
