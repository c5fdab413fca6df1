"""The daemon's configuration: a YAML file, validated into frozen dataclasses.

The file speaks operator units (milliseconds, bytes, `HOST:PORT` strings); the dataclasses speak
program units (seconds, tuples, `ipaddress` networks). Every error names the key, the bad value
and what was expected, so a typo in a 3 a.m. reload is fixed from the log line alone. Addresses
must be IP literals: no DNS lookups at startup or reload, so a config means the same thing on
every host and at every moment.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from l2tpreorder.core.engine import LIMITS as ENGINE_LIMITS
from l2tpreorder.core.engine import LOW_OPEN as ENGINE_LOW_OPEN
from l2tpreorder.core.engine import EngineConfig, Late, Sequencing

Address = tuple[str, int]  # (IP literal, port); IPv6 without brackets
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOG_LEVELS = ("debug", "info", "warning", "error")
# L2TP's hello interval (xl2tpd `hello`, RFC 2661 "HELLO ... 60 seconds" is typical): a peer is
# only idle when it has been quiet for longer than that, or a live tunnel would lose its port.
HELLO_INTERVAL_S = 60.0


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


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The `metrics:` section, and what `l2tpreorder.daemon.metrics` serves from. The listener
    defaults to loopback: expose it on purpose. Validated here, once, for the file and for code that
    builds one directly; errors name `metrics.<key>`."""

    enabled: bool = True
    listen: str = "127.0.0.1"
    port: int = 9101  # 0 = any free port (tests); the bound one is `MetricsServer.port`
    per_session: bool = False
    per_session_top_n: int = 100
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        _bool("metrics.enabled", self.enabled)
        object.__setattr__(self, "listen", parse_ip("metrics.listen", self.listen))
        _int("metrics.port", self.port, 0, 65535)
        _bool("metrics.per_session", self.per_session)
        _int("metrics.per_session_top_n", self.per_session_top_n, 1, 100_000, " sessions")
        _optional_path("metrics.tls_cert", self.tls_cert)
        _optional_path("metrics.tls_key", self.tls_key)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                "metrics.tls_cert", self.tls_cert, "tls_cert and tls_key both set or both null"
            )


# Config fields a running relay cannot change without new sockets: a reload keeps their old
# values and names them (Config.rebind_changes, Relay.reconfigure).
REBIND_KEYS = (
    "listen", "lns", "upstream_bind", "socket_buffer_bytes", "udp_gso", "control_socket"
)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything `l2tpreorder run` needs. Times in seconds."""

    listen: tuple[Address, ...] = (("0.0.0.0", 1701),)
    lns: Address = ("127.0.0.1", 1702)
    allow: tuple[Network, ...] = (
        ipaddress.IPv4Network("0.0.0.0/0"),
        ipaddress.IPv6Network("::/0"),
    )
    max_peers: int = 4096
    peer_idle_timeout: float = 300.0
    upstream_bind: str | None = None
    socket_buffer_bytes: int = 4 * 1024 * 1024
    udp_gso: bool = False  # send runs to the LNS as UDP GSO super-datagrams (see README)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(**ENGINE_DEFAULTS))
    reorder_lns_to_lac: bool = False
    log_level: str = "info"
    drop_report_interval: float = 10.0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Per-session state saved on SIGTERM and restored at start (renumber mode: no Ns jump for
    # the LNS). None: $STATE_DIRECTORY/state.json when systemd gives a StateDirectory, else off.
    state_file: str | None = None
    # Started as root: bind the listen sockets, then switch to this user (and its group) for
    # good. None: stay who we are (systemd's unit uses DynamicUser + CAP_NET_BIND_SERVICE).
    user: str | None = None
    # Unix socket for `l2tpreorder status` / `reload`. None: $RUNTIME_DIRECTORY/control.sock
    # under systemd, else /run/l2tpreorder/control.sock (see daemon/control.py for fallbacks).
    control_socket: str | None = None
    # `relay` (UDP relay in front of the LNS) or `inpath` (NFQUEUE verdicts, docs/inpath.md).
    mode: str = "relay"
    inpath_queues: tuple[int, ...] = (0,)  # inpath.queue / inpath.queues: one worker each
    inpath_queue_maxlen: int = 65536  # packets the kernel keeps per queue before failing open
    source: str | None = None  # the file it came from, for messages

    @property
    def allows_everything(self) -> bool:
        return any(net.prefixlen == 0 for net in self.allow)

    def rebind_changes(self, new: Config) -> list[str]:
        """Keys whose change would need new sockets (refused on reload)."""
        keys = []
        for key in REBIND_KEYS:
            old_value, new_value = getattr(self, key), getattr(new, key)
            if key == "listen":  # the order of the sockets does not matter
                old_value, new_value = set(old_value), set(new_value)
            if old_value != new_value:
                keys.append(key)
        return keys


# --- value parsers: each takes (key, value) and returns the program value or raises ---------


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


def _int(key: str, value: object, lo: int, hi: int | None, unit: str = "") -> int:
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


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(choices))
    return value.lower()


def _optional_path(key: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a file path or null")
    return value


def _list(key: str, value: object, item: Callable[[str, object], Any]) -> tuple[Any, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(key, value, "a non-empty list")
    return tuple(item(f"{key}[{i}]", v) for i, v in enumerate(value))


def _listen(key: str, raw: object, listen: tuple[Address, ...]) -> tuple[Address, ...]:
    """The listen list (file or repeated --listen): two sockets cannot bind one address."""
    if len(set(listen)) != len(listen):
        raise ConfigError(key, raw, "each address at most once")
    return listen


def _listen_receiving(listen: tuple[Address, ...], lns: Address) -> Address | None:
    """The listen address that would receive what we send to `lns`, or None.

    Same port and family, and the same IP or a wildcard on either side (a `[::]` socket is
    IPV6_V6ONLY, so it never covers an IPv4 LNS). Sending there makes the relay its own LNS:
    every datagram comes back from a new upstream port, i.e. as a new peer, until max_peers.
    """
    lns_ip = ipaddress.ip_address(lns[0])
    for addr in listen:
        ip = ipaddress.ip_address(addr[0])
        if addr[1] != lns[1] or ip.version != lns_ip.version:
            continue
        if ip == lns_ip or ip.is_unspecified or lns_ip.is_unspecified:
            return addr
    return None


def _check_lns(key: str, raw: object, config: Config) -> None:
    """`lns` must not be one of our own listen addresses (checked for the file and flags)."""
    own = _listen_receiving(config.listen, config.lns)
    if own is not None:
        raise ConfigError(
            key,
            raw,
            f"an address that is not one of listen (listen {format_address(own)} receives "
            "it: the relay would forward to itself)",
        )


def _check_upstream_bind(config: Config) -> None:
    """The upstream sockets talk to the LNS: their source address must be of its family, or
    every new LAC would fail to get one (counted as peer_limit, with no other sign)."""
    if config.upstream_bind is None:
        return
    want = ipaddress.ip_address(config.lns[0]).version
    if ipaddress.ip_address(config.upstream_bind).version != want:
        raise ConfigError(
            "upstream_bind",
            config.upstream_bind,
            f"an IPv{want} address like lns {format_address(config.lns)}, or null",
        )


# --- the settings: one declaration each -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its key in the file, where it lands in `Config`, how it is checked (type,
    range, unit: the constructors below), how it is shown, and the `run` flag overriding it.

    The file's validation, the flags and check-config's summary all come from this table."""

    key: str  # dotted, as in the file: "reorder.timeout_ms"
    field: str  # Config attribute; "engine.x" and "metrics.x" land in those sub-configs
    parse: Callable[[str, object], Any]  # (name for messages, value as written) -> program value
    show: Callable[[Any], str]  # program value -> as the file would spell it
    flag: str | None = None  # the `run` option, e.g. "--timeout"
    override: str | None = None  # its with_overrides() keyword, e.g. "timeout_ms"
    parse_flag: Callable[[str, object], Any] | None = None  # when the flag's form differs


def _integer(key: str, field: str, lo: int, hi: int | None, unit: str = "") -> Setting:
    suffix = f" {unit}" if unit else ""
    return Setting(key, field, lambda k, v: _int(k, v, lo, hi, suffix), str)


def _millis(key: str, field: str, lo: float, hi: float, lo_open: bool = False) -> Setting:
    """Milliseconds in the file, seconds in the program."""
    return Setting(
        key,
        field,
        lambda k, v: parse_ms(k, v, lo, hi, lo_open),
        lambda seconds: number(round(seconds * 1000, 6)),
    )


def _engine_integer(key: str, name: str, unit: str) -> Setting:
    """An EngineConfig integer, its range from the engine's one declaration (LIMITS)."""
    lo, hi = ENGINE_LIMITS[name]
    return _integer(key, f"engine.{name}", int(lo), None if hi is None else int(hi), unit)


def _engine_millis(key: str, name: str) -> Setting:
    """An EngineConfig time: seconds in LIMITS, milliseconds in the file."""
    lo, hi = ENGINE_LIMITS[name]
    assert hi is not None  # every engine time has an upper bound
    return _millis(key, f"engine.{name}", lo * 1000, hi * 1000, lo_open=name in ENGINE_LOW_OPEN)


def _boolean(key: str, field: str) -> Setting:
    return Setting(key, field, _bool, yaml_repr)


def _choice_of(key: str, field: str, choices: tuple[str, ...]) -> Setting:
    return Setting(key, field, lambda k, v: _choice(k, v, choices), lambda v: str(v))


def _optional(parse: Callable[[str, object], Any]) -> Callable[[str, object], Any]:
    """null means the default (None)."""
    return lambda k, v: None if v is None else parse(k, v)


def _user(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a user name or null")
    return value


def _addresses(key: str, value: object) -> tuple[Address, ...]:
    return _listen(key, value, _list(key, value, parse_address))


def _flag_addresses(key: str, value: object) -> tuple[Address, ...]:
    assert isinstance(value, list)
    return _listen(key, value, tuple(parse_address(key, v) for v in value))


def _sequencing(key: str, value: object) -> Sequencing:
    return Sequencing(_choice(key, value, tuple(s.value for s in Sequencing)))


LATE = tuple(x.value for x in Late)
# The file's defaults where they differ from EngineConfig()'s (issue 22, docs/adaptive.md).
ENGINE_DEFAULTS: dict[str, Any] = {"adaptive": True}


def _show_optional(value: object) -> str:
    return "null" if value is None else str(value)


MODES = ("relay", "inpath")


def parse_queues(key: str, value: object) -> tuple[int, ...]:
    """`"A-B"` (a range, as --queue-balance A:B balances over) or one number -> queue numbers."""
    expected = 'a queue range "A-B" with 0 <= A <= B <= 65535 (at most 64 queues), or a number'
    if isinstance(value, int) and not isinstance(value, bool):
        return (_int(key, value, 0, 65535),)
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


def _show_queues(queues: tuple[int, ...]) -> str:
    return str(queues[0]) if len(queues) == 1 else f'"{queues[0]}-{queues[-1]}"'


def _check_inpath(top: Mapping[str, object]) -> None:
    """inpath.queue and inpath.queues name the same thing: one of them."""
    inpath = top.get("inpath")
    if isinstance(inpath, dict) and "queue" in inpath and "queues" in inpath:
        raise ConfigError("inpath.queues", inpath["queues"], "either inpath.queue or .queues")


def _as_given(key: str, value: object) -> object:
    """`metrics.*`: MetricsConfig checks its own values (also when code builds one)."""
    return value


SETTINGS: tuple[Setting, ...] = (
    replace(
        Setting("listen", "listen", _addresses, lambda v: ", ".join(map(format_address, v))),
        flag="--listen",
        override="listen",
        parse_flag=_flag_addresses,
    ),
    Setting("lns", "lns", parse_address, format_address, "--lns", "lns"),
    Setting(
        "allow",
        "allow",
        lambda k, v: _list(k, v, parse_network),
        lambda v: ", ".join(map(str, v)),
    ),
    _integer("max_peers", "max_peers", 1, 1_000_000),
    _millis(
        "peer_idle_timeout_ms",
        "peer_idle_timeout",
        HELLO_INTERVAL_S * 1000,
        86_400_000,
        lo_open=True,
    ),
    Setting("upstream_bind", "upstream_bind", _optional(parse_ip), _show_optional),
    replace(
        _integer("socket_buffer_bytes", "socket_buffer_bytes", 4096, 1 << 30, "bytes"),
        flag="--socket-buffer",
        override="socket_buffer_bytes",
    ),
    replace(_boolean("udp_gso", "udp_gso"), flag="--udp-gso", override="udp_gso"),
    replace(
        _engine_millis("reorder.timeout_ms", "reorder_timeout"),
        flag="--timeout",
        override="timeout_ms",
    ),
    _boolean("reorder.adaptive", "engine.adaptive"),
    _engine_millis("reorder.min_timeout_ms", "min_timeout"),
    Setting(
        "reorder.sequencing",
        "engine.sequencing",
        _sequencing,
        lambda v: str(v.value),
        "--sequencing",
        "sequencing",
    ),
    replace(
        _engine_integer("reorder.max_held_per_session", "max_held_per_session", "packets"),
        flag="--max-held",
        override="max_held_per_session",
    ),
    # A packet whose Ns was given up (core/behind.py); auto: deliver, but drop in preserve mode.
    Setting("reorder.late", "engine.late", lambda k, v: Late(_choice(k, v, LATE)), str),
    _engine_integer("reorder.max_held_bytes", "max_held_bytes", "bytes"),
    _engine_integer("reorder.resync_after", "resync_after", "packets"),
    _engine_integer("reorder.max_sessions", "max_sessions", "sessions"),
    _engine_millis("reorder.session_idle_timeout_ms", "session_idle_timeout"),
    _boolean("reorder.lns_to_lac", "reorder_lns_to_lac"),
    replace(
        _choice_of("logging.level", "log_level", LOG_LEVELS),
        flag="--log-level",
        override="log_level",
    ),
    _millis("logging.drop_report_interval_ms", "drop_report_interval", 100, 86_400_000),
    Setting("metrics.enabled", "metrics.enabled", _as_given, yaml_repr),
    Setting("metrics.listen", "metrics.listen", _as_given, str),
    Setting("metrics.port", "metrics.port", _as_given, str),
    Setting("metrics.per_session", "metrics.per_session", _as_given, yaml_repr),
    Setting("metrics.per_session_top_n", "metrics.per_session_top_n", _as_given, str),
    Setting("metrics.tls_cert", "metrics.tls_cert", _as_given, _show_optional),
    Setting("metrics.tls_key", "metrics.tls_key", _as_given, _show_optional),
    Setting("state_file", "state_file", _optional_path, _show_optional),
    Setting("user", "user", _optional(_user), _show_optional),
    Setting("control_socket", "control_socket", _optional_path, _show_optional),
    _choice_of("mode", "mode", MODES),
    Setting(
        "inpath.queue", "inpath_queues", lambda k, v: (_int(k, v, 0, 65535),), _show_queues
    ),
    Setting("inpath.queues", "inpath_queues", parse_queues, _show_queues),
    _integer("inpath.queue_maxlen", "inpath_queue_maxlen", 1, 1 << 24, "packets"),
)

# --- the file's shape (derived from SETTINGS) -----------------------------------------------

TOP_LEVEL = "(top level)"  # the key named when the document itself is not a mapping
TOP_KEYS = tuple(dict.fromkeys(s.key.partition(".")[0] for s in SETTINGS))
SECTION_KEYS: dict[str, tuple[str, ...]] = {}
for _s in SETTINGS:
    if "." in _s.key:
        _section_name, _, _name = _s.key.partition(".")
        SECTION_KEYS[_section_name] = (*SECTION_KEYS.get(_section_name, ()), _name)
REORDER_KEYS = SECTION_KEYS["reorder"]
LOGGING_KEYS = SECTION_KEYS["logging"]
METRICS_KEYS = SECTION_KEYS["metrics"]


def _section(key: str, value: object, allowed: tuple[str, ...]) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, value, "a mapping with keys " + ", ".join(allowed))
    for k in value:
        if k not in allowed:
            name = str(k) if key == TOP_LEVEL else f"{key}.{k}"
            raise ConfigError(
                name, value[k], "a known key (this one is not): " + ", ".join(allowed)
            )
    return value


def config_from_dict(data: object, source: str | None = None) -> Config:
    """Validate a parsed YAML document (None = empty file = all defaults)."""
    try:
        return _config_from_dict(data, source)
    except ConfigError as e:
        if e.source is None and source is not None:
            raise ConfigError(e.key, e.value, e.expected, source) from None
        raise


def _config_from_dict(data: object, source: str | None) -> Config:
    top = _section(TOP_LEVEL, data, TOP_KEYS)
    _check_inpath(top)
    parsed: dict[str, dict[str, Any]] = {"": {"source": source}, "engine": {}, "metrics": {}}
    checked: dict[str, Mapping[str, object]] = {}
    for setting in SETTINGS:
        section, _, name = setting.key.rpartition(".")
        if section and section not in checked:
            checked[section] = _section(section, top.get(section), SECTION_KEYS[section])
        document = checked[section] if section else top
        if name in document:
            where, _, attr = setting.field.rpartition(".")
            parsed[where][attr] = setting.parse(setting.key, document[name])
    config = replace(
        Config(),
        **parsed[""],
        engine=EngineConfig(**{**ENGINE_DEFAULTS, **parsed["engine"]}),
        metrics=MetricsConfig(**parsed["metrics"]),
    )
    _check_lns("lns", top.get("lns", format_address(config.lns)), config)
    _check_upstream_bind(config)
    _check_late(config)
    return config


def _check_late(config: Config) -> None:
    """A late packet cannot be delivered when the LNS sees the LAC's Ns (it judges them)."""
    e = config.engine
    if e.late is Late.DELIVER and e.sequencing is Sequencing.PRESERVE:
        expected = "auto or drop with reorder.sequencing: preserve (the LNS judges the LAC's Ns)"
        raise ConfigError("reorder.late", e.late.value, expected, config.source)


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


def with_overrides(config: Config, **flags: Any) -> Config:
    """Apply command-line flags on top of the file (they win, also on reload).

    `flags` are the `override` keywords of SETTINGS (None: not given). Flags are checked with
    the file's rules and errors name the flag (`--timeout = -1: ...`).
    """
    raw_lns = flags.get("lns")
    parsed: dict[str, dict[str, Any]] = {"": {}, "engine": {}}
    for setting in SETTINGS:
        if setting.override is None:
            continue
        value = flags.pop(setting.override, None)
        if value is None or value == []:
            continue
        assert setting.flag is not None
        parse = setting.parse_flag or setting.parse
        where, _, attr = setting.field.rpartition(".")
        parsed[where][attr] = parse(setting.flag, value)
    if flags:
        raise TypeError(f"with_overrides: no setting is overridden by {sorted(flags)}")
    if not parsed[""] and not parsed["engine"]:
        return config
    kw = parsed[""]
    if parsed["engine"]:
        kw["engine"] = replace(config.engine, **parsed["engine"])
    new = replace(config, **kw)
    if "lns" in kw:
        _check_lns("--lns", raw_lns, new)
    else:
        _check_lns("lns", format_address(new.lns), new)  # --listen now covers the file's lns
    _check_upstream_bind(new)  # --lns of the other family than the file's upstream_bind
    _check_late(new)  # --sequencing preserve over a file's late: deliver
    return new


def load_with_overrides(path: str | Path | None, **flags: Any) -> Config:
    """The file (all defaults without one) with `with_overrides(**flags)` on top.

    `run` and `replay pcap` both build their configuration here, so a capture is replayed with
    exactly the engine settings the daemon would run with.
    """
    return with_overrides(load_config(path) if path else Config(), **flags)


# --- what `run` checks on this host before it starts --------------------------------------------

# sysexits.h EX_CONFIG: the units' RestartPreventExitStatus=78 makes a bad configuration end in
# `failed` at once instead of a restart loop that can never succeed.
EX_CONFIG = 78


def state_file_path(config: Config, queue: int | None = None) -> str | None:
    """Where `run` saves and restores its state: `state_file`, else $STATE_DIRECTORY/state.json
    under systemd's StateDirectory=, else nowhere. `queue`: an in-path worker of several, each
    with its own file (`.queueN` appended). One helper for both modes: they must agree."""
    path = config.state_file
    if path is None:
        directory = os.environ.get("STATE_DIRECTORY")
        if not directory:
            return None
        path = os.path.join(directory.split(":")[0], "state.json")
    return path if queue is None else f"{path}.queue{queue}"


def check_host(config: Config) -> None:
    """What `run` needs of this host beyond a valid file: the `user` exists, and the directory
    of `state_file` exists and is writable (the file is written there on every stop).
    Raises ConfigError; `check-config` runs it so it refuses what `run` would."""
    import pwd

    uid, gids = os.geteuid(), set(os.getgroups()) | {os.getegid()}
    if config.user is not None:
        try:
            pw = pwd.getpwnam(config.user)
        except KeyError:
            expected = "an existing user or null"
            raise ConfigError("user", config.user, expected, config.source) from None
        uid, gids = pw.pw_uid, {pw.pw_gid, *os.getgrouplist(pw.pw_name, pw.pw_gid)}
    if config.state_file is not None:
        directory = os.path.dirname(os.path.abspath(config.state_file))
        if not os.path.isdir(directory):
            expected = f"a path in an existing directory ({directory} does not exist)"
            raise ConfigError("state_file", config.state_file, expected, config.source)
        if not _writable_by(directory, uid, gids):
            who = f"user {config.user}" if config.user is not None else "this user"
            expected = f"a path in a directory {who} can write ({directory} is not)"
            raise ConfigError("state_file", config.state_file, expected, config.source)


def _writable_by(directory: str, uid: int, gids: set[int]) -> bool:
    """Whether `uid` may create files in `directory` (the daemon writes its state file after
    dropping to `user`, so the check is for that user, not for whoever runs check-config)."""
    if uid == 0:
        return True
    st = os.stat(directory)
    need = 0o3  # write + search
    if st.st_uid == uid:
        return (st.st_mode >> 6) & need == need
    if st.st_gid in gids:
        return (st.st_mode >> 3) & need == need
    return st.st_mode & need == need


# --- `l2tpreorder check-config FILE` ----------------------------------------------------------


def effective(config: Config) -> list[tuple[str, str]]:
    """(key, value as the file would spell it) for every setting, defaults included."""
    rows = []
    for setting in SETTINGS:
        value: Any = config
        for part in setting.field.split("."):
            value = getattr(value, part)
        rows.append((setting.key, setting.show(value)))
    return rows


def describe(config: Config) -> str:
    """Every effective setting, one per line (check-config prints it)."""
    return "\n".join(f"{key}: {value}" for key, value in effective(config))


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
    parser.add_argument("file", nargs="?", help="YAML configuration file to validate")
    parser.add_argument(
        "--config", "-c", metavar="FILE", dest="config", help="the same, as `run` takes it"
    )


def main(args: Any) -> int:
    import sys

    path = args.config or args.file
    if path is None or (args.config and args.file and args.config != args.file):
        print("error: give one configuration file: FILE or --config FILE", file=sys.stderr)
        return 2
    try:
        config = load_config(path)
        check_host(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    print(describe(config))
    for note in notes(config):
        print(f"note: {note}", file=sys.stderr)
    return 0
