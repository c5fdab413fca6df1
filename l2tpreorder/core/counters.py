"""Every counter l2tpreorder exports, declared once: where it is read and how it is shown.

The Prometheus families (`daemon.metrics`), the periodic drop reports (`daemon.service`), replay's
totals and its per-session report (`tools.replay`, `tools.replay_report`) are generated from these
tables, so a new counter is one line here plus the attribute that counts it.

A `Counter` reads `attribute` of its `source`: the engine's `EngineCounters` (exported once per
direction, with a `direction` label first), a `Session` (per-session series and replay's
per-session report), or a counters object of the daemon (`Source.DAEMON`: the service's and
each mode's rows are declared beside their code in `l2tpreorder/daemon/`, not here).
An attribute that is a dict (reason -> count) becomes one series per key, its last label the key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Source(StrEnum):
    ENGINE = "engine"  # EngineCounters, per direction
    SESSION = "session"  # Session, per session
    DAEMON = "daemon"  # a counters object of the daemon (service, mode): rows in daemon/


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"


@dataclass(frozen=True, slots=True)
class Family:
    """A Prometheus metric family (name without the `l2tpreorder_` prefix)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Counter:
    """One number: its attribute, the family and label values it is exported under, and
    whether drop reports (`report`, the reason word) and replay's totals (`total`) show it."""

    source: Source
    attribute: str
    family: Family | None  # None: not a metric (read by the replay report only)
    labels: tuple[str, ...] = ()  # label values after `direction` (engine, session rows)
    report: str | None = None
    total: bool = False


def family(name: str, help: str, *labels: str, kind: Kind = Kind.COUNTER) -> Family:
    return Family(name, kind, help, labels)


_f = family
D = "direction"
RECEIVED = _f("received_packets", "Datagrams the reorder engine received, by kind.", D, "kind")
MALFORMED = _f(
    "malformed_packets",
    "Datagrams found not usable L2TPv2, by reason (dropped; passed on untouched in in-path mode).",
    D,
    "reason",
)
FORWARDED = _f(
    "forwarded_packets",
    "Datagrams passed on at once (not held), by kind (data_late: its Ns had been given up, it"
    " went out with the next Ns: a reordering, not a loss; see reorder.late).",
    D,
    "kind",
)
RELEASED = _f(
    "released_packets",
    "Data packets that arrived early, were held, then released in order (reordered).",
    D,
)
DROPPED = _f(
    "dropped_packets",
    "Datagrams dropped, by reason (late: its Ns was already given up, see timeout; stale:"
    " further behind than the session's window, delivered or not unknown; far_ahead: further"
    " ahead than the window and not confirmed by the packets after it, a stray one).",
    D,
    "reason",
)
SKIPPED = _f(
    "skipped_sequence_numbers",
    "Ns values given up without the packet arriving (lost before us), by reason.",
    D,
    "reason",
)
RESYNCS = _f("resyncs", "Times a peer restarted its Ns numbering and the session followed.", D)
STARTED = _f("sessions_started", "Sessions first seen.", D)
ENDED = _f("sessions_ended", "Sessions ended (CDN, StopCCN, peer idle).", D)
EVICTED = _f(
    "sessions_evicted",
    "Sessions evicted because the table was full (max_sessions), by whether the control"
    " channel had established them (those go last).",
    D,
    "confirmed",
)
CONTINUED = _f(
    "sessions_continued",
    "Sessions recreated with the same IDs whose Ns went on where the ended one stopped"
    " (a CDN the LNS did not act on, an eviction, an idle peer back): renumbering kept.",
    D,
)
EVICTED_ACTIVE = _f(
    "sessions_evicted_active",
    "Evicted sessions that had sent within the last few reorder timeouts (at least 1 s):"
    " the table is full of live sessions; raise reorder.max_sessions.",
    D,
)
IDLE_EXPIRED = _f(
    "sessions_idle_expired",
    "Sessions forgotten after reorder.session_idle_timeout_ms of silence (numbering kept).",
    D,
)
ADAPTIVE_GROWS = _f(
    "adaptive_timeout_grows",
    "Late arrivals that grew a session's adaptive timeout (its learnt timeout was too short).",
    D,
)
HELD = _f("held_packets", "Packets held now, waiting for a gap.", D, kind=Kind.GAUGE)
HELD_BYTES = _f("held_bytes", "Bytes held now, waiting for a gap.", D, kind=Kind.GAUGE)

S = ("direction", "peer", "tunnel_id", "session_id")
S_PACKETS = _f(
    "session_received_packets",
    "Sequenced data packets of one session (top sessions by packets only).",
    *S,
)
S_RELEASED = _f(
    "session_released_packets", "Packets of one session released after being held (reordered).", *S
)
S_DROPPED = _f(
    "session_dropped_packets", "Packets of one session dropped, by reason.", *S, "reason"
)
S_LATE = _f(
    "session_late_delivered_packets",
    "Packets of one session that came after their Ns was given up, delivered with the next Ns.",
    *S,
)
S_SKIPPED = _f(
    "session_skipped_sequence_numbers", "Ns values of one session given up (lost before us).", *S
)

E, SE = Source.ENGINE, Source.SESSION
# Direction labels (also `pipeline.LAC_TO_LNS`/`LNS_TO_LAC`, which take them from here).
LAC_TO_LNS, LNS_TO_LAC = "lac_to_lns", "lns_to_lac"

COUNTERS: tuple[Counter, ...] = (
    # --- the engine, per direction ---
    Counter(E, "received", None, total=True),
    Counter(E, "rx_control", RECEIVED, ("control",)),
    Counter(E, "rx_data_seq", RECEIVED, ("data_with_ns",)),
    Counter(E, "rx_data_unseq", RECEIVED, ("data_without_ns",)),
    Counter(E, "rx_malformed", RECEIVED, ("malformed",)),
    Counter(E, "forwarded_control", FORWARDED, ("control",), total=True),
    Counter(E, "forwarded_unsequenced", FORWARDED, ("data_without_ns",), total=True),
    Counter(E, "forwarded_in_order", FORWARDED, ("data_in_order",), total=True),
    Counter(E, "forwarded_out_of_order", FORWARDED, ("data_out_of_order",), total=True),
    Counter(E, "forwarded_malformed", FORWARDED, ("malformed",), total=True),
    Counter(E, "forwarded_late", FORWARDED, ("data_late",), total=True),  # reorder.late
    Counter(E, "released", RELEASED, total=True),
    Counter(E, "dropped_duplicate", DROPPED, ("duplicate",), report="duplicate", total=True),
    Counter(E, "dropped_late", DROPPED, ("late",), report="late", total=True),
    Counter(E, "dropped_stale", DROPPED, ("stale",), report="stale", total=True),
    Counter(E, "dropped_far_ahead", DROPPED, ("far_ahead",), report="far_ahead", total=True),
    Counter(E, "malformed", MALFORMED, report="malformed", total=True),
    Counter(E, "dropped_malformed", DROPPED, ("malformed",)),
    Counter(E, "skipped", SKIPPED, report="gave_up_ns", total=True),
    Counter(E, "resyncs", RESYNCS, total=True),
    Counter(E, "adaptive_grows", ADAPTIVE_GROWS, total=True),  # reorder.adaptive
    Counter(E, "sessions_started", STARTED),
    Counter(E, "sessions_ended", ENDED),
    Counter(E, "sessions_evicted_unconfirmed", EVICTED, ("no",)),
    Counter(E, "sessions_evicted_confirmed", EVICTED, ("yes",)),
    Counter(E, "sessions_evicted_active", EVICTED_ACTIVE),
    Counter(E, "sessions_idle_expired", IDLE_EXPIRED),
    Counter(E, "sessions_continued", CONTINUED),
    Counter(E, "held_packets", HELD),
    Counter(E, "held_bytes", HELD_BYTES),
    # --- one session (per-session series, replay's per-session report sums `total` rows) ---
    Counter(SE, "packets", S_PACKETS),
    Counter(SE, "forwarded_in_order", None, total=True),
    Counter(SE, "forwarded_out_of_order", None, total=True),
    Counter(SE, "forwarded_late", S_LATE, total=True),
    Counter(SE, "released", S_RELEASED, total=True),
    Counter(SE, "dropped_duplicate", S_DROPPED, ("duplicate",), total=True),
    Counter(SE, "dropped_late", S_DROPPED, ("late",), total=True),
    Counter(SE, "dropped_stale", S_DROPPED, ("stale",), total=True),
    Counter(SE, "dropped_far_ahead", S_DROPPED, ("far_ahead",), total=True),
    Counter(SE, "skipped", S_SKIPPED, total=True),
)


def of(source: Source) -> tuple[Counter, ...]:
    return tuple(c for c in COUNTERS if c.source is source)


def engine_totals(counters: object) -> dict[str, object]:
    """Replay's totals: every `total` engine row by attribute; dicts keep their non-zero keys."""
    totals: dict[str, object] = {}
    for c in of(Source.ENGINE):
        if c.total:
            value = getattr(counters, c.attribute)
            totals[c.attribute] = (
                {k: v for k, v in value.items() if v} if isinstance(value, dict) else value
            )
    return totals


def drop_report(
    counters: object, rows: Source | Iterable[Counter], prefix: str = ""
) -> dict[str, int]:
    """What drop reports watch: `report` rows (of a source here, or given) as `prefix + word`
    (dicts: `word:key`)."""
    snap: dict[str, int] = {}
    for c in of(rows) if isinstance(rows, Source) else rows:
        if c.report is None:
            continue
        value = getattr(counters, c.attribute)
        if isinstance(value, dict):
            for key, n in value.items():
                snap[f"{prefix}{c.report}:{key}"] = n
        else:
            snap[prefix + c.report] = value
    return snap


SESSION_TOTALS: tuple[str, ...] = tuple(c.attribute for c in of(Source.SESSION) if c.total)
