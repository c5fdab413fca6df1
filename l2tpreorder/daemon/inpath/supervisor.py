"""Several in-path queues: one worker process per queue, supervised by the main process.

Why processes: the per-packet work is Python, and threads would share one GIL. The rule's
`--queue-balance A:B` (nft `fanout`) hashes by address, so one LAC always lands on the same
worker and each worker's sessions are its own. The supervisor restarts a worker that dies
(while it is down its queue fails open through the rule's bypass), forwards SIGHUP and SIGTERM,
and serves one `/metrics` for all workers: it scrapes each worker's loopback endpoint at scrape
time and adds a `queue` label. It serves the daemon's control socket too: `status` and `reload`
ask each worker over its private socket (`protocol.py`) and merge the answers; a reload is
answered only after every worker applied or refused the file. Each worker is the one service
(`daemon/service.py`) with the in-path adapter; this module imports none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from l2tpreorder.config import Config, ConfigError, MetricsConfig, format_address
from l2tpreorder.daemon.control import ControlServer
from l2tpreorder.daemon.inpath.protocol import (
    WORKER_CONTROL_ENV,
    WORKER_METRICS_LINE,
    ask,
    worker_socket,
)
from l2tpreorder.daemon.metrics import MetricsServer
from l2tpreorder.daemon.metrics_endpoint import MetricsEndpoint
from l2tpreorder.daemon.sdnotify import Notifier
from l2tpreorder.daemon.start_checks import no_control_socket, refuse_start
from l2tpreorder.daemon.status import ALL, QueryError, StatusQuery, select_answer

log = logging.getLogger("l2tpreorder")

RESTART_DELAY = 1.0  # a worker that dies at once must not spin
STOP_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the worker before exec: SIGTERM when the supervisor dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Worker:
    """One queue's worker process and what it told us (its metrics port)."""

    __slots__ = ("metrics_port", "proc", "queue", "restarts", "started_at")

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port: int | None = None
        self.restarts = 0
        self.started_at = 0.0


class WorkersCollector(Collector):
    """Every worker's families, each sample labelled with its worker's queue."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for w in self._supervisor.workers.values():
            if not w.metrics_port:  # not up yet, or up without metrics (port 0)
                continue
            try:
                url = f"http://127.0.0.1:{w.metrics_port}/metrics"
                with urllib.request.urlopen(url, timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                continue  # restarting: its series come back with it
            for family in text_string_to_metric_families(text):
                m = merged.get(family.name)
                if m is None:
                    m = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for s in family.samples:
                    labels = dict(s.labels)
                    labels.setdefault("queue", str(w.queue))
                    m.add_sample(s.name, labels, s.value, s.timestamp)
        yield from merged.values()
        restarts = Metric(
            "l2tpreorder_inpath_worker_restarts", "Worker processes restarted.", "counter"
        )
        for w in self._supervisor.workers.values():
            restarts.add_sample(
                "l2tpreorder_inpath_worker_restarts_total", {"queue": str(w.queue)}, w.restarts
            )
        yield restarts


class Supervisor:
    def __init__(
        self,
        config: Config,
        config_path: str | None,
        overrides: Sequence[str] = (),
        load: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self._load = load  # the file and `run`'s flags, as each worker loads them
        self.config_path = config_path
        self.overrides = list(overrides)
        self.workers = {q: Worker(q) for q in config.inpath_queues}
        self.notifier = Notifier()
        self._stopping = False
        self._ready_sent = False
        self.metrics = MetricsEndpoint(self._open_metrics)
        self.control: ControlServer | None = None

    def status_line(self) -> str:
        return f"in-path: {len(self.workers)} workers for NFQUEUE " + ", ".join(
            str(q) for q in self.workers
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def request_stop(sig: int) -> None:
            if not stop.done():
                log.info("%s: stopping the workers", signal.Signals(sig).name)
                stop.set_result(None)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, request_stop, sig)
        refused = refuse_start(self.config, self.metrics)  # before any worker starts
        if refused is not None:
            return refused
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        self.control = await start_supervisor_control(self)
        for w in self.workers.values():
            self._start(w)
        watch = loop.create_task(self._watch())
        try:
            await stop
        finally:
            self._stopping = True
            watch.cancel()
            self.notifier.stopping()
            await loop.run_in_executor(None, self._stop_all)
            self.metrics.close()
            if self.control is not None:
                self.control.close()
            self.notifier.close()
        return 0

    def _open_metrics(self, settings: MetricsConfig) -> MetricsServer | None:
        """The one `/metrics` for every worker (`WorkersCollector`); None when off; OSError
        when it cannot listen."""
        if not settings.enabled:
            return None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkersCollector(self))
        server = MetricsServer(settings, registry)
        scheme = "https" if settings.tls_cert else "http"
        log.info("metrics: %s://%s/metrics", scheme, format_address((settings.listen, server.port)))
        return server

    def _sighup(self) -> None:
        self._forward(signal.SIGHUP)
        self.reload_own()

    def reload_own(self) -> str | None:
        """After the workers reloaded: what the supervisor serves itself (`metrics:`) follows
        the file too; returns why it could not (for the reload's answer). A file that does
        not load is the workers' to report."""
        if self._load is None:
            return None
        try:
            new = self._load()
        except ConfigError:
            return None
        not_served = None
        if new.metrics != self.config.metrics:
            not_served = self.metrics.move(self.config.metrics, new.metrics)
            if not_served is not None:
                log.error("reload: %s", not_served)
                new = replace(new, metrics=self.config.metrics)  # the next reload tries again
        self.config = new
        return not_served

    def _start(self, w: Worker) -> None:
        argv = [sys.executable, "-m", "l2tpreorder", "run", "--inpath-worker", str(w.queue)]
        if self.config_path is not None:
            argv += ["--config", self.config_path]
        argv += self.overrides  # `run`'s flags over the file: each worker loads the same config
        w.metrics_port = None
        w.started_at = time.monotonic()
        env = dict(os.environ)
        env.pop(WORKER_CONTROL_ENV, None)
        if self.control is not None and self.control.path is not None:
            env[WORKER_CONTROL_ENV] = worker_socket(self.control.path, w.queue)
        w.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            env=env,
        )
        assert w.proc.stdout is not None
        loop = asyncio.get_running_loop()
        loop.add_reader(w.proc.stdout.fileno(), self._worker_output, w, w.proc)
        log.info("worker for NFQUEUE %d started (pid %d)", w.queue, w.proc.pid)

    def _worker_output(self, w: Worker, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            asyncio.get_running_loop().remove_reader(proc.stdout.fileno())
            return
        text = line.decode(errors="replace").strip()
        if text.startswith(WORKER_METRICS_LINE) and proc is w.proc:
            w.metrics_port = int(text[len(WORKER_METRICS_LINE) :])
            if not self._ready_sent and all(
                x.metrics_port is not None for x in self.workers.values()
            ):
                self._ready_sent = True
                status = self.status_line()
                log.info("%s", status)
                self.notifier.ready(status)

    async def _watch(self) -> None:
        """Restart workers that died (their queues fail open meanwhile)."""
        while not self._stopping:
            await asyncio.sleep(0.2)
            for w in self.workers.values():
                proc = w.proc
                if proc is None or proc.poll() is None:
                    continue
                log.error(
                    "worker for NFQUEUE %d (pid %d) exited with %s; its queue fails open "
                    "until it is back",
                    w.queue,
                    proc.pid,
                    proc.returncode,
                )
                self._close_stdout(proc)
                w.proc = None
                wait = RESTART_DELAY - (time.monotonic() - w.started_at)
                if wait > 0:
                    await asyncio.sleep(wait)
                if self._stopping:
                    return
                w.restarts += 1
                self._start(w)

    @staticmethod
    def _close_stdout(proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(proc.stdout.fileno())
            proc.stdout.close()

    def _forward(self, sig: int) -> None:
        for w in self.workers.values():
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(sig)

    def _stop_all(self) -> None:
        """SIGTERM every worker (each accepts what it holds, in order) and wait, bounded."""
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in self.workers.values():
            if w.proc is None:
                continue
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker for NFQUEUE %d did not stop; killing it", w.queue)
                w.proc.kill()
                w.proc.wait(timeout=5)


# --- the control socket: every worker asked, the answers merged --------------------------

WORKER_STATUS_TIMEOUT = 10.0  # per worker; the client waits 30 s for the whole answer
WORKER_RELOAD_TIMEOUT = 20.0


async def supervisor_status(
    sup: Supervisor, path: str, started: float, query: StatusQuery = ALL
) -> dict[str, Any]:
    """Every worker's answer merged: peers and sessions carry their queue; a worker that does
    not answer (restarting) is listed with its error, its queue failing open meanwhile. Each
    worker applies `query`, and the merge is cut to it again (up to `top` came from each)."""
    queues = sorted(sup.workers)
    fields = query.as_request()
    answers = await asyncio.gather(
        *(ask(worker_socket(path, q), "status", WORKER_STATUS_TIMEOUT, fields) for q in queues)
    )
    peers: list[dict[str, Any]] = []
    per_queue: list[dict[str, Any]] = []
    totals: dict[str, int] = {}
    for q, answer in zip(queues, answers, strict=True):
        w = sup.workers[q]
        if not answer.get("ok"):
            per_queue.append({"queue": q, "error": answer.get("error"), "restarts": w.restarts})
            continue
        for entry in answer.get("queues", []):
            per_queue.append({**entry, "restarts": w.restarts})
        peers.extend(answer.get("peers", []))
        for key, value in answer.get("totals", {}).items():
            totals[key] = totals.get(key, 0) + int(value)
    peers.sort(key=lambda p: (p["queue"], p["lac"]))
    merged = {
        "ok": True,
        "mode": "inpath",
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - started, 3),
        "status": sup.status_line(),
        "config": sup.config.source,
        "totals": totals,
        "queues": per_queue,
        "peers": peers,
    }
    if query.selects_sessions:  # each worker's own top N: cut the merge to N, as relay does
        merged = select_answer(merged, query)[0]
    return merged


async def supervisor_reload(sup: Supervisor, path: str) -> dict[str, Any]:
    """Each worker reloads and answers; any refusal (or silence) fails the reload, by queue."""
    queues = sorted(sup.workers)
    answers = await asyncio.gather(
        *(ask(worker_socket(path, q), "reload", WORKER_RELOAD_TIMEOUT) for q in queues)
    )
    refused = [
        f"queue {q}: {a.get('error')}" for q, a in zip(queues, answers, strict=True) if not a["ok"]
    ]
    if refused:
        return {"ok": False, "error": "; ".join(refused)}
    notes = sorted({n for a in answers for n in a.get("not_applied", [])})
    not_served = sup.reload_own()
    if not_served is not None:
        notes.append(not_served)
    return {"ok": True, "status": sup.status_line(), "not_applied": notes}


async def start_supervisor_control(sup: Supervisor) -> ControlServer | None:
    """The daemon's control socket, served by the supervisor for all its workers."""
    started = time.monotonic()
    control = ControlServer({})

    async def status(request: dict[str, Any]) -> dict[str, Any]:
        assert control.path is not None
        try:
            query = StatusQuery.from_request(request)
        except QueryError as e:
            return {"ok": False, "error": str(e)}
        return await supervisor_status(sup, control.path, started, query)

    async def reload(request: dict[str, Any]) -> dict[str, Any]:
        assert control.path is not None
        return await supervisor_reload(sup, control.path)

    control.handlers.update({"status": status, "reload": reload})
    try:
        where = await control.start(sup.config.control_socket)
    except OSError as e:
        no_control_socket(e)
        return None
    log.info("control socket: %s (workers: %s)", where, worker_socket(where, 0)[:-1] + "N")
    return control


def supervise(
    config: Config,
    config_path: str | None,
    overrides: Sequence[str] = (),
    load: Callable[[], Config] | None = None,
) -> int:
    """Run one worker per configured queue until SIGTERM."""
    supervisor = Supervisor(config, config_path, overrides, load)
    with asyncio.Runner() as runner:
        return runner.run(supervisor.run())
