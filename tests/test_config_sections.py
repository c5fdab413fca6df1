"""The file's `relay:` and `inpath:` sections, the old flat relay keys (still read, one warning
each naming the new key), a file mixing both spellings (refused), and the state file's own max
age."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from l2tpreorder.config import (
    SETTINGS,
    Config,
    ConfigError,
    config_from_dict,
    describe,
    load_config,
)
from tests.conftest import PROJECT_ROOT
from tests.test_config import check_config_listing

RELAY = {
    "listen": ["127.0.0.1:11701", "[::1]:11701"],
    "lns": "127.0.0.1:11702",
    "allow": ["192.0.2.0/24"],
    "max_peers": 7,
    "peer_idle_timeout_ms": 120000,
    "upstream_bind": "127.0.0.1",
    "socket_buffer_bytes": 8192,
    "udp_gso": True,
}


def test_every_relay_only_key_is_in_the_relay_section() -> None:
    relay = {s.key.partition(".")[2] for s in SETTINGS if s.section == "relay"}
    assert relay == set(RELAY)
    assert {s.old_key for s in SETTINGS if s.old_key} == set(RELAY)  # each had a flat spelling
    inpath = {s.key for s in SETTINGS if s.section == "inpath"}
    assert inpath == {"inpath.queue", "inpath.queues", "inpath.queue_maxlen", "inpath.allow"}


def test_sectioned_and_flat_spellings_mean_the_same_config() -> None:
    sectioned = config_from_dict({"relay": RELAY, "reorder": {"timeout_ms": 40}})
    flat = config_from_dict({**RELAY, "reorder": {"timeout_ms": 40}})
    assert sectioned == flat
    assert sectioned.listen == (("127.0.0.1", 11701), ("::1", 11701))
    assert (sectioned.max_peers, sectioned.peer_idle_timeout) == (7, 120.0)
    assert sectioned.warnings == ()
    assert sectioned != Config() and sectioned.udp_gso is True


def test_each_flat_key_warns_once_naming_the_new_key() -> None:
    flat = config_from_dict(RELAY, source="old.yaml")
    assert list(flat.warnings) == [
        f"old.yaml: `{key}` is deprecated: write `relay.{key}`" for key in RELAY
    ]
    one = config_from_dict({"listen": ["127.0.0.1:11701"], "relay": {"max_peers": 3}})
    assert one.warnings == ("`listen` is deprecated: write `relay.listen`",)


@pytest.mark.parametrize("key", sorted(RELAY))
def test_a_file_with_both_spellings_of_a_key_is_refused(key: str) -> None:
    data = {key: RELAY[key], "relay": {key: RELAY[key]}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, source="mixed.yaml")
    assert info.value.key == f"relay.{key}"
    assert info.value.expected == f"either relay.{key} or {key} (deprecated), not both"
    assert str(info.value).startswith(f"mixed.yaml: relay.{key} = ")


def test_flat_key_errors_name_the_key_as_written() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"max_peers": 0})
    assert info.value.key == "max_peers"
    with pytest.raises(ConfigError) as info:
        config_from_dict({"relay": {"max_peers": 0}})
    assert info.value.key == "relay.max_peers"


def test_relay_keys_are_not_inpath_keys_nor_the_other_way() -> None:
    with pytest.raises(ConfigError, match=r"^inpath\.listen = .*known key"):
        config_from_dict({"inpath": {"listen": "127.0.0.1:1"}})
    with pytest.raises(ConfigError, match=r"^relay\.queues = .*known key"):
        config_from_dict({"relay": {"queues": "0-3"}})
    with pytest.raises(ConfigError, match=r"^queues = .*known key"):
        config_from_dict({"queues": "0-3"})  # the inpath keys never were flat


def test_empty_sections_mean_defaults() -> None:
    assert config_from_dict({"relay": None, "inpath": None}) == Config()


def test_state_file_max_age_is_its_own_setting() -> None:
    # Its default is what the peer idle timeout's default gave before it had its own key.
    assert Config().state_max_age == Config().peer_idle_timeout == 300.0
    c = config_from_dict({"state_file_max_age_ms": 3_600_000, "relay": {"max_peers": 1}})
    assert c.state_max_age == 3600.0
    assert c.peer_idle_timeout == 300.0  # no longer tied together
    longer_idle = config_from_dict({"relay": {"peer_idle_timeout_ms": 900_000}})
    assert longer_idle.state_max_age == 300.0
    with pytest.raises(ConfigError, match=r"state_file_max_age_ms = 0: expected .*> 0"):
        config_from_dict({"state_file_max_age_ms": 0})
    with pytest.raises(ConfigError, match="state_file_max_age_ms"):
        config_from_dict({"state_file_max_age_ms": 7 * 86_400_000 + 1})


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l2tpreorder", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT,
    )  # fmt: skip


def test_check_config_on_an_old_flat_file_prints_the_new_spelling(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text('listen: ["127.0.0.1:11701"]\nlns: "127.0.0.1:11702"\nmax_peers: 9\n')
    res = _check_config(path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        f"warning: {path}: `{key}` is deprecated: write `relay.{key}`"
        for key in ("listen", "lns", "max_peers")
    ]
    shown = check_config_listing(res.stdout)
    assert shown["relay.listen"] == ["127.0.0.1:11701"]
    assert shown["relay.max_peers"] == 9
    assert "listen" not in shown and "max_peers" not in shown
    # the same file in the new spelling: same settings, no warning
    new = tmp_path / "new.yaml"
    new.write_text('relay:\n  listen: ["127.0.0.1:11701"]\n  lns: "127.0.0.1:11702"\n')
    again = _check_config(new)
    assert again.returncode == 0 and again.stderr == ""
    assert dataclasses.replace(load_config(new), source=None, max_peers=9) == dataclasses.replace(
        load_config(path), source=None
    )


def test_check_config_refuses_a_mixed_file(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text('lns: "127.0.0.1:11702"\nrelay:\n  lns: "127.0.0.1:11703"\n')
    res = _check_config(path)
    assert res.returncode == 1
    assert "relay.lns = '127.0.0.1:11703': expected either relay.lns or lns (deprecated)" in (
        res.stderr
    )


def test_inpath_allow_is_its_own_key_and_reloadable() -> None:
    """Issue 21 (6): in-path mode's source prefixes, spelled as relay.allow, never mixed with
    it (each mode reads its section only); the default lets everything in."""
    c = config_from_dict({"mode": "inpath", "inpath": {"allow": ["192.0.2.0/24", "2001:db8::/32"]}})
    assert [str(n) for n in c.inpath_allow] == ["192.0.2.0/24", "2001:db8::/32"]
    assert c.allow == Config().allow and c.allows_everything  # relay.allow untouched
    assert not c.inpath_allows_everything and Config().inpath_allows_everything
    assert not config_from_dict({"inpath": {"allow": ["0.0.0.0/0"]}}).inpath_allows_everything
    only_relay = config_from_dict({"relay": {"allow": ["192.0.2.0/24"]}})
    assert only_relay.inpath_allow == Config().inpath_allow
    setting = next(s for s in SETTINGS if s.key == "inpath.allow")
    assert not setting.restart
    with pytest.raises(ConfigError, match=r"^inpath\.allow"):
        config_from_dict({"inpath": {"allow": ["not-a-net"]}})


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (4, '"0-3" means 4 queues (0 to 3); the one queue number 4 is inpath.queue: 4'),
        (1, "the one queue number 1 is inpath.queue: 1"),
    ],
)
def test_inpath_queues_as_a_bare_number_is_refused_with_both_spellings(
    tmp_path: Path, value: int, hint: str
) -> None:
    """`inpath.queues: 4` ran one worker on queue 4 where four queues were meant (issue 24):
    refused, naming both spellings; check-config and rules say the same."""
    path = tmp_path / "c.yaml"
    path.write_text(f"mode: inpath\ninpath:\n  queues: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert hint in str(info.value), info.value
    outputs = []
    for argv in (["check-config", str(path)], ["rules", "--config", str(path)]):
        r = subprocess.run(
            [sys.executable, "-m", "l2tpreorder", *argv],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert r.returncode != 0 and r.stdout == "", (argv, r)
        outputs.append(r.stderr)
    assert all(f"inpath.queues = {value}" in e and hint in e for e in outputs), outputs
    # The quoted range and `queue: N` still mean what they said.
    assert config_from_dict({"mode": "inpath", "inpath": {"queues": "0-3"}}).inpath_queues == (
        0, 1, 2, 3,
    )  # fmt: skip
    assert config_from_dict({"mode": "inpath", "inpath": {"queue": 4}}).inpath_queues == (4,)


def test_check_config_lists_one_queue_as_queue_and_the_listing_loads_back(tmp_path: Path) -> None:
    for inpath, line in (({"queue": 5}, "  queue: 5\n"), ({"queues": "2-5"}, "  queues: 2-5\n")):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"mode": "inpath", "inpath": inpath}))
        listing = describe(load_config(path))
        assert line in listing + "\n", listing
        again = tmp_path / "again.yaml"
        again.write_text(listing)
        assert load_config(again).inpath_queues == load_config(path).inpath_queues
