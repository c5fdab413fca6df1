"""`l2tpreorder run`: the relay as a service (signals, systemd notify, logging, metrics).

Lifecycle: load config -> bind every listen socket (a clear one-line error, not a traceback, when
that fails) -> READY=1 -> serve. SIGHUP reloads the file (RELOADING=1 ... READY=1) keeping every
session and held packet; SIGTERM/SIGINT stop reading, deliver everything held in order, and exit
0 (STOPPING=1). A one-second housekeeping tick forgets idle peers and writes the rate-limited drop
report; a separate tick pings the systemd watchdog from the event loop, so a stuck loop is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import pwd
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from l2tpreorder.config import (
    EX_CONFIG,
    Config,
    ConfigError,
    MetricsConfig,
    add_run_arguments,
    check_host,
    format_address,
    load_file_only,
    load_from_args,
    state_file_path,
)
from l2tpreorder.config import override_argv as config_override_argv
from l2tpreorder.core import counters
from l2tpreorder.core.engine import ReorderEngine
from l2tpreorder.daemon import reload_report
from l2tpreorder.daemon.control import ControlServer
from l2tpreorder.daemon.metrics import MetricsServer, start_metrics_server
from l2tpreorder.daemon.privileges import drop_privileges
from l2tpreorder.daemon.relay.adapter import Relay
from l2tpreorder.daemon.relay.counters import RelayCounters
from l2tpreorder.daemon.relay.sockets import BindError
from l2tpreorder.daemon.sdnotify import Notifier
from l2tpreorder.daemon.state import consume_state
from l2tpreorder.daemon.status import snapshot

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


class DropReporter:
    """One warning line per drop reason per interval, however many packets: a flood can't fill
    the disk, and nothing is counted silently."""

    def __init__(self, source: RelaySource, interval: float) -> None:
        self.source = source
        self.interval = interval
        self._last = self.snapshot()
        self._next_at: float | None = None

    def set_interval(self, interval: float) -> None:
        """A reloaded interval applies from now, not after the old (maybe hour-long) one."""
        if interval != self.interval:
            self.interval = interval
            self._next_at = None

    def snapshot(self) -> dict[str, int]:
        """Every `report` row of the counters table, the engines' prefixed by direction."""
        snap = counters.drop_report(self.source.relay, counters.Source.RELAY)
        for direction, engine in self.source.engines.items():
            snap.update(
                counters.drop_report(engine.counters, counters.Source.ENGINE, f"{direction}:")
            )
        return snap

    def tick(self, now: float, final: bool = False) -> list[str]:
        """Log what grew since the last report, if the interval is up (or `final`: at stop,
        the last, partial interval); returns the lines."""
        if self._next_at is None:
            self._next_at = now + self.interval
        if now < self._next_at and not final:
            return []
        self._next_at = now + self.interval
        snap = self.snapshot()
        lines = []
        period = "before stopping" if final else f"in the last {self.interval:g} s"
        for key, value in snap.items():
            grown = value - self._last.get(key, 0)
            if grown > 0:
                what = "sequence numbers given up" if ":gave_up_ns:" in key else "dropped"
                line = f"{grown} {what} {period} (reason {key}, {value} total)"
                if key == "not_allowed":
                    line += f"; top sources: {self.source.relay.top_not_allowed()}"
                lines.append(line)
        self._last = snap
        for line in lines:
            log.warning("%s", line)
        return lines


class RelaySource:
    """The running relay as `metrics.MetricsSource`: live engines and relay counters."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    @property
    def engines(self) -> dict[str, ReorderEngine]:
        return self._relay.engines

    @property
    def relay(self) -> RelayCounters:
        return self._relay.counters


def start_metrics(settings: MetricsConfig, source: RelaySource) -> MetricsServer | None:
    """Start the Prometheus endpoint for the `metrics:` section; None when off or unbindable."""
    if not settings.enabled:
        return None
    try:
        server = start_metrics_server(settings, source)
    except OSError as e:
        where = format_address((settings.listen, settings.port))
        log.error("metrics: cannot listen on %s: %s; running without metrics", where, e.strerror)
        return None
    scheme = "https" if settings.tls_cert else "http"
    port = server.port  # the bound one when port is 0
    log.info("metrics: %s://%s/metrics", scheme, format_address((settings.listen, port)))
    return server


class Daemon:
    def __init__(
        self,
        config: Config,
        reload_config: Any,
        notifier: Notifier | None = None,
        load_file: Callable[[], Config] | None = None,
    ):
        self.config = config
        self._reload_config = reload_config  # () -> Config, raises ConfigError
        self._load_file = load_file  # () -> the file alone, without command-line flags
        self.notifier = notifier or Notifier()
        self.relay: Relay | None = None
        self.metrics: MetricsServer | None = None
        self._stop: asyncio.Future[None] | None = None
        self.control: ControlServer | None = None
        self.housekeeping_errors: dict[str, int] = {}
        self._started = time.monotonic()

    def _status(self) -> str:
        c = self.config
        return (
            f"relaying {', '.join(format_address(a) for a in c.listen)} -> "
            f"{format_address(c.lns)}, reorder timeout {c.engine.reorder_timeout * 1000:g} ms"
        )

    async def run(self) -> int:
        # `main` ran config.check_host already (exit EX_CONFIG before anything is bound or the
        # state file consumed): the user exists and the state directory is writable by it.
        user = pwd.getpwnam(self.config.user) if self.config.user is not None else None
        raise_fd_limit(self.config.max_peers)
        loop = asyncio.get_running_loop()
        relay = self.relay = Relay(self.config, loop=loop)
        try:
            relay.bind()
        except BindError as e:
            log.error("%s", e)
            relay.shutdown()  # the Relay opened its timerfd already
            return 1
        # Before the state file is consumed: a SIGTERM from here on is a clean stop that saves
        # what was restored, not the default death that would lose it.
        self._stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        state_file = state_file_path(self.config)
        if state_file is not None:
            self._restore(relay, state_file)
        self._warn_if_open(self.config)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        source = RelaySource(relay)
        self.metrics = start_metrics(self.config.metrics, source)
        await self._start_control(user)
        if user is not None:
            error = drop_privileges(user)
            if error is not None:
                log.error("%s", error)
                if self.metrics is not None:
                    self.metrics.close()
                if self.control is not None:
                    self.control.close()
                relay.shutdown(state_file=state_file)  # keep what was restored for next time
                return 1
        relay.set_debug(self.config.log_level == "debug")
        relay.start_reading()
        self._reporter = DropReporter(source, self.config.drop_report_interval)
        log.info("%s", self._status())
        self.notifier.ready(self._status())
        housekeeping = loop.call_later(HOUSEKEEPING_INTERVAL, self._housekeeping)
        self._housekeeping_handle = housekeeping
        interval = self.notifier.watchdog_interval
        if interval is not None:
            self.notifier.watchdog()
            self._watchdog_handle = loop.call_later(interval, self._watchdog, interval)
        try:
            await self._stop
        finally:
            self.notifier.stopping()
            relay.shutdown(state_file=state_file_path(self.config))
            self._housekeeping_handle.cancel()
            if interval is not None:
                self._watchdog_handle.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self.metrics is not None:
                self.metrics.close()
            if self.control is not None:
                self.control.close()
            self._reporter.tick(relay.clock(), final=True)
            c = relay.pipeline.counters
            log.info(
                "stopped: %d datagrams from LACs, %d to the LNS, %d released after hold",
                relay.counters.rx_datagrams_lac,
                relay.counters.tx_datagrams_lns,
                c.released,
            )
            self.notifier.close()
        return 0

    async def _start_control(self, user: pwd.struct_passwd | None) -> None:
        """The control socket for `status` and `reload`; without it the daemon still relays."""
        control = ControlServer({"status": self._status_answer, "reload": self._reload_answer})
        owner = (user.pw_uid, user.pw_gid) if user is not None else None
        try:
            path = await control.start(self.config.control_socket, owner)
        except OSError as e:
            log.error(
                "control socket: %s; running without it (status and reload by command fail, "
                "SIGHUP still reloads)",
                e.strerror or e,
            )
            return
        self.control = control
        log.info("control socket: %s", path)

    async def _status_answer(self) -> dict[str, Any]:
        assert self.relay is not None
        extra = {
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "status": self._status(),
            "config": self.config.source,
            "lns": format_address(self.config.lns),
        }
        return snapshot(self.relay, extra)

    async def _reload_answer(self) -> dict[str, Any]:
        error, not_applied = self.reload()
        if error is not None:
            return {"ok": False, "error": error}
        return {"ok": True, "status": self._status(), "not_applied": not_applied}

    def _restore(self, relay: Relay, path: str) -> None:
        """Restore what the last SIGTERM saved; a bad file is reported and ignored."""
        # Older than state_file_max_age_ms: the numbering it carries is stale by now.
        saved = consume_state(
            path,
            max_age=self.config.state_max_age,
            sequencing=self.config.engine.sequencing.value,
        )
        if saved is None:
            return
        sessions, peers = relay.restore_state(saved)
        log.info(
            "restored %d sessions and %d LAC peers (with their upstream ports) from %s",
            sessions,
            peers,
            path,
        )

    def _request_stop(self, sig: int) -> None:
        if self._stop is not None and not self._stop.done():
            log.info("%s: stopping, delivering held packets", signal.Signals(sig).name)
            if self.relay is not None:
                self.relay.stop_reading()
            self._stop.set_result(None)

    def _watchdog(self, interval: float) -> None:
        self.notifier.watchdog()
        loop = asyncio.get_running_loop()
        self._watchdog_handle = loop.call_later(interval, self._watchdog, interval)

    def _housekeeping(self) -> None:
        """Idle expiry, socket-drop metric, drop report: re-armed FIRST, and each step on its
        own, so one failing step (e.g. /proc unreadable after a privilege drop) neither stops
        the tick for good nor skips the other steps."""
        loop = asyncio.get_running_loop()
        self._housekeeping_handle = loop.call_later(HOUSEKEEPING_INTERVAL, self._housekeeping)
        relay = self.relay
        assert relay is not None
        now = relay.clock()
        for name, step in self.housekeeping_steps():
            try:
                step(now)
            except Exception:  # logged; the next tick runs every step again
                self._housekeeping_failed(name)

    def housekeeping_steps(self) -> list[tuple[str, Callable[[float], object]]]:
        relay = self.relay
        assert relay is not None
        return [
            ("idle peer expiry", relay.remove_idle),
            ("socket drop count", lambda _: relay.update_socket_drops()),
            ("drop report", self._reporter.tick),
            ("LNS health", relay.health.tick),
            ("debug lines", lambda now: relay.debug.tick(now) if relay.debug else None),
        ]

    def _housekeeping_failed(self, name: str) -> None:
        """Log a failing step with its traceback the 1st, 2nd, 4th, 8th... time (bounded)."""
        n = self.housekeeping_errors[name] = self.housekeeping_errors.get(name, 0) + 1
        if n & (n - 1) == 0:
            times = "1 time" if n == 1 else f"{n} times"
            log.exception("housekeeping: %s failed (%s so far); still running", name, times)

    def reload(self) -> tuple[str | None, list[str]]:
        """SIGHUP or `l2tpreorder reload`: re-read the file; a bad file keeps the running
        config and says why. Returns (error or None, notes on changes not applied)."""
        relay = self.relay
        assert relay is not None
        self.notifier.reloading()
        counters = relay.counters
        try:
            new = self._reload_config()
        except ConfigError as e:
            counters.config_reloads_failed += 1
            counters.config_load_failing = 1
            log.error("reload failed, keeping the running configuration: %s", e)
            self.notifier.ready(self._status())
            return str(e), []
        counters.config_load_failing = 0
        old = self.config
        self._log_changes(old, new)
        refused = relay.reconfigure(new)
        notes = []
        for key in refused:
            notes.append(
                f"{key} changed but needs new sockets; not applied, still "
                f"{_show(getattr(old, key))} (restart the service to apply it)"
            )
            log.warning("reload: %s", notes[-1])
        self.config = relay.config
        logging.getLogger().setLevel(self.config.log_level.upper())
        relay.set_debug(self.config.log_level == "debug")
        self._reporter.set_interval(self.config.drop_report_interval)
        if new.metrics != old.metrics:
            if self.metrics is not None:
                self.metrics.close()
            self.metrics = start_metrics(new.metrics, RelaySource(relay))
        self._warn_if_open(self.config)
        counters.config_reloads_ok += 1
        log.info("configuration reloaded: %s", self._status())
        self.notifier.ready(self._status())
        return None, notes

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

    @staticmethod
    def _warn_if_open(config: Config) -> None:
        if not config.allows_everything:
            return
        for host, port in config.listen:
            ip = ipaddress.ip_address(host)  # validated by config: an IP literal
            if ip.is_unspecified or ip.is_global:
                log.warning(
                    "listening on %s and `allow` accepts every source: anyone who can reach "
                    "it can talk to the LNS through the relay; list your LAC prefixes in allow",
                    format_address((host, port)),
                )


def raise_fd_limit(max_peers: int) -> None:
    """Each LAC peer holds a socket: lift the soft open-file limit towards the hard one.

    Under systemd, LimitNOFILE= does this (and the system call filter refuses setrlimit);
    from a shell the soft limit is often 1024.
    """
    import resource

    want = max_peers + 256
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            if new > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (OSError, ValueError):
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning(
            "open-file limit %d is below max_peers + 256 = %d: new LAC peers beyond it are "
            "refused (reason peer_limit); raise LimitNOFILE / ulimit -n",
            soft,
            want,
        )


def _show(value: object) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ", ".join(format_address(v) for v in value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return format_address((str(value[0]), value[1]))
    return str(value)


# --- the command -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)  # generated from config.SETTINGS


def override_argv(args: argparse.Namespace) -> list[str]:
    return config_override_argv(args)


def main(args: argparse.Namespace) -> int:
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
        for warning in config.warnings:
            log.warning("%s", warning)
    if config.mode == "inpath":
        from l2tpreorder.daemon.inpath import worker as inpath_service

        if args.inpath_worker is not None:
            return inpath_service.run_worker(
                config, load, args.inpath_worker, report_metrics_port=True
            )
        return inpath_service.run_inpath(config, load, args.config, override_argv(args))
    daemon = Daemon(config, load, load_file=lambda: load_file_only(args))
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio works too
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(daemon.run())
