"""Three network namespaces with Debian's real xl2tpd as LAC and LNS, an impairment proxy between.

    [l2rx-lac-PID]  xl2tpd LAC (+ fake_pppd writing numbered frames)
        198.18.1.1 --veth-- 198.18.1.2
    [l2rx-mid-PID]  impair_proxy.py (adds Ns, swaps/displaces/drops/duplicates with a fixed seed)
        198.18.2.2 --veth-- 198.18.2.1
    [l2rx-lns-PID]  xl2tpd LNS (+ fake_pppd recording the numbers), tcpdump;
                    with the relay: `l2tpreorder run` on 198.18.2.1:1701 and xl2tpd moved to
                    127.0.0.1:1702, exactly as the README deployment guide tells an operator.

No kernel L2TP/PPP here, so xl2tpd runs "pppd" on a pty; fake_pppd.py is bind-mounted over
/usr/sbin/pppd inside `unshare -m --propagation private` for the xl2tpd processes only.
Addresses are from 198.18.0.0/15 (benchmark range) and exist only inside these namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2tpreorder.commands.client import ControlError, request

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent.parent

LAC_ADDR = "198.18.1.1"
MID_LAC_SIDE = "198.18.1.2"
MID_LNS_SIDE = "198.18.2.2"
LNS_ADDR = "198.18.2.1"
L2TP_PORT = 1701
# Where xl2tpd listens when l2tpreorder takes its public address (README deployment guide).
MOVED_ADDR = "127.0.0.1"
MOVED_PORT = 1702
INPATH_QUEUE = 3
# How long one step of the end-of-scenario drain may take. Each step ends on an event (see
# Lab._drain); only a scenario that really lost a frame somewhere waits this long.
DRAIN_DEADLINE = 60.0
# A datagram the lab sends along the proxy's own path once the proxy is done: in the capture,
# it shows that tcpdump has written everything that reached the LNS before it.
MARKER = b"L2RX-LAB-END-OF-SCENARIO"
MARKER_PORT = 9  # discard; nothing listens, and the capture filter keeps only L2TP for tshark
INPATH_RULE = (
    f"iptables RULE INPUT -p udp --dport 1701 -j NFQUEUE --queue-num {INPATH_QUEUE} --queue-bypass"
)


class LabError(RuntimeError):
    """The lab itself did not come up (not a finding about xl2tpd or the relay)."""


@dataclass
class Scenario:
    """One run: what the proxy does to LAC->LNS data; whether the relay sits before xl2tpd."""

    name: str
    frames: int = 1000
    interval: float = 0.001  # seconds between frames the LAC's fake pppd writes
    add_sequence: bool = True  # proxy adds Ns/Nr as a SEIL/X1 does; False = Windows-style LAC
    displace: int = 1  # K: a displaced message arrives after K later ones (1 = adjacent swap)
    displace_rate: float = 0.0
    drop: list[tuple[int, int]] = field(default_factory=list)  # (first frame, count)
    duplicate_rate: float = 0.0
    seed: int = 20261121
    relay: bool = False
    relay_timeout_ms: int = 100
    relay_args: list[str] = field(default_factory=list)
    replay_control_at: int | None = None  # proxy re-sends the LAC's last control message here
    length_bit: bool = False  # LAC sets L on data (xl2tpd `length bit = yes`)
    # Restart the relay (SIGTERM, then start it again, as systemd does) once the LNS has this
    # many frames; it keeps its state in a state file across the restart.
    restart_relay_after: int | None = None
    # In-path mode instead: xl2tpd keeps 1701, an iptables INPUT rule queues to l2tpreorder.
    inpath: bool = False
    # `reorder:` settings for the daemon in either mode. The tests assert in-order delivery, which
    # a fixed timeout promises (adaptive, the default, may deliver a late frame out of order:
    # bench/adaptive_lab.py measures that).
    reorder_yaml: str = "adaptive: false"

    @property
    def impair_range(self) -> tuple[int, int]:
        # Leave the first and last frames alone: frame 0 would hit xl2tpd's Ns==data_seq_num
        # special case, and a message held at the very end would wait for the idle flush.
        return 10, self.frames - 10


@dataclass
class Captured:
    """One L2TP message the LNS xl2tpd received, as tshark decoded it from the capture."""

    is_control: bool
    tunnel_id: int
    session_id: int
    ns: int | None
    datagram: bytes
    src_port: int = 0  # UDP source port (the relay's upstream port for this LAC)


@dataclass
class Outcome:
    scenario: Scenario
    received: list[int]  # frame numbers the LNS-side fake pppd got, in arrival order
    proxy_events: list[dict[str, Any]]
    captured: list[Captured]
    lns_log: str
    relay_log: str
    workdir: Path
    # The lab's own findings, shown by describe(): kernel drop counters that moved (UDP receive
    # buffers per namespace, tcpdump), and any drain step that hit its deadline.
    notes: list[str] = field(default_factory=list)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.proxy_events if e["event"] == kind]

    @property
    def sent_data(self) -> list[dict[str, Any]]:
        """Data messages the proxy sent upstream, in order (duplicates appear twice)."""
        return [e for e in self.events("sent") if e["kind"] == "data"]

    @property
    def sent_control(self) -> list[bytes]:
        return [bytes.fromhex(e["hex"]) for e in self.events("sent") if e["kind"] == "control"]

    @property
    def captured_data(self) -> list[Captured]:
        return [c for c in self.captured if not c.is_control]

    @property
    def captured_control(self) -> list[Captured]:
        return [c for c in self.captured if c.is_control]

    def frames_of(self, kind: str) -> set[int]:
        return {e["frame"] for e in self.events(kind)}

    def describe(self) -> str:
        return (
            f"{self.scenario.name} relay={self.scenario.relay}: received {len(self.received)}, "
            f"displaced {len(self.events('displaced'))}, dropped {len(self.events('dropped'))}, "
            f"duplicated {len(self.events('duplicated'))}, captured data "
            f"{len(self.captured_data)}; files in {self.workdir}"
            + "".join(f"; {note}" for note in self.notes)
        )


def wait_for(what: str, check: Callable[[], bool], timeout: float, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


class Lab:
    """The three namespaces and every process started in them; `close()` undoes all of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        tag = str(os.getpid())
        self.ns = {role: f"l2rx-{role}-{tag}" for role in ("lac", "mid", "lns")}
        self.veth = {
            "lac": f"l2rxl{tag}", "mid_lac": f"l2rxa{tag}",
            "mid_lns": f"l2rxb{tag}", "lns": f"l2rxn{tag}",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.created: list[str] = []

    # -- namespaces --------------------------------------------------------------------------
    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def open(self) -> None:
        for name in self.ns.values():
            self._ip("netns", "add", name)
            self.created.append(name)
            self._ip("-n", name, "link", "set", "lo", "up")
        links = [
            ("lac", LAC_ADDR, "mid_lac", MID_LAC_SIDE, "mid"),
            ("lns", LNS_ADDR, "mid_lns", MID_LNS_SIDE, "mid"),
        ]
        for end_role, end_addr, mid_if, mid_addr, mid_ns in links:
            end_if, end_ns = self.veth[end_role], self.ns[end_role]
            self._ip("link", "add", end_if, "netns", end_ns, "type", "veth",
                     "peer", "name", self.veth[mid_if], "netns", self.ns[mid_ns])
            self._ip("-n", end_ns, "addr", "add", f"{end_addr}/24", "dev", end_if)
            self._ip("-n", end_ns, "link", "set", end_if, "up")
            self._ip("-n", self.ns[mid_ns], "addr", "add", f"{mid_addr}/24", "dev",
                     self.veth[mid_if])
            self._ip("-n", self.ns[mid_ns], "link", "set", self.veth[mid_if], "up")

    def spawn(self, role: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start argv in a namespace; stdout+stderr go to `log`. The PID is ours to stop."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[role], *argv],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self.procs.append(proc)
        return proc

    def spawn_xl2tpd(self, role: str, workdir: Path, conf: Path) -> subprocess.Popen[bytes]:
        """xl2tpd in the foreground, with fake_pppd over /usr/sbin/pppd in a private mount ns."""
        wrapper = workdir / "pppd-wrapper.sh"
        if not wrapper.exists():
            wrapper.write_text(
                f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_pppd.py'} \"$@\"\n"
            )
            wrapper.chmod(0o755)
        script = (
            f"mount --bind {wrapper} /usr/sbin/pppd && "
            f"exec xl2tpd -D -c {conf} -p {workdir / role}.pid -C {workdir / role}.control"
        )
        return self.spawn(
            role, ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            workdir / f"{role}-xl2tpd.log",
        )

    def stop_processes(self) -> None:
        """SIGTERM what we started (newest first), then SIGKILL stragglers; then anything still
        inside our own namespaces (children such as fake pppd), which only we can have started."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        self.procs.clear()
        if getattr(self, "inpath_rule", False):
            subprocess.run(["ip", "netns", "exec", self.ns["lns"], *INPATH_RULE.replace(
                "RULE", "-D").split()], capture_output=True, timeout=30)
            self.inpath_rule = False
        for name in self.created:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True, timeout=10).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    def close(self) -> None:
        try:
            self.stop_processes()
        finally:
            for name in reversed(self.created):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
            self.created.clear()

    # -- one scenario ------------------------------------------------------------------------
    def run(self, sc: Scenario) -> Outcome:
        kind = "relay" if sc.relay else "inpath" if sc.inpath else "direct"
        workdir = self.root / f"{sc.name}-{kind}"
        workdir.mkdir(parents=True)
        try:
            return self._run(sc, workdir)
        finally:
            self.stop_processes()

    def _run(self, sc: Scenario, w: Path) -> Outcome:
        lns_listen = (MOVED_ADDR, MOVED_PORT) if sc.relay else (LNS_ADDR, L2TP_PORT)
        (w / "secrets").write_text("")
        (w / "lns.conf").write_text(lns_conf(w, *lns_listen))
        (w / "lac.conf").write_text(lac_conf(w, sc.length_bit))
        (w / "lns.ppp").write_text(
            f"role lns\nresults {w}/results\nready {w}/lns-ready\nlog {w}/lns-pppd.log\n"
        )
        (w / "lac.ppp").write_text(
            f"role lac\nframes {sc.frames}\ninterval {sc.interval}\ngo {w}/go\n"
            f"done {w}/lac-done\nlog {w}/lac-pppd.log\n"
        )

        udp_before = self._udp_counters()
        pcap = w / "lns.pcap"
        # -B: a 16 MiB kernel buffer, so a starved tcpdump catches up rather than drops. Not
        # --immediate-mode: libpcap then uses fixed-size ring slots, and with the default snap
        # length few fit (dropped packets under stress-ng); the end marker (Lab._drain) is what
        # tells that the file is complete.
        self.spawn("lns", ["tcpdump", "-i", "any", "-n", "-U", "-B", "16384",
                           "-w", str(pcap), "udp"], w / "tcpdump.log")
        wait_for("tcpdump", lambda: "listening on" in _text(w / "tcpdump.log"), 10)

        self.spawn_xl2tpd("lns", w, w / "lns.conf")
        wait_for("LNS xl2tpd", lambda: "Listening on IP" in _text(w / "lns-xl2tpd.log"), 10)
        relay_argv = [
            sys.executable, "-m", "l2tpreorder", "run",
            "--listen", f"{LNS_ADDR}:{L2TP_PORT}",
            "--lns", f"{MOVED_ADDR}:{MOVED_PORT}",
            "--timeout", str(sc.relay_timeout_ms), *sc.relay_args,
        ]
        # Its own control socket: the default one (/run/l2tpreorder) is one per host, and the
        # namespaces share the file system with parallel runs.
        relay_yaml = f"control_socket: {w / 'control.sock'}\n"
        if sc.reorder_yaml:
            relay_yaml += f"reorder: {{{sc.reorder_yaml}}}\n"
        if sc.restart_relay_after is not None:
            relay_yaml += f"state_file: {w / 'relay-state.json'}\nmetrics: {{enabled: false}}\n"
        (w / "relay.yaml").write_text(relay_yaml)
        relay_argv += ["--config", str(w / "relay.yaml")]
        relay = None
        if sc.inpath:
            self._start_inpath(sc, w)
        if sc.relay:
            relay = self.spawn("lns", relay_argv, w / "relay.log")
            wait_for("relay bound to UDP 1701",
                     lambda: self._udp_bound("lns", LNS_ADDR, L2TP_PORT), 15)

        record = w / "proxy.jsonl"
        proxy_argv = [
            sys.executable, str(HERE / "impair_proxy.py"),
            "--listen", f"{MID_LAC_SIDE}:{L2TP_PORT}",
            "--upstream", f"{LNS_ADDR}:{L2TP_PORT}", "--upstream-source", MID_LNS_SIDE,
            "--record", str(record),
            "--add-sequence" if sc.add_sequence else "--no-add-sequence",
            "--displace", str(sc.displace), "--displace-rate", str(sc.displace_rate),
            "--duplicate-rate", str(sc.duplicate_rate), "--seed", str(sc.seed),
            "--impair-range", "{}:{}".format(*sc.impair_range),
        ]
        if sc.replay_control_at is not None:
            proxy_argv += ["--replay-control-at", str(sc.replay_control_at)]
        for at, count in sc.drop:
            proxy_argv += ["--drop", f"{at}:{count}"]
        self.spawn("mid", proxy_argv, w / "proxy.log")
        wait_for("impairment proxy", lambda: '"ready"' in _text(record), 10)

        self.spawn_xl2tpd("lac", w, w / "lac.conf")
        wait_for("PPP session up at both ends",
                 lambda: (w / "lns-ready").exists() and "argv" in _text(w / "lac-pppd.log"), 20)

        (w / "go").touch()
        if relay is not None and sc.restart_relay_after is not None:
            after = sc.restart_relay_after
            wait_for(f"{after} frames at the LNS before the restart",
                     lambda: len(_text(w / "results").split()) >= after, 30, step=0.005)
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=10)
            self.spawn("lns", relay_argv, w / "relay.log")
            wait_for("relay bound again", lambda: self._udp_bound("lns", LNS_ADDR, L2TP_PORT), 15)
        wait_for("LAC to send all frames", (w / "lac-done").exists,
                 sc.frames * sc.interval * 5 + 20)
        notes = self._drain(sc, w, record, pcap, lns_listen, udp_before)
        self.stop_processes()  # tcpdump too: SIGTERM, then it closes the file and exits
        notes += self._drop_notes(udp_before, self._udp_counters(), _text(w / "tcpdump.log"))
        received = [int(x) for x in _text(w / "results").split()]
        events = [json.loads(line) for line in _text(record).splitlines()]
        return Outcome(
            scenario=sc, received=received, proxy_events=events,
            captured=decode_capture(pcap, *lns_listen), lns_log=_text(w / "lns-xl2tpd.log"),
            relay_log=_text(w / "relay.log"), workdir=w, notes=notes,
        )

    def _udp_counters(self) -> dict[str, dict[str, int]]:
        """Each namespace's UDP counters from /proc/net/snmp (they are per network namespace)."""
        counters = {}
        for role, name in self.ns.items():
            text = subprocess.run(["ip", "netns", "exec", name, "cat", "/proc/net/snmp"],
                                  capture_output=True, text=True, timeout=10).stdout
            rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
            if len(rows) == 2:
                counters[role] = dict(zip(rows[0], map(int, rows[1]), strict=True))
        return counters

    @staticmethod
    def _drop_notes(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]],
                    tcpdump_log: str) -> list[str]:
        """Kernel-side losses during the scenario: a UDP socket that overflowed (RcvbufErrors,
        SndbufErrors) in some namespace, or packets tcpdump's buffer dropped."""
        notes = []
        for role, now in after.items():
            for key in ("RcvbufErrors", "SndbufErrors"):
                grew = now.get(key, 0) - before.get(role, {}).get(key, 0)
                if grew:
                    notes.append(f"UDP {key} +{grew} in the {role} namespace")
        dropped = re.search(r"(\d+) packets? dropped by kernel", tcpdump_log)
        if dropped and int(dropped.group(1)):
            notes.append(f"tcpdump: {dropped.group(1)} packets dropped by kernel")
        return notes

    def _start_inpath(self, sc: Scenario, w: Path) -> None:
        """The iptables INPUT rule (removed again by `stop_processes`) and the daemon."""
        (w / "inpath.yaml").write_text(
            f"mode: inpath\ninpath: {{queue: {INPATH_QUEUE}}}\nmetrics: {{enabled: false}}\n"
            f"reorder: {{timeout_ms: {sc.relay_timeout_ms}"
            f"{', ' + sc.reorder_yaml if sc.reorder_yaml else ''}}}\n"
            f"control_socket: {w / 'control.sock'}\n"
        )
        subprocess.run(["ip", "netns", "exec", self.ns["lns"], *INPATH_RULE.replace(
            "RULE", "-A").split()], check=True, capture_output=True, timeout=30)
        self.inpath_rule = True
        self.spawn("lns", [sys.executable, "-m", "l2tpreorder", "run", "--config",
                           str(w / "inpath.yaml")], w / "relay.log")
        wait_for("in-path daemon bound to its queue", lambda: subprocess.run(
            ["ip", "netns", "exec", self.ns["lns"], "cat",
             "/proc/net/netfilter/nfnetlink_queue"], capture_output=True, text=True,
            timeout=10).stdout.strip() != "", 15)

    def _recv_q(self, role: str, addr: str, port: int) -> int | None:
        """Bytes waiting in the receive queue of the UDP socket bound to addr:port."""
        out = subprocess.run(["ip", "netns", "exec", self.ns[role], "ss", "-Hlun"],
                             capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[3] == f"{addr}:{port}":
                return int(fields[1])
        return None

    def _udp_bound(self, role: str, addr: str, port: int) -> bool:
        out = subprocess.run(["ip", "netns", "exec", self.ns[role], "ss", "-Hlun"],
                             capture_output=True, text=True, timeout=10).stdout
        return f"{addr}:{port} " in out

    def _drain(self, sc: Scenario, w: Path, record: Path, pcap: Path,
               lns_listen: tuple[str, int], udp_before: dict[str, dict[str, int]]) -> list[str]:
        """Wait, on events only, until every frame the LAC wrote has been dealt with at each stage:
        1. the proxy has sent, dropped or lost (refused) each of them;
        2. relay mode: the relay has read all the proxy sent (its socket's Recv-Q is 0) and,
           asked after that, holds nothing back any more;
        3. tcpdump has written all that reached the LNS (a marker sent after them is in the file);
        4. the LNS xl2tpd has decided on each data message the capture shows reaching it, less
           those its full socket dropped (UDP RcvbufErrors in that namespace): handed to PPP (a
           line in the fake pppd's results) or refused (a line in its log).
        A step that does not happen within DRAIN_DEADLINE (a frame lost somewhere) is reported in
        the returned notes and the scenario ends anyway: the test's assertions judge the outcome.
        In-path mode needs no step 2: tcpdump sees the LAC's datagrams before netfilter queues
        them, so step 4 already waits for the ones the daemon holds."""
        notes: list[str] = []

        def step(what: str, check: Callable[[], bool]) -> None:
            deadline = time.monotonic() + DRAIN_DEADLINE
            while not check():
                if time.monotonic() > deadline:
                    notes.append(f"lab: gave up after {DRAIN_DEADLINE:.0f} s waiting for {what}")
                    return
                time.sleep(0.02)

        step("the proxy to pass on every frame", lambda: proxy_accounted(record) >= set(
            range(sc.frames)))
        if sc.relay:
            step("the relay to read and release every message", lambda: self._recv_q(
                "lns", LNS_ADDR, L2TP_PORT) == 0 and self._relay_held(w) == 0)
        self._send_marker()
        step("tcpdump to write the end marker", lambda: MARKER in _bytes(pcap))
        arrived = sum(1 for dst, payload in pcap_udp(pcap)
                      if dst == lns_listen and is_test_data(payload))
        overflowed = (self._udp_counters().get("lns", {}).get("RcvbufErrors", 0)
                      - udp_before.get("lns", {}).get("RcvbufErrors", 0))
        arrived -= overflowed  # a real loss, named in the notes: no point waiting for those
        step(f"the LNS to hand on or refuse all {arrived} data messages that reached it",
             lambda: lns_decided(w) >= arrived)
        return notes

    @staticmethod
    def _relay_held(w: Path) -> int | None:
        """Messages the relay holds right now (its status answer), or None if it did not say."""
        try:
            answer = request("status", str(w / "relay.yaml"), timeout=5)
        except ControlError:
            return None  # restarting, or not yet listening on its control socket
        held = answer.get("totals", {}).get("held")
        return held if isinstance(held, int) else None

    def _send_marker(self) -> None:
        """One datagram from the proxy's address to the LNS namespace: along the same veth as
        the proxy's data, so tcpdump sees it after all of that."""
        code = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(({MID_LNS_SIDE!r}, 0)); s.sendto({MARKER!r}, ({LNS_ADDR!r}, {MARKER_PORT}))"
        )
        subprocess.run(["ip", "netns", "exec", self.ns["mid"], sys.executable, "-c", code],
                       check=True, capture_output=True, timeout=30)


def _bytes(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def proxy_accounted(record: Path) -> set[int]:
    """Frame numbers the proxy has finished with: sent upstream, dropped as told, or lost on a
    refused/blocked send (a held, displaced frame counts once it is sent)."""
    done = set()
    for line in _text(record).splitlines():
        if not line.endswith("}"):
            continue  # the line the proxy is writing right now
        event = json.loads(line)
        if event["event"] in ("sent", "dropped", "refused", "blocked") and \
                event.get("kind") != "control" and event.get("frame") is not None:
            done.add(event["frame"])
    return done


def lns_decided(w: Path) -> int:
    """Data messages the LNS xl2tpd has decided on: each frame the fake pppd got from it, plus
    each one it refused (`debug tunnel` logs one line per refused data message)."""
    results = _text(w / "results")
    log = _text(w / "lns-xl2tpd.log")
    return (results.count("\n") + log.count("unable to expand payload")
            + log.count("invalid payload packet"))


def is_test_data(payload: bytes) -> bool:
    """An L2TP data message (T bit clear) carrying one of fake_pppd's numbered frames."""
    return len(payload) > 6 and not payload[0] & 0x80 and b"L2RX" in payload


LINK_HEADER = {1: 14, 113: 16, 276: 20}  # Ethernet, Linux cooked v1 and v2 (tcpdump -i any)


def pcap_udp(pcap: Path) -> list[tuple[tuple[str, int], bytes]]:
    """((destination address, port), payload) of each IPv4 UDP packet in a pcap file tcpdump
    may still be writing (a record not yet complete is left out). Counting only: tshark stays
    the witness that decodes L2TP."""
    data = _bytes(pcap)
    if len(data) < 24:
        return []
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    link = struct.unpack_from(endian + "I", data, 20)[0] & 0xFFFF
    if link not in LINK_HEADER:
        raise LabError(f"{pcap}: link type {link} not understood")
    skip = LINK_HEADER[link]
    out = []
    at = 24
    while at + 16 <= len(data):
        length = struct.unpack_from(endian + "I", data, at + 8)[0]
        if at + 16 + length > len(data):
            break
        ip = data[at + 16 + skip : at + 16 + length]
        at += 16 + length
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
            continue
        ihl = (ip[0] & 0x0F) * 4
        port = struct.unpack_from("!H", ip, ihl + 2)[0]
        out.append(((socket.inet_ntoa(ip[16:20]), port), ip[ihl + 8 :]))
    return out


def lns_conf(w: Path, listen_addr: str, port: int) -> str:
    # The two [global] lines `listen-addr` and `port` are what the README tells an operator to
    # set when l2tpreorder takes over the public UDP 1701 (here: 127.0.0.1 and 1702).
    return f"""[global]
listen-addr = {listen_addr}
port = {port}
auth file = {w}/secrets
debug tunnel = yes

[lns default]
ip range = 198.19.0.10-198.19.0.20
local ip = 198.19.0.1
require authentication = no
pppoptfile = {w}/lns.ppp
"""


def lac_conf(w: Path, length_bit: bool) -> str:
    return f"""[global]
listen-addr = {LAC_ADDR}
port = {L2TP_PORT}
auth file = {w}/secrets

[lac test]
lns = {MID_LAC_SIDE}
autodial = yes
length bit = {"yes" if length_bit else "no"}
require authentication = no
pppoptfile = {w}/lac.ppp
"""


def decode_capture(pcap: Path, lns_addr: str, lns_port: int) -> list[Captured]:
    """What the LNS xl2tpd received, decoded by tshark (an independent L2TP decoder)."""
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-n", "-d", f"udp.port=={MOVED_PORT},l2tp",
         "-Y", f"l2tp && ip.dst=={lns_addr} && udp.dstport=={lns_port}",
         "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f",
         "-e", "l2tp.type", "-e", "l2tp.tunnel", "-e", "l2tp.session", "-e", "l2tp.Ns",
         "-e", "udp.payload", "-e", "udp.srcport"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    captured = []
    for line in out.splitlines():
        l2tp_type, tunnel_id, session_id, ns, payload, src_port = line.split("\t")
        captured.append(Captured(
            is_control=l2tp_type == "1", tunnel_id=int(tunnel_id), session_id=int(session_id),
            ns=int(ns) if ns else None, datagram=bytes.fromhex(payload.replace(":", "")),
            src_port=int(src_port),
        ))
    return captured
