"""Two LACs with the same Assigned Tunnel ID behind the relay both get a tunnel from xl2tpd.

xl2tpd refuses an SCCRQ whose peer *address* and tunnel ID match an existing tunnel ("Peer
requested tunnel 1 twice, ignoring second one"); the port does not count. With an LNS on
loopback the relay gives each LAC address its own 127/8 source address, so both are answered.
With every LAC behind one source address (`upstream_bind: 127.0.0.1`, the old behaviour) only
one is: that half shows the test can fail.

One network namespace of our own (named with the pid): LAC addresses 198.18.1.1 and 10.18.1.1
(their last three bytes are equal, so the second LAC's loopback address comes from the hash
probe), the relay on 198.18.2.1:1701, Debian's xl2tpd on 127.0.0.1:1702, all on its loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, need_root, need_tool
from tests.integration.xl2tpd_lab import wait_for

pytestmark = pytest.mark.integration

LACS = ("198.18.1.1", "10.18.1.1")
RELAY = "198.18.2.1"
HERE = Path(__file__).resolve().parent


class Namespace:
    """One namespace and the processes we start in it; `close()` removes all of it."""

    def __init__(self) -> None:
        self.name = f"l2rx-tid-{os.getpid()}"
        self.procs: list[subprocess.Popen[bytes]] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=10)
        self.ip("link", "set", "lo", "up")
        for addr in (*LACS, RELAY):
            self.ip("addr", "add", f"{addr}/32", "dev", "lo")

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, timeout=10)

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.name, *argv],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str]) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True, text=True, timeout=60, check=True, cwd=PROJECT_ROOT,
        ).stdout  # fmt: skip

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            subprocess.run(["ip", "netns", "del", self.name], timeout=10, check=False)


@pytest.fixture
def ns() -> Iterator[Namespace]:
    need_root()
    need_tool("xl2tpd")
    namespace = Namespace()
    try:
        yield namespace
    finally:
        namespace.close()


def bound(ns: Namespace, addr: str) -> bool:
    return f"{addr} " in ns.run(["ss", "-Hlun"]) or f"{addr}\t" in ns.run(["ss", "-Hlun"])


def start_lns_and_relay(ns: Namespace, w: Path, relay_yaml: str) -> None:
    (w / "secrets").write_text("")
    (w / "lns.conf").write_text(
        f"[global]\nlisten-addr = 127.0.0.1\nport = 1702\nauth file = {w}/secrets\n"
        "debug tunnel = yes\n\n[lns default]\nip range = 198.19.0.10-198.19.0.20\n"
        "local ip = 198.19.0.1\nrequire authentication = no\n"
    )
    ns.spawn(
        ["xl2tpd", "-D", "-c", str(w / "lns.conf"), "-p", str(w / "lns.pid"),
         "-C", str(w / "lns.control")],
        w / "xl2tpd.log",
    )  # fmt: skip
    wait_for("xl2tpd", lambda: "Listening on IP" in (w / "xl2tpd.log").read_text(), 10)
    (w / "relay.yaml").write_text(relay_yaml)
    ns.spawn(
        [sys.executable, "-m", "l2tpreorder", "run", "--config", str(w / "relay.yaml")],
        w / "relay.log",
    )
    wait_for("relay bound", lambda: bound(ns, f"{RELAY}:1701"), 15)


def probe(ns: Namespace) -> dict[str, str | None]:
    sources = [arg for lac in LACS for arg in ("--source", lac)]
    out = ns.run(
        [sys.executable, str(HERE / "sccrq_probe.py"), "--to", f"{RELAY}:1701",
         "--tunnel-id", "1", "--wait", "8", *sources]
    )  # fmt: skip
    result: dict[str, str | None] = json.loads(out)
    return result


def relay_config(w: Path, extra: str = "") -> str:
    return (
        f"listen: ['{RELAY}:1701']\nlns: '127.0.0.1:1702'\nmetrics: {{enabled: false}}\n"
        f"control_socket: {w}/control.sock\nstate_file: {w}/state.json\n{extra}"
    )


def test_two_lacs_with_tunnel_id_1_both_get_an_sccrp(ns: Namespace, tmp_path: Path) -> None:
    start_lns_and_relay(ns, tmp_path, relay_config(tmp_path))
    assert probe(ns) == dict.fromkeys(LACS, "SCCRP"), (tmp_path / "xl2tpd.log").read_text()
    log = (tmp_path / "relay.log").read_text()
    # Each LAC's own loopback source, in the log and in `status`: 198.18.1.1 -> 127.18.1.1;
    # 10.18.1.1 would be 127.18.1.1 too, so it gets another one.
    assert "new LAC peer 198.18.1.1:" in log and ": upstream 127.18.1.1:" in log
    status = json.loads(
        ns.run([sys.executable, "-m", "l2tpreorder", "status", "-c", str(tmp_path / "relay.yaml"),
                "--json"])
    )  # fmt: skip
    upstream = {
        p["lac"].rsplit(":", 1)[0]: p["upstream"].rsplit(":", 1)[0] for p in status["peers"]
    }
    assert upstream["198.18.1.1"] == "127.18.1.1"
    second = upstream["10.18.1.1"]
    assert second.startswith("127.") and second != "127.18.1.1"
    assert "twice" not in (tmp_path / "xl2tpd.log").read_text()

    # Stable across a restart: the state file brings each LAC's address and port back.
    ns.stop()
    start_lns_and_relay(ns, tmp_path, relay_config(tmp_path))
    restarted = json.loads(
        ns.run([sys.executable, "-m", "l2tpreorder", "status", "-c", str(tmp_path / "relay.yaml"),
                "--json"])
    )  # fmt: skip
    assert {p["lac"]: p["upstream"] for p in restarted["peers"]} == {
        p["lac"]: p["upstream"] for p in status["peers"]
    }


def test_one_shared_source_address_gets_only_one_sccrp(ns: Namespace, tmp_path: Path) -> None:
    start_lns_and_relay(ns, tmp_path, relay_config(tmp_path, "upstream_bind: 127.0.0.1\n"))
    got = probe(ns)
    assert sorted(map(str, got.values())) == ["None", "SCCRP"], got
    assert "twice" in (tmp_path / "xl2tpd.log").read_text()
