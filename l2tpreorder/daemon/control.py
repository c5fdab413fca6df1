"""The control socket's server: `l2tpreorder status` and `l2tpreorder reload` (the clients,
`l2tpreorder/commands/`) talk to the running daemon through it.

A Unix stream socket, mode 0600 (only the daemon's user and root can connect), one request per
connection: the client sends one JSON line `{"command": "status"}` (a status request may add
a selection, daemon/status.py `StatusQuery`) or `{"command": "reload"}`,
the server answers one JSON line `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. A
reload is answered only after it was applied or refused, so `l2tpreorder reload` (the unit's
ExecReload) returns when the new configuration is live, and fails when it was rejected.

Where the socket lives: `control_socket` from the config file, else the first usable of
$RUNTIME_DIRECTORY/control.sock (systemd's RuntimeDirectory=), /run/l2tpreorder/control.sock,
/tmp/l2tpreorder-UID/control.sock (an unprivileged `make run`). The client tries the same list
and connects to the first socket that exists, so both find each other from the config alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("l2tpreorder")

RUN_DIR = "/run/l2tpreorder"
MAX_REQUEST = 4096  # one short JSON line; anything longer is refused, not buffered
CLIENT_TIMEOUT = 30.0  # a reload under load can take a while; never hang forever

# Called with the whole request: `status` reads its selection from it (daemon/status.py).
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def socket_candidates(configured: str | None) -> list[str]:
    """Socket paths in the order the server tries to bind and the client tries to connect."""
    if configured is not None:
        return [configured]
    paths = []
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        paths.append(os.path.join(runtime.split(":")[0], "control.sock"))
    paths.append(os.path.join(RUN_DIR, "control.sock"))
    paths.append(f"/tmp/l2tpreorder-{os.getuid()}/control.sock")
    return paths


def answering_daemon(configured: str | None) -> str | None:
    """The first socket of `socket_candidates(configured)` a live daemon answers on, or None.

    A second instance must not start beside it on the same path (issue 24): it would take a
    later candidate, or none, and `status`/`reload` would keep reaching the first one."""
    for path in socket_candidates(configured):
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
        except OSError:
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)  # a unix connect is immediate unless its backlog is full
            try:
                probe.connect(path)
            except OSError:  # a stale file (or not ours to reach): bind() deals with it
                continue
        return path
    return None


def another_daemon(path: str) -> str:
    """The one line `run` refuses to start with when `answering_daemon` found one."""
    return (
        f"control socket {path}: another l2tpreorder answers there (status and reload would "
        "reach it, not this instance); set control_socket in this instance's config file to "
        "a path of its own; not starting"
    )


def _own_directory(directory: str) -> bool:
    """Create `directory` (0700) or accept an existing one we own that is no symlink: a
    fallback under /tmp must not be a directory another user prepared for us."""
    try:
        os.mkdir(directory, 0o700)
        return True
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = os.lstat(directory)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return False
    return os.access(directory, os.W_OK | os.X_OK)


class ControlServer:
    """Serves the control socket on the daemon's event loop; one JSON line in, one out."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.path: str | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self, configured: str | None, owner: tuple[int, int] | None = None) -> str:
        """Bind the first usable path; chown it to `owner` (uid, gid) when privileges are to
        be dropped, so the daemon's user can still remove it at exit. Raises OSError."""
        errors = []
        for path in socket_candidates(configured):
            directory = os.path.dirname(path) or "."
            if configured is None and not _own_directory(directory):
                errors.append(f"{directory}: not a directory we can use")
                continue
            try:
                await self._bind(path, owner)
            except OSError as e:
                errors.append(f"{path}: {e.strerror}")
                if configured is not None:
                    break
                continue
            self.path = path
            return path
        raise OSError(0, "cannot create the control socket (" + "; ".join(errors) + ")")

    async def _bind(self, path: str, owner: tuple[int, int] | None) -> None:
        _remove_stale(path)
        old = os.umask(0o177)  # 0600 from the first moment, not after a chmod
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=path, limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        if owner is not None and os.geteuid() == 0:
            os.chown(path, *owner)
            with contextlib.suppress(OSError):
                if os.stat(os.path.dirname(path)).st_uid == 0 and path.startswith(RUN_DIR):
                    os.chown(os.path.dirname(path), *owner)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), CLIENT_TIMEOUT)
            except (ValueError, asyncio.LimitOverrunError):
                line = b""
            answer = await self._answer(line)
            writer.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError):
            pass  # the client went away: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": 'expected one JSON line such as {"command": "status"}'}
        if not isinstance(request, dict):
            request = {}
        command = request.get("command")
        handler = self.handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown command {command!r}; known: {known}"}
        try:
            return await handler(request)
        except Exception as e:
            log.exception("control: %s failed", command)
            return {"ok": False, "error": f"{command} failed: {e}"}

    def close(self) -> None:
        """Stop listening and remove the socket file (a stale one would mislead clients)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


def _remove_stale(path: str) -> None:
    """A socket file left by a killed daemon: remove it if nobody answers on it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(17, f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
            return
    raise OSError(98, f"another l2tpreorder answers on {path}")
