"""How a configuration is refused: the key, the value as the file spells it, what was expected.

Every error names those three, so a typo in a 3 a.m. reload is fixed from the log line alone.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong: names the key, the value and what is expected (and, read
    from a file, the line it is on)."""

    def __init__(
        self,
        key: str,
        value: object,
        expected: str,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        self.source = source
        self.line = line
        where = f"{source}: " if source else ""
        at = f" (line {line})" if line is not None else ""
        super().__init__(f"{where}{key} = {yaml_repr(value)}: expected {expected}{at}")

    def placed(self, source: str | None, line: int | None = None) -> ConfigError:
        """The same error, said of `source` (and `line`) when it does not name them yet."""
        source, line = self.source or source, self.line or line
        if (source, line) == (self.source, self.line):
            return self
        return ConfigError(self.key, self.value, self.expected, source, line)


class ConfigErrors(ConfigError):
    """Several errors in one file, all reported at once (`check-config` prints each one; a
    single-line message for `run` and reload names the first and how many more there are)."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        ConfigError.__init__(
            self, first.key, first.value, first.expected, first.source, first.line
        )
        self.errors = errors
        more = len(errors) - 1
        self.args = (f"{first} (and {more} more: `l2tpreorder check-config` lists them all)",)

    def __str__(self) -> str:
        return str(self.args[0])

    def placed(self, source: str | None, line: int | None = None) -> ConfigError:
        return ConfigErrors([e.placed(source) for e in self.errors])


def raise_all(errors: list[ConfigError]) -> None:
    """Raise the one error, or all of them; nothing when there is none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


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
