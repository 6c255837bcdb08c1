"""Shared helpers of the split scenario's checks: Flower, the broker, two workers and Prometheus, each on its host."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

SCENARIO_DIR = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).resolve().parents[1]))
PROJECT_DIR = SCENARIO_DIR.parents[1]
sys.path.insert(0, str(PROJECT_DIR / "molecule" / "resources"))
from testlib import ansible_playbook, container_ip, service_diagnostics, wait_for  # noqa: E402
from testlib import record as record_figure  # noqa: E402

__all__ = ["container_ip", "service_diagnostics", "wait_for"]

MOLECULE = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())
GROUP_VARS: dict[str, Any] = MOLECULE["provisioner"]["inventory"]["group_vars"]["all"]


def _platforms(group: str) -> list[str]:
    return [platform["name"] for platform in MOLECULE["platforms"] if group in platform.get("groups", [])]


(MONITOR,), (BROKER,) = _platforms("flower_monitoring"), _platforms("demo_broker")
# Cluster a's Flower on a host of its own; cluster b's beside the broker, with a worker of its own there.
(FLOWER,) = [name for name in _platforms("flower") if name != BROKER]
FLOWER_B = BROKER
# The front door on a host of its own, passing to both Flower hosts' gates.
(FRONT,) = _platforms("flower_front")
# Cluster a's workers.
WORKERS = [name for name in _platforms("demo_worker") if name != BROKER]
DOMAIN: str = GROUP_VARS["flower_domain"]
HOST_VARS: dict[str, Any] = MOLECULE["provisioner"]["inventory"]["host_vars"]
# Cluster a's logins are in the flower group's variables alone (the front door follows them); cluster b's in its
# host's.
ADMIN: dict[str, str] = MOLECULE["provisioner"]["inventory"]["group_vars"]["flower"]["flower_users"][0]
USERS_B: list[dict[str, str]] = HOST_VARS[FLOWER_B]["flower_users"]
PREFIX_B: str = HOST_VARS[FLOWER_B]["flower_url_prefix"]
SECRETS = [GROUP_VARS["demo_broker_password"], ADMIN["password"], *(user["password"] for user in USERS_B)]


def broker_url(password: str = GROUP_VARS["demo_broker_password"], host: str = "") -> str:
    """A broker URL of the inventory (cluster a's, or a host's own) with the password filled in."""
    template = HOST_VARS.get(host, {}).get("flower_broker_url", GROUP_VARS["flower_broker_url"])
    return template.replace("{{ demo_broker_password }}", password)


# The local CA of the selfsigned mode, on the Flower host, and its copy on the monitoring host.
LOCAL_CA = "/etc/ssl/flowerops/ca/ca.crt"
CA_COPY = f"/etc/prometheus/flower-ca/{FLOWER}.crt"
# The broker is Redis over TLS alone (rediss://), its certificate from a CA of its own (demo_broker_tls).
BROKER_CA: str = GROUP_VARS["flower_broker_ca_file"]
# On the broker's host.
REDIS_CLI = f"redis-cli --tls --cacert {BROKER_CA} -h localhost --no-auth-warning"


def only_on(host: Any, name: str) -> Any:
    if host.backend.get_hostname() != name:
        pytest.skip(f"runs on {name} only")
    return host


@pytest.fixture(scope="module")
def flower(host: Any) -> Any:
    return only_on(host, FLOWER)


@pytest.fixture(scope="module")
def monitor(host: Any) -> Any:
    return only_on(host, MONITOR)


def platform_host(name: str) -> Any:
    """A platform by name, for tests that run on another."""
    return testinfra.get_host(f"docker://{name}")


def send_task(args: str = "[20, 22]") -> str:
    """A task of the sample app, sent from the first worker host (demo-worker-call); its id."""
    sent = platform_host(WORKERS[0]).run("demo-worker-call add %s", args)
    assert sent.rc == 0, sent.stderr
    return sent.stdout.strip().splitlines()[-1]


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


def connect_from(source: Any, address: str, port: int, attempts: int = 2, timeout: float = 3.0) -> str:
    """What a TCP connection from the source host to address:port sees (open, refused, filtered); a filtered port
    must stay so on every attempt."""
    seen = ""
    for _ in range(attempts):
        seen = source.run("python3 -c %s %s %s %s", _CONNECT, address, str(port), str(timeout)).stdout.strip()
        if seen != "filtered":
            return seen
    return seen


def run_playbook(playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook from the controller with the scenario's own inventory (Molecule's)."""
    inventory = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
    return ansible_playbook(PROJECT_DIR, inventory, playbook, *args)


def prometheus_data(monitor: Any, path: str) -> dict[str, Any]:
    """The data of an answer of Prometheus' API (path under /api/v1/), asked on the monitoring host (it listens on
    loopback only); empty while it does not answer."""
    url = f"http://127.0.0.1:9090/api/v1/{path}"
    run = monitor.run(
        "python3 -c %s %s",
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
        url,
    )
    return json.loads(run.stdout)["data"] if run.rc == 0 else {}


def prometheus_targets(monitor: Any) -> list[dict[str, Any]]:
    """Prometheus' active targets."""
    return prometheus_data(monitor, "targets").get("activeTargets", [])


def flower_targets_up(monitor: Any) -> dict[str, str]:
    """job -> health of the Flower host's targets."""
    return {
        t["labels"]["job"]: t["health"]
        for t in prometheus_targets(monitor)
        if t["labels"].get("instance") == FLOWER and t["labels"]["job"] in ("flower", "flower_queues")
    }


def flower_host() -> Any:
    """The Flower platform, for tests that run on another (or on both)."""
    return platform_host(FLOWER)


def basic_auth(login: tuple[str, str]) -> str:
    """The Authorization header's value for a login (name, password)."""
    return "Basic " + base64.b64encode(":".join(login).encode()).decode()


def request(
    method: str,
    path: str,
    cafile: Path,
    login: tuple[str, str] | None,
    headers: dict[str, str] | None = None,
    via: str = FLOWER,
) -> tuple[int, bytes]:
    """A request through a host's nginx (the Flower host's, or the front door's: via) from this machine, by the
    public name, verifying the certificate."""
    context = ssl.create_default_context(cafile=str(cafile))
    raw = socket.create_connection((container_ip(platform_host(via)), 443), timeout=10)
    connection = http.client.HTTPSConnection(DOMAIN, 443, context=context, timeout=10)
    connection.sock = context.wrap_socket(raw, server_hostname=DOMAIN)
    sent = {"Host": DOMAIN, **(headers or {})}
    if login:
        sent["Authorization"] = basic_auth(login)
    connection.request(method, path, headers=sent)
    reply = connection.getresponse()
    return reply.status, reply.read()


def get(path: str, cafile: Path, login: tuple[str, str] | None, via: str = FLOWER) -> tuple[int, bytes]:
    return request("GET", path, cafile, login, via=via)


def served_ca(tmp_path: Path, via: str = FLOWER) -> Path:
    """The local CA of a host's selfsigned mode (the Flower host's, or the front door's: via)."""
    path = tmp_path / f"ca-{via}.crt"
    path.write_text(platform_host(via).file(LOCAL_CA).content_string)
    return path


def task_state(task_id: str, ca: Path) -> str:
    """A task's state as Flower shows it through the front door, or why it could not be read."""
    try:
        status, body = get(f"/api/task/info/{task_id}", ca, (ADMIN["name"], ADMIN["password"]))
    except OSError as exc:
        return str(exc)
    return json.loads(body).get("state", "") if status == 200 else f"HTTP {status}"


def record(name: str, seconds: float) -> None:
    """A drill's figure, into .artifacts/drills.json (the README's "What survives what")."""
    record_figure(PROJECT_DIR, name, seconds)
