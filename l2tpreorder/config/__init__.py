"""The daemon's configuration: a YAML file, validated into frozen dataclasses.

The file speaks operator units (milliseconds, bytes, `HOST:PORT` strings) and has sections
(`relay:`, `inpath:`, `reorder:`, ...); the dataclasses speak program units (seconds, tuples,
`ipaddress` networks) with flat attribute names. Where each part lives:

- `settings.py`: SETTINGS, one declaration per setting (key, field, check, flag, reloadable)
- `model.py`: `Config` / `MetricsConfig` and the checks spanning several settings
- `values.py`: the value parsers; `errors.py`: ConfigError and how values are quoted
- `load.py`: the YAML file -> Config (sections, deprecated flat keys)
- `flags.py`: `run`'s flags, generated from SETTINGS, and the overrides they make
- `host.py`: what `run` checks on this host (user, state directory), the state file path
- `show.py`: `check-config` (this package is that command's module for the CLI)
"""

from l2tpreorder.config.errors import ConfigError, YamlSyntaxError, number, yaml_repr
from l2tpreorder.config.flags import (
    add_run_arguments,
    add_setting_arguments,
    load_file_only,
    load_from_args,
    load_with_overrides,
    override_argv,
    overrides_from_args,
    with_overrides,
)
from l2tpreorder.config.host import EX_CONFIG, check_host, state_file_path
from l2tpreorder.config.load import DEFAULT_CONFIG, config_file, config_from_dict, load_config
from l2tpreorder.config.model import (
    HELLO_INTERVAL_S,
    LOG_LEVELS,
    MODES,
    REBIND_KEYS,
    Config,
    MetricsConfig,
)
from l2tpreorder.config.settings import (
    INPATH_KEYS,
    LOGGING_KEYS,
    METRICS_KEYS,
    RELAY_KEYS,
    REORDER_KEYS,
    SECTION_KEYS,
    SETTINGS,
    TOP_KEYS,
    Flag,
    Setting,
)
from l2tpreorder.config.show import add_arguments, describe, effective, main, notes
from l2tpreorder.config.values import (
    Address,
    Network,
    format_address,
    parse_address,
    parse_ip,
    parse_ms,
    parse_network,
    parse_queues,
)

__all__ = [
    "DEFAULT_CONFIG",
    "EX_CONFIG",
    "HELLO_INTERVAL_S",
    "INPATH_KEYS",
    "LOGGING_KEYS",
    "LOG_LEVELS",
    "METRICS_KEYS",
    "MODES",
    "REBIND_KEYS",
    "RELAY_KEYS",
    "REORDER_KEYS",
    "SECTION_KEYS",
    "SETTINGS",
    "TOP_KEYS",
    "Address",
    "Config",
    "ConfigError",
    "Flag",
    "MetricsConfig",
    "Network",
    "Setting",
    "YamlSyntaxError",
    "add_arguments",
    "add_run_arguments",
    "add_setting_arguments",
    "check_host",
    "config_file",
    "config_from_dict",
    "describe",
    "effective",
    "format_address",
    "load_config",
    "load_file_only",
    "load_from_args",
    "load_with_overrides",
    "main",
    "notes",
    "number",
    "override_argv",
    "overrides_from_args",
    "parse_address",
    "parse_ip",
    "parse_ms",
    "parse_network",
    "parse_queues",
    "state_file_path",
    "with_overrides",
    "yaml_repr",
]
