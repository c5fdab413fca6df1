"""`l2tpreorder replay pcap FILE`: what l2tpreorder would have done with a capture's traffic.

A thin adapter around the same sans-IO `Pipeline` the daemon runs, driven in virtual time by the
capture's timestamps: before each datagram every deadline up to its timestamp fires at its own
time, so release times in `-o OUT.pcap` are the ones the daemon would have produced.

Both directions go through the pipeline, as in the daemon: traffic towards the LNS is reordered,
the other direction passed on (the pipeline reads its control messages for session ends). Which
end is the LNS is decided per conversation by `l2tpreorder.tools.direction`; what is reported,
and how, lives in `l2tpreorder.tools.replay_report`.

Memory does not grow with the capture: per-packet state lives only in the engine's bounded hold
queues; hold times are folded into fixed-size log histograms per session.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from l2tpreorder.config import (
    ConfigError,
    add_setting_arguments,
    load_from_args,
    parse_address,
    parse_ms,
)
from l2tpreorder.config.flags import FLAGGED
from l2tpreorder.core import counters
from l2tpreorder.core.engine import EngineConfig, Sequencing
from l2tpreorder.core.events import HoldSample
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.reasons import Outcome
from l2tpreorder.tools import capture
from l2tpreorder.tools.capture import CaptureReader, UdpDatagram
from l2tpreorder.tools.direction import (
    Conversation,
    DirectionFinder,
    Endpoint,
    control_message_type,
    parse_lns,
)
from l2tpreorder.tools.live import send_live
from l2tpreorder.tools.lns_models import DeliveryStats, KernelSession, ModelRunner, Xl2tpdSession
from l2tpreorder.tools.needs import Needs, given, unmet
from l2tpreorder.tools.pcapwriter import OutputIsInput, PcapWriter, refuse_input_as_output
from l2tpreorder.tools.replay_plot import (
    PlotRecorder,
    PlotUnavailable,
    require_matplotlib,
    write_plot,
)
from l2tpreorder.tools.replay_report import (
    COMPARE_KERNEL0,
    COMPARE_L2TPREORDER,
    COMPARE_XL2TPD,
    ReplayResult,
    SessionReport,
    format_report,
    result_as_dict,
    top_count,
)

# The daemon's flags `replay pcap` takes too (declared once, in config.SETTINGS).
ENGINE_FLAGS = ("reorder.timeout_ms", "reorder.sequencing", "reorder.max_held_per_session")

# --- the replay ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayOptions:
    engine: EngineConfig = field(default_factory=EngineConfig)
    ports: tuple[int, ...] = (capture.L2TP_PORT,)
    lns_address: str | None = None
    compare: bool = False
    kernel_reorder_timeout: float | None = None  # also model pppol2tp_reorderto = N seconds
    output: str | None = None
    progress: IO[str] | None = None
    plot: str | None = None  # --plot FILE.png (tools/replay_plot.py)


class Replay:
    def __init__(self, path: str, options: ReplayOptions) -> None:
        # Before anything is opened or written (a temp copy of stdin, the -o file): an output
        # that is the input is refused with nothing left behind.
        if options.output:
            refuse_input_as_output(path, options.output, "-o")
        if options.plot:
            refuse_input_as_output(path, options.plot, "--plot")
        self.path = path
        self.options = options
        config = options.engine
        self.pipeline = Pipeline(config)
        # the report's hold-time percentiles need the samples (the one place they are recorded)
        self.pipeline.record_events(hold_samples=True)
        # LAC to LNS: the sessions the report follows
        self.lac_to_lns = self.pipeline.directions()[counters.LAC_TO_LNS]
        self.reader = CaptureReader(path, options.ports)
        self.directions = DirectionFinder(options.lns_address, options.ports)
        self.result = ReplayResult(self.reader.name, self.reader.stats, engine=options.engine)
        self.reports: dict[tuple[Conversation, int, int], SessionReport] = {}
        # (direction, conversation) -> tunnel ids / (tunnel, session) pairs, for the summary
        self._tunnel_ids: dict[tuple[bool, Conversation], set[int]] = {}
        self._session_ids: dict[tuple[bool, Conversation], set[tuple[int, int]]] = {}
        self.writer: PcapWriter | None = None
        if options.output:
            self.writer = PcapWriter.create(options.output)
        self.compare_names = [COMPARE_L2TPREORDER, COMPARE_KERNEL0]
        if options.kernel_reorder_timeout:
            self.compare_names.append(self._kernel_n_name())
        self.compare_names.append(COMPARE_XL2TPD)
        self._now = float("-inf")
        self._strips = config.sequencing is Sequencing.STRIP
        self.plot = PlotRecorder() if options.plot else None

    def _kernel_n_name(self) -> str:
        n = self.options.kernel_reorder_timeout or 0.0
        return f"kernel reorderto={n * 1000:g}ms"

    # virtual time --------------------------------------------------------------------------

    def _advance(self, ts: float) -> float:
        if ts < self._now:
            self.result.time_went_back += 1
            ts = self._now
        pipeline = self.pipeline
        deadline = pipeline.next_deadline()
        while deadline is not None and deadline <= ts:
            pipeline.expire(deadline)
            self._drain(deadline)
            deadline = pipeline.next_deadline()
        self._now = ts
        return ts

    def _drain(self, now: float) -> None:
        self._take_hold_samples()
        out = self.pipeline.take_output()
        if not out:
            return
        compare = self.options.compare
        for o in out:
            flow, data = o.flow, o.data
            assert isinstance(flow, Conversation)
            if not o.to_lns:  # passed on towards the LAC, as it came
                if self.writer is not None:
                    self._write(now, flow.lns, flow.lac, data)
                continue
            self.result.forwarded += 1
            if self.writer is not None:
                self._write(now, flow.lac, flow.lns, data)
            if self.plot is not None:
                self.plot.released(flow, data, now)
            if compare:
                header = parse_header(data)
                if (
                    not isinstance(header, str)
                    and not header.is_control
                    and (header.ns is not None or self._strips)
                ):
                    rep = self.reports.get((flow, header.tunnel_id, header.session_id))
                    if rep is not None and rep.compare:
                        stats = rep.compare[COMPARE_L2TPREORDER]
                        assert isinstance(stats, DeliveryStats)
                        # the engine counts what it delivers out of order itself (timeout 0, late)
                        stats.on_delivered(None, now)

    def _write(self, ts: float, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write_udp(ts, src[0], src[1], dst[0], dst[1], data)
        self.result.written += 1

    # the loop ------------------------------------------------------------------------------

    def run(self) -> ReplayResult:
        result = self.result
        progress = Progress(self.reader, self.options.progress)
        try:
            for n, item in enumerate(self.reader):
                if n & 0x3FF == 0:
                    progress.update()
                if isinstance(item, UdpDatagram):
                    self._datagram(item)
            end = self._now if self._now != float("-inf") else 0.0
            self._advance_to_end(end)
        except BaseException:
            if self.writer is not None:
                self.writer.abort()  # no partial -o file
            raise
        finally:
            progress.done()
        if self.writer is not None:
            self.writer.close()
        self._finish()
        return result

    def draw_plot(self) -> None:
        """Write `--plot`'s picture of the finished replay (raises what drawing raised)."""
        if self.plot is not None and self.options.plot:
            write_plot(self.result, self.plot, self.options.plot)

    def _advance_to_end(self, end: float) -> None:
        """After the last packet the daemon would still release what it holds, at its deadline
        (hold deadlines only: running on to every session's idle expiry would end them all)."""
        pipeline = self.pipeline
        deadline = pipeline.next_hold_deadline()
        while deadline is not None:
            pipeline.expire(deadline)
            self._drain(deadline)
            self._now = max(self._now, deadline)
            deadline = pipeline.next_hold_deadline()
        pipeline.flush(self._now if self._now != float("-inf") else end)
        self._drain(self._now)

    def _datagram(self, d: UdpDatagram) -> None:
        result = self.result
        now = self._advance(d.ts)
        if result.first_ts is None:
            result.first_ts = d.ts
        result.last_ts = d.ts
        payload = d.payload
        header = parse_header(payload)
        src, dst = (d.src, d.sport), (d.dst, d.dport)
        if isinstance(header, str):
            result.malformed[header] = result.malformed.get(header, 0) + 1
            conv, towards_lns = self.directions.find(src, dst, None)
            if towards_lns:
                self.pipeline.from_lac(payload, conv, now)  # counted by the engine as malformed
            else:
                self.pipeline.from_lns(payload, conv, now)
            self._drain(now)
            return
        result.l2tp_packets += 1
        message_type = control_message_type(payload, header)
        if header.is_control:
            result.control += 1
        else:
            result.data += 1
            if header.ns is not None:
                result.data_with_ns += 1
        conv, towards_lns = self.directions.find(src, dst, message_type)
        if header.tunnel_id:
            self._tunnel_ids.setdefault((towards_lns, conv), set()).add(header.tunnel_id)
            if header.session_id:
                self._session_ids.setdefault((towards_lns, conv), set()).add(
                    (header.tunnel_id, header.session_id)
                )
        if not towards_lns:
            self.pipeline.from_lns(payload, conv, now)
            self._drain(now)
            return
        rep: SessionReport | None = None
        order = 0
        if not header.is_control:
            key = (conv, header.tunnel_id, header.session_id)
            rep = self.reports.get(key)
            if rep is None:
                rep = self.reports[key] = SessionReport(conv, header.tunnel_id, header.session_id)
                rep.first_ts = now
            rep.data += 1
            rep.last_ts = now
            if header.ns is not None:
                rep.sequenced += 1
                order = rep.order_of(header.ns)
                if self.options.compare:
                    self._compare_models(rep, header.ns, order, now)
        outcome = self.pipeline.from_lac(payload, conv, now)
        if rep is not None and header.ns is not None:
            rep.track_engine_session(self.lac_to_lns)
            if self.plot is not None:
                self.plot.arrival(rep, payload, header, order, outcome)
            if self.options.compare:
                stats = rep.compare[COMPARE_L2TPREORDER]
                assert isinstance(stats, DeliveryStats)
                stats.on_arrival()
                if outcome in (
                    Outcome.DROPPED_DUPLICATE,
                    Outcome.DROPPED_LATE,
                    Outcome.DROPPED_STALE,
                    Outcome.DROPPED_FAR_AHEAD,
                ):
                    stats.on_dropped(Outcome(outcome).name.lower())
                if outcome in (Outcome.FORWARDED_OUT_OF_ORDER, Outcome.FORWARDED_LATE):
                    stats.out_of_order += 1
                    stats.late_delivered += outcome == Outcome.FORWARDED_LATE
                if outcome not in (
                    Outcome.FORWARDED_IN_ORDER,
                    Outcome.FORWARDED_OUT_OF_ORDER,
                    Outcome.FORWARDED_LATE,
                ):
                    self._drain(now)  # releases that this arrival triggered come first
                    stats.on_waiting(now)
                    return
        self._drain(now)

    def _compare_models(self, rep: SessionReport, ns: int, order: int, now: float) -> None:
        if not rep.compare:
            rep.compare[COMPARE_L2TPREORDER] = DeliveryStats()
            # Models start in step with the session's first packet in the capture: it may
            # begin mid-session, where the real LNS had been following all along.
            k0: KernelSession[int] = KernelSession(0.0, start_ns=ns)
            rep.compare[COMPARE_KERNEL0] = ModelRunner(k0)
            if self.options.kernel_reorder_timeout:
                kn: KernelSession[int] = KernelSession(
                    self.options.kernel_reorder_timeout, start_ns=ns
                )
                rep.compare[self._kernel_n_name()] = ModelRunner(kn)
            x: Xl2tpdSession[int] = Xl2tpdSession(None)
            rep.compare[COMPARE_XL2TPD] = ModelRunner(x)
        for runner in rep.compare.values():
            if isinstance(runner, ModelRunner):
                runner.receive(ns, order, now)

    def _take_hold_samples(self) -> None:
        """Fold the hold times of packets released since the last call into their sessions'
        histograms (only LAC to LNS reorders here, so every sample is one of ours)."""
        reports = self.reports
        for event in self.pipeline.take_events():
            if isinstance(event, HoldSample):
                rep = reports.get(event.key)  # type: ignore[arg-type]  # our flows: Conversation
                if rep is not None:
                    rep.hold.add(event.waited)
                    if self.plot is not None:
                        self.plot.hold(event.waited)

    def _finish(self) -> None:
        self._take_hold_samples()
        result = self.result
        # virtual time never goes back, so this is at or after every session's last packet
        last = self._now if self._now != float("-inf") else 0.0
        for rep in self.reports.values():
            rep.finish()
            for runner in rep.compare.values():
                if isinstance(runner, ModelRunner):
                    runner.close(last)
                else:
                    runner.finish(last)
        result.sessions = sorted(
            self.reports.values(),
            key=lambda r: (r.first_ts, r.conversation.lac, r.tunnel_id, r.session_id),
        )
        result.conversations = self.directions.conversations
        result.direction_conflicts = self.directions.conflicts
        convs = {c for _, c in self._tunnel_ids} | {c for _, c in self._session_ids}
        result.tunnels = sum(
            max(len(self._tunnel_ids.get((d, c), ())) for d in (True, False)) for c in convs
        )
        result.sessions_seen = sum(
            max(len(self._session_ids.get((d, c), ())) for d in (True, False)) for c in convs
        )
        result.compared = self.compare_names if self.options.compare else []
        result.counters = counters.engine_totals(self.lac_to_lns.counters)


def replay(path: str, options: ReplayOptions | None = None) -> ReplayResult:
    """Replay the capture at `path`; with `options.plot`, draw the picture too."""
    r = Replay(path, options or ReplayOptions())
    result = r.run()
    r.draw_plot()
    return result


def plot_path_problem(plot: str, output: str | None) -> str | None:
    """Why `--plot FILE` cannot be written, found before a long replay (None: it can): its
    directory must exist and be writable, and it must not be `-o`'s file."""
    if os.path.isdir(plot):
        return f"--plot {plot}: is a directory; give a file name (FILE.png)"
    directory = os.path.dirname(os.path.abspath(plot))
    if not os.path.isdir(directory):
        return f"--plot {plot}: directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"--plot {plot}: directory {directory} is not writable"
    if output is not None and (
        os.path.abspath(output) == os.path.abspath(plot)
        or (os.path.exists(output) and os.path.exists(plot) and os.path.samefile(output, plot))
    ):
        return f"--plot {plot} is also the -o file: choose two different files"
    return None


# --- progress -----------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, only on a terminal and only for a long capture."""

    MIN_BYTES = 32 * 1024 * 1024
    MIN_SECONDS = 2.0

    def __init__(self, reader: CaptureReader, stream: IO[str] | None) -> None:
        self.reader = reader
        self.stream = stream
        self.enabled = stream is not None and reader.size >= self.MIN_BYTES
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = False

    def update(self) -> None:
        if not self.enabled or self.stream is None:
            return
        t = time.monotonic()
        if t - self.started < self.MIN_SECONDS or t - self.last < 0.25:
            return
        self.last = t
        done = self.reader.position / max(1, self.reader.size)
        bar = "#" * int(done * 30)
        self.stream.write(f"\r[{bar:<30}] {done * 100:5.1f}%  {self.reader.stats.frames:,} frames")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown and self.stream is not None:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    sub = parser.add_subparsers(dest="replay_command", metavar="SOURCE", required=True)
    p = sub.add_parser(
        "pcap",
        help="replay a pcap/pcapng capture through the engine (virtual time)",
        description=(
            "Replay the L2TP traffic of a capture through l2tpreorder's engine in virtual time "
            "and report per session what it would have done; --compare shows the Linux kernel's "
            "and xl2tpd's data paths side by side."
        ),
    )
    p.add_argument(
        "file",
        help="capture file (pcap or pcapng, any common link layer; gzip'd too; - = standard input)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT.pcap",
        help="write what the engine forwarded, in release order and time",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the busiest sessions' Ns over time (captured, released, gaps, late), "
        "the hold times and, with --compare, each receiver's deliveries "
        "(needs the `plot` extra: matplotlib)",
    )
    p.add_argument(
        "--top",
        type=top_count,
        metavar="N",
        help="the text report's tables list the N busiest sessions only",
    )
    p.add_argument(
        "--summary",
        action="store_true",
        help="the text report without per-session tables (totals over all sessions)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also run the traffic through models of Linux l2tp_core and xl2tpd",
    )
    p.add_argument(
        "--kernel-reorder-timeout",
        type=float,
        metavar="MS",
        help="with --compare: also model the kernel with pppol2tp_reorderto = MS",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="the daemon's config file (engine settings); flags below override it",
    )
    add_setting_arguments(p, ENGINE_FLAGS)  # the timeout, sequencing and held-packet cap
    p.add_argument(
        "--port",
        type=int,
        action="append",
        metavar="PORT",
        help="UDP port carrying L2TP (repeatable; default 1701)",
    )
    p.add_argument(
        "--lns",
        metavar="ADDR[:PORT]",
        help="the LNS address, when the capture cannot tell the direction",
    )
    p.add_argument(
        "--live",
        metavar="HOST:PORT",
        help="send the capture's LAC->LNS payloads to a running daemon instead",
    )
    p.add_argument(
        "--speed",
        type=float,
        metavar="N",
        help="with --live: N times the original pace (default 1; 0 = as fast as possible)",
    )


# Options that mean nothing without another (tools/needs.py).
NEEDS = (Needs("kernel_reorder_timeout", "compare"), Needs("speed", "live"))
# What only the replay (not --live, which sends the capture to a daemon) reads: (option, dest).
REPLAY_ONLY = (
    ("-o/--output", "output"),
    ("--json", "json"),
    ("--compare", "compare"),
    ("--kernel-reorder-timeout", "kernel_reorder_timeout"),
    ("--config", "config"),
    ("--plot", "plot"),
    ("--top", "top"),
    ("--summary", "summary"),
    *((s.flag.name, s.flag.dest) for s in FLAGGED if s.key in ENGINE_FLAGS and s.flag),
)
# What only the text report reads (--json always has every session): (option, dest).
TEXT_ONLY = (("--top", "top"), ("--summary", "summary"))


def option_conflicts(args: Any) -> list[str]:
    """Each option given where it has no effect, naming it and the option that decides."""
    errors = []
    reported = set()
    if given(args, "live"):
        for option, dest in REPLAY_ONLY:
            if given(args, dest):
                reported.add(dest)
                errors.append(
                    f"{option} has no effect with --live (which sends the capture to a running "
                    f"daemon and reports only what was sent): drop {option} or --live"
                )
    errors += unmet(args, NEEDS, skip=reported)
    if given(args, "json"):
        for option, dest in TEXT_ONLY:
            if given(args, dest) and dest not in reported:
                errors.append(
                    f"{option} has no effect with --json (which lists every session): "
                    f"drop {option} or --json"
                )
    if given(args, "speed") and args.speed < 0:
        errors.append(f"--speed {args.speed:g}: expected N >= 0 (0 = as fast as possible)")
    return errors


def engine_config_from_args(args: Any) -> EngineConfig:
    """The daemon's engine settings from `--config FILE`, with this command's flags on top.

    Built by the daemon's own loader, so a bad file or flag fails exactly as `check-config` and
    `run` report it (ConfigError: key, value, what was expected).
    """
    return load_from_args(args, ENGINE_FLAGS).engine


def main(args: Any) -> int:
    if args.replay_command != "pcap":  # pragma: no cover - argparse enforces the choice
        return 2
    conflicts = option_conflicts(args)
    for error in conflicts:
        print(f"l2tpreorder replay: error: {error}", file=sys.stderr)
    if conflicts:
        return 2
    try:  # every flag is checked before anything is read or sent
        engine = engine_config_from_args(args)
        if args.lns is not None:
            parse_lns("--lns", args.lns)
        if args.live is not None:
            parse_address("--live", args.live)
        kernel_reorder_timeout = (
            None
            if args.kernel_reorder_timeout is None
            else parse_ms("--kernel-reorder-timeout", args.kernel_reorder_timeout, 0, 60000)
        )
    except ConfigError as e:
        print(f"l2tpreorder replay: error: {e}", file=sys.stderr)
        return 2
    if args.plot is not None:
        try:
            require_matplotlib()
        except PlotUnavailable as e:
            print(f"l2tpreorder replay: error: {e}", file=sys.stderr)
            return 2
        problem = plot_path_problem(args.plot, args.output)
        if problem is not None:
            print(f"l2tpreorder replay: error: {problem}", file=sys.stderr)
            return 2
    ports = tuple(args.port) if args.port else (capture.L2TP_PORT,)
    if args.live:
        speed = 1.0 if args.speed is None else args.speed
        return send_live(args.file, args.live, speed, ports, args.lns)
    options = ReplayOptions(
        engine=engine,
        ports=ports,
        lns_address=args.lns,
        compare=args.compare,
        kernel_reorder_timeout=kernel_reorder_timeout or None,
        output=args.output,
        progress=sys.stderr if sys.stderr.isatty() else None,
        plot=args.plot,
    )
    try:
        r = Replay(args.file, options)
        result = r.run()
    except OutputIsInput as e:
        print(f"l2tpreorder replay: error: {e}", file=sys.stderr)
        return 2
    except (capture.CaptureFormatError, OSError) as e:
        print(f"l2tpreorder replay: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result_as_dict(result), indent=2))
    else:
        print(format_report(result, args.top, args.summary))
    # Drawn after the report is out: a picture that fails must not lose a long replay's text.
    try:
        r.draw_plot()
    except Exception as e:  # whatever matplotlib or the disk raised
        print(f"l2tpreorder replay: --plot {args.plot}: not written: {e}", file=sys.stderr)
        return 1
    return 0
