"""The validated configuration: frozen dataclasses in program units (seconds, tuples,
`ipaddress` networks), and the checks that involve more than one setting.

The attribute names are what the daemon reads (`config.listen`, `config.inpath_queues`); the
file's keys (`relay.listen`, `inpath.queues`) are declared in `settings.py`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from l2tpreorder.config.errors import ConfigError
from l2tpreorder.config.values import (
    Address,
    Network,
    check_bool,
    check_int,
    format_address,
    optional_path,
    parse_ip,
)
from l2tpreorder.core.engine import EngineConfig, Late, Sequencing

LOG_LEVELS = ("debug", "info", "warning", "error")
MODES = ("relay", "inpath")
# L2TP's hello interval (xl2tpd `hello`, RFC 2661 "HELLO ... 60 seconds" is typical): a peer is
# only idle when it has been quiet for longer than that, or a live tunnel would lose its port.
HELLO_INTERVAL_S = 60.0



# The file's defaults where they differ from EngineConfig()'s (issue 22, docs/adaptive.md):
# the engine's own default stays the fixed timeout its unit tests are written against.
ENGINE_DEFAULTS: dict[str, Any] = {"adaptive": True}

ALL_SOURCES: tuple[Network, ...] = (
    ipaddress.IPv4Network("0.0.0.0/0"),
    ipaddress.IPv6Network("::/0"),
)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The `metrics:` section, and what `l2tpreorder.daemon.metrics` serves from. The listener
    defaults to loopback: expose it on purpose. Validated here, once, for the file and for code that
    builds one directly; errors name `metrics.<key>`."""

    enabled: bool = True
    listen: str = "127.0.0.1"
    # Outside 9100-9999, which Prometheus's "Default port allocations" list has given out in
    # full (9101 is the HAProxy exporter's): a port no exporter there defaults to. 0 = any
    # free port (tests); the bound one is `MetricsServer.port`.
    port: int = 17010
    per_session: bool = False
    per_session_top_n: int = 100
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        check_bool("metrics.enabled", self.enabled)
        object.__setattr__(self, "listen", parse_ip("metrics.listen", self.listen))
        check_int("metrics.port", self.port, 0, 65535)
        check_bool("metrics.per_session", self.per_session)
        check_int("metrics.per_session_top_n", self.per_session_top_n, 1, 100_000, " sessions")
        optional_path("metrics.tls_cert", self.tls_cert)
        optional_path("metrics.tls_key", self.tls_key)
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

    # relay mode only (the file's `relay:` section)
    listen: tuple[Address, ...] = (("0.0.0.0", 1701),)
    lns: Address = ("127.0.0.1", 1702)
    allow: tuple[Network, ...] = ALL_SOURCES
    max_peers: int = 4096
    peer_idle_timeout: float = 300.0
    upstream_bind: str | None = None
    socket_buffer_bytes: int = 4 * 1024 * 1024
    udp_gso: bool = False  # send runs to the LNS as UDP GSO super-datagrams (see README)
    # both modes
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(**ENGINE_DEFAULTS))
    reorder_lns_to_lac: bool = False
    log_level: str = "info"
    drop_report_interval: float = 10.0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Per-session state saved on SIGTERM and restored at start (renumber mode: no Ns jump for
    # the LNS). None: $STATE_DIRECTORY/state.json when systemd gives a StateDirectory, else off.
    state_file: str | None = None
    # A state file older than this is not restored (pass to consume_state(max_age=...)): by then
    # the LAC and LNS have given up on the numbering it carries.
    state_max_age: float = 300.0
    # Started as root: bind the listen sockets, then switch to this user (and its group) for
    # good. None: stay who we are (systemd's unit uses DynamicUser + CAP_NET_BIND_SERVICE).
    user: str | None = None
    # Unix socket for `l2tpreorder status` / `reload`. None: $RUNTIME_DIRECTORY/control.sock
    # under systemd, else /run/l2tpreorder/control.sock (see daemon/control.py for fallbacks).
    control_socket: str | None = None
    # `relay` (UDP relay in front of the LNS) or `inpath` (NFQUEUE verdicts, docs/inpath.md).
    mode: str = "relay"
    # in-path mode only (the file's `inpath:` section)
    inpath_queues: tuple[int, ...] = (0,)  # inpath.queue / inpath.queues: one worker each
    inpath_queue_maxlen: int = 65536  # packets the kernel keeps per queue before failing open
    # LAC prefixes: packets of other addresses are accepted untouched, never ordered
    inpath_allow: tuple[Network, ...] = ALL_SOURCES
    source: str | None = None  # the file it came from, for messages
    # What the file should say differently (deprecated spellings): `run` logs these once at
    # start and `check-config` prints them. Not a setting: two configs differing only here are
    # the same configuration.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def allows_everything(self) -> bool:
        return any(net.prefixlen == 0 for net in self.allow)

    @property
    def inpath_allows_everything(self) -> bool:
        """`inpath.allow` lets every source of both families in (the default)."""
        return {4, 6} <= {net.version for net in self.inpath_allow if net.prefixlen == 0}

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


def listen_receiving(listen: tuple[Address, ...], lns: Address) -> Address | None:
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


def check_lns(key: str, raw: object, config: Config) -> None:
    """`lns` must not be one of our own listen addresses (checked for the file and flags)."""
    own = listen_receiving(config.listen, config.lns)
    if own is not None:
        raise ConfigError(
            key,
            raw,
            f"an address that is not one of listen (listen {format_address(own)} receives "
            "it: the relay would forward to itself)",
        )


def check_upstream_bind(key: str, config: Config) -> None:
    """The upstream sockets talk to the LNS: their source address must be of its family, or
    every new LAC would fail to get one (counted as peer_limit, with no other sign)."""
    if config.upstream_bind is None:
        return
    want = ipaddress.ip_address(config.lns[0]).version
    if ipaddress.ip_address(config.upstream_bind).version != want:
        raise ConfigError(
            key,
            config.upstream_bind,
            f"an IPv{want} address like lns {format_address(config.lns)}, or null",
        )


def check_late(config: Config, sequencing_key: str = "reorder.sequencing: preserve") -> None:
    """A late packet cannot be delivered when the LNS sees the LAC's Ns (it judges them).
    `sequencing_key`: how the refusal names where preserve came from (a flag or the file)."""
    e = config.engine
    if e.late is Late.DELIVER and e.sequencing is Sequencing.PRESERVE:
        expected = f"auto or drop with {sequencing_key} (the LNS judges the LAC's Ns)"
        raise ConfigError("reorder.late", e.late.value, expected, config.source)
