"""`l2tpreorder rules --config FILE`: the firewall rules that feed in-path mode its queue(s).

The daemon never edits the firewall: the operator pastes these (or puts them in their own
firewall config), so what the host does stays visible in one place. Every rule carries the
bypass flag: while no l2tpreorder worker reads a queue, its packets pass unordered, exactly as
without l2tpreorder. Several queues use --queue-balance / fanout, which hashes by address, so
one LAC always lands on the same worker.

The queue must get whole datagrams (issue 21): a big L2TP message split into IP fragments would
otherwise reach the queue as its first fragment only (the others carry no UDP port), pass
unordered, and break ordering and Ns for the whole session. The kernel reassembles before the
netfilter hooks only where connection tracking is on in the network namespace (nf_defrag runs
before the raw table), and before INPUT for IPv4 anyway; the raw-table `CT` rule (nft: a `ct`
expression) turns it on. Tried here: `-j CT --notrack` and nft `notrack` do NOT turn it on.
Locally sent datagrams are whole at OUTPUT (fragmented after it).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from l2tpreorder.config import DEFAULT_CONFIG, Config, ConfigError, load_config

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


def _ipt(
    allowed: Allowed, line: str, lac: str = "-s", **per_family: dict[int, str]
) -> list[str]:
    """`line` per family, with {tool}, {lac} and each `per_family` key filled in: the allowed
    LAC prefixes matched with `lac` (-s, or -d on the LNS's own side); a family without any
    is left out."""
    out = []
    for version, prefixes in allowed.items():
        if prefixes == []:
            tool = IPT[version].strip()
            out.append(f"# (no IPv{version} prefix in inpath.allow: no {tool} rule)")
            continue
        match = "" if prefixes is None else f"{lac} {','.join(prefixes)} "
        extra = {key: values[version] for key, values in per_family.items()}
        out.append(line.format(tool=IPT[version], lac=match, **extra))
    return out


def _nft(allowed: Allowed, line: str, lac: str = "saddr") -> list[str]:
    """The nft form of `_ipt`: in the inet table one rule covers both families unless
    `inpath.allow` is set, then one per family (`ip saddr PREFIX` or a `{ ... }` set)."""
    if allowed[4] is None and allowed[6] is None:
        return [line.format(lac="")]
    out = []
    for version, prefixes in allowed.items():
        if prefixes == []:
            continue
        if prefixes is None:
            match = f"meta nfproto ipv{version} "
        else:
            addrs = prefixes[0] if len(prefixes) == 1 else "'{ " + ", ".join(prefixes) + " }'"
            match = f"{NFT_ADDR[version]} {lac} {addrs} "
        out.append(line.format(lac=match))
    return out


def _forward_nft(allowed: Allowed, version: int, lns: str, port: int, nft: str) -> list[str]:
    """One FORWARD rule of one family: to the LNS, from the allowed LACs."""
    prefixes = allowed[version]
    if prefixes == []:
        return []
    kw = NFT_ADDR[version]
    daddr = f"{kw} daddr {lns or f'LNS_IPV{version}'} "
    saddr = ""
    if prefixes is not None:
        addrs = prefixes[0] if len(prefixes) == 1 else "'{ " + ", ".join(prefixes) + " }'"
        saddr = f"{kw} saddr {addrs} "
    return [f"nft add rule inet l2tpreorder forward {saddr}{daddr}udp dport {port} {nft}"]


def _header(config: Config, names: str, allowed: Allowed) -> list[str]:
    lines = [
        f"# l2tpreorder in-path rules for NFQUEUE {names} (mode: inpath). Paste ONE block.",
        "# The daemon never edits the firewall. Without a reader the bypass lets packets pass.",
    ]
    if allowed[4] is not None or allowed[6] is not None:
        lines.append(
            "# Only the LACs of inpath.allow are queued: packets of other addresses never reach\n"
            "# the queue (the daemon would pass them untouched too, counted as not_allowed)."
        )
    if config.mode != "inpath":
        lines.insert(0, "# NOTE: the config says mode: relay; set mode: inpath to use these rules.")
    return [*lines, ""]


def render(config: Config, *, port: int = L2TP_PORT, lns4: str = "", lns6: str = "") -> str:
    """The rules text for `config`'s queue(s)."""
    queues = config.inpath_queues
    ipt, nft = _queue_target(queues)
    allowed = allowed_prefixes(config)
    lns = {4: f"-d {lns4 or 'LNS_IPV4'} ", 6: f"-d {lns6 or 'LNS_IPV6'} "}
    u32 = {4: U32_CONTROL_V4, 6: U32_CONTROL_V6}
    output = f"{{tool}} -A OUTPUT -p udp {{lac}}--sport {port} -m u32 --u32 {{u32}} {ipt}"
    forward = f"{{tool}} -A FORWARD -p udp {{lac}}{{lns}}--dport {port} {ipt}"
    chain = "nft add chain inet l2tpreorder"
    rule = "nft add rule inet l2tpreorder"
    lines = [
        *_header(config, ", ".join(str(q) for q in queues), allowed),
        "# --- A. the LNS (e.g. xl2tpd) runs on this host: iptables (IPv4, IPv6)",
        WHY_REASSEMBLY,
        "# IPv4 is reassembled before INPUT anyway; IPv6 is not:",
        f"ip6tables -t raw -A PREROUTING -p udp --dport {port} -j CT",
        *_ipt(allowed, f"{{tool}} -A INPUT -p udp {{lac}}--dport {port} {ipt}"),
        "# optional: the LNS's control messages too, so its CDN/StopCCN end our sessions at once",
        "# (whole at OUTPUT: the kernel fragments what this host sends after that hook)",
        *_ipt(allowed, output, "-d", u32=u32),
        "",
        "# --- A. the same with nft",
        "nft add table inet l2tpreorder",
        WHY_REASSEMBLY.replace("--notrack", "notrack"),
        f"{chain} prerouting '{{ type filter hook prerouting priority raw; }}'",
        f"{rule} prerouting udp dport {port} {NFT_CT}",
        f"{chain} input '{{ type filter hook input priority 0; }}'",
        *_nft(allowed, f"{rule} input {{lac}}udp dport {port} {nft}"),
        "# optional: the LNS's control messages too, so its CDN/StopCCN end our sessions at once",
        f"{chain} output '{{ type filter hook output priority 0; }}'",
        *_nft(allowed, f"{rule} output {{lac}}udp sport {port} {NFT_CONTROL} {nft}", "daddr"),
        "",
        "# --- B. this host routes between the LACs and a remote LNS: iptables",
        "# (only the LAC -> LNS direction: name the LNS address)",
        WHY_REASSEMBLY,
        f"iptables  -t raw -A PREROUTING -p udp {lns[4]}--dport {port} -j CT",
        f"ip6tables -t raw -A PREROUTING -p udp {lns[6]}--dport {port} -j CT",
        *_ipt(allowed, forward, lns=lns),
        "",
        "# --- B. the same with nft",
        "nft add table inet l2tpreorder",
        WHY_REASSEMBLY.replace("--notrack", "notrack"),
        f"{chain} prerouting '{{ type filter hook prerouting priority raw; }}'",
        f"{rule} prerouting udp dport {port} {NFT_CT}",
        f"{chain} forward '{{ type filter hook forward priority 0; }}'",
        *_forward_nft(allowed, 4, lns4, port, nft),
        *_forward_nft(allowed, 6, lns6, port, nft),
    ]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", default=DEFAULT_CONFIG,
        help=f"YAML config (default {DEFAULT_CONFIG})",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=L2TP_PORT, help="the LNS's UDP port")
    parser.add_argument("--lns-ipv4", default="", metavar="ADDR", help="remote LNS (FORWARD)")
    parser.add_argument("--lns-ipv6", default="", metavar="ADDR", help="remote LNS (FORWARD)")


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"l2tpreorder: error: {e}", file=sys.stderr)
        return 2
    lns = (("--lns-ipv4", args.lns_ipv4, 4), ("--lns-ipv6", args.lns_ipv6, 6))
    for flag, value, version in lns:
        try:
            if value and ipaddress.ip_address(value).version != version:
                raise ValueError(value)
        except ValueError:
            print(f"l2tpreorder: error: {flag} {value!r}: expected an IPv{version} address",
                  file=sys.stderr)
            return 2
    if not 1 <= args.port <= 65535:
        print(f"l2tpreorder: error: --port {args.port}: expected 1..65535", file=sys.stderr)
        return 2
    sys.stdout.write(render(config, port=args.port, lns4=args.lns_ipv4, lns6=args.lns_ipv6))
    return 0
