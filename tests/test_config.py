"""Configuration: defaults, the documented example, validation messages, CLI overrides."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from l2tpreorder import config as cfg
from l2tpreorder.config import Config, ConfigError, config_from_dict, load_config, with_overrides
from l2tpreorder.core.engine import Sequencing
from tests.conftest import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "config.example.yaml"


def test_example_file_is_exactly_the_defaults() -> None:
    loaded = load_config(EXAMPLE)
    assert dataclasses.replace(loaded, source=None) == Config()


def test_example_documents_every_key_with_a_comment() -> None:
    text = EXAMPLE.read_text()
    data = yaml.safe_load(text)
    assert set(data) == set(cfg.TOP_KEYS)
    for section, keys in (
        ("relay", cfg.RELAY_KEYS),
        ("inpath", tuple(k for k in cfg.INPATH_KEYS if k != "queues")),  # `queue: 0` spelling
        ("reorder", cfg.REORDER_KEYS),
        ("logging", cfg.LOGGING_KEYS),
        ("metrics", cfg.METRICS_KEYS),
    ):
        assert set(data[section]) == set(keys), section
    # Each key line is preceded by a comment line that explains it.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*[a-z_]+:", line) and line.strip().rstrip(":") not in (
            "reorder",
            "logging",
            "metrics",
            "inpath",
            "relay",
        ):
            assert lines[i - 1].lstrip().startswith("#"), f"undocumented: {line!r}"


def test_units_are_converted_to_seconds() -> None:
    c = config_from_dict(
        {"reorder": {"timeout_ms": 250, "sequencing": "strip"}, "peer_idle_timeout_ms": 120000}
    )
    assert c.engine.reorder_timeout == 0.25
    assert c.engine.sequencing is Sequencing.STRIP
    assert c.peer_idle_timeout == 120.0


def test_addresses_ipv4_ipv6_and_networks() -> None:
    c = config_from_dict(
        {
            "listen": ["0.0.0.0:1701", "[::]:1701", "[2001:DB8::1]:11701"],
            "lns": "[::1]:1702",
            "allow": ["192.0.2.0/24", "2001:db8::/32"],
        }
    )
    assert c.listen == (("0.0.0.0", 1701), ("::", 1701), ("2001:db8::1", 11701))
    assert c.lns == ("::1", 1702)
    assert c.allow == (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32"))
    assert not c.allows_everything
    assert Config().allows_everything


@pytest.mark.parametrize(
    ("data", "key", "value", "expected"),
    [
        ({"reorder": {"timeout_ms": -1}}, "reorder.timeout_ms", -1, "milliseconds"),
        ({"reorder": {"timeout_ms": 60001}}, "reorder.timeout_ms", 60001, "<= 60000"),
        ({"reorder": {"timeout_ms": "100"}}, "reorder.timeout_ms", "100", "number"),
        ({"reorder": {"timeout_ms": True}}, "reorder.timeout_ms", True, "number"),
        ({"reorder": {"sequencing": "sort"}}, "reorder.sequencing", "sort", "renumber"),
        ({"reorder": {"max_held_per_session": 0}}, "reorder.max_held_per_session", 0, "1..32767"),
        ({"reorder": {"resync_after": 1}}, "reorder.resync_after", 1, "2..1000"),
        ({"reorder": {"lns_to_lac": "yes"}}, "reorder.lns_to_lac", "yes", "true or false"),
        ({"reorder": {"timout_ms": 5}}, "reorder.timout_ms", 5, "known key"),
        ({"bogus": 1}, "bogus", 1, "known key"),
        ({"listen": ["1.2.3.4"]}, "listen[0]", "1.2.3.4", "port is missing"),
        ({"listen": ["::1:1701"]}, "listen[0]", "::1:1701", "brackets"),
        ({"listen": ["example.org:1701"]}, "listen[0]", "example.org:1701", "IP literal"),
        ({"listen": ["1.2.3.4:70000"]}, "listen[0]", "1.2.3.4:70000", "PORT 1..65535"),
        ({"listen": ["1.2.3.4:1", "1.2.3.4:1"]}, "listen", ["1.2.3.4:1", "1.2.3.4:1"], "once"),
        ({"listen": []}, "listen", [], "non-empty list"),
        ({"lns": 1702}, "lns", 1702, "IPv4:PORT"),
        ({"allow": ["10.0.0.1/8"]}, "allow[0]", "10.0.0.1/8", "prefix"),
        ({"allow": [42]}, "allow[0]", 42, "prefix"),
        ({"max_peers": 0}, "max_peers", 0, "1..1000000"),
        ({"peer_idle_timeout_ms": 60000}, "peer_idle_timeout_ms", 60000, "> 60000"),
        ({"upstream_bind": "localhost"}, "upstream_bind", "localhost", "address literal"),
        ({"socket_buffer_bytes": 10}, "socket_buffer_bytes", 10, "bytes"),
        ({"logging": {"level": "loud"}}, "logging.level", "loud", "debug"),
        ({"logging": "info"}, "logging", "info", "mapping"),
        ({"metrics": {"port": 70000}}, "metrics.port", 70000, "0..65535"),
        ({"metrics": {"listen": "0.0.0.0:17010"}}, "metrics.listen", "0.0.0.0:17010", "literal"),
        ({"metrics": {"tls_cert": "/c.pem"}}, "metrics.tls_cert", "/c.pem", "both"),
        ([1, 2], "(top level)", [1, 2], "mapping"),
        # the sectioned spelling names the sectioned key
        ({"relay": {"listen": ["1.2.3.4"]}}, "relay.listen[0]", "1.2.3.4", "port is missing"),
        ({"relay": {"max_peers": 0}}, "relay.max_peers", 0, "1..1000000"),
        ({"relay": {"bogus": 1}}, "relay.bogus", 1, "known key"),
        ({"relay": ["listen"]}, "relay", ["listen"], "mapping"),
        ({"inpath": {"listen": "1.2.3.4:1"}}, "inpath.listen", "1.2.3.4:1", "known key"),
        ({"state_file_max_age_ms": 0}, "state_file_max_age_ms", 0, "> 0"),
        (
            {"relay": {"listen": ["127.0.0.1:1701"], "lns": "127.0.0.1:1701"}},
            "relay.lns",
            "127.0.0.1:1701",
            "an address that is not one of listen",
        ),
        (
            {"listen": ["127.0.0.1:1701"], "lns": "127.0.0.1:1701"},
            "lns",
            "127.0.0.1:1701",
            "an address that is not one of listen (listen 127.0.0.1:1701 receives it",
        ),
        (
            {"listen": ["0.0.0.0:1701"], "lns": "127.0.0.1:1701"},
            "lns",
            "127.0.0.1:1701",
            "an address that is not one of listen (listen 0.0.0.0:1701 receives it",
        ),
        (
            {"listen": ["[::]:1701"], "lns": "[::1]:1701"},
            "lns",
            "[::1]:1701",
            "an address that is not one of listen (listen [::]:1701 receives it",
        ),
        ({"upstream_bind": "::1"}, "upstream_bind", "::1", "an IPv4 address like lns 127.0.0.1"),
        (
            {"lns": "[2001:db8::2]:1702", "upstream_bind": "192.0.2.1"},
            "upstream_bind",
            "192.0.2.1",
            "an IPv6 address like lns [2001:db8::2]:1702",
        ),
        (
            {"listen": ["127.0.0.1:1702"]},  # the default lns 127.0.0.1:1702, not in the file
            "relay.lns",
            "127.0.0.1:1702",
            "an address that is not one of listen",
        ),
    ],
)
def test_errors_name_key_value_and_expectation(
    data: object, key: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, source="test.yaml")
    err = info.value
    assert err.key == key
    assert err.value == value
    assert expected in err.expected
    text = str(err)
    # Values as the file spells them (issue 13): true/false/null, numbers as written.
    assert text.startswith(f"test.yaml: {key} = {cfg.yaml_repr(value)}: expected ")


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert dataclasses.replace(load_config(path), source=None) == Config()


def test_unreadable_and_invalid_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("reorder:\n  timeout_ms: [1,\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    # "FILE: line L, column C: problem", without the `(yaml) = ...` framing (issue 13).
    assert re.fullmatch(rf"{re.escape(str(bad))}: line \d+, column \d+: [^=]+", str(info.value))


def test_command_line_overrides_win() -> None:
    base = config_from_dict({"listen": ["0.0.0.0:1701"], "reorder": {"timeout_ms": 100}})
    c = with_overrides(
        base,
        listen=["127.0.0.1:11701", "[::1]:11701"],
        lns="127.0.0.1:11702",
        timeout_ms=20,
        log_level="debug",
    )
    assert c.listen == (("127.0.0.1", 11701), ("::1", 11701))
    assert c.lns == ("127.0.0.1", 11702)
    assert c.engine.reorder_timeout == 0.02
    assert c.engine.sequencing is base.engine.sequencing
    assert c.log_level == "debug"
    assert with_overrides(base) is base
    with pytest.raises(ConfigError, match="--listen"):
        with_overrides(base, listen=["[::1]"])
    with pytest.raises(ConfigError, match="--timeout"):
        with_overrides(base, timeout_ms=-3)


def test_lns_may_share_a_port_with_listen_only_on_another_address_or_family() -> None:
    for data in (
        {"listen": ["[::]:1701"], "lns": "127.0.0.1:1701"},  # [::] is IPv6-only
        {"listen": ["127.0.0.1:1701"], "lns": "127.0.0.2:1701"},
        {"listen": ["0.0.0.0:1701"], "lns": "127.0.0.1:1702"},
    ):
        assert config_from_dict(data).lns == cfg.parse_address("lns", data["lns"])


def test_lns_flag_equal_to_a_listen_address_is_rejected() -> None:
    base = config_from_dict({"listen": ["0.0.0.0:1701"]})
    with pytest.raises(ConfigError) as info:
        with_overrides(base, lns="127.0.0.1:1701")
    assert (info.value.key, info.value.value) == ("--lns", "127.0.0.1:1701")
    assert info.value.expected.startswith("an address that is not one of listen")
    # --listen that now covers the file's lns: the error names lns and its value.
    with pytest.raises(ConfigError) as info:
        with_overrides(base, listen=["127.0.0.1:1702"])
    assert (info.value.key, info.value.value) == ("relay.lns", "127.0.0.1:1702")
    assert info.value.expected.startswith("an address that is not one of listen")


def test_lns_flag_of_another_family_than_upstream_bind_is_rejected() -> None:
    base = config_from_dict({"upstream_bind": "127.0.0.1"})
    with pytest.raises(ConfigError) as info:
        with_overrides(base, lns="[::1]:1702")
    assert (info.value.key, info.value.value) == ("relay.upstream_bind", "127.0.0.1")
    assert info.value.expected.startswith("an IPv6 address like lns [::1]:1702")
    assert config_from_dict({"upstream_bind": "::1", "lns": "[::1]:1702"}).upstream_bind == "::1"


def test_repeated_listen_flag_is_rejected_like_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), listen=["127.0.0.1:11701", "127.0.0.1:11701"])
    assert info.value.key == "--listen"
    assert info.value.value == ["127.0.0.1:11701", "127.0.0.1:11701"]
    assert info.value.expected == "each address at most once"
    # The same address spelled twice is the same address (as in the file).
    with pytest.raises(ConfigError, match="at most once"):
        with_overrides(Config(), listen=["[::1]:11701", "[0:0::1]:11701"])


def test_rebind_changes_are_named() -> None:
    a = Config()
    b = config_from_dict({"lns": "127.0.0.1:1703", "reorder": {"timeout_ms": 5}})
    assert a.rebind_changes(b) == ["lns"]
    assert a.rebind_changes(dataclasses.replace(a, max_peers=3)) == []
    changed = dataclasses.replace(
        a,
        listen=(("127.0.0.1", 11701),),
        lns=("127.0.0.1", 11702),
        upstream_bind="127.0.0.1",
        socket_buffer_bytes=8192,
        udp_gso=True,
        control_socket="/tmp/other.sock",
    )
    assert a.rebind_changes(changed) == list(cfg.REBIND_KEYS)
    two = dataclasses.replace(a, listen=(("127.0.0.1", 1), ("127.0.0.2", 1)))
    reordered = dataclasses.replace(a, listen=(("127.0.0.2", 1), ("127.0.0.1", 1)))
    assert two.rebind_changes(reordered) == []


def _check_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l2tpreorder", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )


def test_check_config_command(tmp_path: Path) -> None:
    ok = _check_config(str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "lns: 127.0.0.1:1702" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("reorder:\n  max_held_bytes: -4\n")
    res = _check_config(str(bad))
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.strip() == (
        f"error: {bad}: reorder.max_held_bytes = -4: expected an integer >= 1 bytes (line 2)"
    )
    assert "Traceback" not in res.stderr


def test_values_in_errors_are_spelled_as_in_yaml() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"reorder": {"timeout_ms": True}})
    assert str(info.value).startswith("reorder.timeout_ms = true: expected")
    with pytest.raises(ConfigError) as info:
        config_from_dict({"peer_idle_timeout_ms": 86_400_001})
    assert str(info.value) == (
        "peer_idle_timeout_ms = 86400001: expected a number of milliseconds > 60000 and <= 86400000"
    )
    assert cfg.yaml_repr(None) == "null" and cfg.yaml_repr(False) == "false"
    assert cfg.yaml_repr(0.5) == "0.5" and cfg.yaml_repr(8.64e7) == "86400000"


def test_a_key_given_twice_is_refused_anywhere(tmp_path: Path) -> None:
    """The second `reorder:` used to replace the first silently."""
    for text, line in (
        ("reorder:\n  timeout_ms: 5\nreorder:\n  sequencing: strip\n", 3),
        ("reorder:\n  timeout_ms: 5\n  timeout_ms: 7\n", 3),
        ("metrics:\n  port: 1\nlns: 127.0.0.1:1702\nmetrics: {port: 2}\n", 4),
    ):
        path = tmp_path / "dup.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert re.fullmatch(
            rf"{re.escape(str(path))}: line {line}, column \d+: duplicate key '\w+' "
            r"\(first given on line \d\)",
            str(info.value),
        ), str(info.value)
    path = tmp_path / "fine.yaml"
    path.write_text("reorder:\n  timeout_ms: 5\nlogging:\n  level: debug\n")
    assert load_config(path).engine.reorder_timeout == 0.005


def test_check_host_refuses_an_unknown_user_and_a_bad_state_directory(tmp_path: Path) -> None:
    cfg.check_host(Config(user="root", state_file=str(tmp_path / "state.json")))
    with pytest.raises(ConfigError) as info:
        cfg.check_host(Config(user="no-such-user-l2tpreorder"))
    assert info.value.key == "user"
    with pytest.raises(ConfigError) as info:
        cfg.check_host(Config(state_file=str(tmp_path / "missing" / "state.json")))
    assert info.value.key == "state_file" and "does not exist" in info.value.expected


def test_check_host_refuses_an_unwritable_state_directory(tmp_path: Path) -> None:
    """Checked for the user the daemon writes as: `user:` when set, else whoever runs it."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    state = str(locked / "state.json")
    # As root, run would drop to `nobody` and then fail to save; unprivileged, we fail ourselves.
    user = "nobody" if os.geteuid() == 0 else None
    with pytest.raises(ConfigError) as info:
        cfg.check_host(Config(state_file=state, user=user))
    assert info.value.key == "state_file" and "is not)" in info.value.expected
    locked.chmod(0o777)
    cfg.check_host(Config(state_file=state, user=user))


def test_check_config_refuses_what_run_would(tmp_path: Path) -> None:
    cases = {
        "user: no-such-user-l2tpreorder\n": "user = 'no-such-user-l2tpreorder': expected",
        f"state_file: {tmp_path}/nowhere/state.json\n": "does not exist",
        "reorder: {timeout_ms: 5}\nreorder: {timeout_ms: 6}\n": "duplicate key 'reorder'",
        "reorder:\n  timeout_ms: [1,\n": "line 3, column 1: expected the node content",
    }
    for text, needle in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        res = _check_config("--config", str(bad))
        assert res.returncode == 1, (text, res.stdout)
        assert needle in res.stderr, (text, res.stderr)
        assert "(yaml) =" not in res.stderr and "Traceback" not in res.stderr


def check_config_listing(stdout: str) -> dict[str, object]:
    """check-config's listing (nested YAML after one comment line) as {dotted key: value}."""
    first, _, rest = stdout.partition("\n")
    assert first.startswith("# ") and ": OK" in first, first
    document = yaml.safe_load(rest)
    assert isinstance(document, dict)
    flat: dict[str, object] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def test_check_config_prints_every_effective_setting_as_written(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    # adaptive off: a 0.5 ms cap below the adaptive floor would add a note (tested elsewhere)
    path.write_text("peer_idle_timeout_ms: 86400000\nreorder: {timeout_ms: 0.5, adaptive: false}\n")
    for args in ((str(path),), ("--config", str(path)), ("-c", str(path))):
        res = _check_config(*args)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"# {path}: OK")
        shown = check_config_listing(res.stdout)
        # every setting, in file order, by its sectioned key (one queue is `inpath.queue`:
        # `inpath.queues` takes a range only)
        assert list(shown) == [
            "inpath.queue" if s.key == "inpath.queues" else s.key
            for s in cfg.SETTINGS
            if s.key != "inpath.queue"
        ]
        assert shown["relay.peer_idle_timeout_ms"] == 86400000
        assert shown["reorder.timeout_ms"] == 0.5
        assert shown["relay.udp_gso"] is False and shown["user"] is None
        assert shown["relay.listen"] == ["0.0.0.0:1701"]
        assert shown["reorder.max_held_bytes"] == 33554432
        # the flat key still works, and says how to spell it now
        assert res.stderr == (
            f"warning: {path}: `peer_idle_timeout_ms` is deprecated: "
            "write `relay.peer_idle_timeout_ms`\n"
        )
    assert _check_config().returncode == 2  # no file at all


@pytest.mark.parametrize(
    "text",
    [
        "",
        "listen: ['127.0.0.1:11701', '[::1]:11701']\nallow: ['192.0.2.0/24']\n",
        "mode: inpath\ninpath: {queues: '2-5', queue_maxlen: 7}\nuser: 'no'\n",
        "reorder: {timeout_ms: 0.25, sequencing: strip, adaptive: true}\nstate_file: /x/s.json\n",
        "metrics: {listen: '::1', tls_cert: /c.pem, tls_key: /k.pem}\nlogging: {level: debug}\n",
    ],
)
def test_check_config_listing_loads_back_as_the_same_config(tmp_path: Path, text: str) -> None:
    """The listing is a config file (`check-config A > B`): B means exactly what A means, in
    the sectioned spelling (no warning), whatever the values' types."""
    config = config_from_dict(yaml.safe_load(text))
    listing = cfg.describe(config)
    again = config_from_dict(yaml.safe_load(listing))
    assert again == config and again.warnings == ()


def test_check_config_names_every_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "reorder:\n  timout_ms: 5\n  max_held_bytes: -4\nrelay:\n  listen: ['1.2.3.4']\n"
        "lsten: x\nqueues: '0-3'\n"
    )
    res = _check_config(str(path))
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines() == [
        f"error: {path}: lsten = 'x': expected a known key (did you mean relay.listen?): "
        + ", ".join(cfg.TOP_KEYS) + " (line 6)",
        f"error: {path}: queues = '0-3': expected a known key (did you mean inpath.queues?): "
        + ", ".join(cfg.TOP_KEYS) + " (line 7)",
        f"error: {path}: relay.listen[0] = '1.2.3.4': expected an address \"IPv4:PORT\" or "
        '"[IPv6]:PORT" with PORT 1..65535 (the port is missing) (line 5)',
        f"error: {path}: reorder.timout_ms = 5: expected a known key (did you mean "
        "reorder.timeout_ms?): " + ", ".join(cfg.REORDER_KEYS) + " (line 2)",
        f"error: {path}: reorder.max_held_bytes = -4: expected an integer >= 1 bytes (line 3)",
    ]
    # run and reload say it in one line: the first error and how many more there are
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).endswith("(and 4 more: `l2tpreorder check-config` lists them all)")
    assert "\n" not in str(info.value)


def test_check_config_says_when_everything_is_a_default(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    res = _check_config(str(path))
    assert res.returncode == 0
    assert res.stderr == "note: every value is the default (the file changes nothing)\n"
    path.write_text("reorder: {timeout_ms: 40}\n")
    assert "note:" not in _check_config(str(path)).stderr


# Every engine range is declared once (core.engine.LIMITS); the file's keys are built from it, so
# the file and EngineConfig accept exactly the same values (the file in milliseconds).
_ENGINE_KEYS = {
    "reorder_timeout": ("timeout_ms", 1000),
    "min_timeout": ("min_timeout_ms", 1000),
    "max_held_per_session": ("max_held_per_session", 1),
    "max_held_bytes": ("max_held_bytes", 1),
    "resync_after": ("resync_after", 1),
    "max_sessions": ("max_sessions", 1),
    "session_idle_timeout": ("session_idle_timeout_ms", 1000),
}


def test_every_engine_limit_has_a_file_key() -> None:
    from l2tpreorder.core.engine import LIMITS

    assert set(LIMITS) == set(_ENGINE_KEYS)


@pytest.mark.parametrize("name", sorted(_ENGINE_KEYS))
def test_file_and_engine_agree_on_each_range(name: str) -> None:
    from l2tpreorder.core.engine import LIMITS, LOW_OPEN, EngineConfig

    key, scale = _ENGINE_KEYS[name]
    lo, hi = LIMITS[name]
    step = 0.001 if scale == 1000 else 1
    edges = [lo - step, lo, lo + step] + ([] if hi is None else [hi, hi + step])
    for value in edges:
        engine_ok = True
        try:
            EngineConfig(**{name: value})  # type: ignore[arg-type]
        except ValueError:
            engine_ok = False
        file_value = round(value * scale, 6) if scale != 1 else int(value)
        file_ok = True
        try:
            config_from_dict({"reorder": {key: file_value}})
        except ConfigError:
            file_ok = False
        assert file_ok == engine_ok, (name, value, file_ok, engine_ok)
        inside = (value > lo if name in LOW_OPEN else value >= lo) and (hi is None or value <= hi)
        assert engine_ok == inside, (name, value)
