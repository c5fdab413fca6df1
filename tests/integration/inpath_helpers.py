"""In-path mode under test: a real `l2tpreorder run` (mode: inpath) behind a real iptables
NFQUEUE rule in a network namespace, with the test as LAC and LNS on real sockets."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from l2tpreorder import wire
from tests.conftest import PROJECT_ROOT, need_root, need_tool
from tests.netns import NetNs, wait_until

PROC_QUEUES = "/proc/net/netfilter/nfnetlink_queue"


def queue_target(queues: str | int) -> list[str]:
    """The NFQUEUE target for `queues` (3: one queue; "4-5": balanced over them), failing open."""
    if isinstance(queues, int):
        return ["-j", "NFQUEUE", "--queue-num", str(queues), "--queue-bypass"]
    return ["-j", "NFQUEUE", "--queue-balance", queues.replace("-", ":"), "--queue-bypass"]


@contextlib.contextmanager
def queued_namespace(
    role: str, queues: str | int | None, *, port: int = 1701, replies: bool = False
) -> Iterator[NetNs]:
    """A network namespace named with the pid (root, ip and iptables: skipped without them,
    failed under CI) whose INPUT rule queues udp to `port` to `queues` (None: no rule, the
    test writes its own); `replies`: OUTPUT from `port` too (`reorder.lns_to_lac`). Closed,
    rules and all, on the way out."""
    need_root()
    need_tool("ip")
    need_tool("iptables")
    space = NetNs(role)
    try:
        if queues is not None:
            target = queue_target(queues)
            space.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", str(port), *target)
            if replies:
                space.run("iptables", "-A", "OUTPUT", "-p", "udp", "--sport", str(port), *target)
        yield space
    finally:
        space.close()


def bound_queues(ns: NetNs) -> set[int]:
    """Queues a reader is bound to in `ns` (the kernel's own table)."""
    out = ns.run("cat", PROC_QUEUES, check=False).stdout
    return {int(line.split()[0]) for line in out.splitlines() if line.strip()}


def data(ns_value: int, payload: bytes = b"", tunnel: int = 7, session: int = 9) -> bytes:
    body = payload or b"frame-%05d" % ns_value
    return wire.build_data(tunnel, session, body, ns=ns_value)


def ns_of(datagram: bytes) -> int:
    parsed = wire.parse_header_reference(datagram)
    assert isinstance(parsed, dict), parsed
    value = parsed["ns"]
    assert value is not None
    return int(value)


def frame_of(datagram: bytes) -> int:
    m = re.search(rb"frame-(\d{5})", datagram)
    assert m is not None, datagram
    return int(m.group(1))


class InPathDaemon:
    """`python -m l2tpreorder run --config FILE` in a namespace, mode: inpath."""

    def __init__(self, ns: NetNs, workdir: Path, queues: str | int, **settings: object) -> None:
        self.ns = ns
        self.workdir = workdir
        self.log = workdir / "daemon.log"
        self.queues = (
            {queues}
            if isinstance(queues, int)
            else set(range(int(queues.split("-")[0]), int(queues.split("-")[1]) + 1))
        )
        inpath = {"queue": queues} if isinstance(queues, int) else {"queues": queues}
        document: dict[str, object] = {
            "mode": "inpath",
            "inpath": inpath,
            "state_file": str(workdir / "state.json"),
            # Its own control socket: /run/l2tpreorder is one per host, shared by parallel runs.
            "control_socket": str(workdir / "control.sock"),
            "metrics": {"enabled": True, "listen": "127.0.0.1", "port": 9109},
            "reorder": {"timeout_ms": 300, "adaptive": False},  # fixed: the tests count on it
            "logging": {"level": "debug"},
        }
        for key, value in settings.items():
            if isinstance(value, dict) and isinstance(document.get(key), dict):
                document[key] = {**document[key], **value}  # type: ignore[dict-item]
            else:
                document[key] = value
        self.config = workdir / "inpath.yaml"
        self.config.write_text(yaml.safe_dump(document))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *run_args: str) -> None:
        """`run --config FILE` plus `run_args` (flags that override the file)."""
        self.proc = self.ns.popen(
            [sys.executable, "-m", "l2tpreorder", "run", "--config", str(self.config), *run_args],
            self.log,
            cwd=PROJECT_ROOT,
        )
        wait_until(
            f"queues {sorted(self.queues)} bound (log: {self.log})",
            lambda: self.queues <= bound_queues(self.ns) or self._died(),
        )
        assert not self._died(), self.log.read_text()
        # Ready once /metrics answers: signal handlers are installed by then.
        wait_until("the daemon's /metrics", lambda: self.scrape_or_none() is not None)

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def scrape(self) -> str:
        """GET /metrics (an OSError, failing the test with why, when nothing serves it)."""
        return scrape(self.ns, 9109)

    def scrape_or_none(self) -> str | None:
        try:
            return scrape(self.ns, 9109)
        except OSError:
            return None


def scrape(ns: NetNs, port: int) -> str:
    """GET /metrics from inside the namespace."""
    s = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        s.close()
    return b"".join(chunks).decode()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric_name = head.split("{")[0]
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
            found = True
    assert found, f"no sample {name} {labels}"
    return total


Received = list[tuple[bytes, tuple[str, int]]]


def receive_all(sock: socket.socket, count: int, timeout: float = 15.0) -> Received:
    """`count` datagrams from `sock` (fails naming what arrived if fewer come in time)."""
    got: Received = []
    sock.settimeout(timeout)
    try:
        while len(got) < count:
            d, addr = sock.recvfrom(65535)
            got.append((d, addr))
    except TimeoutError:
        raise AssertionError(f"got {len(got)} of {count} datagrams") from None
    return got


def quiet(sock: socket.socket, wait: float = 0.5) -> bool:
    """True when nothing more arrives within `wait` (used only to assert absence)."""
    sock.settimeout(wait)
    try:
        sock.recvfrom(65535)
    except TimeoutError:
        return True
    return False
