"""`l2tpreorder status`'s table for an in-path answer (the JSON shape the service builds with
the in-path mode's fields; the live daemon behind it is tests/integration/test_inpath_control.py,
which needs root)."""

from __future__ import annotations

from typing import Any

from l2tpreorder.commands.status import format_table


def answer() -> dict[str, Any]:
    session = {
        "tunnel_id": 7, "session_id": 9, "packets": 2, "reordered": 0, "held": 1, "skipped": 0,
        "late": 0, "late_delivered": 1, "duplicates": 0, "timeout_ms": 300.0, "confirmed": False,
        "last_seen_s": 0.5, "queue": 4,
    }  # fmt: skip
    return {
        "ok": True, "mode": "inpath", "pid": 10, "uptime_s": 3.0,
        "status": "in-path: 2 workers for NFQUEUE 4, 5",
        "totals": {"peers": 1, "sessions": 1, "held": 1},
        "queues": [
            {
                "queue": 4, "pid": 11, "awaiting_verdict": 1, "counters": {"packets": 2},
                "maxlen": 1024, "maxlen_floor": 1024,
                "kernel": {"waiting": 1, "queue_full_drops": 0, "socket_full_drops": 3},
            },
            {"queue": 5, "error": "not reachable (Connection refused)", "restarts": 1},
        ],
        "peers": [
            {"lac": "192.0.2.7:1701", "upstream": "192.0.2.7:1701", "queue": 4,
             "last_seen_s": 0.5, "sessions": [session]},
        ],
    }  # fmt: skip


def test_inpath_table_names_queues_workers_and_the_silent_one() -> None:
    lines = format_table(answer()).splitlines()
    assert lines[0] == "l2tpreorder pid 10, up 3 s: in-path: 2 workers for NFQUEUE 4, 5"
    assert (
        "NFQUEUE 4: worker pid 11, 2 packets, 1 awaiting verdict; kernel: 1 waiting of maxlen "
        "1024, 0 queue_full + 3 socket_full drops"
    ) in lines
    assert "NFQUEUE 5: worker not answering: not reachable (Connection refused)" in lines
    assert any(line.startswith("LAC 192.0.2.7:1701  on NFQUEUE 4  (") for line in lines)
    row = lines[-1].split()
    assert row[:5] == ["7", "9", "2", "0", "1"]  # tunnel, session, packets, reordered, held


def test_relay_table_unchanged_without_queue() -> None:
    a = answer()
    del a["queues"]
    for p in a["peers"]:
        del p["queue"]
    text = format_table(a)
    assert "seen by the LNS as 192.0.2.7:1701" in text and "NFQUEUE" not in text.split("\n", 1)[1]


def test_fragments_and_bad_checksums_show_in_the_queue_line() -> None:
    """Issue 21: a fragment reaching the queue means the reassembly rule is missing; `status`
    says so beside the queue, and how many bad checksums were passed untouched."""
    a = answer()
    a["queues"][0]["counters"].update(fragments_seen=3, bad_checksum=2)
    text = format_table(a)
    assert "0 queue_full + 3 socket_full drops; 2 bad UDP checksums passed untouched" in text
    assert "WARNING: 3 IP fragments reached the queue (not ordered): load the reassembly" in text
    assert "WARNING" not in format_table(answer())
