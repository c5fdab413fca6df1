"""The in-path unit: only CAP_NET_ADMIN, netlink allowed, verified and scored by systemd-analyze."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from l2tpreorder.cli import build_parser
from l2tpreorder.daemon.inpath.supervisor import STOP_TIMEOUT
from l2tpreorder.daemon.service import EX_CONFIG
from tests.conftest import PROJECT_ROOT, need_tool
from tests.daemon.test_systemd import install_man_pages

UNIT = PROJECT_ROOT / "systemd" / "l2tpreorder-inpath.service"
# Scores 1.5 here (relay unit: 1.4): the difference is AF_NETLINK and CAP_NET_ADMIN, which the
# kernel requires for binding a queue and for every verdict.
SECURITY_THRESHOLD = 2.0


def settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_only_net_admin_and_netlink() -> None:
    s = settings()
    assert s["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    assert s["AmbientCapabilities"] == ["CAP_NET_ADMIN"]
    assert "AF_NETLINK" in s["RestrictAddressFamilies"][0].split()
    assert s["DynamicUser"] == ["yes"] and s["Type"] == ["notify"]
    assert s["Conflicts"] == ["l2tpreorder.service"]
    argv = shlex.split(s["ExecStart"][0])
    assert build_parser().parse_args(argv[1:]).command == "run"


def test_stop_timeout_outlasts_the_supervisors_own() -> None:
    """systemd must not SIGKILL workers while they still release held packets: the unit's
    TimeoutStopSec exceeds the supervisor's wait for its workers (with room to spare)."""
    (value,) = settings()["TimeoutStopSec"]
    assert re.fullmatch(r"\d+", value), value  # plain seconds: compared below as such
    assert int(value) >= STOP_TIMEOUT + 5, (value, STOP_TIMEOUT)


def test_a_config_error_is_not_restarted() -> None:
    """Exit EX_CONFIG (78) means a wrong configuration: Restart=on-failure must not loop."""
    s = settings()
    assert s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == [str(EX_CONFIG)]


def test_execreload_waits_for_every_worker() -> None:
    """ExecReload asks over the control socket (and waits for every worker), not `kill -HUP`;
    RuntimeDirectory= gives that socket its place (/run is read-only under ProtectSystem)."""
    s = settings()
    argv = shlex.split(s["ExecReload"][0])
    assert argv[0] == shlex.split(s["ExecStart"][0])[0]
    args = build_parser().parse_args(argv[1:])
    assert args.command == "reload" and args.config == "/etc/l2tpreorder/config.yaml"
    assert s["RuntimeDirectory"] == ["l2tpreorder"]


def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    tool = need_tool("systemd-analyze")
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    for program in ("/usr/local/bin/l2tpreorder", "/bin/kill"):
        target = root / program.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
    install_man_pages(root)  # its Documentation= man: pages, as the package installs them
    res = subprocess.run(
        [tool, "verify", f"--root={root}", UNIT.name], capture_output=True, text=True,
        timeout=60, env=dict(os.environ, MANPATH=f"{root}/usr/share/man"),
    )  # fmt: skip
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    res = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert match, res.stdout + res.stderr
    assert float(match.group(1)) <= SECURITY_THRESHOLD, res.stdout
