"""In-path mode in `make bench`: the same generator, sink, sessions and swaps as the relay, with
the generator sending straight to the sink and an iptables rule queueing it to l2tpreorder.

Everything runs in a network namespace of its own (`l2rx-bench-<pid>`), so the rule never
touches the host's firewall: inside it, every UDP datagram on its loopback is bench traffic.
Needs root and iptables; without them the in-path lines say why and the rest of the bench runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PROC_QUEUES = "/proc/net/netfilter/nfnetlink_queue"


def unavailable() -> str | None:
    """Why in-path mode cannot be measured here, or None."""
    if os.geteuid() != 0:
        return "in-path bench needs root (network namespace, iptables, CAP_NET_ADMIN)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"in-path bench needs {tool}"
    return None


class InPathLab:
    """The namespace with its queue rule; `close()` removes it (and all in it)."""

    def __init__(self, queues: tuple[int, ...]) -> None:
        self.name = f"l2rx-bench-{os.getpid()}"
        self.queues = queues
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.exec("ip", "link", "set", "lo", "up")
        target = (
            ["--queue-num", str(queues[0])]
            if len(queues) == 1
            else ["--queue-balance", f"{queues[0]}:{queues[-1]}"]
        )
        self.exec("iptables", "-A", "INPUT", "-p", "udp", "-j", "NFQUEUE", *target,
                  "--queue-bypass")  # fmt: skip

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def exec(self, *argv: str) -> str:
        out = subprocess.run([*self.prefix(), *argv], check=True, capture_output=True, text=True,
                             timeout=30)  # fmt: skip
        return out.stdout

    def bound(self) -> set[int]:
        text = self.exec("cat", PROC_QUEUES)
        return {int(line.split()[0]) for line in text.splitlines() if line.strip()}

    def kernel_drops(self) -> int:
        """queue_dropped + user_dropped over our queues (fail-open makes these stay 0)."""
        total = 0
        for line in self.exec("cat", PROC_QUEUES).splitlines():
            f = line.split()
            if len(f) >= 7 and int(f[0]) in self.queues:
                total += int(f[5]) + int(f[6])
        return total

    def config(self, timeout_ms: int) -> Path:
        """A config file for the daemon under test (removed with the namespace's temp dir)."""
        queues = (
            f"queue: {self.queues[0]}"
            if len(self.queues) == 1
            else f'queues: "{self.queues[0]}-{self.queues[-1]}"'
        )
        fd, name = tempfile.mkstemp(prefix="l2rx-bench-inpath-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(
                f"mode: inpath\ninpath: {{{queues}}}\nmetrics: {{enabled: false}}\n"
                f"reorder: {{timeout_ms: {timeout_ms}, adaptive: false}}\n"
                "logging: {level: warning}\n"
                # its own control socket (removed at exit), not the host's /run/l2tpreorder
                f"control_socket: {name[: -len('.yaml')]}.sock\n"
            )
        return Path(name)

    def wait_bound(self, proc: subprocess.Popen[str], timeout: float = 20.0) -> bool:
        limit = time.monotonic() + timeout
        while not set(self.queues) <= self.bound():
            if proc.poll() is not None or time.monotonic() > limit:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                              text=True, timeout=10).stdout.split()  # fmt: skip
        for pid in pids:  # only processes this bench started can be in its namespace
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
