"""roles/flower_firewall/filter_plugins/flower_firewall.py: the rules the settings ask for, the managed rules read
back from ufw's user rules, which of those are stale, and whether narrowed SSH sources admit Ansible's address.

The reconcile on a real ufw (a wide rule gone after narrowing, others' rules kept) is proven in Molecule
(molecule/default/tests/test_firewall.py)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from module_runner import load_file

PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "flower_firewall" / "filter_plugins" / "flower_firewall.py"


@pytest.fixture(scope="module")
def filters() -> ModuleType:
    return load_file("flower_firewall_filters", PLUGIN)


def tuple_line(spec: str, comment: str = "") -> str:
    return f"### tuple ### {spec}" + (f" comment={comment.encode().hex()}" if comment else "")


# What ufw wrote after a run with flower_firewall_allow [any], plus a rule someone else added.
USER_RULES = "\n".join(
    [
        "*filter",
        tuple_line("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in", "flowerops ssh"),
        "-A ufw-user-input -p tcp --dport 22 -j ACCEPT",
        tuple_line("allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in", "flowerops proxy"),
        tuple_line("allow tcp 8097 0.0.0.0/0 any 203.0.113.9 in"),
        tuple_line("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in", "flowerops ssh"),
        tuple_line("deny tcp 443 0.0.0.0/0 any 198.51.100.7 in", "flower-login ban"),
        "COMMIT",
    ]
)
USER6_RULES = "\n".join(
    [
        tuple_line("allow tcp 22 ::/0 any ::/0 in", "flowerops ssh"),
        tuple_line("allow tcp 443 ::/0 any ::/0 in", "flowerops proxy"),
    ]
)


def wanted(
    filters: ModuleType, allow: list[str], ssh_allow: list[str] | None = None, extra: list | None = None
) -> list:
    return filters.flower_firewall_wanted(22, ssh_allow or ["any"], [443], allow, extra or [], "flowerops")


def test_wanted_rules_come_ssh_first_with_the_marker(filters: ModuleType) -> None:
    rules = wanted(filters, ["192.0.2.0/24"], extra=[{"port": "9100", "from_ip": "10.0.0.5", "comment": "node"}])
    assert [(r["kind"], r["port"], r["from_ip"], r["comment"]) for r in rules] == [
        ("ssh", "22", "any", "flowerops ssh"),
        ("proxy", "443", "192.0.2.0/24", "flowerops proxy"),
        ("extra", "9100", "10.0.0.5", "flowerops extra: node"),
    ]


def test_managed_rules_are_the_marked_ones_once_per_spec(filters: ModuleType) -> None:
    managed = filters.flower_firewall_managed([USER_RULES, USER6_RULES], "flowerops")
    assert [(r["port"], r["from_ip"], r["comment"]) for r in managed] == [
        ("22", "any", "flowerops ssh"),
        ("443", "any", "flowerops proxy"),
    ]


def test_narrowing_makes_the_wide_rule_stale(filters: ModuleType) -> None:
    managed = filters.flower_firewall_managed([USER_RULES, USER6_RULES], "flowerops")
    assert filters.flower_firewall_stale(managed, wanted(filters, ["any"])) == []
    stale = filters.flower_firewall_stale(managed, wanted(filters, ["192.0.2.0/24"]))
    assert [(r["rule"], r["proto"], r["port"], r["from_ip"], r["to_ip"]) for r in stale] == [
        ("allow", "tcp", "443", "any", "any")
    ]
    stale = filters.flower_firewall_stale(managed, wanted(filters, ["any"], ssh_allow=["203.0.113.0/24"]))
    assert [(r["port"], r["from_ip"]) for r in stale] == [("22", "any")]


def test_addresses_compare_as_ufw_stores_them(filters: ModuleType) -> None:
    stored = tuple_line("allow tcp 443 0.0.0.0/0 any 192.0.2.0/24 in", "flowerops proxy")
    stored += "\n" + tuple_line("allow tcp 443 0.0.0.0/0 any 192.0.2.7 in", "flowerops proxy")
    stored += "\n" + tuple_line("allow tcp 443 ::/0 any 2001:db8::/32 in", "flowerops proxy")
    managed = filters.flower_firewall_managed([stored], "flowerops")
    # A host bits set, a /32, an uncompressed IPv6 network: the same rules as ufw stored them.
    same = wanted(filters, ["192.0.2.9/24", "192.0.2.7/32", "2001:0db8:0000::/32"])
    assert filters.flower_firewall_stale(managed, same) == []


def test_ssh_sources_admit_the_address(filters: ModuleType) -> None:
    assert filters.flower_firewall_admits("203.0.113.7", ["any"])
    assert filters.flower_firewall_admits("203.0.113.7", ["198.51.100.0/24", "203.0.113.0/24"])
    assert filters.flower_firewall_admits("::ffff:203.0.113.7", ["203.0.113.0/24"])
    assert filters.flower_firewall_admits("2001:db8::5", ["2001:db8::/32"])
    assert not filters.flower_firewall_admits("203.0.113.7", ["198.51.100.0/24", "2001:db8::/32"])


def test_missing_rules_are_those_absent_from_either_family_or_with_another_comment(filters: ModuleType) -> None:
    rules = wanted(filters, ["any", "192.0.2.7"], extra=[{"port": "8097", "from_ip": "203.0.113.9"}])
    missing = filters.flower_firewall_missing(rules, [USER_RULES, USER6_RULES], "flowerops")
    # ssh and 443 from any are in both files; 443 from 192.0.2.7 in neither; 8097's rule is there, unmarked.
    assert [(r["port"], r["from_ip"]) for r in missing] == [("443", "192.0.2.7"), ("8097", "203.0.113.9")]
    # A rule from any present in user.rules alone still needs its IPv6 copy.
    assert [r["port"] for r in filters.flower_firewall_missing(rules[:2], [USER_RULES, ""], "flowerops")] == [
        "22",
        "443",
    ]
    # An IPv4 source needs user.rules alone.
    v4 = USER_RULES.replace("COMMIT", tuple_line("allow tcp 443 0.0.0.0/0 any 192.0.2.7 in", "flowerops proxy"))
    assert filters.flower_firewall_missing(rules[2:3], [v4, ""], "flowerops") == []
    # Files not read (ufw not set up yet): everything is missing.
    assert filters.flower_firewall_missing(rules, [], "flowerops") == rules
