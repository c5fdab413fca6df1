"""`l2tpreorder run` with `mode: inpath`: one worker per NFQUEUE queue, each an event loop around
`InPath` (signals, timer, state file, metrics, privilege drop).

One queue: this process is the worker. Several: this process supervises one worker process per
queue (`inpath_workers`), because threads would share one GIL. Binding a queue needs only
CAP_NET_ADMIN; `user` drops privileges right after the bind. SIGTERM accepts everything held,
in order, and saves the sessions' numbering to the state file like relay mode.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from l2tpreorder.config import EX_CONFIG, Config, ConfigError, state_file_path
from l2tpreorder.core.engine import ReorderEngine
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.daemon import reload_report
from l2tpreorder.daemon.inpath.adapter import InPath
from l2tpreorder.daemon.inpath.nfqueue import NfQueue, read_queue_stats
from l2tpreorder.daemon.metrics import PREFIX, MetricsServer, RelayCollector
from l2tpreorder.daemon.privileges import CAP_NET_ADMIN, drop_privileges
from l2tpreorder.daemon.relay.counters import RelayCounters
from l2tpreorder.daemon.sdnotify import Notifier
from l2tpreorder.daemon.state import consume_state, save_state

if TYPE_CHECKING:
    from l2tpreorder.daemon.control import ControlServer

log = logging.getLogger("l2tpreorder")

SHUTDOWN_DRAIN_READS = 64  # x 64 messages read and ordered at SIGTERM before accepting the rest
READ_BATCHES_PER_WAKE = 16  # x 64 messages: bounded so timers and signals still run
WORKER_METRICS_LINE = "l2tpreorder-worker-metrics-port="
WORKER_CONTROL_ENV = "L2TPREORDER_WORKER_CONTROL"  # a supervised worker's control socket
# inpath_passed_not_ours{reason}: (reason label, InPathCounters attribute)
PASSED_NOT_OURS = (
    ("not_udp", "not_udp"),
    ("truncated", "truncated"),
    ("not_l2tpv2", "not_l2tpv2"),
    ("malformed_l2tpv2", "malformed_l2tpv2"),
    ("fragment", "fragments_seen"),
    ("bad_checksum", "bad_checksum"),
)


class InPathSource:
    """What the metrics collectors read: the pipeline's engines and the adapter's counters."""

    def __init__(self, worker: InPathWorker) -> None:
        self._worker = worker

    @property
    def engines(self) -> dict[str, ReorderEngine]:
        return self._worker.pipeline.engines

    @property
    def relay(self) -> RelayCounters:
        """The relay families, filled from what in-path mode has in their place."""
        c = self._worker.adapter.counters
        r = RelayCounters()
        r.rx_datagrams_lac = c.from_lac
        r.rx_datagrams_lns = c.from_lns
        r.tx_datagrams_lns = c.accepted
        r.config_reloads_ok = self._worker.reloads_ok
        r.config_reloads_failed = self._worker.reloads_failed
        r.config_load_failing = self._worker.config_load_failing
        return r


class InPathCollector(Collector):
    """The in-path families: per-queue adapter counters and the kernel's queue counters."""

    def __init__(self, worker: InPathWorker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        w = self._worker
        q = str(w.queue_num)
        c = w.adapter.counters
        passed = CounterMetricFamily(
            PREFIX + "inpath_passed_not_ours",
            "Queued packets accepted untouched at once because they are not whole L2TPv2 "
            "datagrams (not_udp: other protocol or a fragment; truncated: copy shorter than "
            "the packet; not_l2tpv2: L2TPv3 or other UDP; malformed_l2tpv2: L2TPv2 version "
            "bits but a malformed header, not counted by the engine; fragment: an IP fragment "
            "of a UDP datagram, the reassembly rule is missing; bad_checksum: L2TPv2 with a "
            "wrong UDP checksum, never ordered nor rewritten).",
            labels=["queue", "reason"],
        )
        for reason, attribute in PASSED_NOT_OURS:
            passed.add_metric([q, reason], getattr(c, attribute))
        verdicts = CounterMetricFamily(
            PREFIX + "inpath_verdicts",
            "Verdicts given: accept (untouched), accept_rewritten (renumber/strip), drop "
            "(duplicate, late and stale packets).",
            labels=["queue", "verdict"],
        )
        verdicts.add_metric([q, "accept"], c.accepted - c.accepted_rewritten)
        verdicts.add_metric([q, "accept_rewritten"], c.accepted_rewritten)
        verdicts.add_metric([q, "drop"], c.dropped)
        queued = CounterMetricFamily(
            PREFIX + "inpath_queued_packets", "Packets read from the queue.", labels=["queue"]
        )
        queued.add_metric([q], c.packets)
        messages = CounterMetricFamily(
            PREFIX + "inpath_verdict_messages",
            "Netlink verdict messages sent (batch: one for a run of packets).",
            labels=["queue", "kind"],
        )
        messages.add_metric([q, "single"], c.verdict_messages - c.batch_verdicts)
        messages.add_metric([q, "batch"], c.batch_verdicts)
        waiting = GaugeMetricFamily(
            PREFIX + "inpath_awaiting_verdict",
            "Packets read and held back (no verdict yet).",
            labels=["queue"],
        )
        waiting.add_metric([q], w.adapter.held)
        errors = CounterMetricFamily(
            PREFIX + "inpath_verdict_errors",
            "Verdicts the kernel refused (logged; e.g. EPERM without CAP_NET_ADMIN).",
            labels=["queue"],
        )
        errors.add_metric([q], w.verdict_errors)
        yield from (passed, verdicts, queued, messages, waiting, errors)
        yield from kernel_queue_families([w.queue_num])


def kernel_queue_families(queues: list[int]) -> Iterator[Metric]:
    """/proc/net/netfilter/nfnetlink_queue for our queues (this network namespace)."""
    stats = read_queue_stats()
    dropped = CounterMetricFamily(
        PREFIX + "inpath_kernel_queue_drops",
        "The kernel's per-queue drop counters: queue_full (queue at its maximum length) and "
        "socket_full (our netlink socket full). Fail-open passes packets instead of dropping "
        "them there and the kernel does not count those passes.",
        labels=["queue", "reason"],
    )
    backlog = GaugeMetricFamily(
        PREFIX + "inpath_kernel_queue_waiting",
        "Packets waiting in the kernel's queue for a verdict (read or not yet read).",
        labels=["queue"],
    )
    for n in queues:
        s = stats.get(n)
        if s is None:
            continue
        dropped.add_metric([str(n), "queue_full"], s.queue_dropped)
        dropped.add_metric([str(n), "socket_full"], s.user_dropped)
        backlog.add_metric([str(n)], s.waiting)
    yield from (dropped, backlog)


class InPathWorker:
    """One queue: read, hand to the pipeline, verdicts; one timer for the earliest deadline."""

    def __init__(
        self,
        config: Config,
        queue_num: int,
        reload_config: Callable[[], Config],
        *,
        state_file: str | None = None,
        notifier: Notifier | None = None,
        report_metrics_port: bool = False,
        control_socket: str | None = None,
    ) -> None:
        self.config = config
        self.queue_num = queue_num
        self._reload_config = reload_config
        self.state_file = state_file
        self.notifier = notifier or Notifier()
        self._report_metrics_port = report_metrics_port
        # Supervised: the private socket the supervisor asks (None: none); alone: the daemon's.
        self._control_socket = control_socket
        self.control: ControlServer | None = None
        self.config_load_failing = 0
        self.pipeline = Pipeline(config.engine, reorder_from_lns=config.reorder_lns_to_lac)
        self.adapter = InPath(self.pipeline, queue_num)
        self.queue: NfQueue | None = None
        self.metrics: MetricsServer | None = None
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.verdict_errors = 0
        self._errors_logged_at = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> int:
        user = None
        if self.config.user is not None:
            try:
                user = pwd.getpwnam(self.config.user)
            except KeyError:  # config.check_host found it; it vanished since
                log.error("user = %r: no such user; not starting", self.config.user)
                return EX_CONFIG
        loop = self._loop = asyncio.get_running_loop()
        try:
            self.queue = NfQueue(self.queue_num, maxlen=self.config.inpath_queue_maxlen)
        except OSError as e:
            log.error(
                "cannot bind NFQUEUE %d: %s (needs CAP_NET_ADMIN; is another reader bound?)",
                self.queue_num,
                e.strerror or e,
            )
            return 1
        self._stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        self._restore()
        self.metrics = self._start_metrics()
        if self._control_socket is not None or not self._report_metrics_port:
            from l2tpreorder.daemon.inpath.control import start_worker_control

            owner = (user.pw_uid, user.pw_gid) if user is not None else None
            self.control = await start_worker_control(self, self._control_socket, owner)
        if user is not None:
            error = drop_privileges(user, keep=(CAP_NET_ADMIN,))
            if error is not None:
                log.error("%s", error)
                self._shutdown()
                return 1
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_reader(self.queue.fileno(), self._readable)
        status = self.status_line()
        log.info("%s", status)
        self.notifier.ready(status)
        try:
            await self._stop
        finally:
            self.notifier.stopping()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self._shutdown()
            self.notifier.close()
        return 0

    def status_line(self) -> str:
        e = self.config.engine
        return (
            f"in-path on NFQUEUE {self.queue_num}, reorder timeout "
            f"{e.reorder_timeout * 1000:g} ms, sequencing {e.sequencing.value}"
        )

    def _start_metrics(self) -> MetricsServer | None:
        settings = self.config.metrics
        if not settings.enabled and not self._report_metrics_port:
            return None
        if self._report_metrics_port:  # a supervised worker: loopback, any port, told upwards
            from dataclasses import replace

            settings = replace(settings, listen="127.0.0.1", port=0, tls_cert=None, tls_key=None)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RelayCollector(InPathSource(self), settings))
        registry.register(InPathCollector(self))
        try:
            server = MetricsServer(settings, registry)
        except OSError as e:
            log.error("metrics: cannot listen: %s; running without metrics", e.strerror)
            if self._report_metrics_port:  # still tell the supervisor we are up (port 0: none)
                print(f"{WORKER_METRICS_LINE}0", flush=True)
            return None
        if self._report_metrics_port:
            print(f"{WORKER_METRICS_LINE}{server.port}", flush=True)
        else:
            log.info("metrics: http://%s:%d/metrics", settings.listen, server.port)
        return server

    def _restore(self) -> None:
        path = self.state_file
        if path is None:
            return
        saved = consume_state(
            path,
            max_age=self.config.peer_idle_timeout,
            sequencing=self.config.engine.sequencing.value,
        )
        if saved is None:
            return
        n = saved.restore(self.pipeline.engine, time.monotonic())
        log.info("restored %d sessions from %s", n, path)

    def _readable(self) -> None:
        q = self.queue
        assert q is not None
        for _ in range(READ_BATCHES_PER_WAKE):
            packets = q.read()
            if not packets:
                break
            q.send(self.adapter.handle(packets, time.monotonic()))
        if q.errors:
            self._report_errors(q.errors)
        self._arm()

    def _report_errors(self, errors: list[int]) -> None:
        """The kernel refused verdicts: say so (at most every 10 s), never silently."""
        self.verdict_errors += len(errors)
        now = time.monotonic()
        if now >= self._errors_logged_at + 10:
            self._errors_logged_at = now
            log.error(
                "the kernel refused %d verdict(s) on NFQUEUE %d (%s, %d in all); refused "
                "packets stay queued until this worker exits",
                len(errors),
                self.queue_num,
                os.strerror(errors[-1]),
                self.verdict_errors,
            )
        errors.clear()

    def _expire(self) -> None:
        self._timer = None
        self._timer_at = None
        assert self.queue is not None
        self.queue.send(self.adapter.expire(time.monotonic()))
        self._arm()

    def _arm(self) -> None:
        """Keep ONE timer at the pipeline's earliest deadline."""
        deadline = self.pipeline.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = self._loop
            assert loop is not None
            self._timer = loop.call_at(loop.time() + (deadline - time.monotonic()), self._expire)

    def _request_stop(self, sig: int) -> None:
        if self._stop is not None and not self._stop.done():
            log.info("%s: stopping, accepting held packets in order", signal.Signals(sig).name)
            self._stop.set_result(None)

    def _shutdown(self) -> None:
        """Accept everything held, in order; save the numbering; unbind (bypass from now)."""
        q = self.queue
        if q is not None:
            if self._loop is not None:
                self._loop.remove_reader(q.fileno())
            # What already waits in the socket still gets ordered (bounded: traffic goes on),
            # then everything held is released in order, then the rest is accepted unordered
            # before the unbind, which would drop it.
            for _ in range(SHUTDOWN_DRAIN_READS):
                packets = q.read()
                if not packets:
                    break
                q.send(self.adapter.handle(packets, time.monotonic()))
            q.send(self.adapter.flush(time.monotonic()))
            q.accept_all(self.adapter.last_id)
        if self._timer is not None:
            self._timer.cancel()
        if self.state_file is not None:
            try:
                n = save_state(self.pipeline.engine, self.state_file, {"queue": self.queue_num})
                log.info("saved %d sessions to %s", n, self.state_file)
            except (OSError, TypeError) as e:
                log.error("cannot save state to %s: %s", self.state_file, e)
        if q is not None:
            q.close()
            self.queue = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.control is not None:
            self.control.close()
            self.control = None
        c = self.adapter.counters
        log.info(
            "stopped: %d packets queued, %d accepted (%d rewritten), %d dropped, %d not ours",
            c.packets,
            c.accepted,
            c.accepted_rewritten,
            c.dropped,
            sum(getattr(c, attribute) for _, attribute in PASSED_NOT_OURS),
        )

    def reload(self) -> tuple[str | None, list[str]]:
        """SIGHUP or `l2tpreorder reload`: new engine settings for the running sessions; a bad
        file changes nothing. Returns (error or None, notes on changes not applied)."""
        self.notifier.reloading()
        try:
            new = self._reload_config()
        except ConfigError as e:
            self.reloads_failed += 1
            self.config_load_failing = 1
            log.error("reload failed, keeping the running configuration: %s", e)
            self.notifier.ready(self.status_line())
            return str(e), []
        self.config_load_failing = 0
        for line in reload_report.changes(self.config, new) or ["no setting changed"]:
            log.info("reload: %s", line)
        notes = []
        if new.inpath_queues != self.config.inpath_queues or new.mode != self.config.mode:
            notes.append("mode/inpath queues changed; not applied (restart the service)")
            log.warning("reload: %s", notes[-1])
        self.pipeline.reconfigure(
            new.engine, time.monotonic(), reorder_from_lns=new.reorder_lns_to_lac
        )
        self.config = new
        logging.getLogger().setLevel(new.log_level.upper())
        self.reloads_ok += 1
        if self.queue is not None:
            self.queue.send(self.adapter.expire(time.monotonic()))
            self._arm()
        log.info("configuration reloaded: %s", self.status_line())
        self.notifier.ready(self.status_line())
        return None, notes


def run_inpath(
    config: Config,
    load: Callable[[], Config],
    config_path: str | None,
    overrides: Sequence[str] = (),
) -> int:
    """`l2tpreorder run` in in-path mode: the worker itself, or the supervisor of several
    (`overrides`: the command line's flags over the file, handed on to every worker)."""
    if len(config.inpath_queues) > 1:
        from l2tpreorder.daemon.inpath.supervisor import supervise

        return supervise(config, config_path, overrides)
    queue = config.inpath_queues[0]
    return run_worker(config, load, queue, report_metrics_port=False)


def run_worker(
    config: Config, load: Callable[[], Config], queue: int, *, report_metrics_port: bool
) -> int:
    worker = InPathWorker(
        config,
        queue,
        load,
        # One queue: `state_file` itself (as relay mode); several: one file per worker.
        state_file=state_file_path(config, queue if len(config.inpath_queues) > 1 else None),
        notifier=None if not report_metrics_port else Notifier({}),
        report_metrics_port=report_metrics_port,
        control_socket=os.environ.get(WORKER_CONTROL_ENV) if report_metrics_port else None,
    )
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        code = runner.run(worker.run())
    sys.stdout.flush()
    return code
