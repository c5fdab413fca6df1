"""One default configuration file for every command (issue 24, item 5): `run`, `status`,
`reload`, `check-config` and `rules` without `--config` all read /etc/l2tpreorder/config.yaml
when it exists, and `run` logs which file (or "built-in defaults") is in force.

The host's /etc is never touched: each command runs in a private mount namespace where /etc is
an overlay whose upper layer is the test's directory (and, for `run`, a private network
namespace and a private /run, so its default ports and control socket are its own).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, need_root, need_tool
from tests.netns import wait_until

pytestmark = [pytest.mark.integration]

DEFAULT = "/etc/l2tpreorder/config.yaml"
WAIT = 30.0

# In the new mount namespace: /etc as an overlay (the test's upper layer), optionally an empty
# /etc/l2tpreorder (no default file whatever the host has), a private /run, loopback up.
SETUP = """
set -e
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$UPPER,workdir=$WORK" /etc
if [ -n "$EMPTY" ]; then mkdir -p /etc/l2tpreorder; mount -t tmpfs none /etc/l2tpreorder; fi
mount -t tmpfs none /run
ip link set lo up
exec "$@"
"""


def private_etc(tmp: Path, config: dict[str, object] | None) -> dict[str, str]:
    """The overlay's layers: `config` (None: no default file) as its l2tpreorder/config.yaml."""
    upper, work = tmp / "upper", tmp / "work"
    work.mkdir()
    (upper / "l2tpreorder").mkdir(parents=True)
    if config is not None:
        (upper / "l2tpreorder" / "config.yaml").write_text(yaml.safe_dump(config))
    return {"UPPER": str(upper), "WORK": str(work), "EMPTY": "" if config is not None else "1"}


def wrapped(*argv: str) -> list[str]:
    need_root()
    need_tool("unshare")
    need_tool("ip")
    return [
        "unshare", "--mount", "--net", "--propagation", "private",
        "sh", "-c", SETUP, "sh", *argv,
    ]  # fmt: skip


def l2tpreorder(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        wrapped(sys.executable, "-m", "l2tpreorder", *args),
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip


def in_namespace_of(pid: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`l2tpreorder ARGS` in the mount and network namespaces of process `pid`."""
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "-n", sys.executable, "-m", "l2tpreorder", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip


def test_check_config_and_rules_read_the_default_file(tmp_path: Path) -> None:
    env = private_etc(tmp_path, {"mode": "inpath", "inpath": {"queue": 5}})
    checked = l2tpreorder(env, "check-config")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"# {DEFAULT}: OK"), checked.stdout
    assert "\nmode: inpath\n" in checked.stdout, checked.stdout
    rules = l2tpreorder(env, "rules")
    assert rules.returncode == 0, rules.stderr
    assert "--queue-num 5" in rules.stdout, rules.stdout


def test_without_a_default_file_check_config_says_so(tmp_path: Path) -> None:
    env = private_etc(tmp_path, None)
    checked = l2tpreorder(env, "check-config")
    assert checked.returncode == 2, checked.stdout
    assert f"{DEFAULT}, the default, does not exist" in checked.stderr, checked.stderr


def test_run_status_and_reload_use_the_default_file_and_run_says_which(tmp_path: Path) -> None:
    """A daemon started without --config runs the default file; status and reload without
    --config reach that daemon (its `control_socket` is named only in that file)."""
    config = {
        "relay": {"listen": ["127.0.0.1:1701"], "lns": "127.0.0.1:1702"},
        "metrics": {"port": 0},
        "reorder": {"timeout_ms": 70},
        "control_socket": "/run/l2tpreorder-test/control.sock",
    }
    env = private_etc(tmp_path, config)
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            wrapped("sh", "-c", 'mkdir -p /run/l2tpreorder-test && exec "$@"', "sh",
                    sys.executable, "-m", "l2tpreorder", "run"),
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until("the control socket line", lambda: "control socket:" in log.read_text(), WAIT)
        text = log.read_text()
        assert f"INFO config: {DEFAULT}\n" in text, text
        status = in_namespace_of(proc.pid, "status", "--json")
        assert status.returncode == 0, status.stderr
        answer = json.loads(status.stdout)
        assert answer["pid"] == proc.pid and answer["config"] == DEFAULT, answer
        reload = in_namespace_of(proc.pid, "reload")
        assert reload.returncode == 0, reload.stderr
        assert "reload: no setting changed" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(WAIT)


def test_run_without_any_file_says_it_runs_the_built_in_defaults(tmp_path: Path) -> None:
    env = private_etc(tmp_path, None)
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            wrapped(sys.executable, "-m", "l2tpreorder", "run", "--listen", "127.0.0.1:1701"),
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until("the metrics line", lambda: "metrics: http" in log.read_text(), WAIT)
        text = log.read_text()
        assert f"INFO config: built-in defaults (no --config, no {DEFAULT})\n" in text, text
        assert "metrics: http://127.0.0.1:17010/metrics" in text, text  # the new default port
    finally:
        proc.terminate()
        proc.wait(WAIT)
