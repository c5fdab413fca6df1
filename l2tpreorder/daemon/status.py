"""The status JSON, built once for both modes (`Service.status`): the common fields, the
totals of the LAC-to-LNS direction, then the mode's own (`Mode.status_fields`: `peers` with
their sessions; relay: `lns`, `lns_health`; in-path: `queues`).

`l2tpreorder status` (the client, `l2tpreorder/commands/status.py`) prints it. The request may
carry a selection (`StatusQuery`: peer, tunnel, session, sort, top): it is applied here, before
any session is turned into JSON, so a daemon with 100,000 sessions answers `--top 10` with ten
of them instead of building (and blocking its event loop on) a 22 MB answer. The client applies
the same selection again: an in-path supervisor merges its workers' answers, each already cut
to `top`, and an older daemon ignores the selection.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from l2tpreorder.config import format_address
from l2tpreorder.core.counters import LAC_TO_LNS
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.views import DirectionView, Session

# "reordered" everywhere (status, metrics, replay): arrived early, was held, was released in
# order once its gap filled or was given up. Packets that arrived after a higher Ns and were
# forwarded at once (the gap was already given up) count as `late_delivered` (reorder.late),
# `late` (dropped) or `out of order` (timeout 0), not here.

# `--sort` keys, each on the session JSON's fields so the client sorts merged answers the same
# way; every key biggest first: for `idle` the longest silent first (the most recently seen
# first would hide the stuck ones), for `age` the oldest first.
SORT_KEYS: dict[str, Callable[[dict[str, Any]], float]] = {
    "held": lambda d: d["held"],
    "drops": lambda d: d["late"] + d["duplicates"] + d["stale"] + d.get("far_ahead", 0),
    "packets": lambda d: d["packets"],
    "reordered": lambda d: d["reordered"],
    "skipped": lambda d: d["skipped"],
    "age": lambda d: d.get("age_s", 0.0),
    "idle": lambda d: d["last_seen_s"],
}
# The same keys on a live Session, so the daemon ranks before it builds any JSON.
_SESSION_SORT: dict[str, Callable[[Session, float], float]] = {
    "held": lambda s, now: len(s.held),
    "drops": lambda s, now: s.dropped_late + s.dropped_duplicate + s.dropped_stale
    + s.dropped_far_ahead,
    "packets": lambda s, now: s.packets,
    "reordered": lambda s, now: s.released,
    "skipped": lambda s, now: s.skipped,
    "age": lambda s, now: now - s.started,
    "idle": lambda s, now: now - s.last_active,
}
# Drops by reason in the totals (flat ints: the in-path supervisor sums its workers' totals).
DROP_TOTALS = ("dropped_late", "dropped_duplicate", "dropped_stale", "dropped_far_ahead")


class QueryError(ValueError):
    """A status request's selection the daemon cannot apply (answered as `ok: false`)."""


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """Which sessions the answer lists: all by default (the answer before issue 24)."""

    peer: str | None = None  # the LAC's "host:port", or its host alone (every port)
    tunnel_id: int | None = None
    session_id: int | None = None
    sort: str | None = None  # a SORT_KEYS name
    top: int | None = None  # at most this many sessions (after the sort); 0 = totals only
    # Set by `resolve`, never by a request: the selection made once (the sessions chosen, how
    # many matched before `top`), so the mode's `peers` and `totals.sessions_matched` come
    # from one walk over the sessions.
    made: tuple[tuple[Session, ...], int] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> StatusQuery:
        """The selection of a `{"command": "status", ...}` request; unknown keys are ignored
        (a newer client's), wrong types refused (a client bug must not look like no match)."""

        def integer(key: str) -> int | None:
            value = request.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise QueryError(f"{key}: expected a non-negative integer, got {value!r}")
            return value

        peer = request.get("peer")
        if peer is not None and not isinstance(peer, str):
            raise QueryError(f"peer: expected an address string, got {peer!r}")
        sort = request.get("sort")
        # Type first: a list or object is unhashable (`in SORT_KEYS` would raise TypeError).
        if sort is not None and (not isinstance(sort, str) or sort not in SORT_KEYS):
            raise QueryError(f"sort: {sort!r} is not one of {', '.join(SORT_KEYS)}")
        return cls(peer, integer("tunnel_id"), integer("session_id"), sort, integer("top"))

    def as_request(self) -> dict[str, Any]:
        """The request fields that carry this selection (what `from_request` reads)."""
        fields = {
            "peer": self.peer,
            "tunnel_id": self.tunnel_id,
            "session_id": self.session_id,
            "sort": self.sort,
            "top": self.top,
        }
        return {k: v for k, v in fields.items() if v is not None}

    @property
    def selects(self) -> bool:
        """True when the answer may list fewer sessions than the daemon has."""
        return bool(self.as_request())

    def peer_matches(self, lac: str) -> bool:
        """`lac` is a formatted address ("host:port", "[v6]:port")."""
        if self.peer is None:
            return True
        return lac == self.peer or lac.rpartition(":")[0].strip("[]") == self.peer.strip("[]")

    def matches(self, s: Session) -> bool:
        if self.tunnel_id is not None and s.tunnel_id != self.tunnel_id:
            return False
        if self.session_id is not None and s.session_id != self.session_id:
            return False
        return self.peer is None or self.peer_matches(_lac(s.flow))

    def select(self, sessions: Iterable[Session], now: float) -> tuple[list[Session], int]:
        """The matching sessions, sorted and cut to `top`; and how many matched in all. `top`
        without `sort` takes the first in ID order (json_id_order), not the engine's own order:
        every worker and the client then agree on which sessions those are. A resolved query
        (`resolve`) returns the selection it made, without another walk."""
        if self.made is not None:
            return list(self.made[0]), self.made[1]
        matched = [s for s in sessions if self.matches(s)]
        top = self.top
        if self.sort is not None:
            key = _SESSION_SORT[self.sort]
            if top is None:
                matched.sort(key=lambda s: key(s, now), reverse=True)
                return matched, len(matched)
            # The top N without sorting them all (100,000 sessions, every --watch refresh).
            return heapq.nlargest(top, matched, key=lambda s: key(s, now)), len(matched)
        if top is not None:
            return heapq.nsmallest(top, matched, key=_id_order), len(matched)
        return matched, len(matched)

    @property
    def selects_sessions(self) -> bool:
        """Sessions are chosen (by IDs, sort or top), not only peers: a peer without one
        of them is left out of the answer."""
        return any(v is not None for v in (self.tunnel_id, self.session_id, self.sort, self.top))


ALL = StatusQuery()


def _id_order(s: Session) -> tuple[int, int, str, int]:
    flow = s.flow
    if isinstance(flow, tuple) and len(flow) >= 2:
        return s.tunnel_id, s.session_id, str(flow[0]), int(flow[1])
    return s.tunnel_id, s.session_id, str(flow), 0


def json_id_order(lac: str, d: dict[str, Any]) -> tuple[int, int, str, int]:
    """The order `top` without `sort` picks in, on a session's JSON and its peer's `lac`
    ("host:port", "[v6]:port"): tunnel_id, session_id, then the LAC's host and port."""
    host, _, port = lac.rpartition(":")
    return (int(d.get("tunnel_id", 0)), int(d.get("session_id", 0)), host.strip("[]"),
            int(port) if port.isdigit() else 0)  # fmt: skip


def _lac(flow: Hashable) -> str:
    """A flow is the LAC's (host, port) in both modes."""
    if isinstance(flow, tuple) and len(flow) >= 2:
        return format_address((str(flow[0]), int(flow[1])))
    return str(flow)


def session_json(s: Session, view: DirectionView, now: float) -> dict[str, Any]:
    # The session's own timeout where the engine adapts it (adaptive mode), else the configured.
    timeout = view.timeout_of(s)
    return {
        "tunnel_id": s.tunnel_id,
        "session_id": s.session_id,
        "packets": s.packets,
        "reordered": s.released,
        "held": len(s.held),
        "skipped": s.skipped,
        "late": s.dropped_late,
        "late_delivered": s.forwarded_late,
        "duplicates": s.dropped_duplicate,
        "stale": s.dropped_stale,
        "far_ahead": s.dropped_far_ahead,
        "timeout_ms": round(timeout * 1000, 3),
        "confirmed": s.confirmed,
        "last_seen_s": round(max(0.0, now - s.last_active), 3),
        "age_s": round(max(0.0, now - s.started), 3),
    }


def sessions_by_flow(
    pipeline: Pipeline, now: float, query: StatusQuery = ALL
) -> dict[Hashable, list[dict[str, Any]]]:
    """The LAC-to-LNS sessions `query` selects as JSON, grouped by their LAC's flow (a flow
    without a selected session is absent), in the query's order, else sorted by IDs."""
    view = pipeline.directions()[LAC_TO_LNS]
    selected, _ = query.select(view.sessions(), now)
    by_flow: dict[Hashable, list[dict[str, Any]]] = {}
    for s in selected:
        by_flow.setdefault(s.flow, []).append(session_json(s, view, now))
    if query.sort is None:
        for sessions in by_flow.values():
            sessions.sort(key=lambda d: (d["tunnel_id"], d["session_id"]))
    return by_flow


def resolve(pipeline: Pipeline, query: StatusQuery, now: float) -> StatusQuery:
    """`query` with its selection of the LAC-to-LNS sessions made at `now` (one walk; for
    `Service.status`: the mode's `sessions_by_flow` and `build_status` both read it)."""
    if not query.selects:
        return query  # every session: nothing to count apart from the engine's own total
    chosen, matched = query.select(pipeline.directions()[LAC_TO_LNS].sessions(), now)
    return replace(query, made=(tuple(chosen), matched))


def lac_count(pipeline: Pipeline) -> int:
    """The LACs with at least one session, however many a selection lists."""
    return len({s.flow for s in pipeline.directions()[LAC_TO_LNS].sessions()})


def build_status(
    pipeline: Pipeline, common: dict[str, Any], fields: dict[str, Any], query: StatusQuery = ALL
) -> dict[str, Any]:
    """`{"ok": true, **common, totals, **fields}`; the mode's totals join the engine's. A
    selecting query (`resolve`d) adds `totals.sessions_matched` (before `top`: "10 of 4,211
    shown")."""
    view = pipeline.directions()[LAC_TO_LNS]
    c = view.counters
    mode_fields = dict(fields)
    totals = {
        "sessions": view.session_count,
        "held": c.held_packets,
        "reordered": c.released,
        **{name: getattr(c, name) for name in DROP_TOTALS},
        "dropped_malformed": c.rx_malformed - c.forwarded_malformed,
        "late_delivered": c.forwarded_late,
        **mode_fields.pop("totals", {}),
    }
    if query.made is not None:
        totals["sessions_matched"] = query.made[1]
    return {"ok": True, **common, "totals": totals, **mode_fields}


def select_answer(
    answer: dict[str, Any], query: StatusQuery
) -> tuple[dict[str, Any], int, int]:
    """A status answer with only the peers and sessions `query` selects, sorted and cut to
    `top` (the in-path supervisor's merge of its workers' answers, each cut to `top`; the
    client's, for a daemon that ignored the selection). Peers keep the order of their first
    selected session; a peer without one is left out when sessions were selected by ID, sort or
    top. Returns it, how many matched (before `top`) and how many it shows."""
    picked: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    peers = [p for p in answer.get("peers", []) if query.peer_matches(str(p.get("lac", "")))]
    for i, peer in enumerate(peers):
        for s in peer.get("sessions", []):
            if query.tunnel_id is not None and s.get("tunnel_id") != query.tunnel_id:
                continue
            if query.session_id is not None and s.get("session_id") != query.session_id:
                continue
            picked.append((i, peer, s))
    if query.sort is not None:
        key = SORT_KEYS[query.sort]
        picked.sort(key=lambda item: key(item[2]), reverse=True)
    elif query.top is not None:  # the daemon's order for `top` alone (each worker's too)
        picked.sort(key=lambda item: json_id_order(str(item[1].get("lac", "")), item[2]))
    matched = answer.get("totals", {}).get("sessions_matched", len(picked))
    if query.top is not None:
        picked = picked[: query.top]
    by_peer: dict[int, dict[str, Any]] = {}
    for i, peer, s in picked:
        by_peer.setdefault(i, {**peer, "sessions": []})["sessions"].append(s)
    if not query.selects_sessions:  # only a peer filter: its peers with no sessions still show
        for i, peer in enumerate(peers):
            by_peer.setdefault(i, {**peer, "sessions": []})
        order = sorted(by_peer)
    else:
        order = list(by_peer)
    return {**answer, "peers": [by_peer[i] for i in order]}, matched, len(picked)
