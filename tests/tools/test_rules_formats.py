"""Issue 24 (12): `l2tpreorder rules --format iptables-restore|nft`, `--undo`, and no placeholder
ever printed as a runnable line. The iptables-restore files are loaded as printed (`--test`,
then for real) in namespaces of ours, a swapped stream is sent through the queue they feed (a
real in-path daemon orders it: INPUT on one host, FORWARD on a router, IPv4 and IPv6), and their
undo removes them. This kernel has no nft_queue: the nft file is loaded with `counter` in place
of `queue` and the packets it would queue are counted."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2tpreorder.cli import main as cli_main
from tests.conftest import need_root, need_tool
from tests.integration.inpath_helpers import InPathDaemon, data, frame_of, receive_all
from tests.integration.test_inpath_router import LAC4, LAC6, LNS4, LNS6, Router
from tests.netns import NetNs, wait_until

QUEUE = 5
ORDER = [0, 1, 3, 2, 4, 6, 5, 7, 8, 10, 9, 11]  # three swaps
FAMILIES = {4: "ipv4", 6: "ipv6"}


def rules(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    code = cli_main(["rules", "--config", str(config), *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"mode: inpath\ninpath:\n  queue: {QUEUE}\n")
    return path


def runnable(text: str) -> list[str]:
    """The lines a shell or a loader would run (comments and blank lines left out), stripped."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def restore(space: NetNs, version: int, text: str, *flags: str) -> None:
    """`ip netns exec NS iptables-restore [FLAGS] < FILE`, the file as printed."""
    tool = "iptables-restore" if version == 4 else "ip6tables-restore"
    subprocess.run(
        ["ip", "netns", "exec", space.name, tool, *flags],
        input=text, text=True, check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def listed(space: NetNs, version: int) -> str:
    tool = "iptables" if version == 4 else "ip6tables"
    return space.run(tool, "-S").stdout + space.run(tool, "-t", "raw", "-S").stdout


# --- what is printed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--undo"],
        ["--chain", "forward"],
        ["--format", "nft", "--chain", "input"],
        ["--format", "nft", "--chain", "forward", "--lns-ipv4", "198.18.12.1"],
        ["--format", "nft", "--chain", "forward", "--lns-ipv6", "fd00:12::1"],
        ["--format", "iptables-restore", "--chain", "input", "--family", "ipv4"],
        ["--format", "iptables-restore", "--chain", "input", "--family", "ipv6"],
        ["--format", "iptables-restore", "--chain", "forward", "--family", "ipv6",
         "--lns-ipv6", "fd00:12::1"],
    ],
)  # fmt: skip
def test_no_placeholder_is_ever_a_runnable_line(
    argv: list[str], config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = rules(capsys, config, *argv)
    assert code == 0
    assert runnable(out)
    assert not [line for line in runnable(out) if "LNS_IPV" in line], out
    for version in (4, 6):  # where an address is unknown, the option that gives it is named
        commented = [x for x in out.splitlines() if x.lstrip().startswith("#") and "LNS_IPV" in x]
        if f"LNS_IPV{version}" in "".join(commented):
            assert f"needs --lns-ipv{version} ADDR" in out, out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--format", "nft"], ["--format nft", "--chain input", "--chain forward"]),
        (["--format", "iptables-restore", "--chain", "input"],
         ["--format iptables-restore", "--family ipv4", "--family ipv6"]),
        (["--family", "ipv4"], ["--family", "--format iptables-restore"]),
        (["--format", "nft", "--chain", "input", "--family", "ipv6"],
         ["--family", "--format iptables-restore", "--format nft"]),
        (["--format", "iptables-restore", "--chain", "forward", "--family", "ipv4"],
         ["--chain forward", "--family ipv4", "--lns-ipv4 ADDR"]),
        (["--format", "nft", "--chain", "forward"],
         ["--chain forward", "--lns-ipv4", "--lns-ipv6"]),
        (["--chain", "input", "--lns-ipv6", "fd00::1"], ["--lns-ipv6", "--chain input"]),
    ],
)  # fmt: skip
def test_options_that_cannot_go_together_are_refused_naming_them(
    argv: list[str], words: list[str], config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = rules(capsys, config, *argv)
    assert code == 2 and out == "", out
    assert err.startswith("l2tpreorder: error: ") and err.count("\n") == 1, err
    assert all(word in err for word in words), err


def test_the_files_say_how_to_load_persist_and_undo(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, v4, _ = rules(capsys, config, "--format", "iptables-restore", "--chain", "input",
                     "--family", "ipv4")  # fmt: skip
    assert v4.startswith("# /etc/iptables/rules.v4 - iptables-restore format\n")
    for text in ("iptables-restore --noflush < FILE", "iptables-persistent", "REPLACES",
                 "netfilter-persistent", "--undo | iptables-restore --noflush"):  # fmt: skip
        assert text in v4, text
    _, v6, _ = rules(capsys, config, "--format", "iptables-restore", "--chain", "input",
                     "--family", "ipv6")  # fmt: skip
    assert v6.startswith("# /etc/iptables/rules.v6 - ip6tables-restore format\n")
    _, nft, _ = rules(capsys, config, "--format", "nft", "--chain", "input")
    assert nft.startswith("#!/usr/sbin/nft -f\n")
    for text in ("nftables.service", "nft_queue", "use --format iptables-restore",
                 "nft delete table inet l2tpreorder", "/etc/nftables.conf"):  # fmt: skip
        assert text in nft, text
    body = runnable(nft)
    assert body[:3] == ["table inet l2tpreorder", "delete table inet l2tpreorder",
                        "table inet l2tpreorder {"]  # fmt: skip
    assert [x for x in body if x.endswith(f"queue num {QUEUE} bypass")] == [
        "udp dport 1701 queue num 5 bypass",
        "udp sport 1701 @th,64,1 1 queue num 5 bypass",
    ]
    _, shell, _ = rules(capsys, config)
    assert "# undo:\n#   iptables  -t raw -D PREROUTING" not in shell  # no address: no undo
    assert "#   ip6tables -D INPUT -p udp --dport 1701 -j NFQUEUE" in shell
    assert "--format iptables-restore --chain input|forward --family ipv4" in shell
    assert "--format nft --chain input|forward" in shell


# --- iptables-restore, loaded and used ----------------------------------------------------------


def restore_file(capsys: pytest.CaptureFixture[str], config: Path, chain: str, version: int,
                 *extra: str) -> str:  # fmt: skip
    argv = ["--format", "iptables-restore", "--chain", chain, "--family", FAMILIES[version]]
    if chain == "forward":
        argv += ["--lns-ipv4" if version == 4 else "--lns-ipv6", LNS4 if version == 4 else LNS6]
    code, out, err = rules(capsys, config, *argv, *extra)
    assert code == 0, err
    return out


def send_swapped(lac: NetNs, lns: NetNs, lac_addr: str, lns_addr: str) -> list[int]:
    receiver = lns.udp(lns_addr, 1701)
    sender = lac.udp(lac_addr, 40000)
    try:
        for n in ORDER:
            sender.sendto(data(n), (lns_addr, 1701))
        return [frame_of(d) for d, _ in receive_all(receiver, len(ORDER))]
    finally:
        receiver.close()
        sender.close()


@pytest.fixture
def router() -> Iterator[Router]:
    need_root()
    for tool in ("iptables-restore", "ip6tables-restore", "iptables", "ip6tables"):
        need_tool(tool)
    r = Router()
    try:
        yield r
    finally:
        r.close()


@pytest.mark.parametrize("chain", ["input", "forward"])
def test_iptables_restore_files_load_queue_and_undo(
    chain: str, router: Router, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both families' files of `chain`: `--test`, loaded for real in the host that needs them
    (the LNS's for input, the router's for forward), a swapped stream from the LAC reaches the
    LNS in order (so it went through the queue), and the undo files leave no rule behind."""
    host = router.lns if chain == "input" else router.rtr
    files = {v: restore_file(capsys, config, chain, v) for v in (4, 6)}
    for version, text in files.items():
        restore(host, version, text, "--test")
        restore(host, version, text)
    assert listed(host, 4).count("NFQUEUE") == (2 if chain == "input" else 1)
    assert listed(host, 6).count("NFQUEUE") == (2 if chain == "input" else 1)
    assert listed(host, 6).count("-j CT") == 1
    daemon = InPathDaemon(host, tmp_path, QUEUE, reorder={"timeout_ms": 5000})
    daemon.start()
    try:
        for lac_addr, lns_addr in ((LAC4, LNS4), (LAC6, LNS6)):
            got = send_swapped(router.lac, router.lns, lac_addr, lns_addr)
            assert got == sorted(ORDER), (lac_addr, got)  # ordered: it went through the queue
    finally:
        assert daemon.stop() == 0
    for version in (4, 6):
        undo = restore_file(capsys, config, chain, version, "--undo")
        assert not [x for x in runnable(undo) if x.startswith("-A ")]
        restore(host, version, undo, "--noflush")
        left = listed(host, version)
        assert "NFQUEUE" not in left and "-j CT" not in left, left


def test_the_shell_undo_removes_what_the_shell_block_added(
    router: Router, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Block B (router) pasted as printed, then `--undo`'s block B: nothing left."""
    lns = ["--lns-ipv4", LNS4, "--lns-ipv6", LNS6, "--chain", "forward"]
    for argv in ([], ["--undo"]):
        _, text, _ = rules(capsys, config, *lns, *argv)
        block = text.split("# --- B. the same with nft")[0]
        for line in runnable(block):
            router.rtr.run(*line.replace('"', "").split())
        if not argv:
            assert listed(router.rtr, 4).count("NFQUEUE") == 1
    for version in (4, 6):
        assert "NFQUEUE" not in listed(router.rtr, version)
        assert "-j CT" not in listed(router.rtr, version)


# --- nft: loaded with `counter` for `queue` (no nft_queue in this kernel) ----------------------


def nft_load(space: NetNs, text: str) -> bool:
    """Load `text` with `nft -f -` in `space`; where the kernel has no nft_queue (the file's
    header says so), again with each `queue ...` statement replaced by `counter`. True when it
    loaded as printed."""
    def load(body: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", space.name, "nft", "-f", "-"],
            input=body, text=True, capture_output=True, timeout=30,
        )  # fmt: skip

    r = load(text)
    if r.returncode == 0:
        return True
    assert "No such file or directory" in r.stderr and "queue" in r.stderr, r.stderr
    counted = "\n".join(
        line.split(" queue num ")[0] + " counter" if " queue num " in line else line
        for line in text.splitlines()
    )
    r = load(counted)
    assert r.returncode == 0, r.stderr
    return False


def counters(space: NetNs, chain: str) -> list[int]:
    listing = space.run("nft", "list", "chain", "inet", "l2tpreorder", chain).stdout
    return [int(x.split("counter packets ")[1].split()[0]) for x in listing.splitlines()
            if "counter packets" in x]  # fmt: skip


@pytest.mark.parametrize("chain", ["input", "forward"])
def test_nft_file_loads_twice_counts_both_families_and_undoes(
    chain: str, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_root()
    need_tool("nft")
    lns = ["--lns-ipv4", LNS4, "--lns-ipv6", LNS6] if chain == "forward" else []
    _, text, _ = rules(capsys, config, "--format", "nft", "--chain", chain, *lns)
    _, undo, _ = rules(capsys, config, "--format", "nft", "--chain", chain, *lns, "--undo")
    r = Router()
    try:
        host = r.lns if chain == "input" else r.rtr
        for _ in range(2):  # loading it again is safe: the table is emptied first
            nft_load(host, text)
        assert counters(host, chain) == [0] * (1 if chain == "input" else 2)
        for lac_addr, lns_addr in ((LAC4, LNS4), (LAC6, LNS6)):
            sender = r.lac.udp(lac_addr, 40000)
            sender.sendto(data(0), (lns_addr, 1701))
            sender.close()
        want = [2] if chain == "input" else [1, 1]  # one rule for both families, or one each
        wait_until(f"the {chain} rule(s) to count {want}", lambda: counters(host, chain) == want)
        for _ in range(2):  # the undo is safe twice too
            subprocess.run(["ip", "netns", "exec", host.name, "nft", "-f", "-"], input=undo,
                           text=True, check=True, capture_output=True, timeout=30)  # fmt: skip
        assert "l2tpreorder" not in host.run("nft", "list", "tables").stdout
    finally:
        r.close()


def test_every_command_the_output_suggests_runs(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The persistent forms and the undo the shell output names are commands that work (with
    the same config and LNS), not prose."""
    lns = ["--lns-ipv4", LNS4, "--lns-ipv6", LNS6]
    _, text, _ = rules(capsys, config, *lns, "--chain", "forward")
    suggested = [
        line.split("#", 1)[1].split("Undo:")[-1].strip()
        for line in text.splitlines()
        if "l2tpreorder rules --config" in line
    ]
    assert len(suggested) == 4, suggested  # two iptables-restore files, the nft file, the undo
    for command in suggested:
        argv = shlex.split(command)
        assert argv[:2] == ["l2tpreorder", "rules"] and "--lns-ipv4" in argv, command
        code = cli_main(argv[1:])
        out, err = capsys.readouterr()
        assert code == 0 and out and not err, (command, err)
