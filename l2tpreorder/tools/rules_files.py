"""`l2tpreorder rules --format iptables-restore|nft`: the rules as files that survive a reboot.

iptables-restore: one file per family, for /etc/iptables/rules.v4 and rules.v6 (Debian's
iptables-persistent loads them at boot through netfilter-persistent). iptables-restore without
--noflush REPLACES each table a file names, so the header says to merge these lines into the
operator's own file; the undo is the same rules with -D, for `iptables-restore --noflush`.

nft: one `inet l2tpreorder` table for /etc/nftables.conf (nftables.service loads it at boot),
re-loadable (the table is emptied first). Its `queue` statement needs the kernel's nft_queue
module: where that is not built, nft refuses the file, and the header says so.
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
TABLE = "inet l2tpreorder"


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


def _restore_tables(items: list[Comment | Rule], version: int, undo: bool) -> list[str]:
    """`*raw ... COMMIT *filter ... COMMIT` for one family; each comment goes with the rule
    after it (into that rule's table), a rule without its address stays a comment."""
    tables: dict[str, list[str]] = {"raw": [], "filter": []}
    pending: list[str] = []
    for item in items:
        if isinstance(item, Comment):
            if item.version in (None, version) and not undo:
                pending.append(item.text)
            continue
        if item.version != version:
            continue
        line = f"{'-D' if undo else '-A'} {item.chain} {item.spec}"
        if item.missing:
            if undo:
                continue
            line = f"# left out: {item.missing}\n# {line}"
        tables[item.table] += [*pending, line]
        pending = []
    tables["filter"] += pending
    out = []
    for name, lines in tables.items():
        if any(not line.startswith("#") for line in lines):
            out += [f"*{name}", *lines, "COMMIT"]
        else:
            out += lines
    return out


def iptables_restore(rs: RuleSet, hook: str, version: int, command: str, undo: bool) -> str:
    """The rules.v4 / rules.v6 file of `hook` for `version`, or its undo (-D, --noflush)."""
    path = V4_FILE if version == 4 else V6_FILE
    restore = RESTORE[version]
    lines = [f"# {path} - {restore} format", *_about(rs, hook, command)]
    if undo:
        lines += [
            "# UNDO: deletes exactly these rules from the running firewall. Load it with",
            f"#   {restore} --noflush < FILE",
            "# (a table whose rules are not all there is left as it is: nothing half-done);",
            f"# then take the same lines out of {path} so they do not come back at boot.",
        ]
    else:
        lines += [
            f"# {restore} (and netfilter-persistent at boot) REPLACES every table a file names:",
            f"# merge these lines into your own {path}, do not overwrite it with them.",
            "# Add them to the running firewall now, keeping what is there:",
            f"#   {restore} --noflush < FILE",
            f"# Persistent: apt install iptables-persistent; it loads {path} at boot",
            "#   (netfilter-persistent reload: load it now; netfilter-persistent save: write the",
            "#   running rules into it).",
            f"# Undo: {command} --undo | {restore} --noflush",
            f"#   and take the lines out of {path}.",
        ]
    body = _restore_tables(iptables_items(rs, hook), version, undo)
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
    """The `inet l2tpreorder` table of `hook` for /etc/nftables.conf, or its undo."""
    lines = ["#!/usr/sbin/nft -f", *_about(rs, hook, command)]
    if undo:
        lines += [
            "# UNDO: removes the l2tpreorder table (nft -f FILE, or: nft delete table "
            f"{TABLE});",
            "# then take the table out of /etc/nftables.conf so it does not come back at boot.",
            f"table {TABLE}",  # declared first: the delete then never fails for a missing table
            f"delete table {TABLE}",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        "# For /etc/nftables.conf (append the table) or a file it includes. Load now: nft -f FILE",
        "# Persistent: systemctl enable nftables.service (it loads /etc/nftables.conf at boot).",
        NFT_QUEUE_NOTE,
        f"# Undo: nft delete table {TABLE}  (or: {command} --undo | nft -f -)",
        "# Loading it again is safe: the first two lines empty the table.",
        f"table {TABLE}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
    ]
    for chain in nft_chains(rs, hook):
        lines += _nft_chain(chain)
    return "\n".join([*lines, "}"]) + "\n"

