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


def render(config: Config, *, port: int = L2TP_PORT, lns4: str = "", lns6: str = "") -> str:
    """The rules text for `config`'s queue(s)."""
    queues = config.inpath_queues
    ipt, nft = _queue_target(queues)
    names = ", ".join(str(q) for q in queues)
    d4 = f"-d {lns4} " if lns4 else "-d LNS_IPV4 "
    d6 = f"-d {lns6} " if lns6 else "-d LNS_IPV6 "
    nd4 = f"ip daddr {lns4} " if lns4 else "ip daddr LNS_IPV4 "
    nd6 = f"ip6 daddr {lns6} " if lns6 else "ip6 daddr LNS_IPV6 "
    lines = [
        f"# l2tpreorder in-path rules for NFQUEUE {names} (mode: inpath). Paste ONE block.",
        "# The daemon never edits the firewall. Without a reader the bypass lets packets pass.",
        "",
        "# --- A. the LNS (e.g. xl2tpd) runs on this host: iptables (IPv4, IPv6)",
        WHY_REASSEMBLY,
        "# IPv4 is reassembled before INPUT anyway; IPv6 is not:",
        f"ip6tables -t raw -A PREROUTING -p udp --dport {port} -j CT",
        f"iptables  -A INPUT -p udp --dport {port} {ipt}",
        f"ip6tables -A INPUT -p udp --dport {port} {ipt}",
        "# optional: the LNS's control messages too, so its CDN/StopCCN end our sessions at once",
        "# (whole at OUTPUT: the kernel fragments what this host sends after that hook)",
        f"iptables  -A OUTPUT -p udp --sport {port} -m u32 --u32 {U32_CONTROL_V4} {ipt}",
        f"ip6tables -A OUTPUT -p udp --sport {port} -m u32 --u32 {U32_CONTROL_V6} {ipt}",
        "",
        "# --- A. the same with nft",
        "nft add table inet l2tpreorder",
        WHY_REASSEMBLY.replace("--notrack", "notrack"),
        "nft add chain inet l2tpreorder prerouting '{ type filter hook prerouting priority raw; }'",
        f"nft add rule inet l2tpreorder prerouting udp dport {port} {NFT_CT}",
        "nft add chain inet l2tpreorder input '{ type filter hook input priority 0; }'",
        f"nft add rule inet l2tpreorder input udp dport {port} {nft}",
        "# optional: the LNS's control messages too, so its CDN/StopCCN end our sessions at once",
        "nft add chain inet l2tpreorder output '{ type filter hook output priority 0; }'",
        f"nft add rule inet l2tpreorder output udp sport {port} {NFT_CONTROL} {nft}",
        "",
        "# --- B. this host routes between the LACs and a remote LNS: iptables",
        "# (only the LAC -> LNS direction: name the LNS address)",
        WHY_REASSEMBLY,
        f"iptables  -t raw -A PREROUTING -p udp {d4}--dport {port} -j CT",
        f"ip6tables -t raw -A PREROUTING -p udp {d6}--dport {port} -j CT",
        f"iptables  -A FORWARD -p udp {d4}--dport {port} {ipt}",
        f"ip6tables -A FORWARD -p udp {d6}--dport {port} {ipt}",
        "",
        "# --- B. the same with nft",
        "nft add table inet l2tpreorder",
        WHY_REASSEMBLY.replace("--notrack", "notrack"),
        "nft add chain inet l2tpreorder prerouting '{ type filter hook prerouting priority raw; }'",
        f"nft add rule inet l2tpreorder prerouting udp dport {port} {NFT_CT}",
        "nft add chain inet l2tpreorder forward '{ type filter hook forward priority 0; }'",
        f"nft add rule inet l2tpreorder forward {nd4}udp dport {port} {nft}",
        f"nft add rule inet l2tpreorder forward {nd6}udp dport {port} {nft}",
    ]
    if config.mode != "inpath":
        lines.insert(0, "# NOTE: the config says mode: relay; set mode: inpath to use these rules.")
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
