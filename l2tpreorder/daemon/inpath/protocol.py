"""What an in-path supervisor and its workers agree on: how a worker tells its metrics port
(one stdout line), where its private control socket is (named in its environment), and how to
ask one a question over it (the daemon's one-line JSON protocol, `daemon/control.py`).

Why a Unix socket per worker and not a /status path on the worker's loopback metrics server:
loopback TCP is open to every local user (the sessions' IDs would leak, and a reload over HTTP
would need its own authentication), while a 0600 socket keeps the same permissions as the
daemon's own; and the protocol, server and client code already exist.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

WORKER_METRICS_LINE = "l2tpreorder-worker-metrics-port="
WORKER_CONTROL_ENV = "L2TPREORDER_WORKER_CONTROL"  # a supervised worker's control socket
MAX_ANSWER = 64 << 20  # a worker's status with very many sessions is one long line


def worker_socket(control_path: str, queue: int) -> str:
    return f"{control_path}.queue{queue}"


async def ask(
    path: str, command: str, timeout: float, fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One request to a worker's socket (`fields`: the rest of the request, e.g. a status
    selection); a worker that cannot answer is an error answer."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path, limit=MAX_ANSWER)
            try:
                request = {**(fields or {}), "command": command}
                writer.write(json.dumps(request).encode() + b"\n")
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
