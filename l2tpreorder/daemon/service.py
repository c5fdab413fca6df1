"""`l2tpreorder run`: one service around a mode adapter (relay or in-path; `daemon/mode.py`).

Lifecycle, the same in both modes: load config -> bind (a clear one-line error, not a traceback,
when that fails) -> restore the state file (both directions) -> metrics, control socket ->
drop privileges -> READY=1 -> serve. SIGHUP reloads the file (RELOADING=1 ... READY=1) keeping
every session and held packet; SIGTERM/SIGINT stop reading, deliver everything held in order,
save the state and exit 0 (STOPPING=1). A one-second housekeeping tick writes the rate-limited
drop report and the debug lines and runs the mode's own steps; a separate tick pings the
systemd watchdog from the event loop, so a stuck loop is killed. The ONE timer at the
pipeline's earliest deadline is the service's (`timer.py`): after every batch a mode read, and
after every expiry, the service transmits what the pipeline released and re-arms it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import pwd
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from l2tpreorder.build import BUILD
from l2tpreorder.build import describe as describe_build
from l2tpreorder.config import (
    DEFAULT_CONFIG,
    EX_CONFIG,
    Config,
    ConfigError,
    MetricsConfig,
    add_run_arguments,
    check_host,
    config_file,
    format_address,
    load_file_only,
    load_from_args,
)
from l2tpreorder.config import override_argv as config_override_argv
from l2tpreorder.core.pipeline import MalformedPolicy
from l2tpreorder.core.snapshot import PipelineState
from l2tpreorder.core.views import DirectionView
from l2tpreorder.daemon import reload_report
from l2tpreorder.daemon.control import ControlServer
from l2tpreorder.daemon.counters import SERVICE_ROWS, ServiceCounters
from l2tpreorder.daemon.debug_log import DebugEvents
from l2tpreorder.daemon.drop_report import DropReporter
from l2tpreorder.daemon.metrics import MetricsServer, listen_failure, start_metrics_server
from l2tpreorder.daemon.metrics_endpoint import MetricsEndpoint
from l2tpreorder.daemon.mode import CounterTable, HousekeepingStep, Mode
from l2tpreorder.daemon.privileges import drop_privileges
from l2tpreorder.daemon.sdnotify import Notifier
from l2tpreorder.daemon.start_checks import no_control_socket, refuse_start
from l2tpreorder.daemon.state import consume_state, save_state
from l2tpreorder.daemon.status import ALL, QueryError, StatusQuery, build_status, resolve
from l2tpreorder.daemon.timer import DeadlineTimer

try:
    import uvloop

    _new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio works too
    _new_loop = asyncio.new_event_loop

log = logging.getLogger("l2tpreorder")

HOUSEKEEPING_INTERVAL = 1.0

# syslog priorities for journald's "<N>" line prefix (sd-daemon(3)).
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    """`<N>message`: journald stores the priority and adds its own timestamp (no duplicate)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to the journal ($JOURNAL_STREAM names that stream)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    dev, _, inode = stream.partition(":")
    if not dev.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(inode)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@dataclass(frozen=True)
class Endpoints:
    """Where a service serves, when not simply from its config: a supervised in-path worker
    serves its control socket at a private path (or none) and its metrics on loopback at any
    port, which it tells the supervisor (`report_metrics_port`)."""

    control: bool = True
    control_path: str | None = None  # None: the config's `control_socket` (or the default)
    report_metrics_port: Callable[[int], None] | None = None


class Service:
    """One daemon process: the shared lifecycle around one mode adapter."""

    def __init__(
        self,
        config: Config,
        mode: Mode,
        reload_config: Callable[[], Config],
        *,
        load_file: Callable[[], Config] | None = None,
        notifier: Notifier | None = None,
        state_file: str | None = None,
        endpoints: Endpoints | None = None,
    ) -> None:
        self.config = config
        self.mode = mode
        self.pipeline = mode.pipeline
        self._reload_config = reload_config  # () -> Config, raises ConfigError
        self._load_file = load_file  # () -> the file alone, without command-line flags
        self.notifier = notifier or Notifier()
        self.state_file = state_file
        self.endpoints = endpoints or Endpoints()
        self.counters = ServiceCounters()
        self.metrics = MetricsEndpoint(self._open_metrics)
        self.control: ControlServer | None = None
        self.timer: DeadlineTimer | None = None
        self.reporter = DropReporter(
            self.pipeline.directions,
            self.counter_tables,
            config.drop_report_interval,
            mode.report_detail,
            malformed_passed=self.pipeline.malformed is MalformedPolicy.PASS,
        )
        self.housekeeping_errors: dict[str, int] = {}
        self._stop: asyncio.Future[None] | None = None
        self._hup_pending = False
        self._housekeeping_handle: asyncio.TimerHandle | None = None
        self._watchdog_handle: asyncio.TimerHandle | None = None
        self._started = time.monotonic()

    # --- what metrics, drop reports and status read -------------------------------------------

    @property
    def engines(self) -> dict[str, DirectionView]:
        """Direction label -> read-only view (what the metrics collector reads)."""
        return self.pipeline.directions()

    def counter_tables(self) -> list[CounterTable]:
        return [(SERVICE_ROWS, self.counters, {}), *self.mode.counter_tables()]

    def status(self, query: StatusQuery = ALL) -> dict[str, Any]:
        """The status JSON: the common fields, then the mode's (`peers` with the sessions
        `query` selects, and its own)."""
        common = {
            "mode": self.mode.name,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "status": self.mode.status_line(),
            "config": self.config.source,
        }
        now = self.mode.clock()
        query = resolve(self.pipeline, query, now)  # the sessions walked once, for both below
        fields = self.mode.status_fields(now, query)
        return build_status(self.pipeline, common, fields, query)

    # --- the lifecycle -------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code."""
        # `main` ran config.check_host (the user exists, the state directory is writable by
        # it): checked before anything is bound or the state file consumed.
        try:
            user = pwd.getpwnam(self.config.user) if self.config.user is not None else None
        except KeyError:  # it vanished since
            log.error("user = %r: no such user; not starting", self.config.user)
            return EX_CONFIG
        loop = asyncio.get_running_loop()
        refused = refuse_start(
            self.config,
            self.metrics,
            check_control=self.endpoints.control and self.endpoints.control_path is None,
            bind=self.mode.bind,
        )
        if refused is not None:
            self.mode.close()  # what the mode opened (e.g. the relay's epoll); idempotent
            return refused
        # Before the state file is consumed: a SIGTERM from here on is a clean stop that saves
        # what was restored, not the default death that would lose it.
        self._stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        # SIGHUP's default action would kill us after the state file is consumed: until the
        # service can reload, a SIGHUP is remembered and carried out once it can.
        self._hup_pending = False
        loop.add_signal_handler(signal.SIGHUP, self._early_hup)
        self.restore()
        await self._start_control(user)
        if user is not None:
            error = drop_privileges(user, keep=self.mode.keep_capabilities)
            if error is not None:
                log.error("%s", error)
                self._close_endpoints()
                self.stop_io()  # saves what was restored, for next time
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
                return 1
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.start_io()
        log.info("%s", self.mode.status_line())
        self.notifier.ready(self.mode.status_line())
        if self._hup_pending:
            self.reload()
        self._housekeeping_handle = loop.call_later(HOUSEKEEPING_INTERVAL, self._housekeeping)
        interval = self.notifier.watchdog_interval
        if interval is not None:
            self.notifier.watchdog()
            self._watchdog_handle = loop.call_later(interval, self._watchdog, interval)
        try:
            await self._stop
        finally:
            self.notifier.stopping()
            self.stop_io()
            for handle in (self._housekeeping_handle, self._watchdog_handle):
                if handle is not None:
                    handle.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self._close_endpoints()
            self.reporter.tick(self.mode.clock(), final=True)
            log.info("stopped: %s", self.mode.final_line())
            self.notifier.close()
        return 0

    def start_io(self) -> None:
        """The mode reads, the timer runs (after a bind; the state file is restored first)."""
        loop = asyncio.get_running_loop()
        self.timer = DeadlineTimer(loop, self.mode.clock, self.pipeline.next_deadline, self._expire)
        self._set_debug(self.config.log_level == "debug")
        self.mode.start_reading(self._after_batch)
        self._after_batch()  # restored sessions may hold deadlines already

    def stop_io(self) -> None:
        """Stop reading, deliver everything held in order, close the mode, save the state.

        The state is taken after the flush and before the close (the relay's peers name their
        sockets), and written after it: in-path mode accepts what still waits in its queue
        before it unbinds, and that must not wait for the file's fsync."""
        mode = self.mode
        mode.stop_reading()
        now = mode.clock()
        mode.drain_for_stop(now)
        self.pipeline.flush(now)
        mode.transmit()
        to_save = self._state_now() if self.state_file is not None else None
        if self.timer is not None:
            self.timer.close()
            self.timer = None
        if mode.debug is not None:  # the lines of what was read and ordered at stop
            mode.debug.drain(now)
        self._set_debug(False)
        try:
            mode.close()
        finally:  # the file was consumed at start: a close that raised must not lose it
            if to_save is not None:
                self._write_state(*to_save)

    def _after_batch(self) -> None:
        """After a batch (or an expiry, a reload, a peer removed): send what the pipeline
        released, then keep the one timer on its earliest deadline."""
        mode = self.mode
        try:
            mode.transmit()
            if mode.debug is not None:
                mode.debug.drain(mode.clock())
        finally:  # a send that raised must not leave held packets without their timer
            if self.timer is not None:
                self.timer.arm(self.pipeline.next_deadline())

    def _expire(self) -> None:
        self.pipeline.expire(self.mode.clock())
        self._after_batch()

    def _early_hup(self) -> None:
        log.info("SIGHUP while starting: reloading once started")
        self._hup_pending = True

    def _request_stop(self, sig: int) -> None:
        if self._stop is not None and not self._stop.done():
            log.info("%s: stopping, delivering held packets in order", signal.Signals(sig).name)
            self.mode.stop_reading()
            self._stop.set_result(None)

    def _close_endpoints(self) -> None:
        self.metrics.close()
        if self.control is not None:
            self.control.close()
            self.control = None

    # --- the state file ------------------------------------------------------------------------

    def restore(self) -> None:
        """Restore what the last SIGTERM saved (both directions, then the mode's part); a bad
        file is reported and ignored."""
        path = self.state_file
        if path is None:
            return
        # Older than state_file_max_age_ms: the numbering it carries is stale by now.
        saved = consume_state(
            path,
            max_age=self.config.state_max_age,
            sequencing=self.config.engine.sequencing.value,
        )
        if saved is None:
            return
        now = self.mode.clock()
        what = self.mode.restore_extra(saved.extra, now)
        # A mode that fails open (in-path): while we were down the LACs' packets reached the
        # LNS untouched, with their own Ns, and the restored sessions must go on from those
        # (docs/inpath.md, "what the LNS sees across a bypass episode"). Relay mode has no
        # bypass: what was sent meanwhile was lost.
        restored = saved.restore(self.pipeline, now, passed=self.mode.fails_open)
        for direction, n in restored.ignored.items():
            log.warning(
                "state file %s: %d saved %s sessions not restored: reorder.lns_to_lac is off",
                path,
                n,
                direction,
            )
        log.info("restored %d sessions%s from %s", restored.total, what, path)

    def _state_now(self) -> tuple[PipelineState, dict[str, Any], str]:
        """Both directions' sessions and the mode's part (after the final flush)."""
        extra, what = self.mode.state_extra()
        return self.pipeline.snapshot(), extra, what

    def _write_state(self, state: PipelineState, extra: dict[str, Any], what: str) -> bool:
        assert self.state_file is not None
        try:
            count = save_state(state, self.state_file, extra)
        except (OSError, TypeError, ValueError) as e:
            log.error(
                "cannot save state to %s: %s (a restart will renumber afresh)", self.state_file, e
            )
            return False
        log.info("saved state of %d sessions%s to %s", count, what, self.state_file)
        return True

    # --- metrics and the control socket ----------------------------------------------------------

    def _open_metrics(self, settings: MetricsConfig) -> MetricsServer | None:
        """The Prometheus endpoint for the `metrics:` section; None when off. Raises OSError
        when it cannot listen (except a supervised worker's, which says port 0 upwards)."""
        report = self.endpoints.report_metrics_port
        if report is not None:  # a supervised worker: loopback, any port, told upwards
            settings = replace(settings, listen="127.0.0.1", port=0, tls_cert=None, tls_key=None)
            try:
                server = start_metrics_server(settings, self, self.mode.collectors())
            except OSError as e:
                log.error("%s; running without metrics", listen_failure(settings, e))
                report(0)  # still tell the supervisor we are up (port 0: none)
                return None
            report(server.port)
            return server
        if not settings.enabled:
            return None
        server = start_metrics_server(settings, self, self.mode.collectors())
        scheme = "https" if settings.tls_cert else "http"
        log.info("metrics: %s://%s/metrics", scheme, format_address((settings.listen, server.port)))
        return server

    async def _start_control(self, user: pwd.struct_passwd | None) -> None:
        """The control socket for `status` and `reload`; without it the daemon still runs."""
        if not self.endpoints.control:
            return
        control = ControlServer({"status": self._status_answer, "reload": self._reload_answer})
        owner = (user.pw_uid, user.pw_gid) if user is not None else None
        path = self.endpoints.control_path or self.config.control_socket
        try:
            where = await control.start(path, owner)
        except OSError as e:
            no_control_socket(e)
            return
        self.control = control
        log.info("control socket: %s", where)

    async def _status_answer(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            query = StatusQuery.from_request(request)
        except QueryError as e:
            return {"ok": False, "error": str(e)}
        return self.status(query)

    async def _reload_answer(self, request: dict[str, Any]) -> dict[str, Any]:
        error, not_applied = self.reload()
        if error is not None:
            return {"ok": False, "error": error}
        return {"ok": True, "status": self.mode.status_line(), "not_applied": not_applied}

    # --- housekeeping --------------------------------------------------------------------------

    def _watchdog(self, interval: float) -> None:
        self.notifier.watchdog()
        loop = asyncio.get_running_loop()
        self._watchdog_handle = loop.call_later(interval, self._watchdog, interval)

    def _housekeeping(self) -> None:
        """Re-armed FIRST, and each step on its own, so one failing step (e.g. /proc unreadable
        after a privilege drop) neither stops the tick for good nor skips the other steps."""
        loop = asyncio.get_running_loop()
        self._housekeeping_handle = loop.call_later(HOUSEKEEPING_INTERVAL, self._housekeeping)
        now = self.mode.clock()
        for name, step in self.housekeeping_steps():
            try:
                step(now)
            except Exception:  # logged; the next tick runs every step again
                self._housekeeping_failed(name)

    def housekeeping_steps(self) -> list[HousekeepingStep]:
        """The mode's steps, then the service's: drop report, debug lines."""
        return [
            *self.mode.housekeeping_steps(),
            ("drop report", self.reporter.tick),
            ("debug lines", self._debug_tick),
        ]

    def _debug_tick(self, now: float) -> None:
        if self.mode.debug is not None:
            self.mode.debug.tick(now)

    def _housekeeping_failed(self, name: str) -> None:
        """Log a failing step with its traceback the 1st, 2nd, 4th, 8th... time (bounded)."""
        n = self.housekeeping_errors[name] = self.housekeeping_errors.get(name, 0) + 1
        if n & (n - 1) == 0:
            times = "1 time" if n == 1 else f"{n} times"
            log.exception("housekeeping: %s failed (%s so far); still running", name, times)

    def _set_debug(self, enabled: bool) -> None:
        """Debug lines on or off (start, reload); off costs nothing per datagram."""
        mode = self.mode
        if enabled and mode.debug is None:
            mode.debug = DebugEvents(self.pipeline)
        elif not enabled and mode.debug is not None:
            mode.debug.close()
            mode.debug = None

    # --- reload --------------------------------------------------------------------------------

    def reload(self) -> tuple[str | None, list[str]]:
        """SIGHUP or `l2tpreorder reload`: re-read the file; a bad file keeps the running
        config and says why. Returns (error or None, notes on changes not applied)."""
        self.notifier.reloading()
        try:
            new = self._reload_config()
        except ConfigError as e:
            self.counters.config_reloads_failed += 1
            self.counters.config_loaded(False)
            log.error("reload failed, keeping the running configuration: %s", e)
            self.notifier.ready(self.mode.status_line())
            return str(e), []
        self.counters.config_loaded(True)
        old = self.config
        self._log_changes(old, new)
        self.pipeline.reconfigure(
            new.engine, self.mode.clock(), reorder_from_lns=new.reorder_lns_to_lac
        )
        # What needs a restart keeps its running value (said in the file's keys); a mode may
        # refuse more (said in its words).
        notes = reload_report.restart_needed(old, new)
        for note in notes:
            log.warning("reload: %s", note)
        kept = reload_report.restart_fields(old, new)
        new = replace(new, **{key: getattr(old, key) for key in kept})
        refused = self.mode.reconfigure(new)
        notes += self._refused_notes(old, refused)
        self.config = replace(new, **{key: getattr(old, key) for key in refused})
        logging.getLogger().setLevel(self.config.log_level.upper())
        self._set_debug(self.config.log_level == "debug")
        self.reporter.set_interval(self.config.drop_report_interval)
        # A supervised worker restarts its loopback endpoint too (per_session and its top N
        # are the worker's to apply) and tells the supervisor the new port.
        if new.metrics != old.metrics:
            not_served = self.metrics.move(old.metrics, new.metrics)
            if not_served is not None:
                log.error("reload: %s", not_served)
                notes.append(not_served)
                self.config = replace(self.config, metrics=old.metrics)
        self._after_batch()
        self.counters.config_reloads_ok += 1
        log.info("configuration reloaded: %s", self.mode.status_line())
        self.notifier.ready(self.mode.status_line())
        return None, notes

    def _refused_notes(self, old: Config, refused: Sequence[str]) -> list[str]:
        notes = []
        for key in refused:
            why = self.mode.refused_why
            notes.append(
                f"{key} changed but {why}; not applied, still "
                f"{_show(getattr(old, key))} (restart the service to apply it)"
            )
            log.warning("reload: %s", notes[-1])
        return notes

    def _log_changes(self, old: Config, new: Config) -> None:
        """One line per changed setting, and one per setting a command-line flag overrides."""
        changed = reload_report.changes(old, new)
        for line in changed:
            log.info("reload: %s", line)
        if not changed:
            log.info("reload: no setting changed")
        if self._load_file is not None:
            try:
                file_only = self._load_file()
            except ConfigError:
                return
            for line in reload_report.overridden(file_only, new):
                log.warning("reload: %s", line)


def _show(value: object) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ", ".join(format_address(v) for v in value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return format_address((str(value[0]), value[1]))
    if isinstance(value, tuple):  # e.g. in-path queues
        return ", ".join(str(v) for v in value)
    return str(value)


def run_service(make: Callable[[], Service]) -> int:
    """Build the service on its own event loop (uvloop when installed; adapters take the
    running loop) and run it until it stops."""

    async def serve() -> int:
        return await make().run()

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(serve())


@dataclass(frozen=True)
class Launch:
    """What `run` hands to the mode's entry point (`MODE_ENTRIES`)."""

    config: Config
    load: Callable[[], Config]  # the file and the command line's flags (a reload calls it)
    load_file: Callable[[], Config]  # the file alone: which settings the flags override
    config_path: str | None
    overrides: Sequence[str]  # `run`'s flags as argv again (in-path workers get them)
    inpath_worker: int | None


# mode -> module with `launch(Launch) -> int`. Imported by name when `run` starts, so a
# process loads its own mode's stack only (an in-path worker never loads the relay's), and
# neither mode package is imported by the shared service (they import it).
MODE_ENTRIES = {
    "relay": "l2tpreorder.daemon.relay.launch",
    "inpath": "l2tpreorder.daemon.inpath.worker",
}


# --- the command -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)  # generated from config.SETTINGS


def override_argv(args: argparse.Namespace) -> list[str]:
    return config_override_argv(args)


def main(args: argparse.Namespace) -> int:
    # One default with every other command: the given file, else DEFAULT_CONFIG if it exists.
    args.config = config_file(args.config)

    def load() -> Config:
        return load_from_args(args)

    try:
        config = load()
        # What the file cannot say about this host (the user exists, the state directory is
        # writable): checked before anything is bound or the state file consumed, so a typo
        # in `user` does not cost the sessions a restore would bring back.
        check_host(config)
    except ConfigError as e:
        # Logging is not set up yet (its level comes from this file): under journald the
        # `<3>` prefix still files the reason at error priority (`journalctl -p err`).
        prefix = "<3>" if stderr_is_journal() else ""
        print(f"{prefix}l2tpreorder: error: {e}", file=sys.stderr)
        return EX_CONFIG
    setup_logging(config.log_level)
    if args.inpath_worker is None:  # once per service, not once per in-path worker
        in_force = args.config or f"built-in defaults (no --config, no {DEFAULT_CONFIG})"
        log.info("config: %s", in_force)
        if BUILD == "pure":  # the hot path runs ~2x slower: say why, once (l2tpreorder.build)
            log.info("%s", describe_build())
        for warning in config.warnings:
            log.warning("%s", warning)
    entry = importlib.import_module(MODE_ENTRIES[config.mode])
    code: int = entry.launch(
        Launch(
            config,
            load,
            lambda: load_file_only(args),
            args.config,
            override_argv(args),
            args.inpath_worker,
        )
    )
    return code
