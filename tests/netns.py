"""Network namespaces for tests: named with the pid, sockets opened inside them from this process.

A network namespace is per thread: a short-lived thread `setns()`es into the namespace and
creates the socket there; the socket stays in that namespace and is used from any thread. So a
test can be LAC and LNS itself (real sockets, real kernel path) without a helper process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `check` until true; fail naming `what` after `timeout` (a bound, not a speed test)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class NetNs:
    """One namespace `l2rx-<role>-<pid>`; everything started in it is stopped by `close()`."""

    def __init__(self, role: str) -> None:
        self.name = f"l2rx-{role}-{os.getpid()}"
        self.procs: list[subprocess.Popen[bytes]] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            check=check, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    def popen(self, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.name, *argv],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` run in a thread inside this namespace: the sockets it creates live there."""
        result: list[Any] = []

        def inside() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                result.append(fn())
            except BaseException as e:  # handed to the caller
                result.append(e)

        t = threading.Thread(target=inside)
        t.start()
        t.join(timeout=30)
        if not result:
            raise AssertionError("a call in the namespace did not finish")
        if isinstance(result[0], BaseException):
            raise result[0]
        value: T = result[0]
        return value

    def socket(self, family: int, kind: int, bind: tuple[Any, ...] | None = None) -> socket.socket:
        """A socket created inside this namespace (and bound there, when `bind` is given)."""

        def make() -> socket.socket:
            s = socket.socket(family, kind)
            if bind is not None:
                s.bind(bind)
            return s

        return self.call(make)

    def udp(self, host: str, port: int = 0) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = self.socket(family, socket.SOCK_DGRAM, (host, port))
        # Tests send a burst before reading: room for all of it (FORCE: we are root here).
        s.setsockopt(socket.SOL_SOCKET, 33, 16 * 1024 * 1024)  # SO_RCVBUFFORCE
        s.settimeout(10)
        return s

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()
        pids = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=10
        ).stdout.split()
        for pid in pids:  # only processes we started can be inside our namespace
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
