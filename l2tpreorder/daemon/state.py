"""Pipeline state that must survive a restart, saved as versioned JSON.

In renumber mode the LNS has seen our Ns, not the LAC's: a restart that forgot each session's
`out_ns` would show it a jump, and xl2tpd drops or stalls on those. So on SIGTERM the daemon
flushes the pipeline and saves (`Pipeline.snapshot`), per direction and per session, the next
Ns it expects (`expected`) and the next Ns the receiver will see (`out_ns`), plus whatever the
adapter needs in `extra` (the relay: which upstream source port each LAC peer used, so
xl2tpd's connected sockets still match).
Each session also carries its given-up bitmap (late vs duplicate stays exact), and the engine's
continuation memory is saved too (`ended`): a spoofed CDN, an eviction or an idle expiry shortly
before a restart must not make the LAC's continuing stream start afresh at the LNS.
Both directions are saved (`directions`: lac_to_lns, and lns_to_lac when that direction
reorders); version 1 files (one engine at the top level = lac_to_lns, and the relay's
`extra.lns_to_lac`) are still read.

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

from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.core.snapshot import EngineState, PipelineState, Restored, SessionState

log = logging.getLogger("l2tpreorder.daemon.state")

FORMAT = "l2tpreorder-state"
VERSION = 2  # 2: `directions` holds both; 1: one engine at the top level (still read)
READABLE = (1, 2)


@dataclass(slots=True)
class SavedState:
    """A loaded state file."""

    saved_at: float  # wall-clock time of the save (time.time())
    state: PipelineState
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sequencing(self) -> str:
        """The sequencing mode the saved numbering was made in."""
        return self.state.sequencing

    def restore(self, pipeline: Pipeline, now: float, *, passed: bool = False) -> Restored:
        """Recreate the saved sessions and tunnel-ID pairs of both directions in `pipeline`.
        `passed`: traffic passed untouched while we were down (in-path fail-open)."""
        elapsed = max(0.0, time.time() - self.saved_at)
        return pipeline.restore(self.state, now, elapsed, passed=passed)


def export_direction(state: EngineState) -> dict[str, Any]:
    """One direction's state as JSON-ready data (see `parse_direction`)."""
    sessions, tunnels = state.sessions, state.tunnels
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


def parse_direction(document: Any) -> EngineState:
    """Read what `export_direction` wrote; raises ValueError naming the bad item."""
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
    return EngineState(sessions, tunnels)


def _parse_directions(document: dict[str, Any], version: int) -> dict[str, EngineState]:
    if version == 1:  # one engine at the top level; the relay kept LNS-to-LAC in `extra`
        directions = {LAC_TO_LNS: parse_direction(document)}
        down = document["extra"].get("lns_to_lac")
        if down is not None:
            try:
                directions[LNS_TO_LAC] = parse_direction(down)
            except ValueError as e:  # as the old relay did: keep the LAC-to-LNS sessions
                log.warning("state file: ignoring its LNS-to-LAC part: %s", e)
        return directions
    saved = document["directions"]
    if not isinstance(saved, dict) or LAC_TO_LNS not in saved:
        raise ValueError(f"directions: expected an object with {LAC_TO_LNS}")
    directions = {}
    for name, item in saved.items():
        if name not in (LAC_TO_LNS, LNS_TO_LAC):
            raise ValueError(f"directions: unknown direction {short(name)}")
        try:
            directions[name] = parse_direction(item)
        except ValueError as e:
            raise ValueError(f"directions.{name}: {e}") from None
    return directions


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


def save_state(
    snapshot: PipelineState, path: str | os.PathLike[str], extra: dict[str, Any]
) -> int:
    """Write `snapshot` (`Pipeline.snapshot()`, both directions) and `extra` to `path`
    atomically; returns the live sessions saved, all directions together.

    Take the snapshot after `pipeline.flush(now)`: held packets are not saved (they are
    delivered instead). Raises OSError (disk) or TypeError (a flow or `extra` that JSON cannot
    hold); the caller reports it: a failed save must not stop a shutdown.
    """
    document = {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": time.time(),
        "sequencing": snapshot.sequencing,
        "directions": {d: export_direction(e) for d, e in snapshot.directions.items()},
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
    return snapshot.live  # live sessions (the memory of ended ones is extra)


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
    if type(version) is not int or version not in READABLE:
        readable = " and ".join(map(str, READABLE))
        return f"state file {path}: version {version!r}, this program reads versions {readable}"
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
        directions = _parse_directions(document, version)
        state = SavedState(float(saved_at), PipelineState(sequencing, directions), extra)
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
