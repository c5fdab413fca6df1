"""`l2tpreorder rules --format iptables-restore|nft`: the rules as files that survive a reboot.

iptables-restore: one file per family, for /etc/iptables/rules.v4 and rules.v6 (Debian's
iptables-persistent loads them at boot through netfilter-persistent). iptables-restore without
--noflush REPLACES each table a file names, so the header says to merge these lines into the
operator's own file. The rules sit in chains of ours (L2TPREORDER_INPUT ...) reached by one jump
inserted at the top of each built-in chain: appended, they would come after a stateful
firewall's ACCEPT and never see a packet. The undo (for `iptables-restore --noflush`) first
empties those chains, each table its own transaction that cannot fail, then removes the jumps
and the chains: a rule already missing can no longer stop the queue rules from going.

nft: one table per hook (`inet l2tpreorder_input`, `inet l2tpreorder_forward`: a host may need
both, and each file empties and deletes only its own) for /etc/nftables.conf (nftables.service
loads it at boot), re-loadable (the table is emptied first). Its `queue` statement needs the
kernel's nft_queue module: where that is not built, nft refuses the file, and the header says so.
"""

from __future__ import annotations

from l2tpreorder.tools.rules_model import (
    FORWARD,
    Chain,
    Comment,
    Rule,
    RuleSet,
    iptables_items,
    nft_chains,
)

V4_FILE, V6_FILE = "/etc/iptables/rules.v4", "/etc/iptables/rules.v6"
RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}
WHERE = {
    "input": "the LNS runs on this host (INPUT, OUTPUT)",
    FORWARD: "this host routes to a remote LNS (FORWARD)",
}


def nft_table(hook: str) -> str:
    """The nft table of `hook`'s rules: one per hook, so loading (which empties the table) or
    undoing the forward file leaves the input rules alone and the other way round."""
    return f"inet l2tpreorder_{hook}"


BOTH_AT_BOOT = (
    "# Choose ONE way to load rules at boot: nftables.service (/etc/nftables.conf) and\n"
    "# netfilter-persistent (rules.v4/rules.v6) both run at boot, in no set order. Debian's\n"
    "# /etc/nftables.conf starts with `flush ruleset`, which also wipes the iptables rules\n"
    "# (iptables-nft keeps them in nftables). Keeping both: order them with a drop-in,\n"
    "#   systemctl edit netfilter-persistent   ->   [Unit] After=nftables.service\n"
    "# or have nftables.conf flush only its own tables (`flush table inet filter`)."
)


def _about(rs: RuleSet, hook: str, command: str) -> list[str]:
    queues = ", ".join(str(q) for q in rs.config.inpath_queues)
    lines = [
        f"# l2tpreorder in-path rules for NFQUEUE {queues}: {WHERE[hook]}.",
        f"# Printed by: {command}",
        "# The daemon never edits the firewall. Without a reader the bypass lets packets pass.",
    ]
    if rs.config.mode != "inpath":
        lines.insert(0, "# NOTE: the config says mode: relay; set mode: inpath to use these rules.")
    return lines


CHAIN_PREFIX = "L2TPREORDER_"  # ours: L2TPREORDER_INPUT etc., one per built-in chain we hook


def _restore_tables(items: list[Comment | Rule], version: int) -> dict[str, list[str]]:
    """Per table, the lines that fill our chains (`-A L2TPREORDER_INPUT ...`); each comment
    goes with the rule after it (into that rule's table), a rule without its address stays a
    comment. Returned in the order the hooks come (raw first)."""
    tables: dict[str, list[str]] = {"raw": [], "filter": []}
    pending: list[str] = []
    for item in items:
        if isinstance(item, Comment):
            if item.version in (None, version):
                pending.append(item.text)
            continue
        if item.version != version:
            continue
        line = f"-A {CHAIN_PREFIX}{item.chain} {item.spec}"
        if item.missing:
            line = f"# left out: {item.missing}\n# {line}"
        tables[item.table] += [*pending, line]
        pending = []
    tables["filter"] += pending
    return tables


def _ours(lines: list[str]) -> list[str]:
    """The built-in chains a table's lines hook into (in order): each gets one chain of ours."""
    found = [line.split()[1].removeprefix(CHAIN_PREFIX) for line in lines if line[:1] == "-"]
    return list(dict.fromkeys(found))


def _load(tables: dict[str, list[str]]) -> list[str]:
    """Declare our chains (which empties them when they are there: reloading does not
    duplicate a rule), jump to them from the top of the built-in chains, fill them."""
    out = []
    for name, lines in tables.items():
        hooked = _ours(lines)
        if not hooked:
            out += lines
            continue
        out += [f"*{name}", *(f":{CHAIN_PREFIX}{c} - [0:0]" for c in hooked)]
        out += [f"-I {c} 1 -j {CHAIN_PREFIX}{c}" for c in hooked]
        out += [*lines, "COMMIT"]
    return out


def _undo(tables: dict[str, list[str]]) -> list[str]:
    """First empty our chains, each table its own transaction that cannot fail (declaring a
    chain creates or empties it): whatever is left of the rules, nothing is queued after
    that. Then the jumps and our chains go; a missing jump stops iptables-restore there."""
    hooked = {name: _ours(lines) for name, lines in tables.items()}
    hooked = {name: chains for name, chains in hooked.items() if chains}
    out = ["# 1. empty our chains (this part always works):"]
    for name, chains in hooked.items():
        out += [f"*{name}", *(f":{CHAIN_PREFIX}{c} - [0:0]" for c in chains), "COMMIT"]
    out.append("# 2. remove the jumps to them and the chains:")
    for name, chains in hooked.items():
        out += [f"*{name}", *(f"-D {c} -j {CHAIN_PREFIX}{c}" for c in chains)]
        out += [*(f"-X {CHAIN_PREFIX}{c}" for c in chains), "COMMIT"]
    return out


def iptables_restore(rs: RuleSet, hook: str, version: int, command: str, undo: bool) -> str:
    """The rules.v4 / rules.v6 file of `hook` for `version`, or its undo (for --noflush)."""
    path = V4_FILE if version == 4 else V6_FILE
    restore = RESTORE[version]
    lines = [f"# {path} - {restore} format", *_about(rs, hook, command)]
    if undo:
        lines += [
            "# UNDO: empties the L2TPREORDER_* chains, then removes the jumps to them and the",
            f"# chains. Load it with: {restore} --noflush < FILE",
            "# Part 1 always works, whatever is left of the rules: nothing is queued after it.",
            "# Where a jump is not there (undone already), part 2 stops at it with an error;",
            "# loaded twice (two jumps), undo twice. Then take the same lines out of",
            f"# {path} so they do not come back at boot.",
        ]
    else:
        lines += [
            "# The rules live in chains of their own (L2TPREORDER_INPUT ...), reached by a jump",
            "# inserted at the TOP of the built-in chain (-I ... 1): the jump must come before",
            f"# any ACCEPT of yours (ESTABLISHED,RELATED, udp {rs.port}), or those packets never",
            "# reach the queue and pass unordered, silently. Loading the file again empties and",
            "# refills the chains but adds a second jump (harmless; undo twice then).",
            "# The optional control rule: leave out its -A line, not its chain or jump.",
            f"# {restore} (and netfilter-persistent at boot) REPLACES every table a file names:",
            f"# merge these lines into your own {path}, do not overwrite it with them.",
            "# Add them to the running firewall now, keeping what is there:",
            f"#   {restore} --noflush < FILE",
            f"# Persistent: apt install iptables-persistent; it loads {path} at boot",
            "#   (netfilter-persistent reload: load it now; netfilter-persistent save: write the",
            "#   running rules into it).",
            f"# Undo: {command} --undo | {restore} --noflush",
            f"#   and take the lines out of {path}.",
            BOTH_AT_BOOT,
        ]
    tables = _restore_tables(iptables_items(rs, hook), version)
    body = _undo(tables) if undo else _load(tables)
    if not any(line.startswith("-") for line in body):
        body.append(f"# (no IPv{version} rule for this host: this file changes nothing)")
    return "\n".join([*lines, "", *body]) + "\n"


def _nft_chain(chain: Chain) -> list[str]:
    lines = [f"\t{line}" for text in chain.before for line in text.splitlines()]
    lines += [f"\tchain {chain.name} {{", f"\t\t{chain.hook[:-1]}; policy accept;"]
    for item in chain.rules:
        if isinstance(item, Comment):
            lines += [f"\t\t{line}" for line in item.text.splitlines()]
        elif item.missing:
            lines += [f"\t\t# left out: {item.missing}", f"\t\t# {item.expr}"]
        else:
            lines.append(f"\t\t{item.expr}")
    return [*lines, "\t}"]


NFT_QUEUE_NOTE = (
    "# The `queue` statement needs the kernel's nft_queue module (CONFIG_NFT_QUEUE). Where it\n"
    "# is not built, nft refuses this file (\"Could not process rule: No such file or\n"
    "# directory\" at `queue`): use --format iptables-restore (the NFQUEUE target) there."
)


def nft_file(rs: RuleSet, hook: str, command: str, undo: bool) -> str:
    """The `inet l2tpreorder_HOOK` table of `hook` for /etc/nftables.conf, or its undo."""
    table = nft_table(hook)
    lines = ["#!/usr/sbin/nft -f", *_about(rs, hook, command)]
    if undo:
        lines += [
            f"# UNDO: removes the {table} table (nft -f FILE, or: nft delete table "
            f"{table});",
            "# then take the table out of /etc/nftables.conf so it does not come back at boot.",
            f"table {table}",  # declared first: the delete then never fails for a missing table
            f"delete table {table}",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        "# For /etc/nftables.conf (append the table) or a file it includes. Load now: nft -f FILE",
        "# Persistent: systemctl enable nftables.service (it loads /etc/nftables.conf at boot).",
        BOTH_AT_BOOT,
        NFT_QUEUE_NOTE,
        f"# Undo: nft delete table {table}  (or: {command} --undo | nft -f -)",
        "# Loading it again is safe: the first two lines empty the table.",
        f"table {table}",
        f"delete table {table}",
        f"table {table} {{",
    ]
    for chain in nft_chains(rs, hook):
        lines += _nft_chain(chain)
    return "\n".join([*lines, "}"]) + "\n"

