"""The bench's process plumbing, one trial and the rate search (bench/run.py drives them).

A trial: sink, the process under test (a relay, or in-path mode / the C NFQUEUE reader in a lab
namespace), the load generator (C when gcc is there, else Python: same traffic, same JSON),
then the sink's counts. A search: the highest offered rate that stays clean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import udp
from bench.inpath_bench import InPathLab
from l2tpreorder.core.ahead import BYPASS_WITNESS_WAIT

ROOT = Path(__file__).resolve().parent.parent
LOSS_FREE = 0.001  # <= 0.1% loss counts as loss-free
PY = sys.executable

BASELINE_CMD = (
    "{python} -m bench.baseline_forwarder --listen {listen} --target {lns} --rcvbuf {rcvbuf}"
)
# {config}: the bench's own file (its own control socket, no metrics listener: never the host's
# defaults, which a second daemon may not share), with a fixed timeout (the release-lateness step
# measures against timeout_ms, and runs stay comparable with those from before the adaptive
# default, issue 22).
DAEMON_CMD = (
    "{python} -m l2tpreorder run --config {config} --listen {listen} --lns {lns} "
    "--timeout {timeout_ms} --socket-buffer {rcvbuf}"
)
DAEMON_CONFIG = (
    "metrics: {{enabled: false}}\nreorder: {{adaptive: false}}\ncontrol_socket: {socket}\n"
)


class TargetUnavailable(RuntimeError):
    """The relay command exited or never bound its port: its results are 'n/a', not zero."""


@dataclass
class Target:
    name: str
    template: str | None  # None = no relay (generator straight into the sink)
    label: str = ""  # what printouts and the plot call it (e.g. a stand-in for the daemon)
    # In-path mode on these NFQUEUE queues: generator -> sink in a namespace, queued to us.
    inpath: tuple[int, ...] | None = None
    # Instead of the daemon on the queue: this command (the C reader, bench/c/nfq_reader.c).
    reader: list[str] | None = None
    # It puts each session back in Ns order (the daemon); a plain forwarder (the baseline, the C
    # reader) passes the generator's planned swaps through as sent, which are then no error.
    reorders: bool = False
    # Added to the environment of the process under test (L2TPREORDER_BUILD=pure|compiled).
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    def command(
        self, listen: str, lns: str, timeout_ms: int, rcvbuf: int, config: str = ""
    ) -> list[str]:
        assert self.template is not None
        text = self.template.format(python=shlex.quote(PY), listen=listen, lns=lns,
                                    timeout_ms=timeout_ms, rcvbuf=rcvbuf,
                                    config=shlex.quote(config))
        return shlex.split(text)


@dataclass
class Bench:
    args: argparse.Namespace
    deadline: float
    pin: bool
    autogroup: bool = False
    relay_logs: dict[int, Any] = field(default_factory=dict)
    live: list[subprocess.Popen[str]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)  # `ip netns exec NS` during in-path trials
    # the daemon's config files and control sockets (removed at the end of main)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="l2rx-bench-")))
    # The load generator's command (its options follow): bench/c/loadgen or bench.loadgen, which
    # take the same options and print the same JSON.
    generator: list[str] = field(default_factory=lambda: [PY, "-m", "bench.loadgen"])

    # ---- process plumbing -------------------------------------------------------------------

    def kill_all(self) -> None:
        """Every process this run started and that still runs (by pid, never by name)."""
        for proc in self.live:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        self.live.clear()

    def prefix(self, cpu: int | None) -> list[str]:
        """taskset/nice in front of a bench process (the same for baseline and daemon)."""
        out: list[str] = list(self.netns)
        if self.args.nice:
            out += ["nice", "-n", str(self.args.nice)]
        if self.pin and cpu is not None:
            out += ["taskset", "-c", str(cpu)]
        return out

    def spawn(self, cmd: list[str], cpu: int | None, env: dict[str, str] | None = None,
              **kw: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.prefix(cpu) + cmd, cwd=ROOT, text=True,
                                start_new_session=self.autogroup,
                                env={**os.environ, **env} if env else None, **kw)
        self.live.append(proc)
        if self.autogroup:
            # With sched_autogroup, nice only ranks tasks inside one session's group; give each
            # bench process its own group at the same nice, so other sessions' load (other
            # test runs on a shared VM) disturbs baseline and daemon alike, and less.
            try:
                Path(f"/proc/{proc.pid}/autogroup").write_text(str(self.args.nice))
            except OSError as e:
                self.notes.append(f"autogroup nice not set: {e}")
                self.autogroup = False
        return proc

    def run_generator(self, cmd: list[str], timeout: float) -> dict[str, Any]:
        gen = self.spawn(cmd, 0, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = gen.communicate(timeout=timeout)
        finally:
            if gen.poll() is None:
                gen.kill()
                gen.communicate()
        if gen.returncode != 0:
            raise RuntimeError(f"loadgen failed: {err[-800:]}")
        result: dict[str, Any] = json.loads(out)
        return result

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @staticmethod
    def stop(proc: subprocess.Popen[str], grace: float = 5.0) -> tuple[str, str]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
        return out or "", err or ""

    def start_sink(self, sessions: int, latency: bool) -> tuple[subprocess.Popen[str], int]:
        cmd = [PY, "-m", "bench.sink", "--sessions", str(sessions), "--max-seconds", "120"]
        if latency:
            cmd.append("--latency")
        sink = self.spawn(cmd, 0, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert sink.stdout is not None
        ready, _, _ = select.select([sink.stdout], [], [], 10)
        line = sink.stdout.readline() if ready else ""
        if not line:
            _, err = self.stop(sink)
            raise RuntimeError(f"sink did not start: {err[-500:]}")
        return sink, int(json.loads(line)["port"])

    def start_relay(self, target: Target, lns_port: int) -> tuple[subprocess.Popen[str], int]:
        port = udp.free_udp_port()
        config = self.tmp / f"relay-{port}.yaml"
        config.write_text(DAEMON_CONFIG.format(socket=self.tmp / f"relay-{port}.sock"))
        cmd = target.command(f"127.0.0.1:{port}", f"127.0.0.1:{lns_port}", self.args.timeout_ms,
                             self.args.relay_rcvbuf, str(config))
        # Output to a file, not a pipe: a relay that logs a lot must never block on us.
        log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in relay_log)
        relay = self.spawn(cmd, 1, target.env, stdout=log, stderr=subprocess.STDOUT)
        self.relay_logs[relay.pid] = log
        if not udp.wait_until_bound(port, relay):
            self.stop(relay)
            tail = " | ".join(self.relay_log(relay).strip().splitlines()[-3:])
            raise TargetUnavailable(f"{shlex.join(cmd)}: exited or never bound: {tail}")
        return relay, port

    def start_target(self, target: Target, lab: InPathLab | None,
                     sink_port: int) -> tuple[subprocess.Popen[str] | None, int]:
        """The process under test (None: generator straight to the sink) and where to send."""
        if lab is not None:
            return self.start_inpath(target, lab), sink_port
        if target.template is not None:
            return self.start_relay(target, sink_port)
        return None, sink_port

    def start_inpath(self, target: Target, lab: InPathLab) -> subprocess.Popen[str]:
        """`l2tpreorder run` in in-path mode on the lab's queue(s), or the target's C reader: one
        worker pinned like the relay; several float over both CPUs (honest for a 2-core machine
        with a harness)."""
        config = None if target.reader else lab.config(self.args.timeout_ms)
        cmd = target.reader or [PY, "-m", "l2tpreorder", "run", "--config", str(config)]
        log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in relay_log)
        cpu = 1 if target.inpath and len(target.inpath) == 1 else None
        relay = self.spawn(cmd, cpu, target.env, stdout=log, stderr=subprocess.STDOUT)
        self.relay_logs[relay.pid] = log
        ok = lab.wait_bound(relay)
        if config is not None:
            config.unlink()
        if not ok:
            self.stop(relay)
            tail = " | ".join(self.relay_log(relay).strip().splitlines()[-3:])
            raise TargetUnavailable(f"{shlex.join(cmd)}: exited or never bound: {tail}")
        return relay

    def relay_log(self, relay: subprocess.Popen[str]) -> str:
        log = self.relay_logs.pop(relay.pid, None)
        if log is None:
            return ""
        log.seek(0)
        text = log.read()
        log.close()
        return text

    # ---- one trial --------------------------------------------------------------------------

    def trial(
        self, target: Target, *, sessions: int, rate: float, swaps: float, loss: float = 0.0,
        latency: bool = False, batch: int = 0, duration: float | None = None, label: str = "",
    ) -> dict[str, Any]:
        duration = duration if duration is not None else self.args.trial_seconds
        timeout_s = self.args.timeout_ms / 1000.0
        lab = InPathLab(target.inpath) if target.inpath else None
        self.netns = lab.prefix() if lab else []
        sink, sink_port = self.start_sink(sessions, latency)
        relay = None
        try:
            relay, dest = self.start_target(target, lab, sink_port)
            cmd = [
                *self.generator, "--target", f"127.0.0.1:{dest}",
                "--sessions", str(sessions), "--rate", str(rate), "--duration", str(duration),
                "--swaps", str(swaps), "--loss", str(loss), "--size", str(self.args.size),
                "--hold-window", str(timeout_s * 1.5 + 0.02), "--batch", str(batch),
                "--mode", self.args.generator_mode,
            ]
            sent = self.run_generator(cmd, duration + 60)
            # Let held packets be released and the sink drain: in-path, a session waiting for
            # its witness after a fail-open episode holds up to max(timeout, the witness wait)
            # (core/ahead.py); counted as lost if the sink stopped before.
            held_for = timeout_s
            if lab is not None and not target.reader:
                held_for = max(timeout_s, BYPASS_WITNESS_WAIT)
            time.sleep(held_for + 0.3)
            relay_sockets = udp.udp_socket_stats(dest) if relay is not None and not lab else []
            queue_drops = lab.kernel_drops() if lab is not None else 0
        finally:
            out, err = self.stop(sink)
            if relay is not None:
                self.stop(relay, grace=10.0)
                relay_err = self.relay_log(relay)
            if lab is not None:
                lab.close()
            self.netns = []
        lines = out.strip().splitlines()
        if not lines:
            raise RuntimeError(f"sink gave no results: {err[-500:]}")
        reader_packets = reader_count(relay_err) if relay is not None and target.reader else None
        result = judge(target, sent, json.loads(lines[-1]), reader_packets)
        drops = sum(s["drops"] for s in relay_sockets) + queue_drops
        result.update(label=label, sessions=sessions, offered_pps=rate, swaps=swaps,
                      loss_planned=loss, relay_socket_drops=drops,
                      generator_limited=rate > 0 and sent["achieved_pps"] < 0.97 * rate)
        if relay is not None and relay.returncode not in (0, -signal.SIGTERM):
            result["relay_exit"] = relay.returncode
            result["relay_stderr"] = relay_err[-500:]
        self.trials.append(result)
        flag = " GEN-LIMITED" if result["generator_limited"] else ""
        flag += " SINK-LIMITED" if result["sink_limited"] else ""
        print(
            f"  {target.label:14s} {sessions:6d} sess  offered {rate:9.0f}  fwd "
            f"{result['forwarded_pps']:9.0f} pps  loss {result['loss'] * 100:6.3f}%  "
            f"relay-drops {result['relay_socket_drops']}  order-err {result['order_errors']}{flag}",
            flush=True,
        )
        return result

    # ---- rate search ------------------------------------------------------------------------

    def search(self, target: Target, *, sessions: int, swaps: float, start: float,
               ceiling: float) -> dict[str, Any]:
        """Highest clean offered rate: <= 0.1% of the packets sent lost or out of order (beyond
        the planned swaps of a target that does not reorder); double until a failure, then
        bisect."""
        lo, hi = 0.0, math.inf
        rate = min(start, ceiling)
        steps = 0
        bound = False
        while steps < self.args.max_steps and self.remaining() > self.args.trial_seconds + 5:
            steps += 1
            r = self.trial(target, sessions=sessions, rate=rate, swaps=swaps, label="search")
            ok, harness_limited = outcome(r)
            bound = bound or harness_limited
            if ok:
                lo = rate
            else:
                hi = rate
            if hi == math.inf:
                if rate >= ceiling:
                    bound = True
                    break
                rate = min(rate * 2, ceiling)
            elif lo == 0:
                rate = rate / 2
                if rate < 1000:
                    break
            else:
                if hi / lo <= 1 + self.args.precision:
                    break
                rate = math.sqrt(lo * hi)
        return {"target": target.name, "sessions": sessions, "swaps": swaps,
                "loss_free_pps": lo, "first_failing_pps": None if hi == math.inf else hi,
                "harness_bound": bound, "steps": steps}


def reader_count(log: str) -> int | None:
    """Packets the C reader read from its queue (its JSON summary, the last line of its log)."""
    for line in reversed(log.strip().splitlines()):
        if line.startswith("{"):
            try:
                return int(json.loads(line)["packets"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def judge(target: Target, sent: dict[str, Any], got: dict[str, Any],
          reader_packets: int | None = None) -> dict[str, Any]:
    """One trial's counts from the generator's and the sink's JSON: lost, order errors, clean.

    A failure with drops at the sink's own socket is the harness's limit, not the target's
    (`sink_limited`): the search then reports its rate as harness-bound. For the C reader, the
    packets that reached the sink without passing through it (fail-open's bypass) are counted
    from its own packet count, not only guessed from arrivals out of order."""
    warm = got["received_by_kind"]["WARMUP"]
    measured_unique = got["unique"] - warm
    lost = sent["sent"] - measured_unique
    # Arrivals out of order beyond the planned swaps a plain forwarder passes through: for
    # in-path mode, what fail-open let past the queue (the bypass is not throughput).
    planned = 0 if target.reorders else sent["kinds"].get("LATE", 0)
    order_errors = max(0, got["out_of_order"] - planned)
    bypassed = None if reader_packets is None else max(0, got["unique"] - reader_packets)
    failures = lost + max(order_errors, bypassed or 0)
    clean = sent["sent"] > 0 and failures / sent["sent"] <= LOSS_FREE
    return {
        "target": target.name,
        "target_label": target.label,
        "generator_pps": sent["achieved_pps"],
        "sent": sent["sent"],
        "received": measured_unique,
        "lost": lost,
        "loss": lost / sent["sent"] if sent["sent"] else 1.0,
        "warmup_lost": sent["warmup_sent"] - warm,
        "forwarded_pps": measured_unique / sent["elapsed_s"] if sent["elapsed_s"] else 0.0,
        "out_of_order": got["out_of_order"],
        "order_errors": order_errors,
        "reader_packets": reader_packets,
        "bypassed": bypassed,
        "clean": clean,
        "sink_limited": (not clean or sent["warmup_sent"] > warm) and got["sink_socket_drops"] > 0,
        "duplicates": got["duplicates"],
        "header_mismatch": got["header_mismatch"],
        "sink_socket_drops": got["sink_socket_drops"],
        "latency_normal_ns": got["latency_normal_ns"],
        "latency_after_gap_ns": got["latency_after_gap_ns"],
        "sent_kinds": sent["kinds"],
        "batch": sent["batch"],
        "mode": sent["mode"],
        "generator": sent.get("generator", "python"),
    }


def outcome(r: dict[str, Any]) -> tuple[bool, bool]:
    """(the trial passes, the harness limited it): a generator that could not offer the rate, or
    a failure with drops at the sink, says nothing about the target's own limit."""
    ok = r["clean"] and not r["generator_limited"] and r["warmup_lost"] == 0
    return ok, r["generator_limited"] or r["sink_limited"]
