"""`l2tpreorder run` with `mode: inpath`: one worker per NFQUEUE queue, each the one service
(`daemon/service.py`) around `InPathMode`.

One queue: this process is the worker. Several: this process supervises one worker process per
queue (`inpath_workers`, `supervisor.py`), because threads would share one GIL. Binding a queue
needs only CAP_NET_ADMIN, which the worker keeps when `user` drops privileges (the kernel checks
it on every verdict). SIGTERM orders what already waits in the queue (bounded), accepts
everything held in order, then the rest, before the unbind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from l2tpreorder.config import Config, format_address, state_file_path
from l2tpreorder.config.values import Network
from l2tpreorder.core.pipeline import MalformedPolicy, Pipeline
from l2tpreorder.daemon.debug_log import DebugEvents
from l2tpreorder.daemon.inpath.adapter import InPath
from l2tpreorder.daemon.inpath.counters import ADAPTER_ROWS, WORKER_ROWS
from l2tpreorder.daemon.inpath.nfqueue import NfQueue, Queued, QueueStats, QueueWaiting
from l2tpreorder.daemon.inpath.protocol import WORKER_CONTROL_ENV, WORKER_METRICS_LINE
from l2tpreorder.daemon.inpath.supervisor import supervise
from l2tpreorder.daemon.metrics import PREFIX
from l2tpreorder.daemon.mode import BindError, CounterTable, HousekeepingStep
from l2tpreorder.daemon.privileges import CAP_NET_ADMIN
from l2tpreorder.daemon.sdnotify import Notifier
from l2tpreorder.daemon.service import Endpoints, Launch, Service, run_service
from l2tpreorder.daemon.status import StatusQuery, lac_count, sessions_by_flow

log = logging.getLogger("l2tpreorder")

SHUTDOWN_DRAIN_READS = 64  # x 64 messages read and ordered at SIGTERM before accepting the rest
READ_BATCHES_PER_WAKE = 16  # x 64 messages: bounded so timers and signals still run
READ_LIMIT = 64  # netlink messages per read
STATS_EVERY = 0.001  # s: at most one /proc read per this while the queue is far from full
REFUSED_KEYS = ("inpath_queues",)  # the queues are bound once (and the supervisor's workers)


class KernelQueueCollector(Collector):
    """The kernel's counters of our queues (/proc/net/netfilter/nfnetlink_queue), read with
    `stats` (the worker's kept-open descriptor: the file is root's alone)."""

    def __init__(self, queues: list[int], stats: Callable[[], dict[int, QueueStats]]) -> None:
        self._queues = queues
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from kernel_queue_families(self._queues, self._stats())


def kernel_queue_families(queues: list[int], stats: dict[int, QueueStats]) -> list[Metric]:
    """/proc/net/netfilter/nfnetlink_queue for our queues (this network namespace)."""
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
    return [dropped, backlog]


class InPathMode:
    """In-path mode's adapter for the service: one NFQUEUE queue read into the pipeline, the
    pipeline's output turned into verdicts (`InPath`, sans-IO, does the packet work)."""

    name = "inpath"
    keep_capabilities: tuple[int, ...] = (CAP_NET_ADMIN,)
    fails_open = True  # the rule's --queue-bypass passes packets while no reader is bound
    refused_why = "needs a restart"

    def __init__(
        self,
        config: Config,
        queue_num: int,
        *,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.queue_num = queue_num
        self.loop = loop
        self.clock = clock
        self.pipeline = Pipeline(
            config.engine,
            reorder_from_lns=config.reorder_lns_to_lac,
            malformed=MalformedPolicy.PASS,  # in the path of traffic not all ours: do no harm
        )
        self.adapter = InPath(self.pipeline, queue_num, _allow(config))
        self.debug: DebugEvents | None = None  # the service's, while debug lines are on
        self.queue: NfQueue | None = None
        self.verdict_errors = 0
        self._errors_logged_at = float("-inf")
        self._on_batch: Callable[[], None] = lambda: None
        self._reading = False
        self._started = time.monotonic()
        self._waiting = QueueWaiting(queue_num)
        self._backlog = BacklogProbe(self._waiting, clock)

    @property
    def held(self) -> int:
        """Packets read and still without a verdict (a worker row)."""
        return self.adapter.held

    @property
    def kernel_maxlen(self) -> int:
        """The queue's maxlen in the kernel now (a worker row)."""
        return self.adapter.kernel_maxlen

    # --- I/O -----------------------------------------------------------------------------------

    def bind(self) -> None:
        try:
            self.queue = NfQueue(self.queue_num, maxlen=self.config.inpath_queue_maxlen)
        except OSError as e:
            raise BindError(
                f"cannot bind NFQUEUE {self.queue_num}: {e.strerror or e} (needs CAP_NET_ADMIN; "
                "is another reader bound?)"
            ) from None
        self.adapter.watch_overflow(
            self.config.inpath_queue_maxlen, self.queue.set_maxlen, READ_LIMIT
        )
        self._waiting()  # opens its descriptor now, before `user` drops privileges
        self.queue.stats = self._waiting.stats  # its id_sequence, through that descriptor
        warn_if_open(self.config)

    def start_reading(self, on_batch: Callable[[], None]) -> None:
        assert self.queue is not None
        self._on_batch = on_batch
        self.loop.add_reader(self.queue.fileno(), self._readable)
        self._reading = True
        if self.queue.has_early:  # queued since the bind: no poll would wake us for them
            self.loop.call_soon(self._readable)

    def stop_reading(self) -> None:
        if self._reading and self.queue is not None:
            self.loop.remove_reader(self.queue.fileno())
        self._reading = False

    def _readable(self) -> None:
        q = self.queue
        assert q is not None
        for _ in range(READ_BATCHES_PER_WAKE):
            packets = q.read_queued(READ_LIMIT)
            if not packets:
                break
            q.send(self.adapter.handle_queued(packets, self.clock(), self._backlog_of(packets)))
        if q.errors:
            self._report_errors(q.errors)
        self._on_batch()

    def drain_for_stop(self, now: float) -> None:
        """What already waits in the socket still gets ordered (bounded: traffic goes on); the
        service then releases everything held in order, and `close` accepts the rest unordered
        before the unbind, which would drop it."""
        q = self.queue
        if q is None:
            return
        for _ in range(SHUTDOWN_DRAIN_READS):
            packets = q.read_queued(READ_LIMIT)
            if not packets:
                break
            q.send(self.adapter.handle_queued(packets, self.clock(), self._backlog_of(packets)))

    def _backlog_of(self, packets: list[Queued]) -> int | None:
        a = self.adapter
        return self._backlog(len(packets), a.held, a.kernel_maxlen)

    def transmit(self) -> None:
        if self.queue is not None:
            self.queue.send(self.adapter.release())

    def close(self) -> None:
        q = self.queue
        if q is None:
            return
        # What is queued is accepted first: if anything below fails or waits, nothing that
        # was queued is left for the unbind to drop. Then new packets bypass (fail-open at
        # maxlen 0), and a second accept-all covers what was queued in between; the unbind
        # then finds nothing to drop.
        q.send(self.adapter.accept_pending())  # nothing should be left; never strand one
        q.accept_all(self.adapter.last_id)
        q.stop_queueing()
        q.accept_all(self.adapter.last_id)
        if q.errors:
            self._report_errors(q.errors)
        q.close()
        self.queue = None
        self._waiting.close()

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

    def reconfigure(self, new: Config) -> list[str]:
        refused = [key for key in REFUSED_KEYS if getattr(new, key) != getattr(self.config, key)]
        if new.inpath_allow != self.config.inpath_allow:
            self.adapter.set_allow(_allow(new))
        self.config = new
        warn_if_open(new)
        return refused

    # --- what the service reads ----------------------------------------------------------------

    def counter_tables(self) -> list[CounterTable]:
        q = {"queue": str(self.queue_num)}
        return [(ADAPTER_ROWS, self.adapter.counters, q), (WORKER_ROWS, self, q)]

    def collectors(self) -> list[Collector]:
        return [KernelQueueCollector([self.queue_num], self._waiting.stats)]

    def report_detail(self, key: str) -> str | None:
        return None

    def housekeeping_steps(self) -> list[HousekeepingStep]:
        return []

    def state_extra(self) -> tuple[dict[str, Any], str]:
        """The queue, and the kernel maxlen's floor after fail-open episodes (the restored
        sessions keep their lead over the LAC's Ns, which the floor protects)."""
        extra: dict[str, Any] = {"queue": self.queue_num}
        if self.adapter.floor > self.adapter.maxlen:  # only a raised one: a lowered
            extra["kernel_maxlen_floor"] = self.adapter.floor  # queue_maxlen takes effect
        return extra, ""

    def restore_extra(self, extra: dict[str, Any], now: float) -> str:
        floor = extra.get("kernel_maxlen_floor")
        if type(floor) is not int or floor < 1:
            return ""  # an older file, or none: the configured queue_maxlen stands
        self.adapter.restore_floor(floor)
        if self.adapter.floor <= self.adapter.maxlen:
            return ""
        return f" and the kernel queue maxlen floor {self.adapter.floor}"

    def status_fields(self, now: float, query: StatusQuery) -> dict[str, Any]:
        """Peers keyed by the LAC's address (in the path the LNS sees the LAC's own), and this
        queue's line with the kernel's counters."""
        q = self.queue_num
        peers = [
            _peer(flow, sessions, q)
            for flow, sessions in sessions_by_flow(self.pipeline, now, query).items()
        ]
        peers.sort(key=lambda p: p["lac"])
        c = self.adapter.counters
        kernel = self._waiting.stats().get(q)
        queue = {
            "queue": q,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "awaiting_verdict": self.adapter.held,
            # the kernel's maxlen now (raised during a fail-open episode) and what it goes
            # back to (queue_maxlen, or the floor after one: docs/inpath.md)
            "maxlen": self.adapter.kernel_maxlen,
            "maxlen_floor": self.adapter.floor,
            "counters": c.as_dict(),
            "verdict_errors": self.verdict_errors,
            "kernel": None
            if kernel is None
            else {
                "waiting": kernel.waiting,
                "queue_full_drops": kernel.queue_dropped,
                "socket_full_drops": kernel.user_dropped,
            },
        }
        totals = {
            "peers": lac_count(self.pipeline) if query.selects else len(peers),
            "rx_datagrams_lac": c.from_lac,
            "rx_datagrams_lns": c.from_lns,
        }
        return {"totals": totals, "queues": [queue], "peers": peers}

    def status_line(self) -> str:
        e = self.config.engine
        return (
            f"in-path on NFQUEUE {self.queue_num}, reorder timeout "
            f"{e.reorder_timeout * 1000:g} ms, sequencing {e.sequencing.value}"
        )

    def final_line(self) -> str:
        c = self.adapter.counters
        return (
            f"{c.packets} packets queued, {c.accepted} accepted ({c.accepted_rewritten} "
            f"rewritten), {c.dropped} dropped, {c.passed_not_ours} not ours"
        )


class BacklogProbe:
    """The `backlog` for the adapter's episode check: 0 after a short read (nothing left
    unread), else the kernel's count of what awaits a verdict, read from /proc (~20 us: not
    on every full batch of a busy queue). Skipped (None: the adapter keeps its last count)
    within STATS_EVERY of the last /proc read while ours held, the batch and what the kernel
    last held unread stay below half the maxlen: filling the rest so fast is beyond what a
    worker keeps up with, and near full every full read asks."""

    __slots__ = ("clock", "count", "read_at", "unread")

    def __init__(self, count: Callable[[], int | None], clock: Callable[[], float]) -> None:
        self.count = count
        self.clock = clock
        self.read_at = float("-inf")
        self.unread = 0  # what the kernel held unread at the last count (0 after a short read)

    def __call__(self, read: int, held: int, maxlen: int) -> int | None:
        """`held`: ours awaiting a verdict before this batch of `read` packets."""
        if read < READ_LIMIT:
            self.unread = 0
            return 0
        now = self.clock()
        if now - self.read_at < STATS_EVERY and held + read + self.unread < maxlen // 2:
            return None
        self.read_at = now
        waiting = self.count()
        if waiting is not None:
            self.unread = max(0, waiting - held - read)
        return waiting


def warn_if_open(config: Config) -> None:
    """At start and after each reload, as relay mode does for its `allow`."""
    if config.inpath_allows_everything:
        log.warning(
            "`inpath.allow` accepts every source: any host that can reach UDP port 1701 "
            "through the queue rule creates sessions here (and, at reorder.max_sessions, "
            "evicts idle real ones); list your LAC prefixes in inpath.allow and load the "
            "rules `l2tpreorder rules` prints for them"
        )


def _peer(flow: Hashable, sessions: list[dict[str, Any]], queue: int) -> dict[str, Any]:
    lac = format_address((str(flow[0]), int(flow[1])))  # type: ignore[index]
    return {
        "lac": lac,
        "upstream": lac,  # in the path, the LNS sees the LAC's own address
        "queue": queue,
        "last_seen_s": min(d["last_seen_s"] for d in sessions),
        "sessions": [{**d, "queue": queue} for d in sessions],
    }


def launch(run: Launch) -> int:
    """`l2tpreorder run` in in-path mode: a supervised worker (`--inpath-worker N`), the one
    worker of one queue, or the supervisor of several."""
    config = run.config
    if run.inpath_worker is None and len(config.inpath_queues) > 1:
        return supervise(config, run.config_path, run.overrides, run.load)
    supervised = run.inpath_worker is not None
    queue = run.inpath_worker if run.inpath_worker is not None else config.inpath_queues[0]
    endpoints = Endpoints()
    if supervised:
        control_path = os.environ.get(WORKER_CONTROL_ENV)
        endpoints = Endpoints(
            control=control_path is not None,
            control_path=control_path,
            report_metrics_port=_report_metrics_port,
        )

    def make() -> Service:
        mode = InPathMode(config, queue, loop=asyncio.get_running_loop())
        return Service(
            config,
            mode,
            run.load,
            load_file=run.load_file,
            notifier=Notifier({}) if supervised else None,
            # One queue: `state_file` itself (as relay mode); several: one file per worker.
            state_file=state_file_path(config, queue if len(config.inpath_queues) > 1 else None),
            endpoints=endpoints,
        )

    code = run_service(make)
    sys.stdout.flush()
    return code


def _report_metrics_port(port: int) -> None:
    """Tell the supervisor where this worker's loopback metrics are (0: none)."""
    print(f"{WORKER_METRICS_LINE}{port}", flush=True)


def _allow(config: Config) -> tuple[Network, ...] | None:
    """`inpath.allow` as the adapter checks it: None when it lets every source in."""
    return None if config.inpath_allows_everything else config.inpath_allow
