"""The control socket's client: one request to the running daemon, found from its config file
(`socket_candidates`: the same list the server binds from)."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import yaml

from l2tpreorder.config import DEFAULT_CONFIG, config_file
from l2tpreorder.daemon.control import CLIENT_TIMEOUT, socket_candidates

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2


class ControlError(Exception):
    """The daemon could not be reached or answered nonsense (exit code 2)."""


def configured_socket(config_path: str | None) -> str | None:
    """`control_socket` from the config file, read leniently: a file the daemon would refuse
    (the very file an operator is trying to reload) must not stop us finding the socket."""
    return _configured(config_path, "control_socket")


def _configured(config_path: str | None, key: str) -> str | None:
    """A top-level string setting of the config file, read leniently (see configured_socket)."""
    path = config_file(config_path)
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ControlError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        # Broken YAML elsewhere in the file: the top-level line alone still names the value.
        found = re.search(rf"^{key}:[ \t]*[\"']?([^\"'#\s]+)", text, re.MULTILINE)
        return found.group(1) if found and found.group(1) != "null" else None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def request(
    command: str,
    config_path: str | None,
    timeout: float = CLIENT_TIMEOUT,
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send one command (with the request's other `fields`) to the daemon found from the
    config file; returns its answer."""
    candidates = socket_candidates(configured_socket(config_path))
    existing = [p for p in candidates if os.path.exists(p)]
    if not existing:
        raise ControlError(
            "no control socket at " + ", ".join(candidates) + ": is l2tpreorder running?"
        )
    path = existing[0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(json.dumps({**(fields or {}), "command": command}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"{path}: no answer within {timeout:g} s") from None
        except OSError as e:
            raise ControlError(f"{path}: {e.strerror or e}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: not an l2tpreorder answer: {data[:80]!r}") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ControlError(f"{path}: not an l2tpreorder answer: {data[:80]!r}")
    return answer


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help=f"the daemon's config file (names its control_socket; default {DEFAULT_CONFIG})",
    )
