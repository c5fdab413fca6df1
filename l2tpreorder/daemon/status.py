"""The status JSON, built once for both modes (`Service.status`): the common fields, the
totals of the LAC-to-LNS direction, then the mode's own (`Mode.status_fields`: `peers` with
their sessions; relay: `lns`, `lns_health`; in-path: `queues`).

`l2tpreorder status` (the client, `l2tpreorder/commands/status.py`) prints it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from l2tpreorder.core.counters import LAC_TO_LNS
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.views import DirectionView, Session

# "reordered" everywhere (status, metrics, replay): arrived early, was held, was released in
# order once its gap filled or was given up. Packets that arrived after a higher Ns and were
# forwarded at once (the gap was already given up) count as `late_delivered` (reorder.late),
# `late` (dropped) or `out of order` (timeout 0), not here.


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
    }


def sessions_by_flow(pipeline: Pipeline, now: float) -> dict[Hashable, list[dict[str, Any]]]:
    """The LAC-to-LNS sessions as JSON, grouped by their LAC's flow, sorted by IDs."""
    view = pipeline.directions()[LAC_TO_LNS]
    by_flow: dict[Hashable, list[dict[str, Any]]] = {}
    for s in view.sessions():
        by_flow.setdefault(s.flow, []).append(session_json(s, view, now))
    for sessions in by_flow.values():
        sessions.sort(key=lambda d: (d["tunnel_id"], d["session_id"]))
    return by_flow


def build_status(
    pipeline: Pipeline, common: dict[str, Any], fields: dict[str, Any]
) -> dict[str, Any]:
    """`{"ok": true, **common, totals, **fields}`; the mode's totals join the engine's."""
    view = pipeline.directions()[LAC_TO_LNS]
    mode_fields = dict(fields)
    totals = {
        "sessions": view.session_count,
        "held": view.counters.held_packets,
        "reordered": view.counters.released,
        **mode_fields.pop("totals", {}),
    }
    return {"ok": True, **common, "totals": totals, **mode_fields}
