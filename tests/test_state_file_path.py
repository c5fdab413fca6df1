"""One helper says where `run` keeps its state, for relay and in-path mode alike."""

from __future__ import annotations

import dataclasses

import pytest

from l2tpreorder.config import Config, state_file_path


def test_state_file_then_state_directory_then_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = Config()
    assert state_file_path(config) is None and state_file_path(config, 4) is None
    # systemd's StateDirectory= (several directories: the first is ours)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/l2tpreorder:/var/lib/other")
    assert state_file_path(config) == "/var/lib/l2tpreorder/state.json"
    assert state_file_path(config, 4) == "/var/lib/l2tpreorder/state.json.queue4"
    explicit = dataclasses.replace(config, state_file="/srv/s.json")  # wins over the directory
    assert state_file_path(explicit) == "/srv/s.json"
    assert state_file_path(explicit, 5) == "/srv/s.json.queue5"
