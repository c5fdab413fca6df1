"""How a configuration is refused: the key, the value as the file spells it, what was expected.

Every error names those three, so a typo in a 3 a.m. reload is fixed from the log line alone.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong: names the key, the value and what is expected."""

    def __init__(self, key: str, value: object, expected: str, source: str | None = None) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key} = {yaml_repr(value)}: expected {expected}")


class YamlSyntaxError(ConfigError):
    """The file is not valid YAML (or repeats a key): says where, as an editor would."""

    def __init__(self, line: int, column: int, problem: str, source: str | None = None) -> None:
        ConfigError.__init__(self, "(yaml)", problem, "valid YAML", source)
        where = f"{source}: " if source else ""
        self.args = (f"{where}line {line}, column {column}: {problem}",)

    def __str__(self) -> str:
        return str(self.args[0])


def yaml_repr(value: object) -> str:
    """A value in an error message as the file spells it: true/false/null, numbers as written
    (86400000, not 8.64e+07), strings quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return number(value)
    return repr(value)


def number(value: float) -> str:
    """A number without exponent: 86400000, 0.5, 1e-06 stays exact."""
    if value == value and value not in (float("inf"), float("-inf")) and value == int(value):
        return str(int(value))
    return repr(value)
