"""Options that mean nothing without another, for every offline tool (impair, replay, rules).

Refused, not ignored: an operator who typed `--speed 2` or `--displace 3` expects it to change
something. One table shape and one wording, so the tools refuse alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Needs:
    """`option` (its argparse dest) means nothing unless `needed` is given, or, with `value`,
    unless `needed` is that value (`--family` needs `--format iptables-restore`); `metavar`:
    what the hint shows after `needed` when it takes a value the operator picks ("P")."""

    option: str
    needed: str
    value: str | None = None
    metavar: str | None = None


def flag(dest: str) -> str:
    """The option as the operator types it: "displace_prob" -> "--displace-prob"."""
    return "--" + dest.replace("_", "-")


def given(args: Any, dest: str) -> bool:
    """Typed on the command line: argparse leaves an option not given at None (a flag at
    False); 0 is given (a sweep of probabilities from 0)."""
    value = getattr(args, dest, None)
    return value is not None and value is not False


def unmet(args: Any, needs: Iterable[Needs], skip: Iterable[str] = ()) -> list[str]:
    """One line for each option in `needs` given without what it needs (`skip`: options
    already refused for another reason)."""
    errors = []
    skipped = set(skip)
    for n in needs:
        if n.option in skipped or not given(args, n.option):
            continue
        current = getattr(args, n.needed, None)
        if n.value is None and given(args, n.needed):
            continue
        if n.value is not None and current == n.value:
            continue
        option = flag(n.option)
        needed = flag(n.needed) if n.value is None else f"{flag(n.needed)} {n.value}"
        instead = f" (not {flag(n.needed)} {current})" if n.value and current is not None else ""
        hint = f"{needed} {n.metavar}" if n.metavar else needed
        errors.append(
            f"{option} needs {needed}{instead}: without it {option} changes nothing; "
            f"add {hint} or drop {option}"
        )
    return errors
