"""Filters of the flower_firewall role: the rules it wants, the rules it manages on the host, and which of
those are stale (wanted no more), so that narrowing the settings removes the broader rules a previous run added.

A rule is the role's when its ufw comment starts with the marker (vars/main.yml); ufw keeps user rules in
/etc/ufw/user.rules and user6.rules as lines
``### tuple ### ACTION PROTO DPORT DST SPORT SRC [DAPP SAPP] DIRECTION [comment=HEX]``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

TUPLE = "### tuple ### "


def ufw_address(value: Any) -> str:
    """An address as ufw stores it: "any", a bare host address, or a network address with its prefix."""
    text = str(value).strip()
    if text.lower() in ("any", "anywhere"):
        return "any"
    network = ipaddress.ip_network(text, strict=False)
    if network.prefixlen == 0:
        return "any"
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _key(rule: dict[str, Any]) -> tuple[str, str, str, str, str]:
    port = str(rule.get("port", "any")).replace(" ", "") or "any"
    return (
        str(rule.get("rule", "allow")),
        str(rule.get("proto", "tcp")),
        port,
        ufw_address(rule.get("from_ip", "any")),
        ufw_address(rule.get("to_ip", "any")),
    )


def flower_firewall_wanted(
    ssh_port: int,
    ssh_allow: list[str],
    ports: list[int],
    allow: list[str],
    extra_rules: list[dict[str, Any]],
    marker: str,
) -> list[dict[str, Any]]:
    """Every rule the settings ask for, SSH first, each with its kind and its marked comment."""

    def allowed(kind: str, port: Any, source: str) -> dict[str, Any]:
        return dict(
            kind=kind,
            rule="allow",
            proto="tcp",
            port=str(port),
            from_ip=source,
            to_ip="any",
            comment=f"{marker} {kind}",
        )

    wanted = [allowed("ssh", ssh_port, source) for source in ssh_allow]
    wanted += [allowed("proxy", port, source) for port in ports for source in allow]
    for extra in extra_rules:
        comment = f"{marker} extra" + (f": {extra['comment']}" if extra.get("comment") else "")
        wanted.append(
            dict(
                kind="extra",
                rule=extra.get("rule", "allow"),
                proto=extra.get("proto", "tcp"),
                port=str(extra["port"]) if "port" in extra else "any",
                from_ip=extra.get("from_ip", "any"),
                to_ip=extra.get("to_ip", "any"),
                comment=comment,
            )
        )
    return wanted


def flower_firewall_managed(user_rules: list[str], marker: str) -> list[dict[str, Any]]:
    """The rules in ufw's user.rules/user6.rules texts whose comment's first word is marker, one per rule spec.

    A rule from "any" is stored twice (IPv4 and IPv6); both carry the same spec here, and one `ufw delete`
    removes both.
    """
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for text in user_rules:
        for line in text.splitlines():
            if not line.startswith(TUPLE):
                continue
            words = line[len(TUPLE) :].split()
            comment_hex = next((word[len("comment=") :] for word in words if word.startswith("comment=")), "")
            try:
                comment = bytes.fromhex(comment_hex).decode()
            except ValueError:
                continue
            fields = [word for word in words if not word.startswith("comment=")]
            # Seven fields and "in": an incoming rule without application profiles, as the role writes them.
            if comment.split(" ", 1)[0] != marker or len(fields) != 7 or fields[6] != "in" or fields[4] != "any":
                continue
            action, proto, port, dst, _sport, src, _direction = fields
            rule = dict(
                rule=action, proto=proto, port=port, from_ip=ufw_address(src), to_ip=ufw_address(dst), comment=comment
            )
            found.setdefault(_key(rule), rule)
    return list(found.values())


def flower_firewall_stale(managed: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The managed rules no wanted rule matches (the comment does not count: ufw matches rules without it)."""
    keys = {_key(rule) for rule in wanted}
    return [rule for rule in managed if _key(rule) not in keys]


def _family(address: str) -> int:
    """4 or 6 for an address as ufw_address gives it, 0 for "any"."""
    return 0 if address == "any" else ipaddress.ip_network(address, strict=False).version


def flower_firewall_missing(wanted: list[dict[str, Any]], user_rules: list[str], marker: str) -> list[dict[str, Any]]:
    """The wanted rules not yet in ufw's user rules with their comment: user_rules is the texts of user.rules and
    user6.rules, in that order ("" for a file not there). A rule between any addresses is in both files, one
    with an IPv4 (IPv6) address in user.rules (user6.rules) alone. The rest need no `ufw` run: the module would
    compare the same files and add nothing.
    """
    present = [
        {(_key(rule), rule["comment"]) for rule in flower_firewall_managed([text], marker)} for text in user_rules
    ]
    missing = []
    for rule in wanted:
        key = _key(rule)
        families = {_family(key[3]), _family(key[4])} - {0}
        files = [0, 1] if not families else [0] if families == {4} else [1]
        if len(present) < 2 or any((key, rule["comment"]) not in present[index] for index in files):
            missing.append(rule)
    return missing


def flower_firewall_admits(address: str, sources: list[str]) -> bool:
    """Whether a source list ("any" or addresses/CIDRs) admits an address."""
    host = ipaddress.ip_address(str(address).strip())
    if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped:
        host = host.ipv4_mapped
    for source in sources:
        if ufw_address(source) == "any":
            return True
        network = ipaddress.ip_network(str(source), strict=False)
        if network.version == host.version and host in network:
            return True
    return False


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "flower_firewall_wanted": flower_firewall_wanted,
            "flower_firewall_managed": flower_firewall_managed,
            "flower_firewall_stale": flower_firewall_stale,
            "flower_firewall_missing": flower_firewall_missing,
            "flower_firewall_admits": flower_firewall_admits,
        }
