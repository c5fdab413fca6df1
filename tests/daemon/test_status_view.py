"""`l2tpreorder status`'s client side on answers as the daemon builds them: the summary's
words, and the selection applied again to a merged answer (the live daemon behind these is
tests/daemon/test_status_selection.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from l2tpreorder.commands.status import format_summary, human_duration, select
from l2tpreorder.core.engine import EngineConfig
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.session_table import Session
from l2tpreorder.daemon.status import (
    QueryError,
    StatusQuery,
    build_status,
    resolve,
    sessions_by_flow,
)
from tests.engine_helpers import FLOW, data


def session(tunnel: int, sid: int, held: int, late: int = 0) -> dict[str, Any]:
    return {
        "tunnel_id": tunnel, "session_id": sid, "packets": 10, "reordered": 0, "held": held,
        "skipped": 0, "late": late, "late_delivered": 0, "duplicates": 0, "stale": 0,
        "far_ahead": 0, "timeout_ms": 100.0, "confirmed": False, "last_seen_s": 0.1,
        "age_s": 5.0,
    }  # fmt: skip


def merged() -> dict[str, Any]:
    """Two in-path workers' answers to `--sort held --top 1`, merged by the supervisor."""
    return {
        "ok": True, "pid": 1, "uptime_s": 3725.0, "status": "in-path",
        "totals": {"peers": 2, "sessions": 9, "held": 5, "sessions_matched": 9},
        "peers": [
            {"lac": "192.0.2.1:1701", "queue": 0, "sessions": [session(1, 1, 2)]},
            {"lac": "192.0.2.2:1701", "queue": 1, "sessions": [session(2, 1, 3, late=4)]},
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "0 s"), (59.9, "59 s"), (61, "1 min 1 s"), (3725, "1 h 2 min"), (187342, "2 d 4 h")],
)
def test_uptime_in_human_units(seconds: float, words: str) -> None:
    assert human_duration(seconds) == words


def test_summary_says_drops_by_reason_and_uptime() -> None:
    a = merged()
    a["totals"] |= {
        "dropped_late": 1200, "dropped_duplicate": 3, "dropped_stale": 0, "dropped_far_ahead": 0,
        "dropped_malformed": 1, "late_delivered": 7,
    }  # fmt: skip
    lines = format_summary(a).splitlines()
    assert lines[0] == "l2tpreorder pid 1, up 1 h 2 min: in-path"
    assert lines[1].startswith("2 LAC peers, 9 sessions, 5 held now")
    assert lines[2] == (
        "dropped: 1,200 late, 3 duplicate, 0 stale, 0 far ahead, 1 malformed; "
        "7 late delivered (not dropped)"
    )


def test_selection_is_applied_again_to_a_merged_answer() -> None:
    top = select(merged(), StatusQuery(sort="held", top=1))
    assert [p["lac"] for p in top["peers"]] == ["192.0.2.2:1701"]
    assert top["selection"] == {"sort": "held", "top": 1, "matched": 9, "shown": 1}
    drops = select(merged(), StatusQuery(sort="drops"))
    assert [s["tunnel_id"] for p in drops["peers"] for s in p["sessions"]] == [2, 1]
    only = select(merged(), StatusQuery(peer="192.0.2.1"))
    assert [p["lac"] for p in only["peers"]] == ["192.0.2.1:1701"]
    assert select(merged(), StatusQuery(tunnel_id=3))["peers"] == []


def test_top_without_sort_takes_the_lowest_ids_in_daemon_and_client() -> None:
    """Not the engine's own (creation) order: each worker and the client cutting the merged
    answer pick the same sessions (tunnel_id, session_id, then the LAC's address)."""
    made = [Session(("192.0.2.9", 1701), t, sid, 0, 0.0) for t, sid in [(9, 1), (2, 5), (2, 3)]]
    made.append(Session(("192.0.2.1", 1701), 2, 3, 0, 0.0))
    picked, matched = StatusQuery(top=2).select(made, 1.0)
    assert matched == 4
    assert [(s.flow[0], s.tunnel_id, s.session_id) for s in picked] == [  # type: ignore[index]
        ("192.0.2.1", 2, 3), ("192.0.2.9", 2, 3)]  # fmt: skip
    answer = merged()
    answer["peers"][0]["sessions"] = [session(5, 1, 0), session(1, 8, 0)]
    answer["peers"][1]["sessions"] = [session(1, 9, 0), session(1, 2, 0)]
    top = select(answer, StatusQuery(top=2))
    shown = [(p["lac"], d["tunnel_id"], d["session_id"]) for p in top["peers"]
             for d in p["sessions"]]  # fmt: skip
    assert shown == [("192.0.2.2:1701", 1, 2), ("192.0.2.1:1701", 1, 8)]


@pytest.mark.parametrize(
    ("request_fields", "named"),
    [({"sort": "loud"}, "sort"), ({"top": -1}, "top"), ({"top": True}, "top"),
     ({"tunnel_id": "7"}, "tunnel_id"), ({"peer": 7}, "peer"),
     # a list or an object where a name or a number belongs: refused, not a TypeError
     ({"sort": ["held"]}, "sort"), ({"sort": {"by": "held"}}, "sort"), ({"sort": 3}, "sort"),
     ({"peer": ["192.0.2.1"]}, "peer"), ({"peer": {}}, "peer"), ({"top": [1]}, "top"),
     ({"top": 1.5}, "top"), ({"tunnel_id": {"id": 7}}, "tunnel_id"),
     ({"session_id": [9]}, "session_id")],
)  # fmt: skip
def test_a_selection_the_daemon_cannot_apply_is_refused(
    request_fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(QueryError, match=f"^{named}: "):
        StatusQuery.from_request({"command": "status", **request_fields})


def test_a_request_without_selection_selects_everything() -> None:
    q = StatusQuery.from_request({"command": "status", "from_a_newer_client": 1})
    assert q == StatusQuery() and not q.selects


def test_summary_with_a_selection_is_refused_before_asking(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused before any request (the config file does not even exist)."""
    from l2tpreorder.cli import main

    assert main(["status", "--config", "/nonexistent.yaml", "--summary", "--top", "3"]) == 2
    err = capsys.readouterr().err
    assert "--summary lists no session" in err and "cannot read" not in err, err


def test_a_resolved_query_walks_the_sessions_once_and_counts_before_top() -> None:
    """`Service.status` resolves the query once: the mode's `sessions_by_flow` and the totals'
    `sessions_matched` (before `top`) read that one selection, not a second walk."""
    p = Pipeline(EngineConfig())
    for tunnel, sid in [(2, 1), (2, 2), (3, 1)]:
        p.from_lac(data(0, tunnel=tunnel, session=sid), FLOW, 0.0)
    query = resolve(p, StatusQuery(tunnel_id=2, top=1), 1.0)
    assert query.made is not None and query.made[1] == 2

    def no_second_walk() -> Iterator[Session]:
        raise AssertionError("the sessions walked again")
        yield  # a generator: raises when walked

    assert query.select(no_second_walk(), 1.0) == (list(query.made[0]), 2)
    by_flow = sessions_by_flow(p, 1.0, query)
    assert [(d["tunnel_id"], d["session_id"]) for d in by_flow[FLOW]] == [(2, 1)]
    answer = build_status(p, {}, {}, query)
    assert answer["totals"]["sessions_matched"] == 2 and answer["totals"]["sessions"] == 3
    every = build_status(p, {}, {}, resolve(p, StatusQuery(), 1.0))
    assert "sessions_matched" not in every["totals"]  # no selection: nothing to count
