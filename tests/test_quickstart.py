"""`make run` (the README's quick start) is safe anywhere: its configuration binds loopback only
and accepts loopback only, and what it prints to try next works against it (issue 24, item 15).

The live part runs the very command `make -n run` prints in a private network and mount
namespace (its fixed ports are its own), then the printed
`replay pcap --live` and `status` in the same namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2tpreorder.config import format_address, load_config
from tests.conftest import PROJECT_ROOT, need_root, need_tool
from tests.netns import wait_until
from tests.pcapgen import l2tp_data, udp_ip, write_pcap

WAIT = 30.0
LINKTYPE_RAW = 101
# Namespace setup: a private /run (the default control socket), loopback up.
SETUP = 'mount -t tmpfs none /run && ip link set lo up && exec "$@"'


def make_run_argv() -> list[str]:
    """The daemon command `make run` runs (`make -n`: printed, not run)."""
    need_tool("make")
    dry = subprocess.run(
        ["make", "-n", "run"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout  # fmt: skip
    [line] = [line for line in dry.splitlines() if re.search(r"\brun --config ", line)]
    return shlex.split(line)


def config_path(argv: list[str]) -> Path:
    return PROJECT_ROOT / argv[argv.index("--config") + 1]


def printed_hints() -> str:
    """What `make run` prints before it starts: the config's `#>` lines."""
    dry = subprocess.run(
        ["make", "-s", "-n", "run"], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=60, check=True,
    ).stdout  # fmt: skip
    [sed] = [line for line in dry.splitlines() if line.startswith("sed ")]
    return subprocess.run(
        ["sh", "-c", sed], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout  # fmt: skip


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def test_make_run_config_is_loopback_only() -> None:
    argv = make_run_argv()
    path = config_path(argv)
    assert path.name != "config.example.yaml"  # that one is 0.0.0.0:1701, every source
    config = load_config(path)
    assert config.mode == "relay"
    assert config.listen and all(is_loopback(host) for host, _ in config.listen), config.listen
    assert is_loopback(config.lns[0]), config.lns
    assert config.allow and all(
        net.network_address.is_loopback and net.broadcast_address.is_loopback
        for net in config.allow
    ), config.allow
    assert not config.metrics.enabled or is_loopback(config.metrics.listen)
    # Not the default control socket, where an installed l2tpreorder may already answer
    # (a second daemon on it refuses to start).
    assert config.control_socket is not None
    assert not str(config.control_socket).startswith("/run/"), config.control_socket
    # It runs the file it says it runs, and says what to try next with the same addresses.
    hints = printed_hints()
    listen = format_address(config.listen[0])
    assert f"--live {listen}" in hints, hints
    assert f"status --config {path.name}" in hints, hints
    assert "Ctrl-C" in hints


def _listening(pid: int) -> list[str]:
    """Local addresses of the UDP and listening TCP sockets in the network namespace of `pid`
    (a private one: every socket there is the daemon's)."""
    found = []
    for table in ("udp", "udp6", "tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if table.startswith("tcp") and fields[3] != "0A":  # LISTEN
                continue
            hex_ip = fields[1].split(":")[0]
            raw = bytes.fromhex(hex_ip)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
            found.append(str(ipaddress.ip_address(b"".join(words))))
    return found


def _swapped_capture(path: Path) -> Path:
    """One session, Ns 0..5 with 2 and 3 swapped, as a LAC would send them to an LNS."""
    order = [0, 1, 3, 2, 4, 5]
    frames = [
        (1.0 + i * 0.001, udp_ip("192.0.2.7", "198.51.100.1", l2tp_data(7, 9, b"ppp", ns=ns)))
        for i, ns in enumerate(order)
    ]
    return write_pcap(path, frames, LINKTYPE_RAW)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    need_root()
    need_tool("unshare")
    need_tool("nsenter")
    argv = make_run_argv()
    argv[0] = str(PROJECT_ROOT / argv[0])
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", SETUP, "sh",
             *argv],
            cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(
            "the relaying line",
            lambda: "relaying " in log.read_text() or proc.poll() is not None,
            WAIT,
        )
        assert proc.poll() is None, log.read_text()
        yield proc, log
    finally:
        proc.terminate()
        proc.wait(WAIT)


def _daemon_pid(proc: subprocess.Popen[bytes]) -> int:
    """unshare (without --fork) execs sh, which execs the daemon: one process throughout."""
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"run" in cmdline and b"--config" in cmdline, cmdline
    return proc.pid


def _in_namespace(pid: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "-n", f"--wd={PROJECT_ROOT}",
         sys.executable, "-m", "l2tpreorder", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip


def test_make_run_binds_loopback_only_and_the_printed_next_steps_work(
    running: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    shell, log = running
    pid = _daemon_pid(shell)
    addresses = _listening(pid)
    assert addresses and all(is_loopback(a) for a in addresses), addresses
    config = config_path(make_run_argv())
    listen = format_address(load_config(config).listen[0])

    capture = _swapped_capture(tmp_path / "swapped.pcap")
    sent = _in_namespace(pid, "replay", "pcap", str(capture), "--live", listen, "--speed", "0")
    assert sent.returncode == 0, sent.stdout + sent.stderr

    def status() -> dict[str, object]:
        answer = _in_namespace(pid, "status", "--config", config.name, "--json")
        assert answer.returncode == 0, answer.stderr
        parsed: dict[str, object] = json.loads(answer.stdout)
        return parsed

    wait_until("status counts the 6 datagrams", lambda: _totals(status())["rx_datagrams_lac"] == 6)
    totals = _totals(status())
    assert totals["reordered"] == 1, totals  # the swap: Ns 3 held until 2 came
    assert "new LAC peer 127.0.0.1:" in log.read_text()


def _totals(answer: dict[str, object]) -> dict[str, int]:
    totals = answer["totals"]
    assert isinstance(totals, dict)
    return totals
