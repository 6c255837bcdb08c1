"""The monitoring-only platform (group flower_monitoring alone): it gets the default-deny firewall with SSH
alone, and Prometheus (9090), Alertmanager (9093) and its gossip port (9094) never listen beyond loopback, not
even at their first start (the package's own start, at install).

Seen from another container (the Flower host): 9090, 9093 and 9094 are filtered (the firewall drops the
packets, so the connection times out; a closed port would refuse it), while SSH's port is not. From this
machine, the on-call guide's SSH tunnel reaches both: Prometheus' alerts page in a browser, and the API amtool
uses."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FLOWER as INSTANCE
from conftest import connect_from, container_ip, flower_host, service_diagnostics, wait_for
from playwright.sync_api import sync_playwright
from testlib import CHROMIUM

CLOSED_TO_OTHERS = {9090: "Prometheus", 9093: "Alertmanager", 9094: "Alertmanager's gossip"}
PORT_IDS = [f"{port}-{name}" for port, name in sorted(CLOSED_TO_OTHERS.items())]
SSH_PORT = 22
# The one console error of Debian 12's Prometheus pages, not ours: libjs-popper.js 1.16 installs popper.min.js
# as an ES module (its classic build is under umd/), and the pages load it as a classic script. Bootstrap's
# tooltips lose it; the page's data and jQuery, which its own scripts need, are there.
DEBIAN_PAGE_ERRORS = {"Unexpected token 'export'"}


@pytest.fixture(scope="module")
def other_host() -> Any:
    return flower_host()


def listening(host: Any, port: int) -> list[str]:
    """Local addresses of the TCP listeners on port."""
    return [line.split()[3] for line in host.run("ss -Hltn 'sport = :%s'", str(port)).stdout.splitlines()]


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


def test_ssh_is_not_filtered_from_another_host(monitor: Any, other_host: Any) -> None:
    assert listening(monitor, SSH_PORT), "no sshd on the monitoring host (the image's)"
    address = container_ip(monitor)
    seen = wait_for(lambda: connect_from(other_host, address, SSH_PORT) == "open", timeout=20, interval=2)
    assert seen, f"{SSH_PORT} from {INSTANCE}: {connect_from(other_host, address, SSH_PORT)}"


@pytest.fixture(scope="module")
def tunnel(monitor: Any) -> Iterator[dict[int, int]]:
    """docs/on-call.md's recipe, run from this machine: `ssh -N -L 9090:127.0.0.1:9090 -L 9093:127.0.0.1:9093
    MONITORING_HOST`, on free local ports (this machine may use 9090 itself), with the key prepare.yml authorised.
    Yields remote port -> local port; the tunnel stops with the module."""
    local = {}
    for remote in (9090, 9093):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local[remote] = probe.getsockname()[1]
    key = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ssh_key"
    forwards = [arg for remote, port in local.items() for arg in ("-L", f"{port}:127.0.0.1:{remote}")]
    options = ["BatchMode=yes", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "ExitOnForwardFailure=yes"]
    command = ["ssh", "-N", "-i", str(key), *[arg for o in options for arg in ("-o", o)], *forwards]
    ssh = subprocess.Popen([*command, f"root@{container_ip(monitor)}"], stderr=subprocess.PIPE, text=True)
    try:
        up = wait_for(lambda: ssh.poll() is not None or answers(f"http://127.0.0.1:{local[9090]}/-/ready"), 30)
        assert up and ssh.poll() is None, f"the tunnel did not come up: {ssh.stderr.read() if ssh.stderr else ''}"
        yield local
    finally:
        ssh.terminate()
        ssh.wait(timeout=10)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.load(reply)


def test_the_ssh_tunnel_shows_prometheus_alerts_page_in_a_browser(tunnel: dict[int, int]) -> None:
    """Through the tunnel, Prometheus' alerts page lists every rule Prometheus loaded, jQuery loads, and the
    browser's console shows no error but Debian's own (DEBIAN_PAGE_ERRORS). Debian builds Prometheus with its
    classic pages only, under /classic/ (/alerts is 404)."""
    base = f"http://127.0.0.1:{tunnel[9090]}"
    rules = get_json(f"{base}/api/v1/rules")["data"]["groups"]
    names = {rule["name"] for group in rules for rule in group["rules"] if rule["type"] == "alerting"}
    assert names, f"Prometheus loaded no alerting rule: {rules}"
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            assert page.goto(f"{base}/classic/alerts", wait_until="networkidle").status == 200
            shown = page.inner_text("body")
            scripted = page.evaluate("typeof window.jQuery")  # the pages' own scripts need it
        finally:
            browser.close()
    assert not [name for name in names if name not in shown], f"rules missing from the alerts page: {shown[:2000]}"
    assert [error for error in errors if error not in DEBIAN_PAGE_ERRORS] == [], errors
    assert scripted == "function", "jQuery did not load: the classic pages' scripts cannot run"


def test_the_ssh_tunnel_reaches_alertmanager_where_amtool_is_pointed(tunnel: dict[int, int]) -> None:
    """amtool --alertmanager.url=http://localhost:9093 speaks Alertmanager's v2 API: through the tunnel it answers,
    as the cluster-less Alertmanager the alerting role runs, with the receiver the role configured."""
    status = get_json(f"http://127.0.0.1:{tunnel[9093]}/api/v2/status")
    assert status["cluster"]["status"] == "disabled", status["cluster"]
    assert "receiver: flower-oncall" in status["config"]["original"], status["config"]["original"][:2000]
    assert isinstance(get_json(f"http://127.0.0.1:{tunnel[9093]}/api/v2/alerts"), list)
