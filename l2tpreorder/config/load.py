"""Reading the YAML file into a `Config`: sections, deprecated flat keys, duplicate keys.

Relay-only keys live in `relay:`, in-path-only keys in `inpath:`. Before the sections existed
the relay keys sat at the top level (`listen:`); that spelling is still read, and each use adds
one warning naming the new key to `Config.warnings`. A file giving both spellings of one key is
refused: which one would win is not something to guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from l2tpreorder.config.errors import ConfigError, YamlSyntaxError
from l2tpreorder.config.model import Config, MetricsConfig, check_lns, check_upstream_bind
from l2tpreorder.config.settings import (
    OLD_KEYS,
    SECTION_KEYS,
    SETTINGS,
    TOP_KEYS,
    TOP_LEVEL,
    Setting,
)
from l2tpreorder.config.values import format_address
from l2tpreorder.core.engine import EngineConfig


def _section(
    key: str, value: object, allowed: tuple[str, ...], also: tuple[str, ...] = ()
) -> Mapping[str, object]:
    """The mapping at `key`, every key in it known (`also`: accepted, but not advertised)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, value, "a mapping with keys " + ", ".join(allowed))
    for k in value:
        if k not in allowed and k not in also:
            name = str(k) if key == TOP_LEVEL else f"{key}.{k}"
            raise ConfigError(
                name, value[k], "a known key (this one is not): " + ", ".join(allowed)
            )
    return value


def _check_inpath(top: Mapping[str, object]) -> None:
    """inpath.queue and inpath.queues name the same thing: one of them."""
    inpath = top.get("inpath")
    if isinstance(inpath, dict) and "queue" in inpath and "queues" in inpath:
        raise ConfigError("inpath.queues", inpath["queues"], "either inpath.queue or .queues")


def config_from_dict(data: object, source: str | None = None) -> Config:
    """Validate a parsed YAML document (None = empty file = all defaults)."""
    try:
        return _config_from_dict(data, source)
    except ConfigError as e:
        if e.source is None and source is not None:
            raise ConfigError(e.key, e.value, e.expected, source) from None
        raise


class _Document:
    """The file's mappings, checked section by section as the settings ask for them."""

    def __init__(self, data: object) -> None:
        self.top = _section(TOP_LEVEL, data, TOP_KEYS, tuple(OLD_KEYS))
        _check_inpath(self.top)
        self._sections: dict[str, Mapping[str, object]] = {"": self.top}

    def written(self, setting: Setting) -> tuple[str, object] | None:
        """(key as the file spells it, value) for `setting`, or None when the file is silent."""
        section = setting.section
        if section not in self._sections:
            raw = self.top.get(section)
            self._sections[section] = _section(section, raw, SECTION_KEYS[section])
        document = self._sections[section]
        found = (setting.key, document[setting.name]) if setting.name in document else None
        old = setting.old_key
        if old is None or old not in self.top:
            return found
        if found is not None:
            expected = f"either {setting.key} or {old} (deprecated), not both"
            raise ConfigError(setting.key, found[1], expected)
        return (old, self.top[old])


def deprecation(setting: Setting, source: str | None) -> str:
    """The one warning for a flat key: its new spelling."""
    where = f"{source}: " if source else ""
    return f"{where}`{setting.old_key}` is deprecated: write `{setting.key}`"


def _config_from_dict(data: object, source: str | None) -> Config:
    document = _Document(data)
    parsed: dict[str, dict[str, Any]] = {"": {"source": source}, "engine": {}, "metrics": {}}
    spelled: dict[str, tuple[str, object]] = {}
    warnings = []
    for setting in SETTINGS:
        written = document.written(setting)
        if written is None:
            continue
        key, value = spelled[setting.key] = written
        if key != setting.key:
            warnings.append(deprecation(setting, source))
        where, _, attr = setting.field.rpartition(".")
        parsed[where][attr] = setting.parse(key, value)
    config = replace(
        Config(),
        **parsed[""],
        engine=EngineConfig(**parsed["engine"]),
        metrics=MetricsConfig(**parsed["metrics"]),
        warnings=tuple(warnings),
    )
    lns_key, lns_raw = spelled.get("relay.lns", ("relay.lns", format_address(config.lns)))
    check_lns(lns_key, lns_raw, config)
    check_upstream_bind(spelled.get("relay.upstream_bind", ("relay.upstream_bind",))[0], config)
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the second would win
    silently: a second `reorder:` section replaces the first)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:
            continue  # an unhashable key: construct_mapping reports it
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first given on line {first + 1})",
                key_node.start_mark,
            )
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,
)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML file; raises ConfigError (also for unreadable or bad YAML)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("(file)", source, f"a readable file ({e.strerror})", source) from None
    except UnicodeDecodeError:
        raise ConfigError("(file)", source, "UTF-8 text", source) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or "syntax error"
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(line, column, problem, source) from None
    return config_from_dict(data, source)
