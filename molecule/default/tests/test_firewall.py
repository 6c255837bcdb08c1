"""The firewall, seen from outside: the proxy's port answers from the machine
running the tests, while Flower's, Redis' and any other port are filtered
(the connection times out: packets are dropped, not refused)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import container_ip, role_defaults, wait_for

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
    for port in FIREWALL["flower_firewall_ports"]:
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
