"""The firewall, seen from outside: the proxy's port answers from the machine
running the tests, while Flower's, Redis' and any other port are filtered
(the connection times out: packets are dropped, not refused).

Then its settings: preflight alone refuses those that would lock Ansible out or
leave IPv6 open; narrowing the allowed sources removes the wide rule a previous
run added (others' rules stay); and the checklist's firewall item fails when a
managed port is open wider than configured. The scenario's settings are put
back at the end."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GROUP_VARS, INSTANCE, container_ip, role_defaults, run_playbook, wait_for

# The first platform only: a URL prefix changes nothing this module checks (conftest.platform_skip).

FIREWALL = role_defaults("flower_firewall")
UNUSED_PORT = 8099
FILTERED = [*FIREWALL["flower_firewall_forbidden_ports"], UNUSED_PORT]


def listening(host: Any, port: int) -> bool:
    return bool(host.run("ss -Hltn 'sport = :%s'", str(port)).stdout.strip())


def connect(address: str, port: int, timeout: float = 3.0) -> str:
    """'open', 'refused' or 'filtered' (no answer within the timeout)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "filtered"


@pytest.fixture(scope="module")
def listeners(host: Any) -> Iterator[str]:
    """A temporary listener on an unused port (nginx listens on 443 itself)."""
    started = []
    for port in (UNUSED_PORT,):
        if listening(host, port):
            continue
        unit = f"flowerops-test-listen-{port}"
        run = host.run(
            "systemd-run --unit=%s --collect python3 -m http.server %s --bind 0.0.0.0 --directory /usr/share/ufw",
            unit,
            str(port),
        )
        assert run.rc == 0, run.stderr
        started.append(unit)
        assert wait_for(lambda port=port: listening(host, port), timeout=20), f"no listener on {port}"
    yield container_ip(host)
    for unit in started:
        host.run("systemctl stop %s", unit)


def test_ufw_denies_incoming_and_allows_outgoing(host: Any) -> None:
    status = host.run("ufw status verbose")
    assert status.rc == 0, status.stderr
    assert "Status: active" in status.stdout
    assert "Default: deny (incoming), allow (outgoing)" in status.stdout
    # The proxy's ports on a Flower host (the default is a template: 80 and 443 in group flower).
    for port in (80, 443):
        assert f"{port}/tcp (v6)" in status.stdout, "the rules do not cover IPv6"
    assert f"{FIREWALL['flower_firewall_ssh_port']}/tcp" in status.stdout


def test_https_port_answers_from_outside(host: Any, listeners: str) -> None:
    assert host.service("nginx").is_running
    assert connect(listeners, 443) == "open"


@pytest.mark.parametrize("port", FILTERED)
def test_other_ports_are_filtered(host: Any, listeners: str, port: int) -> None:
    if port == UNUSED_PORT:
        # The listener answers inside the host: only the firewall keeps it from the outside.
        assert host.run("python3 -c %s", f"import socket; socket.create_connection(('127.0.0.1', {port}), 3)").rc == 0
    assert connect(listeners, port) == "filtered"


# --- settings preflight refuses: run playbooks/preflight.yml alone (seconds, nothing on the host changes) ---

# Over SSH: these extra variables make Ansible believe it reaches the host over
# SSH; preflight decides from the inventory alone and never connects.
OVER_SSH = ("-e", "ansible_connection=ssh", "-e", "ansible_host=192.0.2.1", "-e", "ansible_ssh_timeout=5")

REFUSED: dict[str, tuple[Any, ...]] = {
    "SSH port not admitted": (
        {**GROUP_VARS},
        ["2222", "flower_firewall_ssh_port"],
        *OVER_SSH,
        "-e",
        "ansible_port=2222",
    ),
    "address outside the narrowed SSH sources": (
        {**GROUP_VARS, "flower_firewall_ssh_allow": ["198.51.100.0/24"], "flower_firewall_ssh_client": "203.0.113.7"},
        ["203.0.113.7", "flower_firewall_ssh_allow"],
    ),
    "IPv6 left unfiltered": ({**GROUP_VARS, "flower_firewall_ipv6": False}, ["flower_firewall_ipv6"]),
}
ADMITTED: dict[str, tuple[Any, ...]] = {
    "SSH on the allowed port": ({**GROUP_VARS}, *OVER_SSH, "-e", "ansible_port=22"),
    "address inside the narrowed SSH sources": (
        {**GROUP_VARS, "flower_firewall_ssh_allow": ["198.51.100.0/24"], "flower_firewall_ssh_client": "198.51.100.7"},
    ),
    # The docker connection uses no SSH port: nothing to check.
    "docker connection": (
        {**GROUP_VARS, "flower_firewall_ssh_port": 2222},
        "-e",
        "ansible_connection=community.docker.docker",
        "-e",
        f"ansible_host={INSTANCE}",
    ),
}


def preflight(tmp_path: Path, group_vars: dict[str, Any], *args: str) -> tuple[int, str]:
    result = run_playbook(tmp_path, group_vars, "playbooks/preflight.yml", *args)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_preflight_refuses_a_firewall_that_locks_ansible_out(tmp_path: Path, case: str) -> None:
    group_vars, expected, *args = REFUSED[case]
    rc, output = preflight(tmp_path, group_vars, *args)
    assert rc != 0, output[-3000:]
    for words in expected:
        assert words in output, output[-3000:]
    assert "UNREACHABLE" not in output, "preflight tried to reach the host"


@pytest.mark.parametrize("case", ADMITTED, ids=list(ADMITTED))
def test_preflight_admits_a_firewall_ansible_gets_through(tmp_path: Path, case: str) -> None:
    group_vars, *args = ADMITTED[case]
    rc, output = preflight(tmp_path, group_vars, *args)
    assert rc == 0, output[-3000:]


# --- narrowing removes the wide rules; the checklist sees a port open wider than configured ---

NARROW = "192.0.2.0/24"
# A rule someone else added (no flowerops comment): narrowing must leave it.
OTHERS_RULE = "from 203.0.113.9 to any port 8097 proto tcp"


def ufw_rules(host: Any, port: int) -> list[str]:
    """`ufw status` lines of rules for port, spaces collapsed: "443/tcp ALLOW Anywhere # flowerops proxy"."""
    lines = host.run("ufw status").stdout.splitlines()
    return [" ".join(line.split()) for line in lines if re.match(rf"^{port}/tcp\b", line)]


def firewall_play(tmp_path: Path, **settings: Any) -> str:
    result = run_playbook(tmp_path, {**GROUP_VARS, **settings}, "playbooks/firewall.yml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


class TestNarrowing:
    """In this order: wide (the scenario's settings), narrowed, then the scenario's settings again."""

    @pytest.fixture(scope="class")
    def narrowed(self, host: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[str]]]:
        wide = ufw_rules(host, 443)
        assert "443/tcp ALLOW Anywhere # flowerops proxy" in wide, wide
        assert host.run(f"ufw allow {OTHERS_RULE}").rc == 0
        try:
            firewall_play(tmp_path_factory.mktemp("narrow"), flower_firewall_allow=[NARROW])
            yield {"wide": wide, "narrow": ufw_rules(host, 443), "others": ufw_rules(host, 8097)}
        finally:
            host.run(f"ufw delete allow {OTHERS_RULE}")
            host.run("ufw delete allow 443/tcp")  # the checklist test's rule, if it is still there
            firewall_play(tmp_path_factory.mktemp("restore"))
            assert ufw_rules(host, 443) == wide, "the scenario's rules are not back"

    def test_narrowing_removes_the_wide_rule(self, narrowed: dict[str, list[str]]) -> None:
        assert narrowed["narrow"] == [f"443/tcp ALLOW {NARROW} # flowerops proxy"], narrowed["narrow"]
        assert "443/tcp (v6) ALLOW Anywhere (v6) # flowerops proxy" in narrowed["wide"]
        # Gone for IPv6 too: an IPv4 network admits no IPv6 client.
        assert not [rule for rule in narrowed["narrow"] if "Anywhere" in rule]

    def test_rules_others_added_stay(self, narrowed: dict[str, list[str]]) -> None:
        assert narrowed["others"] == ["8097/tcp ALLOW 203.0.113.9"], narrowed["others"]

    def test_checklist_fails_a_managed_port_open_wider(
        self, host: Any, narrowed: dict[str, list[str]], tmp_path: Path
    ) -> None:
        assert host.run("ufw allow 443/tcp").rc == 0  # by hand, without the flowerops comment: from Anywhere
        try:
            reports = tmp_path / "reports"
            run = run_playbook(
                tmp_path, GROUP_VARS, "playbooks/checklist.yml", "-e", f"flower_checklist_report_dir={reports}"
            )
        finally:
            assert host.run("ufw delete allow 443/tcp").rc == 0
        output = run.stdout + run.stderr
        assert run.returncode != 0, output[-4000:]
        item = next(i for i in json.loads((reports / f"{INSTANCE}.json").read_text())["items"] if i["id"] == 4)
        assert item["status"] == "FAIL", item
        assert f"wider than its flowerops rules ({NARROW})" in item["evidence"], item
        assert "443/tcp ALLOW IN Anywhere" in item["evidence"], item
