"""One daemon under test in either mode, behind one interface: the shared service's behaviours
are then written once and run against relay mode and in-path mode alike.

Only what an operator sees is used: the daemon is a real `l2tpreorder run` subprocess, the test
is the LAC and the LNS on real sockets, and it reads the log (stderr), `status --json` and
`reload` over the control socket, `/metrics` over HTTP and the sd_notify messages. Nothing here
imports the daemon's internals, so the tests outlive a refactor of them.

- relay: on loopback. The LAC sends to the relay's listen port, the LNS gets the datagrams from
  the LAC peer's upstream socket and answers there.
- inpath: a network namespace named with the pid, iptables NFQUEUE rules on INPUT (LAC -> LNS,
  udp dport 1701) and OUTPUT (LNS -> LAC, udp sport 1701: needed for `reorder.lns_to_lac`),
  both `--queue-bypass`; the daemon runs inside it (`ip netns exec`), the LAC (127.0.0.2) sends
  straight to the LNS (127.0.0.1:1701), and the LNS answers the LAC's own address.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import PROJECT_ROOT
from tests.daemon_harness import WAIT, Daemon, free_udp_port, udp
from tests.integration.inpath_helpers import data, queued_namespace, receive_all
from tests.integration.inpath_helpers import scrape as scrape_in_ns
from tests.netns import NetNs, wait_until

MODES = ["relay", "inpath"]
# What starts the daemon's endpoints: the service in either mode, and the in-path supervisor
# (two queues, a worker each) that serves them for its workers (daemon/start_checks.py).
STARTING = [*MODES, "inpath-workers"]
QUEUE = 7  # in-path: the NFQUEUE the rules feed (the namespace is ours: any number does)
QUEUES = "7-8"  # inpath-workers: the rules balance over 7 and 8
LNS_PORT = 1701  # in-path: the LNS keeps its port (the rules match it)
T_LNS, S_LNS = 7, 9  # the IDs the LAC's data carries (assigned by the LNS)
T_LAC, S_LAC = 5, 6  # the IDs the LNS's data carries (assigned by the LAC)


def to_lns(ns: int, frame: int | None = None) -> bytes:
    """LAC -> LNS data of the test's one session (payload `frame-<frame>`, default: its Ns)."""
    return data(ns, b"frame-%05d" % (ns if frame is None else frame))


def to_lac(ns: int) -> bytes:
    """LNS -> LAC data of the same call (the IDs the LAC assigned)."""
    return data(ns, tunnel=T_LAC, session=S_LAC)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI (outside any namespace: the control socket is a file)."""
    return subprocess.run(
        [sys.executable, "-m", "l2tpreorder", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=WAIT * 3, check=False,
    )  # fmt: skip


def families(text: str) -> set[str]:
    """The metric family names a /metrics page declares (`# TYPE` lines)."""
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


class ModeRig:
    """The daemon in `mode`, the LAC and LNS sockets, and what an operator can read."""

    def __init__(self, mode: str, tmp: Path, ns: NetNs | None) -> None:
        self.mode = mode
        self.tmp = tmp
        self.ns = ns
        self.daemon: Daemon | None = None
        self.runs = 0
        self.metrics_port = self.free_tcp_port()
        self.config: dict[str, Any] = {}
        self.args: list[str] = []
        if ns is None:
            self.lns = udp()
            self.lac = udp()
            self.listen = free_udp_port()
            self.lns_addr: tuple[str, int] = self.lns.getsockname()[:2]
            self.lac_side: tuple[str, int] = ("127.0.0.1", self.listen)
        else:
            self.lns = ns.udp("127.0.0.1", LNS_PORT)
            self.lac = ns.udp("127.0.0.2", 40001)  # not 1701: the INPUT rule would take replies
            self.lns_addr = ("127.0.0.1", LNS_PORT)
            self.lac_side = self.lns_addr  # the LAC sends to the LNS itself; the rule queues it
        host, port = self.lac.getsockname()[:2]
        self.lac_address = f"{host}:{port}"  # as the daemon names this LAC in logs and status
        # Where the LNS answers: in-path, the LAC itself; relay, the upstream socket it saw.
        self.upstream: tuple[str, int] | None = (host, port) if ns is not None else None

    # --- the daemon -----------------------------------------------------------------------

    def document(self, config: dict[str, Any]) -> dict[str, Any]:
        """`config` (common keys) plus the mode's own keys and this test's places."""
        doc: dict[str, Any] = {
            "metrics": {"enabled": True, "listen": "127.0.0.1", "port": self.metrics_port},
            "control_socket": str(self.tmp / "control.sock"),
        }
        if self.mode == "relay":
            doc |= {"listen": [f"127.0.0.1:{self.listen}"], "lns": "{}:{}".format(*self.lns_addr)}
        elif self.mode == "inpath":
            doc |= {"mode": "inpath", "inpath": {"queue": QUEUE}}
        else:
            doc |= {"mode": "inpath", "inpath": {"queues": QUEUES}}
        for key, value in config.items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            else:
                doc[key] = value
        return doc

    def start(
        self, config: dict[str, Any], args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> Daemon:
        """`run --config FILE [args]`, waited for until READY=1 (each run its own directory:
        its log, its notify socket; the state file and control socket are shared)."""
        self.launch(config, args, env)
        return self.d.ready()

    def launch(
        self, config: dict[str, Any], args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> Daemon:
        """`run --config FILE [args]`, not waited for (a start that should fail)."""
        self.config, self.args = self.document(config), list(args)
        self.runs += 1
        run_dir = self.tmp / f"run{self.runs}"
        run_dir.mkdir()
        prefix = None if self.ns is None else ["ip", "netns", "exec", self.ns.name]
        self.daemon = Daemon(run_dir, self.config, env=env, args=self.args, prefix=prefix)
        return self.daemon

    @property
    def d(self) -> Daemon:
        assert self.daemon is not None, "start() first"
        return self.daemon

    def write_config(self, **changes: Any) -> None:
        """The running file with `changes` merged in (one level deep, like `document`)."""
        self.config = self.document({**self.config, **changes})
        self.d.write_config(self.config)

    def terminate(self) -> int:
        """SIGTERM; the exit status (the daemon's own, also behind `ip netns exec`)."""
        return self.d.terminate(timeout=WAIT * 3)

    def restart(self) -> Daemon:
        assert self.terminate() == 0, self.d.log()
        self.d.stop()
        return self.start(self.config, tuple(self.args))

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        self.lac.close()
        self.lns.close()

    # --- the LAC and the LNS ----------------------------------------------------------------

    def send_to_lns(self, *datagrams: bytes) -> None:
        """As the LAC: towards the LNS (through the daemon)."""
        for d in datagrams:
            self.lac.sendto(d, self.lac_side)

    def lns_receive(self, count: int) -> list[bytes]:
        """`count` datagrams at the LNS (fails naming how many came)."""
        got = receive_all(self.lns, count, timeout=WAIT)
        if self.ns is None:
            self.upstream = got[-1][1][:2]
        return [d for d, _ in got]

    def send_to_lac(self, *datagrams: bytes) -> None:
        """As the LNS: towards the LAC (relay: to the upstream socket it last heard from)."""
        assert self.upstream is not None, "relay mode: the LNS answers a LAC it heard first"
        for d in datagrams:
            self.lns.sendto(d, self.upstream)

    def lac_receive(self, count: int) -> list[bytes]:
        return [d for d, _ in receive_all(self.lac, count, timeout=WAIT)]

    # --- what an operator reads -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        r = cli("status", "--config", str(self.d.config_path), "--json")
        assert r.returncode == 0, r.stderr
        answer: dict[str, Any] = json.loads(r.stdout)
        return answer

    def sessions(self) -> list[dict[str, Any]]:
        return [s for p in self.status()["peers"] for s in p["sessions"]]

    def reload_command(self) -> subprocess.CompletedProcess[str]:
        return cli("reload", "--config", str(self.d.config_path))

    def free_tcp_port(self) -> int:
        def pick() -> int:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                return int(s.getsockname()[1])

        return pick() if self.ns is None else self.ns.call(pick)

    def hold_tcp_port(self, port: int) -> socket.socket:
        """A TCP listener on 127.0.0.1:`port` where the daemon runs: another exporter that
        holds the port (close it when done)."""

        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", port))
            s.listen()
            return s

        return listen() if self.ns is None else self.ns.call(listen)

    def scrape(self, port: int | None = None) -> str:
        """GET /metrics (OSError when nothing serves there)."""
        port = self.metrics_port if port is None else port
        if self.ns is not None:
            return scrape_in_ns(self.ns, port)
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return str(response.read().decode())

    def serves_metrics(self, port: int) -> bool:
        try:
            return "l2tpreorder_" in self.scrape(port)
        except OSError:
            return False

    def wait_log(self, pattern: str, after: int = 0, timeout: float = WAIT) -> re.Match[str]:
        """The first match of the regex `pattern` in the log past offset `after` (polled)."""
        found: list[re.Match[str]] = []

        def check() -> bool:
            m = re.compile(pattern, re.M).search(self.d.log(), after)
            if m:
                found.append(m)
            return m is not None

        try:
            wait_until(f"a log line /{pattern}/", check, timeout=timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}; log:\n{self.d.log()[after:]}") from None
        return found[0]

    def log_size(self) -> int:
        return len(self.d.log())


@contextlib.contextmanager
def open_rig(mode: str, tmp: Path) -> Iterator[ModeRig]:
    """A `ModeRig` for `mode` (one of `STARTING`); in-path gets its namespace and rules (root
    and iptables: skipped without them, failed under CI). Everything started is stopped on the
    way out."""
    if mode == "relay":
        r = ModeRig(mode, tmp, None)
        try:
            yield r
        finally:
            r.close()
        return
    queues = QUEUES if mode == "inpath-workers" else QUEUE
    with queued_namespace("modes", queues, port=LNS_PORT, replies=True) as space:
        r = ModeRig(mode, tmp, space)
        try:
            yield r
        finally:
            r.close()
