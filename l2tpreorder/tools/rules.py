"""`l2tpreorder rules --config FILE`: the firewall rules that feed in-path mode its queue(s),
as shell commands (default), iptables-restore files or an nft file (`--format`), and their undo.

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

Nothing is printed as a runnable line that could not run: a rule that needs an address the
operator did not give (the remote LNS, for FORWARD) is printed commented out, naming the option.
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
import sys

from l2tpreorder.config import DEFAULT_CONFIG, Config, ConfigError, config_file, load_config
from l2tpreorder.tools.needs import Needs, unmet
from l2tpreorder.tools.rules_files import BOTH_AT_BOOT, iptables_restore, nft_file, nft_table
from l2tpreorder.tools.rules_model import (
    FORWARD,
    INPUT,
    IPT,
    L2TP_PORT,
    Comment,
    Rule,
    RuleSet,
    iptables_items,
    nft_chains,
    shell_quote_sets,
)

SHELL, RESTORE, NFT = "shell", "iptables-restore", "nft"
FORMATS = (SHELL, RESTORE, NFT)
FAMILIES = {"ipv4": 4, "ipv6": 6}
TITLES = {
    INPUT: ("# --- A. the LNS (e.g. xl2tpd) runs on this host: iptables (IPv4, IPv6)",
            "# --- A. the same with nft"),
    FORWARD: ("# --- B. this host routes between the LACs and a remote LNS: iptables",
              "# --- B. the same with nft"),
}  # fmt: skip


def _header(rs: RuleSet, undo: bool) -> list[str]:
    names = ", ".join(str(q) for q in rs.config.inpath_queues)
    if undo:
        lines = [
            f"# UNDO of the l2tpreorder in-path rules for NFQUEUE {names}: run the lines of the",
            "# ONE block you pasted (deleting a rule that is not there only prints an error).",
        ]
    else:
        lines = [
            f"# l2tpreorder in-path rules for NFQUEUE {names} (mode: inpath). Paste ONE block.",
            "# The daemon never edits the firewall. Without a reader the bypass lets packets pass.",
            "# Each rule is inserted at the TOP of its chain (-I CHAIN 1): it must come before any",
            f"# ACCEPT of yours (ESTABLISHED,RELATED, udp {rs.port}), or those packets never reach",
            "# the queue and pass unordered, silently. Paste a block once: a second paste adds the",
            "# rules again (run its undo once per paste).",
        ]
    allowed = rs.allowed
    if not undo and (allowed[4] is not None or allowed[6] is not None):
        lines.append(
            "# Only the LACs of inpath.allow are queued: packets of other addresses never reach\n"
            "# the queue (the daemon would pass them untouched too, counted as not_allowed)."
        )
    if rs.config.mode != "inpath":
        lines.insert(0, "# NOTE: the config says mode: relay; set mode: inpath to use these rules.")
    return [*lines, ""]


def _ipt_line(rule: Rule, undo: bool = False) -> str:
    table = "-t raw " if rule.table == "raw" else ""
    where = f"-D {rule.chain}" if undo else f"-I {rule.chain} 1"  # the top: see _header
    return f"{IPT[rule.version]} {table}{where} {rule.spec}"


def _shell_iptables(rs: RuleSet, hook: str, undo: bool) -> list[str]:
    lines: list[str] = []
    rules: list[Rule] = []
    for item in iptables_items(rs, hook):
        if isinstance(item, Comment):
            lines += [] if undo else [item.text]
        elif item.missing:
            lines += [] if undo else [f"# left out: {item.missing}", f"# {_ipt_line(item)}"]
        else:
            rules.append(item)
            lines.append(_ipt_line(item, undo))
    if not undo and rules:
        lines += ["# undo:", *(f"#   {_ipt_line(rule, True)}" for rule in rules)]
    return lines


def _shell_nft(rs: RuleSet, hook: str, undo: bool) -> list[str]:
    table = nft_table(hook)
    if undo:
        return [f"nft delete table {table}"]
    lines = [f"nft add table {table}"]
    for chain in nft_chains(rs, hook):
        lines += [*chain.before, f"nft add chain {table} {chain.name} '{{ {chain.hook} }}'"]
        for item in chain.rules:
            if isinstance(item, Comment):
                lines.append(item.text)
                continue
            line = f"nft add rule {table} {chain.name} {shell_quote_sets(item.expr)}"
            lines += [f"# left out: {item.missing}", f"# {line}"] if item.missing else [line]
    return [*lines, "# undo:", f"#   nft delete table {table}"]


def _persistent(command: str, hooks: tuple[str, ...]) -> list[str]:
    chain = hooks[0] if len(hooks) == 1 else "input|forward"
    return [
        "# === These last until the next reboot. To keep them, print them as files instead:",
        "# iptables-persistent (netfilter-persistent loads rules.v4/rules.v6 at boot):",
        f"#   {command} --format iptables-restore --chain {chain} --family ipv4",
        f"#   {command} --format iptables-restore --chain {chain} --family ipv6",
        "# nftables.service (loads /etc/nftables.conf at boot):",
        f"#   {command} --format nft --chain {chain}",
        BOTH_AT_BOOT,
    ]


def render(
    config: Config,
    *,
    port: int = L2TP_PORT,
    lns4: str = "",
    lns6: str = "",
    fmt: str = SHELL,
    chain: str | None = None,
    family: int | None = None,
    undo: bool = False,
    command: str = "l2tpreorder rules",
) -> str:
    """The rules text for `config`'s queue(s), in `fmt`; `chain` (input or forward) picks one
    host's rules (the shell form prints both when None); `family` the iptables-restore file.
    `command`: how the operator named the config, port and LNS (for the hints printed)."""
    rs = RuleSet(config, port, {4: lns4, 6: lns6})
    view = [] if fmt == SHELL else ["--format", fmt]
    view += [] if chain is None else ["--chain", chain]
    view += [] if family is None else ["--family", f"ipv{family}"]
    printed_by = " ".join([command, *view, *(["--undo"] if undo else [])])
    if fmt == RESTORE:
        assert chain is not None and family is not None, "checked by option_errors"
        return iptables_restore(rs, chain, family, printed_by, undo)
    if fmt == NFT:
        assert chain is not None, "checked by option_errors"
        return nft_file(rs, chain, printed_by, undo)
    hooks = (chain,) if chain else (INPUT, FORWARD)
    lines = _header(rs, undo)
    for hook in hooks:
        ipt_title, nft_title = TITLES[hook]
        lines += [ipt_title, *_shell_iptables(rs, hook, undo), ""]
        lines += [nft_title, *_shell_nft(rs, hook, undo), ""]
    if not undo:
        lines += [*_persistent(command, hooks), f"# Undo: {printed_by} --undo"]
    return "\n".join(lines).rstrip("\n") + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", default=None,
        help=f"YAML config (default {DEFAULT_CONFIG} when it exists, else the built-in defaults,"
        " as `run` reads it)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=L2TP_PORT, help="the LNS's UDP port")
    parser.add_argument("--lns-ipv4", default="", metavar="ADDR", help="remote LNS (FORWARD)")
    parser.add_argument("--lns-ipv6", default="", metavar="ADDR", help="remote LNS (FORWARD)")
    parser.add_argument(
        "--format", choices=FORMATS, default=SHELL,
        help="shell commands (default; they last until reboot), an iptables-restore file "
        "(/etc/iptables/rules.v4 or rules.v6) or an nft file (/etc/nftables.conf)",
    )  # fmt: skip
    parser.add_argument(
        "--chain", choices=(INPUT, FORWARD), type=str.lower,
        help="input: the LNS runs on this host; forward: this host routes to a remote LNS "
        "(the shell format prints both when not given)",
    )  # fmt: skip
    parser.add_argument(
        "--family", choices=tuple(FAMILIES),
        help="with --format iptables-restore: the file for rules.v4 (ipv4) or rules.v6 (ipv6)",
    )  # fmt: skip
    parser.add_argument(
        "--undo", action="store_true", help="print what removes these rules again"
    )


def option_errors(args: argparse.Namespace) -> list[str]:
    """What the options cannot mean together, naming them (exit 2: nothing is printed)."""
    errors = []
    lns = (("--lns-ipv4", args.lns_ipv4, 4), ("--lns-ipv6", args.lns_ipv6, 6))
    for flag, value, version in lns:
        try:
            if value and ipaddress.ip_address(value).version != version:
                raise ValueError(value)
        except ValueError:
            errors.append(f"{flag} {value!r}: expected an IPv{version} address")
        if value and args.chain == INPUT:
            errors.append(f"{flag} is for --chain forward (a remote LNS); --chain input matches "
                          "this host's own port: drop one of them")
    if not 1 <= args.port <= 65535:
        errors.append(f"--port {args.port}: expected 1..65535")
    if args.format != SHELL and args.chain is None:
        errors.append(f"--format {args.format} prints one host's rules: add --chain input (the "
                      "LNS runs on this host) or --chain forward (it routes to a remote LNS)")
    if args.format == RESTORE and args.family is None:
        errors.append("--format iptables-restore prints one file per family: add --family ipv4 "
                      "(/etc/iptables/rules.v4) or --family ipv6 (/etc/iptables/rules.v6)")
    errors += unmet(args, [Needs("family", "format", RESTORE)])
    if args.format != SHELL and args.chain == FORWARD and not errors:
        errors += _forward_needs_lns(args)
    return errors


def _forward_needs_lns(args: argparse.Namespace) -> list[str]:
    """A FORWARD file without the LNS's address would hold no rule at all: required then."""
    lns = {4: args.lns_ipv4, 6: args.lns_ipv6}
    if args.format == RESTORE:
        version = FAMILIES[args.family]
        flag = f"--lns-ipv{version}"
        if not lns[version]:
            return [f"--chain forward --family {args.family} needs {flag} ADDR: the remote "
                    "LNS's address, which the FORWARD rule matches"]
    elif not lns[4] and not lns[6]:
        return ["--chain forward needs --lns-ipv4 ADDR and/or --lns-ipv6 ADDR: the remote "
                "LNS's address(es), which the forward rules match"]
    return []


def _command(args: argparse.Namespace) -> str:
    """How the operator named the config, port and LNS, for the hints printed (the undo, the
    persistent forms); `render` adds the format, chain and family."""
    words = ["l2tpreorder", "rules"]
    if args.config is not None:
        words += ["--config", args.config]
    if args.port != L2TP_PORT:
        words += ["--port", str(args.port)]
    for flag, value in (("--lns-ipv4", args.lns_ipv4), ("--lns-ipv6", args.lns_ipv6)):
        if value:
            words += [flag, value]
    return shlex.join(words)


def main(args: argparse.Namespace) -> int:
    errors = option_errors(args)
    for error in errors:
        print(f"l2tpreorder: error: {error}", file=sys.stderr)
    if errors:
        return 2
    path = config_file(args.config)  # the file `run` would read (None: the defaults)
    try:
        config = Config() if path is None else load_config(path)
    except ConfigError as e:
        print(f"l2tpreorder: error: {e}", file=sys.stderr)
        return 2
    text = render(
        config, port=args.port, lns4=args.lns_ipv4, lns6=args.lns_ipv6, fmt=args.format,
        chain=args.chain, family=FAMILIES.get(args.family or ""), undo=args.undo,
        command=_command(args),
    )  # fmt: skip
    sys.stdout.write(text)
    return 0
