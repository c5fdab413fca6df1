"""What `l2tpreorder rules` prints, as data: per hook (INPUT: the LNS runs on this host;
FORWARD: this host routes to a remote LNS), the iptables rules of each family and the nft
chains, with the comments that say why. `rules` renders them as shell commands, as
iptables-restore files or as an nft file (`rules_files`), and each as its undo.

The why of each rule (whole datagrams, bypass, `inpath.allow`) is in `rules`' docstring.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from l2tpreorder.config import Config

L2TP_PORT = 1701
# The L2TP header's T bit (first byte of the UDP payload), for the optional rule that shows us
# the LNS's control messages. u32 offsets: IPv4 header length from the IHL field; IPv6 assumes
# no extension headers (an IPv6 packet with them is simply not matched: it passes).
U32_CONTROL_V4 = '"0>>22&0x3C@8>>24&0x80=0x80"'
U32_CONTROL_V6 = '"48>>24&0x80=0x80"'
# The same for nft: one bit at offset 64 of the transport header (the L2TP header's first bit,
# right after the 8-byte UDP header); nft finds the transport header for both families.
NFT_CONTROL = "@th,64,1 1"
# Why the reassembly rules are there, printed above them.
WHY_REASSEMBLY = (
    "# reassembly: the queue must get whole datagrams (a fragment has no UDP port, so a big\n"
    "# L2TP message would pass unordered and break its session's order and Ns). The kernel\n"
    "# reassembles before the queue rule only with connection tracking on, which the rule(s)\n"
    "# below turn on (they accept and drop nothing; --notrack would not do)."
)
NFT_CT = "ct state new,established,related,untracked counter"
WHOLE_AT_OUTPUT = "# (whole at OUTPUT: the kernel fragments what this host sends after that hook)"
OPTIONAL_CONTROL = (
    "# optional: the LNS's control messages too, so its CDN/StopCCN end our sessions at once"
)


def _queue_target(queues: tuple[int, ...]) -> tuple[str, str]:
    """(iptables target, nft statement) for the configured queues."""
    if len(queues) == 1:
        n = queues[0]
        return f"-j NFQUEUE --queue-num {n} --queue-bypass", f"queue num {n} bypass"
    lo, hi = queues[0], queues[-1]
    return (
        f"-j NFQUEUE --queue-balance {lo}:{hi} --queue-bypass",
        f"queue num {lo}-{hi} fanout,bypass",
    )


IPT = {4: "iptables ", 6: "ip6tables"}  # padded: the printed lines line up
NFT_ADDR = {4: "ip", 6: "ip6"}
Allowed = dict[int, list[str] | None]


def allowed_prefixes(config: Config) -> Allowed:
    """`inpath.allow` per IP version: None = every address, [] = none (no queue rule of that
    family), else the prefixes the queue rules match: packets of other LACs then never reach
    the queue (a flood from elsewhere passes the rule untouched, as without us; issue 21)."""
    out: Allowed = {}
    for version in (4, 6):
        nets = [n for n in config.inpath_allow if n.version == version]
        out[version] = None if any(n.prefixlen == 0 for n in nets) else [str(n) for n in nets]
    return out




INPUT, FORWARD = "input", "forward"
LNS_FLAG = {4: "--lns-ipv4", 6: "--lns-ipv6"}


@dataclass(frozen=True, slots=True)
class Comment:
    """Comment line(s), each starting with "#"; `version`: only in that family's output."""

    text: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One iptables rule. `missing`: why it cannot run as it is (an option names the address
    it needs); it is then printed commented out, never as a runnable line."""

    version: int
    table: str  # "raw" or "filter"
    chain: str  # "PREROUTING", "INPUT", "OUTPUT", "FORWARD"
    spec: str  # the match and target, as iptables takes them after `-A CHAIN`
    missing: str = ""


@dataclass(frozen=True, slots=True)
class NftRule:
    """One nft rule of the l2tpreorder table (sets written `{ a, b }`, unquoted)."""

    expr: str
    missing: str = ""


@dataclass(frozen=True, slots=True)
class Chain:
    """One base chain of the nft table; `before`: comment lines printed above it."""

    name: str
    hook: str  # "type filter hook input priority 0;"
    rules: list[Comment | NftRule]
    before: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything the rules depend on: the config's queues and LACs, the port, the LNS."""

    config: Config
    port: int = 1701
    lns: dict[int, str] = field(default_factory=lambda: {4: "", 6: ""})

    @property
    def allowed(self) -> Allowed:
        return allowed_prefixes(self.config)

    @property
    def targets(self) -> tuple[str, str]:
        return _queue_target(self.config.inpath_queues)

    def lns_match(self, version: int, flag: str = "-d") -> str:
        """`-d ADDR ` (or nft's `ip daddr ADDR `); the placeholder only where it is missing."""
        address = self.lns[version] or f"LNS_IPV{version}"
        return f"{flag} {address} "

    def lns_missing(self, version: int) -> str:
        if self.lns[version]:
            return ""
        return f"needs {LNS_FLAG[version]} ADDR, the remote LNS's IPv{version} address"


def _prefix_match(prefixes: list[str], flag: str, nft: bool = False) -> str:
    if not nft:
        return f"{flag} {','.join(prefixes)} "
    return f"{flag} {prefixes[0] if len(prefixes) == 1 else '{ ' + ', '.join(prefixes) + ' }'} "


def _per_family(
    rs: RuleSet, chain: str, make: Callable[[int, str], str], lac: str = "-s", lns: bool = False
) -> list[Comment | Rule]:
    """One filter rule per family built by `make(version, LAC match)`: the allowed LAC
    prefixes matched with `lac` (-s, or -d on the LNS's own side); a family without any gets
    a comment instead; with `lns`, a rule without the LNS's address is `missing`."""
    out: list[Comment | Rule] = []
    for version, prefixes in rs.allowed.items():
        if prefixes == []:
            tool = IPT[version].strip()
            text = f"# (no IPv{version} prefix in inpath.allow: no {tool} rule)"
            out.append(Comment(text, version))
            continue
        match = "" if prefixes is None else _prefix_match(prefixes, lac)
        missing = rs.lns_missing(version) if lns else ""
        out.append(Rule(version, "filter", chain, make(version, match), missing))
    return out


def iptables_items(rs: RuleSet, hook: str) -> list[Comment | Rule]:
    """The iptables rules of `hook` (INPUT or FORWARD), both families, with their comments."""
    port = rs.port
    ipt, _ = rs.targets
    if hook == INPUT:
        u32 = {4: U32_CONTROL_V4, 6: U32_CONTROL_V6}
        return [
            Comment(WHY_REASSEMBLY, 6),  # IPv4's file has no reassembly rule to explain
            Comment("# IPv4 is reassembled before INPUT anyway; IPv6 is not:"),
            Rule(6, "raw", "PREROUTING", f"-p udp --dport {port} -j CT"),
            *_per_family(rs, "INPUT", lambda v, lac: f"-p udp {lac}--dport {port} {ipt}"),
            Comment(OPTIONAL_CONTROL),
            Comment(WHOLE_AT_OUTPUT),
            *_per_family(
                rs, "OUTPUT",
                lambda v, lac: f"-p udp {lac}--sport {port} -m u32 --u32 {u32[v]} {ipt}", "-d",
            ),
        ]  # fmt: skip
    return [
        Comment("# (only the LAC -> LNS direction: name the LNS address)"),
        Comment(WHY_REASSEMBLY),
        *(
            Rule(v, "raw", "PREROUTING", f"-p udp {rs.lns_match(v)}--dport {port} -j CT",
                 rs.lns_missing(v))
            for v in (4, 6)
        ),
        *_per_family(
            rs, "FORWARD", lambda v, lac: f"-p udp {lac}{rs.lns_match(v)}--dport {port} {ipt}",
            lns=True,
        ),
    ]  # fmt: skip


def _nft_rules(rs: RuleSet, make: Callable[[str], str], lac: str = "saddr") -> list[NftRule]:
    """The nft form of `_per_family`: in the inet table one rule covers both families unless
    `inpath.allow` is set, then one per family (`ip saddr PREFIX` or a `{ ... }` set)."""
    allowed = rs.allowed
    if allowed[4] is None and allowed[6] is None:
        return [NftRule(make(""))]
    out = []
    for version, prefixes in allowed.items():
        if prefixes == []:
            continue
        if prefixes is None:
            match = f"meta nfproto ipv{version} "
        else:
            match = _prefix_match(prefixes, f"{NFT_ADDR[version]} {lac}", nft=True)
        out.append(NftRule(make(match)))
    return out


def _forward_nft(rs: RuleSet, version: int) -> list[NftRule]:
    """One forward rule of one family: to the LNS, from the allowed LACs."""
    prefixes = rs.allowed[version]
    if prefixes == []:
        return []
    kw = NFT_ADDR[version]
    saddr = "" if prefixes is None else _prefix_match(prefixes, f"{kw} saddr", nft=True)
    daddr = rs.lns_match(version, f"{kw} daddr")
    _, nft = rs.targets
    return [NftRule(f"{saddr}{daddr}udp dport {rs.port} {nft}", rs.lns_missing(version))]


def nft_chains(rs: RuleSet, hook: str) -> list[Chain]:
    """The chains of the `inet l2tpreorder` table for `hook` (INPUT or FORWARD)."""
    port = rs.port
    _, nft = rs.targets
    prerouting = Chain(
        "prerouting", "type filter hook prerouting priority raw;",
        [NftRule(f"udp dport {port} {NFT_CT}")],
        (WHY_REASSEMBLY.replace("--notrack", "notrack"),),
    )  # fmt: skip
    if hook == FORWARD:
        forward = [*_forward_nft(rs, 4), *_forward_nft(rs, 6)]
        return [prerouting, Chain("forward", "type filter hook forward priority 0;", [*forward])]
    control = f"udp sport {port} {NFT_CONTROL} {nft}"
    return [
        prerouting,
        Chain("input", "type filter hook input priority 0;",
              [*_nft_rules(rs, lambda lac: f"{lac}udp dport {port} {nft}")]),
        Chain("output", "type filter hook output priority 0;",
              [*_nft_rules(rs, lambda lac: f"{lac}{control}", "daddr")], (OPTIONAL_CONTROL,)),
    ]  # fmt: skip


def shell_quote_sets(expr: str) -> str:
    """An nft set `{ a, b }` quoted for the shell (`'{ a, b }'`): the braces are nft's."""
    return re.sub(r"\{[^}]*\}", lambda m: f"'{m.group(0)}'", expr)
