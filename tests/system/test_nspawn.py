"""The Debian package under Debian 12's real systemd, booted in systemd-nspawn.

Builds the .deb (`make deb`), boots a cached Debian 12 minbase root (tests/system/rootfs.py),
installs the package with apt and checks what only a real systemd can show: readiness with its
Status= text, the sandbox the unit really gets, relaying and reordering, reload that waits and
fails for a broken file, the watchdog, stop/start and reboot with the state file, a config error
that ends in `failed` at error priority, and the security score of the loaded unit.
The tests share one container and run in file order; each sets the configuration it needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_root, need_tool
from tests.daemon.test_systemd import SECURITY_THRESHOLD
from tests.system.nspawn import Container
from tests.system.rootfs import ensure_tarball, unpack

# The first test pays for the fixture: on a fresh machine that includes debootstrap (~90-150 s).
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

UNIT = "l2tpreorder.service"
CONFIG = "etc/l2tpreorder/config.yaml"
STATE = "/var/lib/l2tpreorder/state.json"
AGENT = "python3 /root/agent.py"
CAP_NET_BIND_SERVICE = 1 << 10


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, built_deb: Path) -> Iterator[Container]:
    need_root()
    for tool in ("systemd-nspawn", "nsenter", "debootstrap", "tar"):
        need_tool(tool)
    work = tmp_path_factory.mktemp("nspawn")
    deb = built_deb
    root = work / "root"
    container = Container(root, f"l2r{os.getpid()}", work / "console.log")
    try:
        unpack(ensure_tarball(), root)
        shutil.copy(deb, root / "root" / deb.name)
        shutil.copy(Path(__file__).with_name("agent.py"), root / "root/agent.py")
        container.boot()
        # The container has no network: the package's dependencies are in the cached root
        # already (rootfs.DEB_DEPENDS), and apt still checks them.
        container.sh(f"apt-get install -y /root/{deb.name}", timeout=300)
        state = container.show(UNIT, "ActiveState", "UnitFileState")
        assert state == {"ActiveState": "inactive", "UnitFileState": "disabled"}, state
        yield container
    finally:
        container.stop()
        shutil.rmtree(root, ignore_errors=True)


def configure(box: Container, timeout_ms: int = 100, **extra: str) -> None:
    """Write the daemon's config file (from the host: the container's / is box.root)."""
    text = (
        "listen: ['0.0.0.0:1701']\nlns: '127.0.0.1:1702'\n"
        f"allow: [{extra.pop('allow', '127.0.0.0/8')}]\n"
        f"reorder: {{timeout_ms: {timeout_ms}}}\nmetrics: {{enabled: false}}\n"
    )
    text += "".join(f"{key}: {value}\n" for key, value in extra.items())
    (box.root / CONFIG).write_text(text)


def restart(box: Container) -> None:
    box.sh(f"systemctl reset-failed {UNIT}; systemctl restart {UNIT}")


def lns_listen(box: Container, count: int, seconds: float = 30.0) -> subprocess.Popen[str]:
    """The test's LNS inside the container, once it is bound."""
    proc = box.popen(f"{AGENT} lns {count} {seconds}")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def lns_received(proc: subprocess.Popen[str]) -> list[tuple[int, str]]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return [(d["ns"], d["payload"]) for d in map(json.loads, out.splitlines())]


def lac_send(box: Container, session_id: int, *ns: int) -> None:
    """Data packets of one session (tunnel 7): each test uses its own session, as sessions
    live on across restarts through the state file."""
    box.sh(f"{AGENT} lac {session_id} {' '.join(map(str, ns))}")


def p(ns: int) -> str:
    return f"p{ns:07d}"


def test_start_reaches_active_through_ready_with_status(box: Container) -> None:
    configure(box)
    box.sh(f"systemctl start {UNIT}")  # Type=notify: returns once READY=1 arrived
    s = box.show(UNIT, "ActiveState", "SubState", "StatusText", "Type", "NRestarts")
    assert s["Type"] == "notify" and (s["ActiveState"], s["SubState"]) == ("active", "running")
    assert s["StatusText"].startswith("relaying 0.0.0.0:1701 -> 127.0.0.1:1702"), s
    assert s["NRestarts"] == "0"


def test_runs_as_a_dynamic_user_with_only_cap_net_bind_service(box: Container) -> None:
    pid = box.show(UNIT, "MainPID")["MainPID"]
    status = box.sh(f"cat /proc/{pid}/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    uids = {int(u) for u in fields["Uid"].split()}
    assert len(uids) == 1 and 61184 <= uids.pop() <= 65519, fields["Uid"]  # DynamicUser range
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == CAP_NET_BIND_SERVICE, (cap, fields[cap])
    assert box.sh(f"ps -o user= -p {pid}").stdout.strip() == "l2tpreorder"
    assert fields["NoNewPrivs"].strip() == "1"


def test_relays_and_reorders_on_the_containers_loopback(box: Container) -> None:
    configure(box, timeout_ms=2000)
    restart(box)
    lns = lns_listen(box, 6)
    lac_send(box, 1, 0, 2, 1, 3, 5, 4)
    got = lns_received(lns)
    assert [payload for _, payload in got] == [p(n) for n in range(6)]
    assert [ns for ns, _ in got] == list(range(6))  # renumber: contiguous


def test_reload_waits_applies_and_fails_for_a_broken_file(box: Container) -> None:
    configure(box, timeout_ms=100)
    restart(box)
    pid = box.show(UNIT, "MainPID")["MainPID"]
    configure(box, timeout_ms=250)
    box.sh(f"systemctl reload {UNIT}")
    # No polling: `systemctl reload` returned after the daemon applied the file.
    assert box.show(UNIT, "StatusText")["StatusText"].endswith("reorder timeout 250 ms")
    (box.root / CONFIG).write_text("reorder: {timeout_ms: -1}\n")
    res = box.sh(f"systemctl reload {UNIT}", check=False)
    assert res.returncode != 0, "a refused file must fail `systemctl reload`"
    s = box.show(UNIT, "ActiveState", "MainPID", "StatusText")
    assert s["ActiveState"] == "active" and s["MainPID"] == pid
    assert s["StatusText"].endswith("reorder timeout 250 ms")


def test_watchdog_restarts_a_stopped_daemon_but_not_a_loaded_one(box: Container) -> None:
    need_tool("stress-ng")
    configure(box)
    restart(box)
    before = box.show(UNIT, "MainPID", "NRestarts")
    # Load: both host CPUs busy for 2.5 x WatchdogSec, and the daemon itself reordering a flood.
    stress = subprocess.Popen(
        ["stress-ng", "--cpu", "2", "--timeout", "25s", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        flood = json.loads(box.sh(f"{AGENT} flood 25", timeout=120).stdout)
    finally:
        stress.wait(timeout=120)
    assert flood["sent"] > 1000 and flood["received"] > 0, flood
    assert box.show(UNIT, "MainPID", "NRestarts") == before, "the watchdog fired under load"
    cursor = box.journal_cursor()
    box.sh(f"kill -STOP {before['MainPID']}")
    box.wait_for(
        "the watchdog to kill and restart the stopped daemon",
        lambda: (s := box.show(UNIT, "MainPID", "NRestarts", "ActiveState"))["ActiveState"]
        == "active"
        and s["MainPID"] not in ("0", before["MainPID"])
        and int(s["NRestarts"]) == int(before["NRestarts"]) + 1,
        timeout=90,
    )
    assert "Watchdog timeout" in box.journal(f"-u {UNIT}", cursor)


def test_stop_delivers_held_packets_saves_state_and_next_start_continues(box: Container) -> None:
    configure(box, timeout_ms=60000)
    restart(box)
    lns = lns_listen(box, 2)
    lac_send(box, 2, 0, 2)  # 2 waits for 1, up to a minute
    box.wait_for("Ns 2 to be held", lambda: _held(box) == 1, timeout=30)
    box.sh(f"systemctl stop {UNIT}")
    s = box.show(UNIT, "ExecMainStatus", "Result", "ActiveState")
    assert (s["ExecMainStatus"], s["Result"], s["ActiveState"]) == ("0", "success", "inactive")
    assert lns_received(lns) == [(0, p(0)), (1, p(2))]  # delivered at stop, renumbered
    assert box.sh(f"test -s {STATE}", check=False).returncode == 0, "no state file written"
    cursor = box.journal_cursor()
    box.sh(f"systemctl start {UNIT}")
    assert re.search(r"restored [1-9]\d* sessions", box.journal(f"-u {UNIT}", cursor))
    assert box.sh(f"test -e {STATE}", check=False).returncode != 0, "state file not consumed"
    lns = lns_listen(box, 1)
    lac_send(box, 2, 3)
    assert lns_received(lns) == [(2, p(3))], "the LNS's Ns continue across the restart"


def _held(box: Container) -> int:
    res = box.sh("l2tpreorder status --json --config /etc/l2tpreorder/config.yaml", check=False)
    return int(json.loads(res.stdout)["totals"]["held"]) if res.returncode == 0 else -1


def test_config_error_at_start_fails_without_restart_loop_reason_at_err(box: Container) -> None:
    box.sh(f"systemctl stop {UNIT}")
    (box.root / CONFIG).write_text("reorder: {timeout_ms: fast}\n")
    cursor = box.journal_cursor()
    res = box.sh(f"systemctl start {UNIT}", check=False)
    assert res.returncode != 0
    s = box.show(UNIT, "ActiveState", "SubState", "ExecMainStatus", "NRestarts", "Result")
    # `failed` at once: an automatic restart would show activating/auto-restart here.
    assert (s["ActiveState"], s["SubState"], s["ExecMainStatus"]) == ("failed", "failed", "78"), s
    assert s["NRestarts"] == "0"
    errors = box.journal(f"-u {UNIT} -p err", cursor)
    assert re.search(r"l2tpreorder: error: /etc/l2tpreorder/config.yaml: .*timeout_ms", errors), (
        errors
    )
    configure(box)
    restart(box)


def test_journal_has_priorities_and_no_second_timestamp(box: Container) -> None:
    configure(box, allow="0.0.0.0/0")  # with a wildcard listen: a warning at start
    cursor = box.journal_cursor()
    restart(box)
    entries = [
        json.loads(line)
        for line in box.sh(
            f"journalctl --no-pager -q -o json --cursor='{cursor}' -u {UNIT} -t l2tpreorder"
        ).stdout.splitlines()
    ]
    by_priority: dict[str, list[str]] = {}
    for e in entries:
        by_priority.setdefault(e["PRIORITY"], []).append(e["MESSAGE"])
    assert any(m.startswith("relaying ") for m in by_priority.get("6", [])), by_priority
    warnings = by_priority.get("4", [])
    assert any("`relay.allow` accepts every source" in m for m in warnings), by_priority
    for e in entries:
        assert not re.match(r"<\d>|\d{4}-\d\d-\d\d", e["MESSAGE"]), e["MESSAGE"]


def test_upgrade_restarts_a_running_relay(box: Container) -> None:
    """A fresh install started nothing (the fixture's install; test 1 started it by hand); an
    upgrade (here a reinstall) restarts the running relay so the new code runs."""
    pid = box.show(UNIT, "MainPID")["MainPID"]
    box.sh("apt-get install -y --reinstall /root/l2tpreorder_*_all.deb", timeout=300)
    s = box.show(UNIT, "MainPID", "ActiveState")
    assert s["ActiveState"] == "active" and s["MainPID"] not in ("0", pid), s


def test_security_score_of_the_loaded_unit(box: Container) -> None:
    res = box.sh(f"systemd-analyze security --no-pager {UNIT}", check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert match, res.stdout + res.stderr
    assert float(match.group(1)) <= SECURITY_THRESHOLD, res.stdout


def test_enabled_unit_comes_back_after_reboot_with_its_state(box: Container) -> None:
    configure(box)
    box.sh(f"systemctl enable {UNIT}")
    restart(box)
    lns = lns_listen(box, 2)
    lac_send(box, 3, 0, 1)
    assert [ns for ns, _ in lns_received(lns)] == [0, 1]
    assert box.poweroff() == 0
    box.boot()
    assert box.show(UNIT, "ActiveState")["ActiveState"] == "active"
    journal = box.sh(f"journalctl -b -q -o cat -u {UNIT}").stdout
    assert re.search(r"restored [1-9]\d* sessions", journal), journal
    lns = lns_listen(box, 1)
    lac_send(box, 3, 2)
    assert lns_received(lns) == [(2, p(2))], "the LNS's Ns continue across the reboot"
