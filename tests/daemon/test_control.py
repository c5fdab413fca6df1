"""`l2tpreorder status` and `reload` against a real daemon through its real control socket."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l2tpreorder.commands.status import format_table
from l2tpreorder.daemon.control import socket_candidates
from tests.conftest import PROJECT_ROOT, need
from tests.daemon.test_daemon import T_LNS, base_config, data, payload_of
from tests.daemon_harness import WAIT, Daemon, free_udp_port, recv, udp
from tests.unprivileged import OpenCopy

pytestmark = pytest.mark.integration


def cli(*args: str, user: OpenCopy | None = None) -> subprocess.CompletedProcess[str]:
    """`l2tpreorder ARGS`, as root from the clone, or as `user`'s copy says (another user
    cannot be assumed to read the clone: tests/unprivileged.py)."""
    if user is None:
        return subprocess.run(
            [sys.executable, "-m", "l2tpreorder", *args],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=WAIT * 3, check=False,
        )  # fmt: skip
    return subprocess.run(
        user.argv(*args),
        cwd=user.cwd, env=user.env(), capture_output=True, text=True, timeout=WAIT * 3,
        check=False,
    )  # fmt: skip


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, dict[str, Any], int, int]]:
    listen, lns_port = free_udp_port(), free_udp_port()
    sock = tmp_path / "ctl" / "control.sock"
    sock.parent.mkdir(mode=0o700)
    cfg = base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", control_socket=str(sock))
    d = Daemon(tmp_path, cfg)
    try:
        d.ready()
        yield d, cfg, listen, lns_port
    finally:
        d.stop()


def status_json(d: Daemon) -> dict[str, Any]:
    r = cli("status", "--config", str(d.config_path), "--json")
    assert r.returncode == 0, r.stderr
    answer: dict[str, Any] = json.loads(r.stdout)
    return answer


def test_status_lists_peers_and_sessions_with_held_packets(daemon) -> None:
    d, _, listen, lns_port = daemon
    lns = udp(port=lns_port)
    lac = udp()
    relay = ("127.0.0.1", listen)
    lac.sendto(data(0), relay)
    _, upstream = recv(lns)
    lac.sendto(data(2), relay)  # held: Ns 1 is missing (60 s timeout)
    lac.sendto(data(3), relay)
    lac.sendto(data(5, session_id=7), relay)
    # A new session's first packet passes at once; once it is out, 2 and 3 were read too.
    assert payload_of(recv(lns)[0])[0] == 5

    answer = status_json(d)
    assert answer["ok"] is True
    assert answer["pid"] == d.proc.pid
    (peer,) = answer["peers"]
    assert peer["lac"] == f"127.0.0.1:{lac.getsockname()[1]}"
    assert peer["upstream"] == f"{upstream[0]}:{upstream[1]}", "the address xl2tpd sees"
    by_id = {(s["tunnel_id"], s["session_id"]): s for s in peer["sessions"]}
    assert set(by_id) == {(T_LNS, 200), (T_LNS, 7)}
    s = by_id[(T_LNS, 200)]
    assert (s["packets"], s["held"], s["reordered"]) == (3, 2, 0)
    assert s["timeout_ms"] == 60000
    assert answer["totals"]["held"] == 2

    lac.sendto(data(1), relay)
    for ns in (1, 2, 3):
        assert payload_of(recv(lns)[0])[0] == ns
    s = {(x["tunnel_id"], x["session_id"]): x for x in status_json(d)["peers"][0]["sessions"]}[
        (T_LNS, 200)
    ]
    assert (s["packets"], s["held"], s["reordered"]) == (4, 0, 2)

    table = cli("status", "--config", str(d.config_path))
    assert table.returncode == 0, table.stderr
    seen = f"LAC 127.0.0.1:{lac.getsockname()[1]}  seen by the LNS as {upstream[0]}:{upstream[1]}"
    assert seen in table.stdout
    assert "1 LAC peer, 2 sessions, 0 held now" in table.stdout


def test_reload_applies_a_good_file_and_refuses_a_broken_one(daemon) -> None:
    d, cfg, _, _ = daemon
    cfg["reorder"]["timeout_ms"] = 250
    d.write_config(cfg)
    r = cli("reload", "--config", str(d.config_path))
    assert r.returncode == 0, r.stderr
    assert "reorder timeout 250 ms" in r.stdout
    # Answered after it was applied: status already shows the new value, no waiting.
    assert "reorder timeout 250 ms" in status_json(d)["status"]

    sock = cfg["control_socket"]
    d.config_path.write_text(f"control_socket: {sock}\nreorder:\n  timeout_ms: soon\n")
    r = cli("reload", "--config", str(d.config_path))
    assert r.returncode == 1
    assert "reorder.timeout_ms = 'soon'" in r.stderr
    # Broken YAML: the client still finds the socket, the daemon names the syntax error.
    d.config_path.write_text(f"control_socket: '{sock}'\nreorder: [\n")
    r = cli("reload", "--config", str(d.config_path))
    assert r.returncode == 1, r.stderr
    assert "line 3, column 1" in r.stderr, r.stderr  # config.YamlSyntaxError: where, as an editor
    assert "reorder timeout 250 ms" in status_json(d)["status"], "kept the running config"
    assert d.proc.poll() is None


def test_unreachable_daemon_is_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"control_socket: {tmp_path / 'none.sock'}\n")
    for command in ("status", "reload"):
        r = cli(command, "--config", str(cfg))
        assert r.returncode == 2
        assert "is l2tpreorder running?" in r.stderr


def test_socket_is_0600_and_removed_at_exit(daemon) -> None:
    d, cfg, _, _ = daemon
    path = cfg["control_socket"]
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert d.terminate() == 0
    assert not os.path.exists(path)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own tmp dirs are 0700 up the tree), so only
    the modes under test keep another user out."""
    path = Path(tempfile.mkdtemp(prefix="l2rx-ctl-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nobody_copy(open_dir: Path) -> OpenCopy:
    """The package as nobody can run it, wherever the clone sits (tests/unprivileged.py)."""
    need(os.geteuid() == 0, "root (to run l2tpreorder as another user)")
    nobody = pwd.getpwnam("nobody")
    return OpenCopy(open_dir / "nobody-python", nobody.pw_uid, nobody.pw_gid)


def test_another_user_cannot_connect(open_dir: Path, nobody_copy: OpenCopy) -> None:
    tmp_path = open_dir
    listen, lns_port = free_udp_port(), free_udp_port()
    sock = tmp_path / "control.sock"
    cfg = base_config([f"127.0.0.1:{listen}"], f"127.0.0.1:{lns_port}", control_socket=str(sock))
    (tmp_path / "peek.yaml").write_text(f"control_socket: {sock}\n")
    os.chmod(tmp_path / "peek.yaml", 0o644)
    d = Daemon(tmp_path, cfg)
    try:
        d.ready()
        r = cli("status", "--config", str(tmp_path / "peek.yaml"), user=nobody_copy)
        assert r.returncode == 2, (r.stdout, r.stderr)
        # Refused at connect() by the socket's mode (the file and directory are readable).
        assert f"{sock}: Permission denied" in r.stderr
        assert cli("status", "--config", str(tmp_path / "peek.yaml")).returncode == 0
    finally:
        d.stop()


def test_default_socket_paths_follow_runtime_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/x")
    assert socket_candidates(None)[:2] == ["/run/x/control.sock", "/run/l2tpreorder/control.sock"]
    assert socket_candidates("/a/b.sock") == ["/a/b.sock"]
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    assert socket_candidates(None) == [
        "/run/l2tpreorder/control.sock",
        f"/tmp/l2tpreorder-{os.getuid()}/control.sock",
    ]


def test_table_uses_singular_and_plural() -> None:
    answer = {"pid": 1, "uptime_s": 2, "totals": {"peers": 1, "sessions": 1, "held": 0}}
    assert "1 LAC peer, 1 session, 0 held now" in format_table(answer)


def test_unprivileged_daemon_with_the_example_config_serves_status(
    open_dir: Path, nobody_copy: OpenCopy
) -> None:
    """`make run` as an ordinary user: no /run access, so /tmp/l2tpreorder-UID/control.sock."""
    nobody = pwd.getpwnam("nobody")
    tmp_path = open_dir
    example = (PROJECT_ROOT / "config.example.yaml").read_text()
    config = tmp_path / "example.yaml"
    config.write_text(example.replace("enabled: true", "enabled: false"))
    os.chmod(config, 0o644)
    listen, lns_port = free_udp_port(), free_udp_port()
    cmd = nobody_copy.argv(
        "run", "--config", str(config),
        "--listen", f"127.0.0.1:{listen}", "--lns", f"127.0.0.1:{lns_port}",
    )  # fmt: skip
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=nobody_copy.cwd, env=nobody_copy.env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + WAIT * 2
        while (found := re.search(r"control socket: (\S+)", log.read_text())) is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        sock = Path(found.group(1))
        # /tmp/l2tpreorder-UID, or /run/l2tpreorder if it exists and is the user's already.
        assert str(sock) in (
            "/run/l2tpreorder/control.sock",
            f"/tmp/l2tpreorder-{nobody.pw_uid}/control.sock",
        )
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
        assert os.stat(sock).st_uid == nobody.pw_uid
        r = cli("status", "--config", str(config), "--json", user=nobody_copy)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["pid"] == proc.pid
    finally:
        proc.terminate()
        proc.wait(WAIT)
    assert not sock.exists(), "removed at exit"
    with contextlib.suppress(OSError):
        sock.parent.rmdir()  # the directory the daemon created for this test
