"""Reading the YAML file into a `Config`: sections, deprecated flat keys, every error at once.

Relay-only keys live in `relay:`, in-path-only keys in `inpath:`. Before the sections existed
the relay keys sat at the top level (`listen:`); that spelling is still read, and each use adds
one warning naming the new key to `Config.warnings`. A file giving both spellings of one key is
refused: which one would win is not something to guess. A file with several mistakes gets them
all named at once (a misspelt key with the key it probably meant), each with its line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from l2tpreorder.config.errors import ConfigError, ConfigErrors, YamlSyntaxError, raise_all
from l2tpreorder.config.model import (
    ENGINE_DEFAULTS,
    Config,
    MetricsConfig,
    check_late,
    check_lns,
    check_upstream_bind,
)
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

# Every key the file may hold, dotted, for "did you mean": the sectioned keys and the sections.
_ALL_KEYS = (*TOP_KEYS, *(s.key for s in SETTINGS if s.section))


def did_you_mean(section: str, key: object) -> str | None:
    """The key a misspelt (or misplaced) `key` in `section` probably meant, dotted."""
    if not isinstance(key, str):
        return None
    if section:
        inside = difflib.get_close_matches(key, SECTION_KEYS[section], n=1, cutoff=0.75)
        if inside:
            return f"{section}.{inside[0]}"
    exact = [k for k in _ALL_KEYS if k.rpartition(".")[2] == key and k != f"{section}.{key}"]
    if exact:  # the right key in another section (`relay.queues` -> `inpath.queues`)
        return exact[0]
    names = {k.rpartition(".")[2]: k for k in reversed(_ALL_KEYS)}  # relay.listen wins
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return names[close[0]] if close else None


def _unknown_key(section: str, key: object, value: object, allowed: tuple[str, ...]) -> ConfigError:
    name = f"{section}.{key}" if section else str(key)
    guess = did_you_mean(section, key)
    hint = f" (did you mean {guess}?)" if guess else " (this one is not)"
    return ConfigError(name, value, f"a known key{hint}: " + ", ".join(allowed))


class _Document:
    """The file's mappings, checked section by section as the settings ask for them; what is
    wrong with its shape (unknown keys, a section that is not a mapping) is collected in
    `errors`, not raised, so every mistake is named at once."""

    def __init__(self, data: object) -> None:
        if data is not None and not isinstance(data, dict):
            raise ConfigError(TOP_LEVEL, data, "a mapping with keys " + ", ".join(TOP_KEYS))
        self.errors: list[ConfigError] = []
        self.top: Mapping[str, object] = self._checked("", data or {}, TOP_KEYS)
        self._sections: dict[str, Mapping[str, object]] = {"": self.top}
        inpath = self.top.get("inpath")
        if isinstance(inpath, dict) and "queue" in inpath and "queues" in inpath:
            expected = "either inpath.queue or .queues"
            self.errors.append(ConfigError("inpath.queues", inpath["queues"], expected))

    def _checked(
        self, section: str, mapping: dict[Any, Any], allowed: tuple[str, ...]
    ) -> Mapping[str, object]:
        also = tuple(OLD_KEYS) if not section else ()
        for k, v in mapping.items():
            if k not in allowed and k not in also:
                self.errors.append(_unknown_key(section, k, v, allowed))
        return mapping

    def section(self, name: str) -> Mapping[str, object]:
        if name not in self._sections:
            raw, allowed = self.top.get(name), SECTION_KEYS[name]
            if raw is not None and not isinstance(raw, dict):
                self.errors.append(
                    ConfigError(name, raw, "a mapping with keys " + ", ".join(allowed))
                )
            mapping = raw if isinstance(raw, dict) else {}
            self._sections[name] = self._checked(name, mapping, allowed)
        return self._sections[name]

    def written(self, setting: Setting) -> tuple[str, object] | None:
        """(key as the file spells it, value) for `setting`, or None when the file is silent."""
        document = self.section(setting.section)
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


def config_from_dict(
    data: object, source: str | None = None, lines: Mapping[str, int] | None = None
) -> Config:
    """Validate a parsed YAML document (None = empty file = all defaults). `lines`: each
    dotted key's line in the file, for the messages."""
    try:
        return _config_from_dict(data, source)
    except ConfigError as e:
        raise _placed(e, source, lines or {}) from None


def _placed(error: ConfigError, source: str | None, lines: Mapping[str, int]) -> ConfigError:
    """The error said of `source`, at the line of its key (or of the list holding it)."""
    if isinstance(error, ConfigErrors):
        return ConfigErrors([_placed(e, source, lines) for e in error.errors])
    line = lines.get(error.key, lines.get(re.sub(r"\[\d+\]$", "", error.key)))
    return error.placed(source, line)


def _config_from_dict(data: object, source: str | None) -> Config:
    document = _Document(data)
    parsed: dict[str, dict[str, Any]] = {"": {"source": source}, "engine": {}, "metrics": {}}
    spelled: dict[str, tuple[str, object]] = {}
    warnings = []
    for setting in SETTINGS:
        try:
            written = document.written(setting)
            if written is None:
                continue
            key, value = spelled[setting.key] = written
            where, _, attr = setting.field.rpartition(".")
            parsed[where][attr] = setting.parse(key, value)
        except ConfigError as e:
            document.errors.append(e)
            continue
        if key != setting.key:
            warnings.append(deprecation(setting, source))
    raise_all(document.errors)
    config = replace(
        Config(),
        **parsed[""],
        engine=EngineConfig(**{**ENGINE_DEFAULTS, **parsed["engine"]}),
        metrics=MetricsConfig(**parsed["metrics"]),
        warnings=tuple(warnings),
    )
    lns_key, lns_raw = spelled.get("relay.lns", ("relay.lns", format_address(config.lns)))
    check_lns(lns_key, lns_raw, config)
    check_upstream_bind(spelled.get("relay.upstream_bind", ("relay.upstream_bind",))[0], config)
    check_late(config)
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


def key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Each dotted key (and list item, `relay.listen[1]`) of a composed document -> its line."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(key_lines(value_node, f"{key}."))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix.rstrip('.')}[{i}]"] = item.start_mark.line + 1
    return lines


# The one default every command uses (`run`, `status`, `reload`, `check-config`, `rules`): the
# path the shipped units run with, when it exists (issue 24: `run` used built-in defaults and
# `status` this file, so the two could disagree).
DEFAULT_CONFIG = "/etc/l2tpreorder/config.yaml"


def config_file(given: str | None) -> str | None:
    """The configuration file in force: the one given, else DEFAULT_CONFIG when it exists,
    else None (the built-in defaults)."""
    if given is not None:
        return given
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None


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
        lines = key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or "syntax error"
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(line, column, problem, source) from None
    return config_from_dict(data, source, lines)
