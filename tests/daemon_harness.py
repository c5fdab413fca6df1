"""A real `l2tpreorder run` subprocess on loopback, with a fake LAC/LNS and a notify socket.

The daemon's readiness and reloads are observed through a real AF_UNIX datagram socket set as
$NOTIFY_SOCKET (the systemd protocol), so tests wait for events instead of sleeping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import PROJECT_ROOT

WAIT = 10.0  # generous upper bound for anything to happen on a loaded 2-core VM


def free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def udp(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, port))
    s.settimeout(WAIT)
    return s


def recv(sock: socket.socket, timeout: float = WAIT) -> tuple[bytes, Any]:
    sock.settimeout(timeout)
    return sock.recvfrom(65535)


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recvfrom(65535)
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)
    return False


class Daemon:
    """`python -m l2tpreorder run --config FILE [ARGS]` with its notify socket and logs."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        """`prefix`: argv run before python (e.g. `ip netns exec NAME`: it execs the daemon, so
        `proc` is still the daemon itself and signals reach it)."""
        self.tmp = tmp
        self.config_path = tmp / "config.yaml"
        # Each test daemon its own control socket: the default (/run/l2tpreorder) is one per
        # host, and parallel tests (or a real daemon) must not share it.
        if isinstance(config, dict) and "control_socket" not in config:
            config = {**config, "control_socket": str(tmp / "control.sock")}
        self.write_config(config)
        self.notify_path = str(tmp / "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.messages: list[str] = []
        self.log_path = tmp / "daemon.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        full_env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [
                *(prefix or []),
                *(sys.executable, "-m", "l2tpreorder", "run", "--config", str(self.config_path)),
                *(args or []),
            ],
            cwd=PROJECT_ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def write_config(self, config: dict[str, Any]) -> None:
        # These tests count holds and releases against a fixed timeout: pin it unless the test
        # says otherwise (adaptive is the default since issue 22; docs/adaptive.md).
        reorder = config.get("reorder")
        if reorder is None or isinstance(reorder, dict):
            config = {**config, "reorder": {"adaptive": False, **(reorder or {})}}
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config))
        tmp.replace(self.config_path)

    def wait_notify(self, field: str, timeout: float = WAIT) -> str:
        """Wait for a notify datagram containing `field` (e.g. "READY=1"); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not self._pending()):
                raise AssertionError(
                    f"no {field} from the daemon; got {self.messages}; log:\n{self.log()}"
                )
            self.notify.settimeout(min(left, 0.5))
            try:
                msg = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append(msg)
            if field in msg.split("\n"):
                return msg

    def _pending(self) -> bool:
        try:
            self.notify.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, TimeoutError):  # TimeoutError: the socket has a timeout set
            return False
        return True

    def ready(self) -> Daemon:
        self.wait_notify("READY=1")
        return self

    def hup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def reload(self) -> str:
        """SIGHUP and wait for the RELOADING=1 ... READY=1 pair; returns the READY message."""
        self.hup()
        self.wait_notify("RELOADING=1")
        return self.wait_notify("READY=1")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never logged; log:\n{self.log()}")

    def terminate(self, timeout: float = WAIT) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        self.notify.close()
        self._log.close()
