"""Value parsers: each takes (key for messages, value as written) and returns the program value
or raises ConfigError naming the key, the value and what was expected.

Addresses must be IP literals: no DNS lookups at startup or reload, so a config means the same
thing on every host and at every moment.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from l2tpreorder.config.errors import ConfigError, number

Address = tuple[str, int]  # (IP literal, port); IPv6 without brackets
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def format_address(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(key: str, value: object) -> Address:
    """`IPv4:port` or `[IPv6]:port` -> (host, port)."""
    expected = 'an address "IPv4:PORT" or "[IPv6]:PORT" with PORT 1..65535'
    if not isinstance(value, str):
        raise ConfigError(key, value, expected)
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ConfigError(key, value, expected)
        version = 6
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            raise ConfigError(key, value, expected + " (IPv6 needs brackets)")
        if not sep:
            raise ConfigError(key, value, expected + " (the port is missing)")
        version = 4
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(key, value, expected + " (the host must be an IP literal)") from None
    if ip.version != version:
        raise ConfigError(key, value, expected)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(key, value, expected)
    return (str(ip), int(port_text))


def parse_ip(key: str, value: object) -> str:
    try:
        return str(ipaddress.ip_address(value if isinstance(value, str) else ""))
    except ValueError:
        raise ConfigError(key, value, "an IPv4 or IPv6 address literal") from None


def parse_network(key: str, value: object) -> Network:
    expected = 'an IPv4 or IPv6 prefix such as "192.0.2.0/24" or "2001:db8::/32"'
    if not isinstance(value, str):
        raise ConfigError(key, value, expected)
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as e:
        raise ConfigError(key, value, f"{expected} ({e})") from None


def check_int(key: str, value: object, lo: int, hi: int | None, unit: str = "") -> int:
    bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
    expected = f"an integer {bound}{unit}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, value, expected)
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(key, value, expected)
    return value


def parse_ms(
    key: str, value: object, lo_ms: float, hi_ms: float, lo_open: bool = False
) -> float:
    """Milliseconds in the file -> seconds in the program."""
    low = f"{'>' if lo_open else '>='} {number(lo_ms)}"
    expected = f"a number of milliseconds {low} and <= {number(hi_ms)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, value, expected)
    if value != value or value > hi_ms or value < lo_ms or (lo_open and value == lo_ms):
        raise ConfigError(key, value, expected)
    return float(value) / 1000.0


def check_bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def check_choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(choices))
    return value.lower()


def optional_path(key: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a file path or null")
    return value


def parse_list(key: str, value: object, item: Callable[[str, object], Any]) -> tuple[Any, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(key, value, "a non-empty list")
    return tuple(item(f"{key}[{i}]", v) for i, v in enumerate(value))


def unique_listen(key: str, raw: object, listen: tuple[Address, ...]) -> tuple[Address, ...]:
    """The listen list (file or repeated --listen): two sockets cannot bind one address."""
    if len(set(listen)) != len(listen):
        raise ConfigError(key, raw, "each address at most once")
    return listen


def parse_queues(key: str, value: object) -> tuple[int, ...]:
    """`"A-B"` (a range, as --queue-balance A:B balances over) -> queue numbers.

    A bare number is refused (issue 24): `queues: 4` read as "queue number 4" ran one worker
    where four were meant, and read as "four queues" it would silently move an existing
    config off the queue its firewall rule feeds. The hint names both spellings."""
    expected = 'a queue range "A-B" with 0 <= A <= B <= 65535 (at most 64 queues)'
    if isinstance(value, int) and not isinstance(value, bool):
        count = f'"0-{value - 1}" means {value} queues (0 to {value - 1}); ' if value > 1 else ""
        raise ConfigError(
            key, value, f"{expected}: {count}the one queue number {value} is inpath.queue: {value}"
        )
    if not isinstance(value, str):
        raise ConfigError(key, value, expected)
    first, sep, last = value.strip().partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise ConfigError(key, value, expected) from None
    if not 0 <= lo <= hi <= 65535 or hi - lo >= 64:
        raise ConfigError(key, value, expected)
    return tuple(range(lo, hi + 1))
