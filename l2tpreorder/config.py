"""The daemon's configuration: a YAML file, validated into frozen dataclasses.

The file speaks operator units (milliseconds, bytes, `HOST:PORT` strings); the dataclasses speak
program units (seconds, tuples, `ipaddress` networks). Every error names the key, the bad value
and what was expected, so a typo in a 3 a.m. reload is fixed from the log line alone. Addresses
must be IP literals: no DNS lookups at startup or reload, so a config means the same thing on
every host and at every moment.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from l2tpreorder.core.engine import EngineConfig, Sequencing

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
        super().__init__(f"{where}{key} = {value!r}: expected {expected}")


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
    engine: EngineConfig = field(default_factory=EngineConfig)
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


def _ms(key: str, value: object, lo_ms: float, hi_ms: float, lo_open: bool = False) -> float:
    """Milliseconds in the file -> seconds in the program."""
    expected = f"a number of milliseconds {'>' if lo_open else '>='} {lo_ms:g} and <= {hi_ms:g}"
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


# --- the file's shape -----------------------------------------------------------------------

TOP_LEVEL = "(top level)"  # the key named when the document itself is not a mapping
TOP_KEYS = (
    "listen",
    "lns",
    "allow",
    "max_peers",
    "peer_idle_timeout_ms",
    "upstream_bind",
    "socket_buffer_bytes",
    "udp_gso",
    "reorder",
    "logging",
    "metrics",
    "state_file",
    "user",
    "control_socket",
)
REORDER_KEYS = (
    "timeout_ms",
    "sequencing",
    "max_held_per_session",
    "max_held_bytes",
    "resync_after",
    "max_sessions",
    "lns_to_lac",
)
LOGGING_KEYS = ("level", "drop_report_interval_ms")
METRICS_KEYS = (
    "enabled",
    "listen",
    "port",
    "per_session",
    "per_session_top_n",
    "tls_cert",
    "tls_key",
)


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
    d = Config()
    kw: dict[str, Any] = {"source": source}
    if "listen" in top:
        parsed = _list("listen", top["listen"], parse_address)
        kw["listen"] = _listen("listen", top["listen"], parsed)
    if "lns" in top:
        kw["lns"] = parse_address("lns", top["lns"])
    if "allow" in top:
        kw["allow"] = _list("allow", top["allow"], parse_network)
    if "max_peers" in top:
        kw["max_peers"] = _int("max_peers", top["max_peers"], 1, 1_000_000)
    if "peer_idle_timeout_ms" in top:
        kw["peer_idle_timeout"] = _ms(
            "peer_idle_timeout_ms",
            top["peer_idle_timeout_ms"],
            HELLO_INTERVAL_S * 1000,
            86_400_000,
            lo_open=True,
        )
    if top.get("upstream_bind") is not None:
        kw["upstream_bind"] = parse_ip("upstream_bind", top["upstream_bind"])
    if "socket_buffer_bytes" in top:
        kw["socket_buffer_bytes"] = _int(
            "socket_buffer_bytes", top["socket_buffer_bytes"], 4096, 1 << 30, " bytes"
        )
    if "udp_gso" in top:
        kw["udp_gso"] = _bool("udp_gso", top["udp_gso"])

    reorder = _section("reorder", top.get("reorder"), REORDER_KEYS)
    ekw: dict[str, Any] = {}
    if "timeout_ms" in reorder:
        ekw["reorder_timeout"] = _ms("reorder.timeout_ms", reorder["timeout_ms"], 0, 60_000)
    if "sequencing" in reorder:
        names = tuple(s.value for s in Sequencing)
        ekw["sequencing"] = Sequencing(_choice("reorder.sequencing", reorder["sequencing"], names))
    if "max_held_per_session" in reorder:
        ekw["max_held_per_session"] = _int(
            "reorder.max_held_per_session", reorder["max_held_per_session"], 1, 32767, " packets"
        )
    if "max_held_bytes" in reorder:
        ekw["max_held_bytes"] = _int(
            "reorder.max_held_bytes", reorder["max_held_bytes"], 1, None, " bytes"
        )
    if "resync_after" in reorder:
        ekw["resync_after"] = _int(
            "reorder.resync_after", reorder["resync_after"], 2, 1000, " packets"
        )
    if "max_sessions" in reorder:
        ekw["max_sessions"] = _int(
            "reorder.max_sessions", reorder["max_sessions"], 1, 10_000_000, " sessions"
        )
    if "lns_to_lac" in reorder:
        kw["reorder_lns_to_lac"] = _bool("reorder.lns_to_lac", reorder["lns_to_lac"])
    kw["engine"] = EngineConfig(**ekw)
    if "state_file" in top:
        kw["state_file"] = _optional_path("state_file", top["state_file"])
    if "control_socket" in top:
        kw["control_socket"] = _optional_path("control_socket", top["control_socket"])
    if top.get("user") is not None:
        if not isinstance(top["user"], str) or not top["user"]:
            raise ConfigError("user", top["user"], "a user name or null")
        kw["user"] = top["user"]

    logging_ = _section("logging", top.get("logging"), LOGGING_KEYS)
    if "level" in logging_:
        kw["log_level"] = _choice("logging.level", logging_["level"], LOG_LEVELS)
    if "drop_report_interval_ms" in logging_:
        kw["drop_report_interval"] = _ms(
            "logging.drop_report_interval_ms",
            logging_["drop_report_interval_ms"],
            100,
            86_400_000,
        )

    metrics = _section("metrics", top.get("metrics"), METRICS_KEYS)
    # The values go in unchecked: MetricsConfig validates them (one place, errors metrics.<key>).
    values: dict[str, Any] = {str(k): v for k, v in metrics.items()}
    kw["metrics"] = MetricsConfig(**values)
    config = replace(d, **kw)
    _check_lns("lns", top.get("lns", format_address(config.lns)), config)
    _check_upstream_bind(config)
    return config


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
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise ConfigError("(yaml)", problem, f"valid YAML{where}", source) from None
    return config_from_dict(data, source)


def with_overrides(
    config: Config,
    *,
    listen: list[str] | None = None,
    lns: str | None = None,
    timeout_ms: float | None = None,
    sequencing: str | None = None,
    max_held_per_session: int | None = None,
    log_level: str | None = None,
    socket_buffer_bytes: int | None = None,
    udp_gso: bool | None = None,
) -> Config:
    """Apply command-line flags on top of the file (they win, also on reload).

    Flags are checked with the file's rules and errors name the flag (`--timeout = -1.0: ...`).
    """
    kw: dict[str, Any] = {}
    ekw: dict[str, Any] = {}
    if listen:
        kw["listen"] = _listen(
            "--listen", listen, tuple(parse_address("--listen", v) for v in listen)
        )
    if lns is not None:
        kw["lns"] = parse_address("--lns", lns)
    if timeout_ms is not None:
        ekw["reorder_timeout"] = _ms("--timeout", timeout_ms, 0, 60_000)
    if sequencing is not None:
        names = tuple(s.value for s in Sequencing)
        ekw["sequencing"] = Sequencing(_choice("--sequencing", sequencing, names))
    if max_held_per_session is not None:
        ekw["max_held_per_session"] = _int("--max-held", max_held_per_session, 1, 32767, " packets")
    if ekw:
        kw["engine"] = replace(config.engine, **ekw)
    if log_level is not None:
        kw["log_level"] = _choice("--log-level", log_level, LOG_LEVELS)
    if socket_buffer_bytes is not None:
        kw["socket_buffer_bytes"] = _int(
            "--socket-buffer", socket_buffer_bytes, 4096, 1 << 30, " bytes"
        )
    if udp_gso is not None:
        kw["udp_gso"] = udp_gso
    if not kw:
        return config
    new = replace(config, **kw)
    if lns is not None:
        _check_lns("--lns", lns, new)
    else:
        _check_lns("lns", format_address(new.lns), new)  # --listen now covers the file's lns
    _check_upstream_bind(new)  # --lns of the other family than the file's upstream_bind
    return new


def load_with_overrides(path: str | Path | None, **flags: Any) -> Config:
    """The file (all defaults without one) with `with_overrides(**flags)` on top.

    `run` and `replay pcap` both build their configuration here, so a capture is replayed with
    exactly the engine settings the daemon would run with.
    """
    return with_overrides(load_config(path) if path else Config(), **flags)


# --- `l2tpreorder check-config FILE` ----------------------------------------------------------


def describe(config: Config) -> str:
    """A short human summary of what the config means (check-config prints it)."""
    e = config.engine
    return "\n".join(
        [
            "listen: " + ", ".join(format_address(a) for a in config.listen),
            "lns: " + format_address(config.lns),
            "allow: " + ", ".join(str(n) for n in config.allow),
            f"reorder: timeout {e.reorder_timeout * 1000:g} ms, sequencing {e.sequencing.value}, "
            f"max {e.max_held_per_session} held/session, {e.max_held_bytes} bytes held in all"
            + (", also LNS->LAC" if config.reorder_lns_to_lac else ""),
            f"peers: max {config.max_peers}, idle after {config.peer_idle_timeout:g} s",
            "metrics: "
            + (
                f"{format_address((config.metrics.listen, config.metrics.port))}"
                if config.metrics.enabled
                else "off"
            ),
        ]
    )


def add_arguments(parser: Any) -> None:
    parser.add_argument("file", help="YAML configuration file to validate")


def main(args: Any) -> int:
    import sys

    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    print(describe(config))
    return 0
