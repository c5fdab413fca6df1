"""State file for restarts: round trip, atomic write, and every bad file reported, never fatal."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC
from l2tpreorder.core.engine import EngineConfig, Sequencing
from l2tpreorder.core.fastpath import parse_header
from l2tpreorder.core.pipeline import Pipeline
from l2tpreorder.daemon.state import VERSION, SavedState, load_state, save_state
from l2tpreorder.wire import (
    MessageType,
    avp_assigned_tunnel_id,
    avp_message_type,
    build_control,
    build_data,
)

LAC = ("192.0.2.7", 1701)


def data(tunnel_id: int, session_id: int, ns: int) -> bytes:
    return build_data(tunnel_id, session_id, b"\xff\x03\x00\x21" + ns.to_bytes(2, "big"), ns=ns)


def out_ns(p: Pipeline) -> list[int]:
    """Ns of the data messages sent to the LNS."""
    result = []
    for _, d, _ in p.engine._out:  # peeked at, as sent so far
        h = parse_header(d)
        assert not isinstance(h, str) and h.ns is not None
        if not h.is_control:
            result.append(h.ns)
    return result


def busy_engine(*, both: bool = False) -> Pipeline:
    """Renumber mode with a skipped gap, so the LNS's Ns (out_ns) differs from the LAC's.
    `both`: LNS-to-LAC reordering too, with one session of its own."""
    config = EngineConfig(reorder_timeout=0.05, sequencing=Sequencing.RENUMBER)
    e = Pipeline(config, reorder_from_lns=both)
    e.from_lac(build_control(3, 4, 2, 2, [avp_message_type(MessageType.ICCN)]), LAC, 0.0)
    for ns in (100, 101, 105, 106):  # 102..104 never arrive
        e.from_lac(data(3, 4, ns), LAC, 0.0)
    e.expire(1.0)
    e.from_lac(data(3, 5, 65535), ("198.51.100.1", 40000), 1.0)
    e.from_lac(data(3, 5, 0), ("198.51.100.1", 40000), 1.0)
    sccrp = build_control(
        8, 0, 0, 1, [avp_message_type(MessageType.SCCRP), avp_assigned_tunnel_id(3)]
    )
    e.from_lns(sccrp, LAC, 1.0)
    if both:
        for ns in (7000, 7001, 7003):  # 7002 never arrives
            e.from_lns(data(8, 9, ns), LAC, 1.0)
        e.expire(2.0)
    return e


def test_round_trip_continues_numbering_without_a_jump(tmp_path: Path) -> None:
    e = busy_engine()
    assert out_ns(e)[:4] == [100, 101, 102, 103]  # LAC's 105, 106 renumbered to 102, 103
    e.flush(2.0)
    path = tmp_path / "state.json"
    extra = {"upstream_ports": [["192.0.2.7", 1701, 45001]]}
    assert save_state(e.snapshot(), path, extra) == 2
    loaded = load_state(path)
    assert isinstance(loaded, SavedState)
    assert loaded.extra == extra
    assert loaded.sequencing == "renumber"
    assert time.time() - loaded.saved_at < 60
    assert set(loaded.state.directions) == {LAC_TO_LNS}
    up = loaded.state.directions[LAC_TO_LNS]
    by_key = {(s.flow, s.tunnel_id, s.session_id): s for s in up.sessions}
    s = by_key[(LAC, 3, 4)]
    assert (s.expected, s.out_ns) == (107, 104)
    assert by_key[(("198.51.100.1", 40000), 3, 5)].expected == 1
    assert up.tunnels == [(LAC, 8, 3)]

    fresh = Pipeline(EngineConfig(reorder_timeout=0.05))
    restored_counts = loaded.restore(fresh, 0.0)
    assert (restored_counts.sessions, restored_counts.ignored) == ({LAC_TO_LNS: 2}, {})
    assert fresh.engine.tunnel_pairs() == [(LAC, 8, 3)]
    # Packet 107 was in flight during the restart; 108 arrives first. The LNS must see 104, 105
    # (contiguous with what it saw before), not 108.
    fresh.from_lac(data(3, 4, 108), LAC, 0.1)
    fresh.expire(0.2)
    fresh.from_lac(data(3, 4, 109), LAC, 0.2)
    assert out_ns(fresh) == [104, 105]
    view = fresh.directions()[LAC_TO_LNS]
    restored = view.session(LAC, 3, 4)
    assert restored is not None and restored.confirmed
    other = view.session(("198.51.100.1", 40000), 3, 5)
    assert other is not None and not other.confirmed
    assert fresh.counters.received == fresh.counters.accounted


def test_save_is_atomic_private_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old contents")
    save_state(busy_engine().snapshot(), path, {})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert json.loads(path.read_text())["version"] == VERSION


def test_save_failure_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        save_state(busy_engine().snapshot(), tmp_path / "missing-dir" / "state.json", {})
    with pytest.raises(TypeError, match="flow"):
        e = Pipeline(EngineConfig())
        e.from_lac(data(1, 1, 0), object(), 0.0)
        save_state(e.snapshot(), tmp_path / "state.json", {})
    assert list(tmp_path.iterdir()) == []
    # The rename fails after the temp file was written (the target is a non-empty directory):
    # the temp file must be removed, not left next to the state file.
    blocked = tmp_path / "state.json"
    blocked.mkdir()
    (blocked / "keep").write_text("x")
    with pytest.raises(OSError):
        save_state(busy_engine().snapshot(), blocked, {})
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert [p.name for p in blocked.iterdir()] == ["keep"]


def test_save_never_follows_or_truncates_a_planted_temp_name(tmp_path: Path) -> None:
    """A symlink planted where a predictable temp file would go (the old `.NAME.tmp.PID`)."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "state.json"
    planted = tmp_path / f".state.json.tmp.{os.getpid()}"
    planted.symlink_to(victim)
    save_state(busy_engine().snapshot(), path, {})
    assert victim.read_text() == "precious"
    assert not path.is_symlink()
    assert isinstance(load_state(path), SavedState)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_failing_directory_sync_after_the_rename_is_not_a_failed_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault injection (a real directory fsync failure cannot be provoked on this host's
    filesystems): fsync fails for directories only, after the file is in place."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "state.json"
    assert save_state(busy_engine().snapshot(), path, {}) == 2
    assert isinstance(load_state(path), SavedState)
    assert "its directory could not be synced (Input/output error)" in caplog.text


def test_missing_file_is_not_an_error(tmp_path: Path) -> None:
    assert load_state(tmp_path / "none.json") is None


def _up(document: dict[str, Any]) -> dict[str, Any]:
    """The LAC-to-LNS part of a state document."""
    part: dict[str, Any] = document["directions"][LAC_TO_LNS]
    return part


def valid_document(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "good.json"
    save_state(busy_engine().snapshot(), path, {"k": 1})
    document: dict[str, object] = json.loads(path.read_text())
    return document


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(version=0), "version 0"),
        (lambda d: d.update(version=VERSION + 1), f"version {VERSION + 1}"),
        (lambda d: d.update(version="2"), "version '2'"),
        (lambda d: d.update(format="something-else"), "not an l2tpreorder state file"),
        (lambda d: d.pop("directions"), "missing 'directions'"),
        (lambda d: d.update(directions=[]), "directions: expected an object with lac_to_lns"),
        (lambda d: d["directions"].update(sideways={}), "unknown direction 'sideways'"),
        (lambda d: _up(d).pop("sessions"), "lac_to_lns: missing 'sessions'"),
        (lambda d: _up(d)["sessions"][0].update(tunnel_id=70000), "sessions[0]: tunnel_id=70000"),
        (lambda d: _up(d)["sessions"][0].update(out_ns="5"), "sessions[0]: out_ns='5'"),
        (lambda d: _up(d)["sessions"][1].pop("expected"), "sessions[1]: missing 'expected'"),
        (lambda d: _up(d)["sessions"][0].update(flow={"a": 1}), "not a saved flow"),
        (lambda d: _up(d).update(sessions=5), "bad content"),
        (lambda d: _up(d).update(tunnels=[[1, 2]]), "tunnels[0]"),
        (lambda d: d.update(extra=[]), "extra"),
        (lambda d: d.update(saved_at="yesterday"), "saved_at"),
    ],
)
def test_bad_contents_are_reported(tmp_path: Path, change: object, expected: str) -> None:
    document = valid_document(tmp_path)
    change(document)  # type: ignore[operator]
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document))
    result = load_state(path)
    assert isinstance(result, str)
    assert str(path) in result and expected in result


def test_truncated_and_garbage_files_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(busy_engine().snapshot(), path, {})
    whole = path.read_bytes()
    for cut in range(0, len(whole) - 1, max(1, len(whole) // 40)):
        path.write_bytes(whole[:cut])
        result = load_state(path)
        assert isinstance(result, str) and "corrupt or truncated" in result, (cut, result)
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert "corrupt" in str(load_state(path))
    path.write_text("[1, 2, 3]")
    assert "not an l2tpreorder state file" in str(load_state(path))
    path.write_text("[" * 100_000)
    assert isinstance(load_state(path), str)


def test_unreadable_path_is_reported(tmp_path: Path) -> None:
    result = load_state(tmp_path)  # a directory
    assert isinstance(result, str) and "cannot read" in result


def test_stale_file_is_reported(tmp_path: Path) -> None:
    document = valid_document(tmp_path)
    document["saved_at"] = time.time() - 7200
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document))
    assert isinstance(load_state(path), SavedState)
    result = load_state(path, max_age=600)
    assert isinstance(result, str) and "older than 600 s" in result


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_load_never_raises_on_random_bytes(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "random-state.json"
    path.write_bytes(raw)
    result = load_state(path)  # no exception escapes: that is the property
    assert isinstance(result, str) and result.startswith(f"state file {path}: "), result


# --- restoring: valid-format files whose `extra` is anything JSON can hold ------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
HOSTS = st.sampled_from(["127.0.0.1", "127.0.0.2", "::1", "fe80::1%lo", "0.0.0.0", "x", ""])
PORTS = st.integers(-1, 70000) | st.sampled_from([0, 1, 65535, 65536])


def _addr(port: st.SearchStrategy[int]) -> st.SearchStrategy[object]:
    pair = st.lists(HOSTS | JSON, min_size=2, max_size=2).map(tuple) | st.tuples(HOSTS, port)
    return pair.map(list) | st.tuples(HOSTS, port, PORTS, PORTS).map(list) | JSON


def _peer_entries(listen_port: int) -> st.SearchStrategy[object]:
    """Entries as Relay.save_state writes them, then with one field (or none) made arbitrary."""
    pktinfo = "00000000" + "7f000001" + "00000000"  # IP_PKTINFO as _reply_cmsg builds it
    valid = st.fixed_dictionaries(
        {
            "addr": st.tuples(st.sampled_from(["127.0.0.1", "127.0.0.2"]), st.integers(1, 65535)),
            "listen": st.just(("127.0.0.1", listen_port)),
            "upstream": st.tuples(st.just("127.0.0.1"), st.integers(20000, 60000)),
            "cmsg": st.sampled_from([None, [[0, 8, pktinfo]]]),
        }
    ).map(lambda e: {k: list(v) if isinstance(v, tuple) else v for k, v in e.items()})
    wrong = {
        "addr": _addr(PORTS),
        "listen": _addr(st.just(listen_port)),
        "upstream": st.tuples(st.just("127.0.0.1"), PORTS).map(list) | _addr(PORTS),
        "cmsg": JSON | st.tuples(PORTS, PORTS, st.text("0123456789abcdef", max_size=48)).map(
            lambda c: [list(c)]
        ),
    }

    @st.composite
    def entry(draw: st.DrawFn) -> object:
        item: dict[str, object] = draw(valid)
        field = draw(st.sampled_from([None, None, "addr", "listen", "upstream", "cmsg", "drop"]))
        if field == "drop":
            del item[draw(st.sampled_from(sorted(item)))]
        elif field is not None:
            item[field] = draw(wrong[field])
        return item

    return entry() | JSON


@pytest.fixture(scope="module")
def restore_ports() -> tuple[int, int]:
    from tests.daemon_harness import free_udp_port

    return free_udp_port(), free_udp_port()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_restore_never_raises_on_any_extra(
    tmp_path_factory: pytest.TempPathFactory,
    restore_ports: tuple[int, int],
    data: st.DataObject,
) -> None:
    """Whatever `extra` a valid-format file carries, Relay.restore_extra reports and goes on."""
    import asyncio

    from l2tpreorder.config import config_from_dict
    from l2tpreorder.daemon.relay.adapter import Relay

    listen, lns = restore_ports
    peers = data.draw(st.lists(_peer_entries(listen), max_size=4) | JSON, label="peers")
    down = data.draw(JSON | st.just({"sessions": [], "tunnels": []}), label="lns_to_lac")
    extra = data.draw(st.dictionaries(st.text(max_size=6), JSON), label="extra")
    extra.update(peers=peers, lns_to_lac=down)
    path = tmp_path_factory.getbasetemp() / "fuzz-state.json"
    save_state(busy_engine().snapshot(), path, extra)
    saved = load_state(path)
    assert isinstance(saved, SavedState)
    config = config_from_dict(
        {
            "listen": [f"127.0.0.1:{listen}"],
            "lns": f"127.0.0.1:{lns}",
            "allow": ["127.0.0.0/8"],
            "reorder": {"lns_to_lac": True},
            "max_peers": 2,
        }
    )
    loop = asyncio.new_event_loop()
    relay = Relay(config, loop=loop)
    try:
        relay.bind()
        now = relay.clock()
        restored = relay.restore_extra(saved.extra, now)  # must not raise
        sessions = saved.restore(relay.pipeline, now).total  # nor this
        assert sessions >= 2  # the two lac_to_lns sessions, whatever extra held
        assert restored == f" and {len(relay.peers)} LAC peers (with their upstream ports)"
        assert len(relay.peers) <= 2
    finally:
        relay.close()
        loop.close()


def test_5_a_restart_remembers_recently_ended_sessions(tmp_path: Path) -> None:
    """Issue 11 item 5: a spoofed CDN, then a restart within 120 s: the LAC's stream carries on
    and the LNS's renumbered Ns go on without a jump (502 -> 503, not 502 -> 522)."""
    e = Pipeline(EngineConfig(reorder_timeout=0.05))
    for ns in range(500, 510):
        e.from_lac(data(3, 4, ns), LAC, 0.0)
    e.from_lac(data(3, 4, 520), LAC, 0.01)  # 510..519 lost
    e.expire(0.1)
    cdn = build_control(3, 4, 7, 7, [avp_message_type(MessageType.CDN)])
    e.from_lac(cdn, LAC, 1.0)  # spoofed: the LNS keeps the session
    assert e.directions()[LAC_TO_LNS].session(LAC, 3, 4) is None
    sent = out_ns(e)
    assert sent == list(range(500, 511))
    e.flush(2.0)
    path = tmp_path / "state.json"
    assert save_state(e.snapshot(), path, {}) == 0  # no live session, but the memory is saved
    loaded = load_state(path)
    assert isinstance(loaded, SavedState)
    fresh = Pipeline(EngineConfig(reorder_timeout=0.05))
    assert loaded.restore(fresh, 50.0).total == 0
    fresh.from_lac(data(3, 4, 515), LAC, 50.1)  # in flight: given up before the restart
    fresh.from_lac(data(3, 4, 521), LAC, 50.1)
    fresh.from_lac(data(3, 4, 522), LAC, 50.2)
    assert out_ns(fresh) == [511, 512, 513]  # 515 delivered late (known given up), then 521, 522
    c = fresh.counters
    assert (c.forwarded_late, c.sessions_continued) == (1, 1)


# --- both directions (issue 20): one file, one snapshot, one restore -------------------------


def test_both_directions_are_saved_and_restored(tmp_path: Path) -> None:
    """With LNS-to-LAC reordering the file holds both directions; a restart continues the
    LAC's numbering towards the LNS and the LNS's numbering towards the LAC."""
    e = busy_engine(both=True)
    e.flush(3.0)
    path = tmp_path / "state.json"
    assert save_state(e.snapshot(), path, {}) == 3  # two sessions up, one down
    assert set(json.loads(path.read_text())["directions"]) == {LAC_TO_LNS, LNS_TO_LAC}
    loaded = load_state(path)
    assert isinstance(loaded, SavedState)
    fresh = Pipeline(EngineConfig(reorder_timeout=0.05), reorder_from_lns=True)
    restored = loaded.restore(fresh, 0.0)
    assert (restored.sessions, restored.ignored) == ({LAC_TO_LNS: 2, LNS_TO_LAC: 1}, {})
    down = fresh.directions()[LNS_TO_LAC].session(LAC, 8, 9)
    assert down is not None and (down.expected, down.out_ns) == (7004, 7003)
    fresh.from_lns(data(8, 9, 7004), LAC, 0.1)  # renumbered to follow the LAC's last Ns
    out = [o for o in fresh.take_output() if not o.to_lns]
    header = parse_header(out[-1].data)
    assert not isinstance(header, str) and header.ns == 7003


def test_a_saved_direction_that_is_off_now_is_ignored_and_said(tmp_path: Path) -> None:
    e = busy_engine(both=True)
    e.flush(3.0)
    path = tmp_path / "state.json"
    save_state(e.snapshot(), path, {})
    loaded = load_state(path)
    assert isinstance(loaded, SavedState)
    restored = loaded.restore(Pipeline(EngineConfig()), 0.0)
    assert (restored.sessions, restored.ignored) == ({LAC_TO_LNS: 2}, {LNS_TO_LAC: 1})


def _version_1(document: dict[str, Any], lns_to_lac: object) -> dict[str, Any]:
    """The same state as version 1 wrote it: one engine at the top level, and the relay's
    LNS-to-LAC engine (or None) in `extra.lns_to_lac`; in-path files had no such key."""
    old = {k: v for k, v in document.items() if k != "directions"}
    old.update(version=1, **document["directions"][LAC_TO_LNS])
    if lns_to_lac is not ...:
        old["extra"] = {**old["extra"], "lns_to_lac": lns_to_lac}
    return old


@pytest.mark.parametrize("shape", ["inpath", "relay_one_way", "relay_both"])
def test_version_1_files_are_still_read(tmp_path: Path, shape: str) -> None:
    e = busy_engine(both=True)
    e.flush(3.0)
    path = tmp_path / "state.json"
    save_state(e.snapshot(), path, {"queue": 0})
    document = json.loads(path.read_text())
    down = document["directions"][LNS_TO_LAC]
    lns_to_lac = {"inpath": ..., "relay_one_way": None, "relay_both": down}[shape]
    path.write_text(json.dumps(_version_1(document, lns_to_lac)))
    loaded = load_state(path)
    assert isinstance(loaded, SavedState), loaded
    fresh = Pipeline(EngineConfig(), reorder_from_lns=True)
    restored = loaded.restore(fresh, 0.0).sessions
    both = {LAC_TO_LNS: 2, LNS_TO_LAC: 1}
    assert restored == (both if shape == "relay_both" else {LAC_TO_LNS: 2})
    up = fresh.directions()[LAC_TO_LNS].session(LAC, 3, 4)
    assert up is not None and (up.expected, up.out_ns) == (107, 104)


def test_a_version_1_files_broken_lns_to_lac_part_costs_only_that_direction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The old relay restored its LAC-to-LNS sessions when `extra.lns_to_lac` was unreadable;
    reading a version 1 file now must not lose more than that either."""
    e = busy_engine(both=True)
    e.flush(3.0)
    path = tmp_path / "state.json"
    save_state(e.snapshot(), path, {})
    document = json.loads(path.read_text())
    path.write_text(json.dumps(_version_1(document, {"sessions": "garbage"})))
    loaded = load_state(path)
    assert isinstance(loaded, SavedState), loaded
    restored = loaded.restore(Pipeline(EngineConfig(), reorder_from_lns=True), 0.0).sessions
    assert restored == {LAC_TO_LNS: 2}
    assert "ignoring its LNS-to-LAC part" in caplog.text
