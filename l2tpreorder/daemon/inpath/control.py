"""The control socket in in-path mode: `l2tpreorder status` and `reload` for its workers.

One queue: the worker is the daemon and serves the control socket itself. Several queues: the
supervisor serves it, and each worker serves a private one next to it (`<socket>.queueN`,
named in the worker's environment), speaking the same one-line JSON protocol. The supervisor
asks every worker at once and merges the answers; a reload is the worker's own `reload`
command, so the supervisor answers only after every worker applied or refused the file.

Why a Unix socket per worker and not a /status path on the worker's loopback metrics server:
loopback TCP is open to every local user (the sessions' IDs would leak, and a reload over HTTP
would need its own authentication), while a 0600 socket keeps the same permissions as the
daemon's own; and the protocol, server and client code already exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from l2tpreorder.config import format_address
from l2tpreorder.core.counters import LAC_TO_LNS
from l2tpreorder.daemon.control import ControlServer
from l2tpreorder.daemon.inpath.nfqueue import read_queue_stats
from l2tpreorder.daemon.status import session_json

if TYPE_CHECKING:
    from l2tpreorder.daemon.inpath.supervisor import Supervisor
    from l2tpreorder.daemon.inpath.worker import InPathWorker

log = logging.getLogger("l2tpreorder")

WORKER_STATUS_TIMEOUT = 10.0  # per worker; the client waits 30 s for the whole answer
WORKER_RELOAD_TIMEOUT = 20.0
MAX_ANSWER = 64 << 20  # a worker's status with very many sessions is one long line


def worker_socket(control_path: str, queue: int) -> str:
    return f"{control_path}.queue{queue}"


# --- a worker (one queue) ----------------------------------------------------------------


def worker_status(worker: InPathWorker, started: float) -> dict[str, Any]:
    """One queue's live state in the relay's JSON shape, peers keyed by the LAC's address."""
    now = time.monotonic()
    view = worker.pipeline.directions()[LAC_TO_LNS]
    q = worker.queue_num
    by_flow: dict[Hashable, list[dict[str, Any]]] = {}
    for s in view.sessions():
        by_flow.setdefault(s.flow, []).append({**session_json(s, view, now), "queue": q})
    peers = []
    for flow, sessions in by_flow.items():
        lac = format_address((str(flow[0]), int(flow[1])))  # type: ignore[index]
        sessions.sort(key=lambda d: (d["tunnel_id"], d["session_id"]))
        peers.append(
            {
                "lac": lac,
                "upstream": lac,  # in the path, the LNS sees the LAC's own address
                "queue": q,
                "last_seen_s": min(d["last_seen_s"] for d in sessions),
                "sessions": sessions,
            }
        )
    peers.sort(key=lambda p: p["lac"])
    c = worker.adapter.counters
    kernel = read_queue_stats().get(q)
    queue = {
        "queue": q,
        "pid": os.getpid(),
        "uptime_s": round(now - started, 3),
        "awaiting_verdict": worker.adapter.held,
        "counters": c.as_dict(),
        "verdict_errors": worker.verdict_errors,
        "kernel": None
        if kernel is None
        else {
            "waiting": kernel.waiting,
            "queue_full_drops": kernel.queue_dropped,
            "socket_full_drops": kernel.user_dropped,
        },
    }
    totals = {
        "peers": len(peers),
        "sessions": view.session_count,
        "held": view.counters.held_packets,
        "rx_datagrams_lac": c.from_lac,
        "rx_datagrams_lns": c.from_lns,
        "reordered": view.counters.released,
    }
    return {
        "ok": True,
        "mode": "inpath",
        "pid": os.getpid(),
        "uptime_s": queue["uptime_s"],
        "status": worker.status_line(),
        "config": worker.config.source,
        "totals": totals,
        "queues": [queue],
        "peers": peers,
    }


async def start_worker_control(
    worker: InPathWorker, path: str | None, owner: tuple[int, int] | None
) -> ControlServer | None:
    """Serve `status` and `reload` for one worker at `path` (None: the daemon's own socket,
    found like relay mode's). Without it the worker still runs; SIGHUP still reloads."""
    started = time.monotonic()

    async def status() -> dict[str, Any]:
        return worker_status(worker, started)

    async def reload() -> dict[str, Any]:
        error, notes = worker.reload()
        if error is not None:
            return {"ok": False, "error": error}
        return {"ok": True, "status": worker.status_line(), "not_applied": notes}

    control = ControlServer({"status": status, "reload": reload})
    configured = path if path is not None else worker.config.control_socket
    try:
        where = await control.start(configured, owner)
    except OSError as e:
        _not_served(e)
        return None
    log.info("control socket: %s", where)
    return control


def _not_served(e: OSError) -> None:
    log.error(
        "control socket: %s; running without it (status and reload by command fail, "
        "SIGHUP still reloads)",
        e.strerror or e,
    )


# --- the supervisor (several queues) --------------------------------------------------------


async def ask(path: str, command: str, timeout: float) -> dict[str, Any]:
    """One request to a worker's socket; a worker that cannot answer is an error answer."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path, limit=MAX_ANSWER)
            try:
                writer.write(json.dumps({"command": command}).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {timeout:g} s"}
    except (OSError, ValueError) as e:
        return {"ok": False, "error": f"not reachable ({getattr(e, 'strerror', None) or e})"}
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "ok" not in answer:
        return {"ok": False, "error": f"not an answer: {line[:80]!r}"}
    return answer


async def supervisor_status(sup: Supervisor, path: str, started: float) -> dict[str, Any]:
    """Every worker's answer merged: peers and sessions carry their queue; a worker that does
    not answer (restarting) is listed with its error, its queue failing open meanwhile."""
    queues = sorted(sup.workers)
    answers = await asyncio.gather(
        *(ask(worker_socket(path, q), "status", WORKER_STATUS_TIMEOUT) for q in queues)
    )
    peers: list[dict[str, Any]] = []
    per_queue: list[dict[str, Any]] = []
    totals: dict[str, int] = {}
    for q, answer in zip(queues, answers, strict=True):
        w = sup.workers[q]
        if not answer.get("ok"):
            per_queue.append({"queue": q, "error": answer.get("error"), "restarts": w.restarts})
            continue
        for entry in answer.get("queues", []):
            per_queue.append({**entry, "restarts": w.restarts})
        peers.extend(answer.get("peers", []))
        for key, value in answer.get("totals", {}).items():
            totals[key] = totals.get(key, 0) + int(value)
    peers.sort(key=lambda p: (p["queue"], p["lac"]))
    return {
        "ok": True,
        "mode": "inpath",
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - started, 3),
        "status": sup.status_line(),
        "config": sup.config.source,
        "totals": totals,
        "queues": per_queue,
        "peers": peers,
    }


async def supervisor_reload(sup: Supervisor, path: str) -> dict[str, Any]:
    """Each worker reloads and answers; any refusal (or silence) fails the reload, by queue."""
    queues = sorted(sup.workers)
    answers = await asyncio.gather(
        *(ask(worker_socket(path, q), "reload", WORKER_RELOAD_TIMEOUT) for q in queues)
    )
    refused = [
        f"queue {q}: {a.get('error')}" for q, a in zip(queues, answers, strict=True) if not a["ok"]
    ]
    if refused:
        return {"ok": False, "error": "; ".join(refused)}
    notes = sorted({n for a in answers for n in a.get("not_applied", [])})
    return {"ok": True, "status": sup.status_line(), "not_applied": notes}


async def start_supervisor_control(sup: Supervisor) -> ControlServer | None:
    """The daemon's control socket, served by the supervisor for all its workers."""
    started = time.monotonic()
    control = ControlServer({})

    async def status() -> dict[str, Any]:
        assert control.path is not None
        return await supervisor_status(sup, control.path, started)

    async def reload() -> dict[str, Any]:
        assert control.path is not None
        return await supervisor_reload(sup, control.path)

    control.handlers.update({"status": status, "reload": reload})
    try:
        where = await control.start(sup.config.control_socket)
    except OSError as e:
        _not_served(e)
        return None
    log.info("control socket: %s (workers: %s)", where, worker_socket(where, 0)[:-1] + "N")
    return control
