"""iptables for the real node: our own tagged rules, and the purge of everything the node's
kubelet, kube-proxy and CNI plugins add.

Guarantees:

* our rules carry the comment ``openbao-backup-realnode`` and are added only if missing;
* ``purge_kube_chains`` removes, for IPv4 and IPv6 and each of filter/nat/mangle/raw, our
  rules, every ``KUBE-*`` / ``CNI-*`` chain and every rule that jumps to one, rewriting only
  the tables that have any, each atomically with ``iptables-restore``; other rules stay;
* ``leftover_rules`` lists what the purge would remove (empty on a clean host); listing never
  creates a table.

Test/dev infrastructure for Linux as root, not product code.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess

from devenv.realnode_host import HostError, run

RULE_COMMENT = "openbao-backup-realnode"
_CHAIN_PREFIXES = ("KUBE-", "CNI-")
_TABLES = ("filter", "nat", "mangle", "raw")


def ensure_rule(binary: str, table: str, chain: str, spec: list[str], *, first: bool) -> None:
    """Add ``spec`` (tagged with our comment) to ``chain`` unless it is already there."""
    tagged = [*spec, "-m", "comment", "--comment", RULE_COMMENT]
    check = [binary, "-w", "-t", table, "-C", chain, *tagged]
    if subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return
    where = ["-I", chain, "1"] if first else ["-A", chain]
    run([binary, "-w", "-t", table, *where, *tagged])


def ours(line: str) -> bool:
    """An iptables-save line the real node (or its kubelet / kube-proxy / CNI) owns."""
    if line.startswith(":"):
        return line[1:].startswith(_CHAIN_PREFIXES)
    if not line.startswith("-A "):
        return False
    words = line.split()
    if words[1].startswith(_CHAIN_PREFIXES) or RULE_COMMENT in line:
        return True
    return any(
        w in ("-j", "-g") and nxt.startswith(_CHAIN_PREFIXES)
        for w, nxt in itertools.pairwise(words)
    )


def purge_kube_chains() -> list[str]:
    """Remove our rules and every KUBE-*/CNI-* chain (and jumps to them), IPv4 and IPv6.

    Each table that has any is rewritten atomically with ``iptables-restore``; returns what
    was removed (for the log)."""
    removed = []
    for family in ("iptables", "ip6tables"):
        save, restore = f"{family}-save", f"{family}-restore"
        for table in _TABLES:
            try:
                dump = run([save, "-t", table])
            except (HostError, FileNotFoundError):
                continue
            lines = dump.splitlines()
            drop = [ln for ln in lines if ours(ln)]
            if not drop:
                continue
            keep = [ln for ln in lines if not ours(ln) and not ln.startswith("#")]
            run([restore, "-w"], input_text="\n".join(keep) + "\n")
            removed += [f"{save} {table}: {ln}" for ln in drop]
    return removed


def leftover_rules() -> list[str]:
    """Every line of iptables-save / ip6tables-save the real node would own (empty when clean)."""
    found = []
    for save in ("iptables-save", "ip6tables-save"):
        with contextlib.suppress(HostError, FileNotFoundError):
            found += [f"{save}: {ln}" for ln in run([save]).splitlines() if ours(ln)]
    return found
