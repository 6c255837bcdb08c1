"""The monitoring-only platform (group flower_monitoring alone): it gets the default-deny firewall with SSH
alone, and Prometheus (9090), Alertmanager (9093) and its gossip port (9094) never listen beyond loopback, not
even at their first start (the package's own start, at install).

Seen from another container (the Flower host): 9090, 9093 and 9094 are filtered (the firewall drops the
packets, so the connection times out; a closed port would refuse it), while SSH's port is not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import testinfra
from conftest import FLOWER as INSTANCE
from conftest import container_ip, service_diagnostics, wait_for

CLOSED_TO_OTHERS = {9090: "Prometheus", 9093: "Alertmanager", 9094: "Alertmanager's gossip"}
PORT_IDS = [f"{port}-{name}" for port, name in sorted(CLOSED_TO_OTHERS.items())]
SSH_PORT = 22
ATTEMPTS = 2
TIMEOUT = 3.0

# Run on the Flower host: one TCP connect, "open", "refused" (closed) or "filtered" (no answer in time).
_CONNECT = """
import socket, sys
address, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    socket.create_connection((address, port), timeout).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except (TimeoutError, socket.timeout):
    print("filtered")
except OSError as error:
    print("error", error)
"""

# A stand-in for sshd on the monitor (the test image runs none), answering for at most two minutes.
_LISTEN = """
import socket
server = socket.create_server(("0.0.0.0", 22))
server.settimeout(120)
while True:
    server.accept()[0].close()
"""


@pytest.fixture(scope="module")
def other_host() -> Any:
    return testinfra.get_host(f"docker://{INSTANCE}")


def connect_from(other: Any, address: str, port: int) -> str:
    """What the Flower host sees when it connects to address:port; a filtered port must stay so every time."""
    seen = ""
    for _ in range(ATTEMPTS):
        seen = other.run("python3 -c %s %s %s %s", _CONNECT, address, str(port), str(TIMEOUT)).stdout.strip()
        if seen != "filtered":
            return seen
    return seen


def listening(host: Any, port: int) -> list[str]:
    """Local addresses of the TCP listeners on port."""
    return [line.split()[3] for line in host.run("ss -Hltn 'sport = :%s'", str(port)).stdout.splitlines()]


@pytest.fixture(scope="module")
def ssh_listener(monitor: Any) -> Iterator[None]:
    started = not listening(monitor, SSH_PORT)
    if started:
        run = monitor.run(
            "systemd-run --unit=flowerops-test-ssh-standin --collect -p RuntimeMaxSec=120 python3 -c %s", _LISTEN
        )
        assert run.rc == 0, run.stderr
        assert wait_for(lambda: listening(monitor, SSH_PORT), timeout=20), "no stand-in listener on 22"
    yield
    if started:
        monitor.run("systemctl stop flowerops-test-ssh-standin")


def test_monitor_has_the_default_deny_firewall_with_ssh_alone(monitor: Any) -> None:
    status = monitor.run("ufw status verbose")
    assert status.rc == 0, status.stderr
    assert "Status: active" in status.stdout
    assert "Default: deny (incoming), allow (outgoing)" in status.stdout
    opened = {line.split()[0] for line in status.stdout.splitlines() if " ALLOW IN " in line}
    assert opened == {f"{SSH_PORT}/tcp"}, f"a monitoring-only host should open SSH alone: {status.stdout}"


@pytest.mark.parametrize("unit", ["prometheus", "prometheus-alertmanager"])
def test_prometheus_and_alertmanager_listened_only_on_loopback_since_install(monitor: Any, unit: str) -> None:
    assert monitor.service(unit).is_running, service_diagnostics(monitor, unit)
    journal = monitor.run("journalctl -u %s --no-pager -b -o cat", unit).stdout
    # Every start since boot, the package's first one at install included.
    addresses = re.findall(r'msg="(?:Start listening for connections|Listening on)" address=(\S+)', journal)
    assert addresses, f"no listening address in the journal of {unit}:\n{journal[-2000:]}"
    assert all(a.startswith(("127.0.0.1:", "[::1]:", "localhost:")) for a in addresses), addresses
    assert not listening(monitor, 9094), "Alertmanager's gossip port listens"


@pytest.mark.parametrize("port", sorted(CLOSED_TO_OTHERS), ids=PORT_IDS)
def test_monitoring_ports_are_filtered_from_another_host(monitor: Any, other_host: Any, port: int) -> None:
    assert connect_from(other_host, container_ip(monitor), port) == "filtered"


def test_ssh_is_not_filtered_from_another_host(monitor: Any, other_host: Any, ssh_listener: None) -> None:
    address = container_ip(monitor)
    seen = wait_for(lambda: connect_from(other_host, address, SSH_PORT) == "open", timeout=20, interval=2)
    assert seen, f"{SSH_PORT} from {INSTANCE}: {connect_from(other_host, address, SSH_PORT)}"
