"""`l2tpreorder rules`: the printed iptables rules are accepted by the real iptables (in a
namespace of our own) and queue to the configured queue(s) with bypass."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2tpreorder.cli import main as cli_main
from l2tpreorder.config import config_from_dict
from l2tpreorder.tools.rules import render
from tests.conftest import need_root, need_tool
from tests.netns import NetNs


@pytest.fixture
def ns() -> Iterator[NetNs]:
    need_root()
    need_tool("iptables")
    need_tool("ip6tables")
    space = NetNs("rules")
    try:
        yield space
    finally:
        space.close()


@pytest.mark.parametrize(
    ("inpath", "target"),
    [
        ({"queue": 3}, "--queue-num 3 --queue-bypass"),
        ({"queues": "0-3"}, "--queue-balance 0:3 --queue-bypass"),
    ],
)
def test_iptables_accepts_every_printed_rule(
    ns: NetNs, inpath: dict[str, object], target: str
) -> None:
    config = config_from_dict({"mode": "inpath", "inpath": inpath})
    text = render(config, lns4="198.18.12.1", lns6="fd00:12::1")
    commands = [line for line in text.splitlines() if line.startswith(("iptables", "ip6tables"))]
    queue_rules = [line for line in commands if "NFQUEUE" in line]
    assert len(commands) == 9 and len(queue_rules) == 6
    for line in commands:
        argv = shlex.split(line)
        assert target in line or "-t raw -A PREROUTING" in line
        ns.run(*argv)  # raises when iptables refuses the rule
    listed = ns.run("iptables", "-S").stdout + ns.run("ip6tables", "-S").stdout
    assert listed.count("NFQUEUE") == 6
    for chain in ("INPUT", "OUTPUT", "FORWARD"):
        assert f"-A {chain} -" in listed
    raw = "".join(ns.run(tool, "-t", "raw", "-S").stdout for tool in ("iptables", "ip6tables"))
    assert raw.count("-j CT") == 3, raw  # IPv6 for INPUT; IPv4 and IPv6 for FORWARD


def test_every_block_says_why_it_reassembles() -> None:
    """Issue 21 (1): each block of rules (INPUT, FORWARD; iptables, nft) makes the kernel
    reassemble IP fragments before the queue rule where it would not, and says why."""
    text = render(config_from_dict({"mode": "inpath", "inpath": {"queue": 3}}))
    blocks = text.split("# --- ")[1:]
    assert len(blocks) == 4
    for block in blocks:
        assert "reassembly: the queue must get whole datagrams" in block, block
        assert "-j CT" in block or "ct state" in block, block
        assert "--notrack" not in block.replace("--notrack would not do", "")


def test_nft_forms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text('mode: inpath\ninpath:\n  queues: "2-5"\n')
    assert cli_main(["rules", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "udp dport 1701 queue num 2-5 fanout,bypass" in out
    # no LNS address given: the forward rule is there to read, commented out, naming the option
    assert (
        "# left out: needs --lns-ipv4 ADDR, the remote LNS's IPv4 address\n"
        "# nft add rule inet l2tpreorder forward ip daddr LNS_IPV4 udp dport 1701 queue num 2-5"
    ) in out
    assert not [x for x in out.splitlines() if "LNS_IPV" in x and not x.startswith("#")]
    cfg.write_text("mode: inpath\ninpath:\n  queue: 7\n")
    assert cli_main(["rules", "--config", str(cfg), "--lns-ipv6", "fd00::1"]) == 0
    out = capsys.readouterr().out
    assert "udp dport 1701 queue num 7 bypass" in out
    assert "ip6 daddr fd00::1 udp dport 1701 queue num 7 bypass" in out
    assert cli_main(["rules", "--config", str(cfg), "--lns-ipv4", "fd00::1"]) == 2



def nft_load(space: NetNs, argv: list[str]) -> bool:
    """Run one printed nft command in `space`; False when the kernel has no nft_queue (ENOENT
    on the queue statement): the rule's match is then loaded with `counter` in its place, so
    nft and the kernel still check everything but the statement (checked as text)."""
    r = space.run(*argv, check=False)
    if r.returncode and "queue" in argv and "No such file or directory" in r.stderr:
        space.run(*argv[: argv.index("queue")], "counter")
        return False
    assert r.returncode == 0, (argv, r.stderr)
    return True


@pytest.mark.parametrize(("inpath", "target"), [
    ({"queue": 3}, "queue num 3 bypass"), ({"queues": "0-3"}, "queue num 0-3 fanout,bypass"),
])  # fmt: skip
def test_nft_accepts_every_printed_rule(inpath: dict[str, object], target: str) -> None:
    """Each nft block, pasted as printed, is taken by the real nft (in a namespace of ours),
    the optional OUTPUT rule for the LNS's control messages (L2TP T bit) included."""
    need_root()
    need_tool("nft")
    config = config_from_dict({"mode": "inpath", "inpath": inpath})
    text = render(config, lns4="198.18.12.1", lns6="fd00:12::1")
    commands = [shlex.split(line) for line in text.splitlines() if line.startswith("nft ")]
    rules = [argv for argv in commands if argv[:3] == ["nft", "add", "rule"]]
    assert [argv[5] for argv in rules] == [
        "prerouting", "input", "output", "prerouting", "forward", "forward"
    ]  # fmt: skip
    queueing = [argv for argv in rules if argv[5] != "prerouting"]
    assert all(" ".join(argv).endswith(target) for argv in queueing), rules
    space = NetNs("nftrules")
    try:
        for argv in commands:
            nft_load(space, argv)
        listed = space.run("nft", "list", "table", "inet", "l2tpreorder").stdout
    finally:
        space.close()
    output = listed.split("chain output")[1].split("chain ")[0]
    assert "hook output" in output, listed
    # nft's own reading of the match: the first bit after the UDP header, the L2TP T bit
    assert "udp sport 1701 @th,64,8 & 0x80 == 0x80" in output, listed


ALLOW = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8:1::/48"]


def test_with_allow_only_those_sources_are_queued(ns: NetNs) -> None:
    """Issue 21 (6): with `inpath.allow`, every printed queue rule matches the LAC prefixes
    (source; destination on the OUTPUT rule), so other hosts never reach the queue; the
    kernel takes the lines (iptables' `-s A,B` is one rule per prefix)."""
    config = config_from_dict({"mode": "inpath", "inpath": {"queue": 3, "allow": ALLOW}})
    text = render(config, lns4="198.18.12.1", lns6="fd00:12::1")
    assert "Only the LACs of inpath.allow are queued" in text
    queue_rules = [x for x in text.splitlines() if "NFQUEUE" in x and not x.startswith("#")]
    assert len(queue_rules) == 6
    for line in queue_rules:
        four = line.startswith("iptables")
        want = "192.0.2.0/24,198.51.100.0/24 " if four else "2001:db8:1::/48 "
        assert ("-d " if "OUTPUT" in line else "-s ") + want in line, line
    for line in text.splitlines():
        if line.startswith(("iptables", "ip6tables")):
            ns.run(*shlex.split(line))
    listed = ns.run("iptables", "-S").stdout + ns.run("ip6tables", "-S").stdout
    assert listed.count("NFQUEUE") == 9  # two IPv4 prefixes: two rules each
    assert "-A INPUT -s 198.51.100.0/24 -p udp" in listed
    assert "-A OUTPUT -d 2001:db8:1::/48 -p udp" in listed


def test_allow_of_one_family_prints_no_rule_of_the_other() -> None:
    only4 = config_from_dict({"mode": "inpath", "inpath": {"queue": 3, "allow": ["10.0.0.0/8"]}})
    text = render(only4)
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith("ip6tables") and "NFQUEUE" in line]
    assert "# (no IPv6 prefix in inpath.allow: no ip6tables rule)" in lines
    nft = [line for line in lines if line.startswith("nft add rule") and "queue" in line]
    assert nft and all("ip saddr 10.0.0.0/8" in x or "ip daddr 10.0.0.0/8" in x for x in nft)
    mixed = config_from_dict({"mode": "inpath", "inpath": {"allow": ["0.0.0.0/0", "fd00::/8"]}})
    text = render(mixed)
    assert "iptables  -A INPUT -p udp --dport 1701 -j NFQUEUE" in text  # every IPv4 source
    assert "input meta nfproto ipv4 udp dport 1701 queue" in text
    assert "input ip6 saddr fd00::/8 udp dport 1701 queue" in text


def test_nft_takes_the_allow_sets() -> None:
    """The nft lines with an `inpath.allow` set (`ip saddr '{ A, B }'`), loaded as printed."""
    need_root()
    need_tool("nft")
    config = config_from_dict({"mode": "inpath", "inpath": {"queue": 3, "allow": ALLOW}})
    text = render(config, lns4="198.18.12.1", lns6="fd00:12::1")
    commands = [shlex.split(line) for line in text.splitlines() if line.startswith("nft ")]
    space = NetNs("nftallow")
    try:
        for argv in commands:
            nft_load(space, argv)
        listed = space.run("nft", "list", "table", "inet", "l2tpreorder").stdout
    finally:
        space.close()
    assert "ip saddr { 192.0.2.0/24, 198.51.100.0/24 } udp dport 1701" in listed, listed
    assert "ip6 saddr 2001:db8:1::/48 ip6 daddr fd00:12::1 udp dport 1701" in listed, listed
    assert "ip daddr { 192.0.2.0/24, 198.51.100.0/24 } udp sport 1701" in listed, listed
