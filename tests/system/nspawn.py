"""A Debian 12 system booted with systemd-nspawn, driven with nsenter.

The host has no D-Bus and its PID 1 is not systemd, hence `--register=no --keep-unit`; the
container has its own loopback only (`--private-network`). Commands run in all of the
container's namespaces via `nsenter -t <its PID 1> -a`, so `systemctl` talks to its systemd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

# The container's commands see a plain Debian environment, not the test runner's venv/pyenv.
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "DEBIAN_FRONTEND": "noninteractive",
}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Container:
    """One root directory, booted (and rebooted) as a container named `name`."""

    def __init__(self, root: Path, name: str, log: Path) -> None:
        self.root = root
        self.name = name
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0

    def boot(self, timeout: float = 180.0) -> None:
        """Start the container and return once its systemd reports the system up."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-b", "-D", str(self.root), "--register=no", "--keep-unit",
                 "--private-network", "-M", self.name],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        self.pid1 = 0
        while not self.pid1:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"container did not start; see {self.log}")
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            try:
                pids = children.read_text().split()
            except OSError:
                pids = []
            # nspawn's one child becomes the container's PID 1 when it execs systemd; before
            # that its namespaces are still being set up.
            if pids and _comm(int(pids[0])) == "systemd":
                self.pid1 = int(pids[0])
            else:
                time.sleep(0.05)
        # Until systemd has opened its private socket, systemctl cannot connect: retry.
        while True:
            left = max(1.0, deadline - time.monotonic())
            state = self.sh(f"timeout {left:.0f} systemctl is-system-running --wait", check=False)
            if state.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline or state.stdout.strip() not in ("", "offline"):
                raise RuntimeError(f"container's systemd: {state.stdout!r} {state.stderr!r}")
            time.sleep(0.2)

    def _argv(self, command: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid1), "-a", "--", "/bin/sh", "-c", command]

    def sh(
        self, command: str, *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside; returns its output (raises on failure when check)."""
        res = subprocess.run(
            self._argv(command), capture_output=True, text=True, timeout=timeout,
            env=CONTAINER_ENV,
        )  # fmt: skip
        if check and res.returncode != 0:
            raise AssertionError(
                f"in container: {command!r} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
            )
        return res

    def popen(self, command: str) -> subprocess.Popen[str]:
        """A command inside, running on: its stdout is readable line by line."""
        return subprocess.Popen(
            self._argv(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=CONTAINER_ENV,
        )  # fmt: skip

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, what: str, predicate: object, timeout: float = 60.0) -> None:
        """Poll `predicate()` (a callable returning bool) until true, or fail naming `what`."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.2)

    def poweroff(self, timeout: float = 120.0) -> int:
        """Shut the container down the way an operator would; returns nspawn's exit status."""
        assert self.proc is not None
        self.sh("systemctl poweroff", check=False)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Always safe: ends the container if it still runs (SIGTERM = orderly halt, then KILL)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def journal_cursor(self) -> str:
        """A cursor for `journalctl --cursor` (not --after-cursor: journalctl 252 skips the
        first match when --after-cursor is combined with -u or -p)."""
        out = self.sh("journalctl -n 1 -q --show-cursor").stdout
        return out.strip().splitlines()[-1].removeprefix("-- cursor: ").strip()

    def journal(self, args: str, cursor: str) -> str:
        return self.sh(f"journalctl --no-pager -q -o cat --cursor='{cursor}' {args}").stdout
