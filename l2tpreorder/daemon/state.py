"""Engine state that must survive a restart, saved as versioned JSON.

In renumber mode the LNS has seen our Ns, not the LAC's: a restart that forgot each session's
`out_ns` would show it a jump, and xl2tpd drops or stalls on those. So on SIGTERM the daemon
flushes the engine and saves, per session, the next Ns it expects from the LAC (`expected`) and
the next Ns the LNS will see (`out_ns`), plus whatever the adapter needs in `extra` (the daemon:
which upstream source port each LAC peer used, so xl2tpd's connected sockets still match).
Each session also carries its given-up bitmap (late vs duplicate stays exact), and the engine's
continuation memory is saved too (`ended`): a spoofed CDN, an eviction or an idle expiry shortly
before a restart must not make the LAC's continuing stream start afresh at the LNS.

The file is written atomically (temp file, fsync, rename, fsync of the directory), so a crash
mid-write leaves the old file or the new one, never half of one. Loading never raises: a
missing file is normal (first start), a corrupt, truncated, foreign, too new/old or stale file
is reported (a str reason naming what is wrong) and ignored, and the daemon starts empty.

Flows must be JSON-representable: str, int, float, bool, None, or tuples/lists of these (the
daemon's flows are (host, port) tuples). Tuples come back as tuples.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2tpreorder.core.engine import ReorderEngine
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.snapshot import SessionState, restore_engine, snapshot

log = logging.getLogger("l2tpreorder.daemon.state")

FORMAT = "l2tpreorder-state"
VERSION = 1


@dataclass(slots=True)
class SavedState:
    """A loaded state file."""

    saved_at: float  # wall-clock time of the save (time.time())
    sequencing: str  # the engine's mode when saved
    sessions: list[SessionState] = field(default_factory=list)
    tunnels: list[tuple[Hashable, int, int]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def restore(self, engine: ReorderEngine, now: float) -> int:
        """Recreate the saved sessions and tunnel-ID pairs in `engine`; returns how many."""
        elapsed = max(0.0, time.time() - self.saved_at)
        return restore_engine(engine, self.sessions, self.tunnels, now, elapsed)

    def restore_pipeline(self, pipeline: Pipeline, now: float) -> int:
        """Both directions (`save_engines`): LAC->LNS from the document, LNS->LAC from
        `extra["lns_to_lac"]` when the pipeline reorders it; returns sessions restored."""
        sessions = self.restore(pipeline.engine, now)
        down = self.extra.get("lns_to_lac")
        to_lac = pipeline.engine_to_lac
        if down is not None and to_lac is not None:
            try:
                sessions += restore_engine(to_lac, *parse_engine(down), now)
            except (ValueError, TypeError, KeyError) as e:
                log.warning("state: LNS-to-LAC sessions not restored: %s", e)
        return sessions


def export_engine(engine: ReorderEngine) -> dict[str, Any]:
    """An engine's `snapshot` as JSON-ready data (see `parse_engine`). Call after
    `engine.flush(now)`: ages count from the engine's latest time."""
    sessions, tunnels = snapshot(engine)
    return {
        "sessions": [_session_item(s) for s in sessions if s.ended_ago is None],
        "ended": [_session_item(s) for s in sessions if s.ended_ago is not None],
        "tunnels": [[_encode_flow(f), theirs, ours] for f, theirs, ours in tunnels],
    }


def _session_item(s: SessionState) -> dict[str, Any]:
    item: dict[str, Any] = {
        "flow": _encode_flow(s.flow),
        "tunnel_id": s.tunnel_id,
        "session_id": s.session_id,
        "expected": s.expected,
        "out_ns": s.out_ns,
        "confirmed": s.confirmed,
        "gaps": format(s.gaps, "x"),
        "gaps_end": s.gaps_end,
    }
    if s.ended_ago is not None:
        item["ended_ago"] = s.ended_ago
        item["idle"] = s.idle
    return item


def parse_engine(
    document: Any,
) -> tuple[list[SessionState], list[tuple[Hashable, int, int]]]:
    """Read what `export_engine` wrote; raises ValueError naming the bad item."""
    if not isinstance(document, dict):
        raise ValueError("expected an object with sessions and tunnels")
    sessions: list[SessionState] = []
    tunnels: list[tuple[Hashable, int, int]] = []
    try:
        items = [("sessions", i, x) for i, x in enumerate(document["sessions"])]
        items += [("ended", i, x) for i, x in enumerate(document.get("ended", ()))]
        for name, i, item in items:
            if not isinstance(item, dict):
                raise ValueError(f"{name}[{i}]: expected an object")
            try:
                sessions.append(_session_state(item, ended=name == "ended"))
            except KeyError as e:
                raise ValueError(f"{name}[{i}]: missing {e.args[0]!r}") from None
            except (ValueError, TypeError) as e:
                raise ValueError(f"{name}[{i}]: {e}") from None
        for i, item in enumerate(document["tunnels"]):
            if not isinstance(item, list) or len(item) != 3:
                raise ValueError(f"tunnels[{i}]: expected [flow, their ID, our ID]")
            pair = {"their": item[1], "our": item[2]}
            tunnels.append((_decode_flow(item[0]), _u16(pair, "their"), _u16(pair, "our")))
    except KeyError as e:
        raise ValueError(f"missing {e.args[0]!r}") from None
    except TypeError as e:
        raise ValueError(str(e)) from None
    return sessions, tunnels


def _session_state(item: dict[str, Any], *, ended: bool) -> SessionState:
    gaps = int(str(item.get("gaps", "0")), 16)
    if gaps < 0 or gaps.bit_length() > 32767:
        raise ValueError(f"gaps={item.get('gaps')!r}: expected a hex bitmap")
    ago = None
    if ended:
        ago = item["ended_ago"]
        if isinstance(ago, bool) or not isinstance(ago, int | float) or not 0 <= ago < 1e9:
            raise ValueError(f"ended_ago={ago!r}: expected seconds")
    return SessionState(
        flow=_decode_flow(item["flow"]),
        tunnel_id=_u16(item, "tunnel_id"),
        session_id=_u16(item, "session_id"),
        expected=_u16(item, "expected"),
        out_ns=_u16(item, "out_ns"),
        confirmed=bool(item.get("confirmed", True)),
        gaps=gaps,
        gaps_end=_u16(item, "gaps_end") if "gaps_end" in item else None,
        ended_ago=None if ago is None else float(ago),
        idle=bool(item.get("idle", False)),
    )


def _encode_flow(flow: Hashable) -> Any:
    if flow is None or isinstance(flow, str | int | float | bool):
        return flow
    if isinstance(flow, tuple | list):
        return [_encode_flow(x) for x in flow]
    raise TypeError(f"flow {flow!r}: cannot be saved (not str/int/float/bool/None/tuple)")


def _decode_flow(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_decode_flow(x) for x in value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"flow {value!r}: not a saved flow")


def save_state(engine: ReorderEngine, path: str | os.PathLike[str], extra: dict[str, Any]) -> int:
    """Write the engine's sessions and `extra` to `path` atomically; returns sessions saved.

    Call `engine.flush(now)` first: held packets are not saved (they are delivered instead).
    Raises OSError (disk) or TypeError (a flow or `extra` that JSON cannot hold); the caller
    reports it: a failed save must not stop a shutdown.
    """
    document = {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": time.time(),
        "sequencing": str(engine.config.sequencing),
        **export_engine(engine),
        "extra": extra,
    }
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    target = Path(path)
    # A fresh unpredictable name, created with O_EXCL|O_NOFOLLOW and mode 0600: a planted file
    # or symlink in the state directory can neither be followed nor truncated.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The file is saved now; this only makes the rename survive a power loss. Its failure (some
    # filesystems refuse fsync on a directory) is not a failed save.
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        log.warning(
            "state saved to %s, but its directory could not be synced (%s): a power loss now "
            "may bring back the previous file",
            target,
            e.strerror,
        )
    return len(document["sessions"])  # live sessions (the memory of ended ones is extra)


def save_engines(pipeline: Pipeline, path: str | os.PathLike[str], extra: dict[str, Any]) -> int:
    """`save_state` for both directions: the LNS->LAC engine (when it reorders) goes into
    `extra["lns_to_lac"]`; returns the LAC->LNS sessions saved."""
    to_lac = pipeline.engine_to_lac
    down = export_engine(to_lac) if to_lac is not None else None
    return save_state(pipeline.engine, path, {**extra, "lns_to_lac": down})


def _u16(item: dict[str, Any], key: str) -> int:
    value = item[key]
    if type(value) is not int or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{key}={value!r}: expected an integer 0..65535")
    return value


def load_state(
    path: str | os.PathLike[str], *, max_age: float | None = None
) -> SavedState | str | None:
    """Read a state file: SavedState, None when there is none, or a str saying why it is unusable.

    Never raises. `max_age` (seconds) rejects a file saved longer ago than that: the LAC's
    numbering has moved on and the tunnels may be gone.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"state file {path}: cannot read: {e}"
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        return f"state file {path}: corrupt or truncated: {e}"
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return f"state file {path}: not an l2tpreorder state file"
    version = document.get("version")
    if version != VERSION:
        return f"state file {path}: version {version!r}, this program reads version {VERSION}"
    try:
        saved_at = document["saved_at"]
        if not isinstance(saved_at, int | float) or not math.isfinite(saved_at):
            raise ValueError(f"saved_at={saved_at!r}: expected a time")
        sequencing = document["sequencing"]
        if not isinstance(sequencing, str):
            raise ValueError(f"sequencing={sequencing!r}: expected a mode name")
        extra = document["extra"]
        if not isinstance(extra, dict):
            raise ValueError("extra: expected an object")
        sessions, tunnels = parse_engine(document)
        state = SavedState(float(saved_at), sequencing, sessions, tunnels, extra)
    except KeyError as e:
        return f"state file {path}: bad content: missing {e.args[0]!r}"
    except (ValueError, TypeError) as e:
        return f"state file {path}: bad content: {e}"
    if max_age is not None:
        age = time.time() - state.saved_at
        if age > max_age:
            return f"state file {path}: saved {age:.0f} s ago, older than {max_age:.0f} s"
    return state


def consume_state(
    path: str | os.PathLike[str], *, max_age: float, sequencing: str
) -> SavedState | None:
    """Load the state file for a restart and remove it; None when there is none or it is
    unusable (said in the log). Removed BEFORE it is used: a later crash must not bring back
    this (by then stale) numbering, and a file that crashes the restore must not crash every
    restart systemd makes after it. Both modes start through here."""
    saved = load_state(path, max_age=max_age)
    if saved is None:
        log.info("no state file %s: starting afresh", path)
        return None
    try:
        os.unlink(path)
    except OSError as e:
        log.warning("cannot remove used state file %s: %s", path, e.strerror)
    if isinstance(saved, str):
        log.warning("%s; ignored, starting afresh", saved)
        return None
    if saved.sequencing != sequencing:
        log.warning(
            "state file %s was saved with reorder.sequencing = %s, running %s: the saved "
            "out_ns continue the LNS's numbering only from renumber to renumber, so the "
            "LNS may see an Ns jump on the restored sessions",
            path,
            saved.sequencing,
            sequencing,
        )
    return saved


def short(value: object) -> str:
    """A value for a log line, cut so a huge hostile one cannot flood the journal."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
