"""The settings table: one declaration per setting, and everything derived from it.

Each `Setting` says its key in the file (`relay.listen`), its old flat spelling if it had one
(`listen`, still read, with a warning), where it lands in `Config`, how it is checked and shown
(file units: milliseconds, bytes), the `run` flag that overrides it, and whether a reload can
apply it. The file's validation (load.py), `run`'s flags (flags.py), check-config's listing
(show.py) and the reload report (daemon/reload_report.py) all walk this one table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from l2tpreorder.config.errors import ConfigError, number, yaml_repr
from l2tpreorder.config.model import HELLO_INTERVAL_S, LOG_LEVELS, MODES
from l2tpreorder.config.values import (
    Address,
    check_bool,
    check_choice,
    check_int,
    format_address,
    optional_path,
    parse_address,
    parse_ip,
    parse_list,
    parse_ms,
    parse_network,
    parse_queues,
    unique_listen,
)
from l2tpreorder.core.engine import LIMITS as ENGINE_LIMITS
from l2tpreorder.core.engine import LOW_OPEN as ENGINE_LOW_OPEN
from l2tpreorder.core.engine import Late, Sequencing


@dataclass(frozen=True, slots=True)
class Flag:
    """A command-line option overriding a setting: argparse's view of it."""

    name: str  # "--timeout"
    help: str  # what it sets; "(overrides KEY)" is appended
    metavar: str | None = None
    type: Callable[[str], Any] | None = None  # None: the string as given
    choices: tuple[str, ...] | None = None
    action: str | None = None  # "append" (repeatable) or "store_true"

    @property
    def dest(self) -> str:
        """argparse's attribute for it: `--socket-buffer` -> `socket_buffer`."""
        return self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its key in the file, where it lands in `Config`, how it is checked (type,
    range, unit: the constructors below), how it is shown, and the `run` flag overriding it.

    The file's validation, the flags, check-config's listing and the reload report all come
    from this table."""

    key: str  # dotted, as in the file: "reorder.timeout_ms"
    field: str  # Config attribute; "engine.x" and "metrics.x" land in those sub-configs
    parse: Callable[[str, object], Any]  # (name for messages, value as written) -> program value
    show: Callable[[Any], str]  # program value -> as the file would spell it
    flag: Flag | None = None  # the `run` option overriding it
    override: str | None = None  # its with_overrides() keyword, e.g. "timeout_ms"
    parse_flag: Callable[[str, object], Any] | None = None  # when the flag's form differs
    old_key: str | None = None  # the deprecated flat spelling, still read with a warning
    restart: bool = False  # a reload cannot apply a change: it needs a restart
    listed: bool = True  # False: another spelling of a listed setting (inpath.queue)
    # check-config writes a value under this key only when this says so (one in-path queue is
    # spelt `queue: N`, several `queues: "A-B"`); None: when the setting is listed.
    spells: Callable[[Any], bool] | None = None
    dump: Callable[[Any], object] | None = None  # program value -> YAML data, when not show()'s

    @property
    def section(self) -> str:
        """The section: "relay" for relay.listen, "" for a top-level key."""
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        """The key inside its section: "listen" for relay.listen."""
        return self.key.rpartition(".")[2]


def _integer(key: str, field: str, lo: int, hi: int | None, unit: str = "") -> Setting:
    suffix = f" {unit}" if unit else ""
    return Setting(key, field, lambda k, v: check_int(k, v, lo, hi, suffix), str)


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
    return Setting(key, field, check_bool, yaml_repr)


def _choice_of(key: str, field: str, choices: tuple[str, ...]) -> Setting:
    return Setting(key, field, lambda k, v: check_choice(k, v, choices), lambda v: str(v))


def _allow(key: str, field: str) -> Setting:
    """Source prefixes (`relay.allow`, `inpath.allow`): a list of networks."""
    return Setting(
        key,
        field,
        lambda k, v: parse_list(k, v, parse_network),
        lambda v: ", ".join(map(str, v)),
        dump=lambda v: [str(n) for n in v],
    )


def _relay(setting: Setting, **changes: Any) -> Setting:
    """A relay-only setting: `relay.X` in the file, `X` at the top level before sections."""
    return replace(setting, key=f"relay.{setting.key}", old_key=setting.key, **changes)


def _optional(parse: Callable[[str, object], Any]) -> Callable[[str, object], Any]:
    """null means the default (None)."""
    return lambda k, v: None if v is None else parse(k, v)


def _user(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a user name or null")
    return value


def _addresses(key: str, value: object) -> tuple[Address, ...]:
    return unique_listen(key, value, parse_list(key, value, parse_address))


def _flag_addresses(key: str, value: object) -> tuple[Address, ...]:
    assert isinstance(value, list)
    return unique_listen(key, value, tuple(parse_address(key, v) for v in value))


LATE = tuple(x.value for x in Late)


def _sequencing(key: str, value: object) -> Sequencing:
    return Sequencing(check_choice(key, value, tuple(s.value for s in Sequencing)))


def _show_optional(value: object) -> str:
    return "null" if value is None else str(value)


def _show_queues(queues: tuple[int, ...]) -> str:
    """One queue as its number (the reload report: `still 3`), several as the range; the file
    spells one queue `inpath.queue: N` (check-config's listing: show.describe)."""
    return str(queues[0]) if len(queues) == 1 else f'"{queues[0]}-{queues[-1]}"'


def _as_given(key: str, value: object) -> object:
    """`metrics.*`: MetricsConfig checks its own values (also when code builds one)."""
    return value


SETTINGS: tuple[Setting, ...] = (
    replace(_choice_of("mode", "mode", MODES), restart=True),
    _relay(
        Setting("listen", "listen", _addresses, lambda v: ", ".join(map(format_address, v))),
        flag=Flag(
            "--listen",
            "LAC-facing address, repeatable; [v6addr]:port for IPv6",
            "HOST:PORT",
            action="append",
        ),
        override="listen",
        parse_flag=_flag_addresses,
        restart=True,
        dump=lambda v: [format_address(a) for a in v],
    ),
    _relay(
        Setting("lns", "lns", parse_address, format_address),
        flag=Flag("--lns", "the LNS address", "HOST:PORT"),
        override="lns",
        restart=True,
    ),
    _relay(_allow("allow", "allow")),
    _relay(_integer("max_peers", "max_peers", 1, 1_000_000)),
    _relay(
        _millis(
            "peer_idle_timeout_ms",
            "peer_idle_timeout",
            HELLO_INTERVAL_S * 1000,
            86_400_000,
            lo_open=True,
        )
    ),
    _relay(
        Setting("upstream_bind", "upstream_bind", _optional(parse_ip), _show_optional),
        restart=True,
    ),
    _relay(
        _integer("socket_buffer_bytes", "socket_buffer_bytes", 4096, 1 << 30, "bytes"),
        flag=Flag("--socket-buffer", "socket receive/send buffer size", "BYTES", int),
        override="socket_buffer_bytes",
        restart=True,
    ),
    _relay(
        _boolean("udp_gso", "udp_gso"),
        flag=Flag(
            "--udp-gso",
            "send runs to the LNS as UDP GSO super-datagrams",
            action="store_true",
        ),
        override="udp_gso",
        restart=True,
    ),
    Setting(
        "inpath.queue",
        "inpath_queues",
        lambda k, v: (check_int(k, v, 0, 65535),),
        _show_queues,
        restart=True,
        listed=False,
        spells=lambda queues: len(queues) == 1,
    ),
    Setting(
        "inpath.queues",
        "inpath_queues",
        parse_queues,
        _show_queues,
        restart=True,
        spells=lambda queues: len(queues) > 1,  # `queues:` takes a range only
    ),
    replace(
        _integer("inpath.queue_maxlen", "inpath_queue_maxlen", 1, 1 << 24, "packets"),
        restart=True,
    ),
    # Its own key, not relay.allow's: each mode reads only its section, and here a prefix is
    # the LAC's address on both sides (source LAC -> LNS, destination LNS -> LAC), not the
    # source of datagrams to our socket. `rules` also queues only these sources.
    _allow("inpath.allow", "inpath_allow"),
    replace(
        _engine_millis("reorder.timeout_ms", "reorder_timeout"),
        flag=Flag("--timeout", "reorder timeout in milliseconds", "MS", float),
        override="timeout_ms",
    ),
    replace(
        _boolean("reorder.adaptive", "engine.adaptive"),
        flag=Flag("--adaptive", "adaptive per-session timeout", choices=("true", "false")),
        override="adaptive",
        parse_flag=lambda k, v: check_bool(k, v == "true"),
    ),
    _engine_millis("reorder.min_timeout_ms", "min_timeout"),
    Setting(
        "reorder.sequencing",
        "engine.sequencing",
        _sequencing,
        lambda v: str(v.value),
        Flag(
            "--sequencing",
            "what the LNS sees in Ns",
            choices=tuple(s.value for s in Sequencing),
        ),
        "sequencing",
    ),
    replace(
        _engine_integer("reorder.max_held_per_session", "max_held_per_session", "packets"),
        flag=Flag("--max-held", "max held packets per session", "N", int),
        override="max_held_per_session",
    ),
    # A packet whose Ns was given up (core/behind.py); auto: deliver, but drop in preserve mode.
    Setting(
        "reorder.late", "engine.late", lambda k, v: Late(check_choice(k, v, LATE)), str
    ),
    _engine_integer("reorder.max_held_bytes", "max_held_bytes", "bytes"),
    _engine_integer("reorder.resync_after", "resync_after", "packets"),
    _engine_integer("reorder.max_sessions", "max_sessions", "sessions"),
    _engine_millis("reorder.session_idle_timeout_ms", "session_idle_timeout"),
    _boolean("reorder.lns_to_lac", "reorder_lns_to_lac"),
    replace(
        _choice_of("logging.level", "log_level", LOG_LEVELS),
        flag=Flag("--log-level", "the log level", choices=LOG_LEVELS),
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
    # Read at start and written at stop: a reload cannot move it (the stop would write where
    # the next start does not look, and the numbering would start afresh).
    replace(Setting("state_file", "state_file", optional_path, _show_optional), restart=True),
    _millis("state_file_max_age_ms", "state_max_age", 0, 7 * 86_400_000, lo_open=True),
    replace(Setting("user", "user", _optional(_user), _show_optional), restart=True),
    replace(
        Setting("control_socket", "control_socket", optional_path, _show_optional),
        restart=True,
    ),
)

# --- the file's shape (derived from SETTINGS) -----------------------------------------------

TOP_LEVEL = "(top level)"  # the key named when the document itself is not a mapping
TOP_KEYS = tuple(dict.fromkeys(s.key.partition(".")[0] for s in SETTINGS))
OLD_KEYS = {s.old_key: s for s in SETTINGS if s.old_key is not None}
SECTION_KEYS: dict[str, tuple[str, ...]] = {}
for _s in SETTINGS:
    if _s.section:
        SECTION_KEYS[_s.section] = (*SECTION_KEYS.get(_s.section, ()), _s.name)
RELAY_KEYS = SECTION_KEYS["relay"]
INPATH_KEYS = SECTION_KEYS["inpath"]
REORDER_KEYS = SECTION_KEYS["reorder"]
LOGGING_KEYS = SECTION_KEYS["logging"]
METRICS_KEYS = SECTION_KEYS["metrics"]


def value_of(setting: Setting, config: object) -> Any:
    """The program value of `setting` in `config` (follows "engine.x" into the sub-config)."""
    value = config
    for part in setting.field.split("."):
        value = getattr(value, part)
    return value


def shown(setting: Setting, config: object) -> str:
    """The value of `setting` in `config` as the file would spell it (file units)."""
    return setting.show(value_of(setting, config))
