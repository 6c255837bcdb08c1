"""Shared helpers for the testinfra checks of the default scenario.

The test secrets and settings are read from molecule.yml and the roles'
defaults, so the tests assert against the same values the converge used.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, sync_playwright

SCENARIO_DIR = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).resolve().parents[1]))
PROJECT_DIR = SCENARIO_DIR.parents[1]
sys.path.insert(0, str(PROJECT_DIR / "molecule" / "resources"))
from testlib import (  # noqa: E402
    CHROMIUM,
    ansible_playbook,
    container_ip,
    role_settings,
    service_diagnostics,
    ssh_connection,
    wait_for,
)
from testlib import record as record_figure  # noqa: E402

MOLECULE = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())
GROUP_VARS: dict[str, Any] = MOLECULE["provisioner"]["inventory"]["group_vars"]["all"]
INSTANCE: str = MOLECULE["platforms"][0]["name"]
PREFIX_INSTANCE: str = MOLECULE["platforms"][1]["name"]
GROUPS: list[str] = MOLECULE["platforms"][0]["groups"]
PLATFORM_GROUPS: dict[str, list[str]] = {platform["name"]: platform["groups"] for platform in MOLECULE["platforms"]}
# The further Flowers of a platform's machine: inventory hosts of their own (flower_instance), no containers.
FURTHER_INSTANCES: list[str] = list(MOLECULE["provisioner"]["inventory"]["hosts"]["all"]["children"]["flower"]["hosts"])
LOGINS: dict[str, dict[str, str]] = {user["role"]: user for user in reversed(GROUP_VARS["flower_users"])}
SECRETS: list[str] = [
    GROUP_VARS["demo_broker_password"],
    MOLECULE["provisioner"]["inventory"]["host_vars"][PREFIX_INSTANCE]["demo_rabbitmq_password"],
    GROUP_VARS["flower_cookie_secret"],
    *(user["password"] for user in GROUP_VARS["flower_users"]),
    *(
        user["password"]
        for name in FURTHER_INSTANCES
        for user in MOLECULE["provisioner"]["inventory"]["host_vars"][name]["flower_users"]
    ),
]
DOMAIN: str = GROUP_VARS["flower_domain"]
# The CA that issued the served certificate (Pebble's root), on the target.
CA_ON_TARGET: str = GROUP_VARS["flower_tls_trusted_ca"]


def role_defaults(role: str, part: str = "defaults") -> dict[str, Any]:
    """A role's defaults (or its vars) as this scenario deploys them (testlib.role_settings)."""
    return role_settings(PROJECT_DIR, role, GROUP_VARS, part)


FLOWER = role_defaults("flower")
ACCOUNT = role_defaults("flower_account")
# What a refused run or a read-only one (the health check, the checklist) must leave as it found: every role's
# configuration, the firewall's rules, and the services' processes (a new MainPID is a restart). Not the
# database or the logs: Flower and nginx write those whoever asks.
FINGERPRINT = (
    f"sha256sum /etc/systemd/system/flower.service {ACCOUNT['flower_account_config_dir']}/* "
    "/etc/nginx/sites-available/* /etc/nginx/flowerops/* /etc/nginx/snippets/* /etc/nginx/conf.d/* "
    "/etc/nginx/flower.htpasswd /etc/nginx/flower-upstream-auth.conf /etc/ufw/user.rules /etc/ufw/user6.rules "
    "/etc/fail2ban/jail.d/* /etc/redis/users.acl /etc/systemd/system/demo-worker.service /etc/ansible/facts.d/* "
    "2>/dev/null; systemctl show -p MainPID,ActiveEnterTimestamp flower nginx fail2ban redis-server demo-worker; "
    "ufw status verbose"
)
USER, PASSWORD = LOGINS["admin"]["name"], LOGINS["admin"]["password"]


def platform_skip(name: str, module: Any) -> str:
    """Why a test module does not run on this platform ("" when it does): the first platform runs every test;
    the prefix platform the modules whose subject a URL prefix changes (EVERY_PLATFORM = True: the front door,
    the browser, the attacks, Flower's service, the health module, persistence, the checklist). The account,
    the logs, the secrets, the firewall and the backups are the same code with or without a prefix: one
    platform is enough, and the suite's 45 minutes are spent elsewhere. A further Flower of a platform's machine
    runs the modules written for it alone (FURTHER_INSTANCE = True: test_instances.py)."""
    if name in FURTHER_INSTANCES:
        return "" if getattr(module, "FURTHER_INSTANCE", False) else f"{name} is tested by test_instances.py"
    if getattr(module, "FURTHER_INSTANCE", False):
        return f"for {', '.join(FURTHER_INSTANCES)} only"
    if name != INSTANCE and not getattr(module, "EVERY_PLATFORM", False):
        return f"runs on {INSTANCE} only"
    return ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skipped at collection, so that no fixture (module-scoped ones included) runs on a platform it is not for."""
    for item in items:
        host = getattr(item, "callspec", None) and item.callspec.params.get("_testinfra_host")
        reason = platform_skip(host.backend.get_hostname(), item.module) if host else ""
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def first_platform_only(host: Any) -> None:
    """For tests in an EVERY_PLATFORM module that need not repeat (they change the host or take long)."""
    if host.backend.get_hostname() != INSTANCE:
        pytest.skip(f"runs on {INSTANCE} only")


def host_vars(host: Any) -> dict[str, Any]:
    """The inventory variables of this target: the group's, then its own (molecule.yml host_vars)."""
    own = MOLECULE["provisioner"]["inventory"].get("host_vars", {}).get(host.backend.get_hostname(), {})
    return {**GROUP_VARS, **own}


def address(host: Any) -> str:
    """The target's address on the scenario's network (a further Flower's is its platform's: the same ansible_host)."""
    return host_vars(host).get("ansible_host") or container_ip(host)


def prefix(host: Any) -> str:
    return host_vars(host).get("flower_url_prefix", "")


def base_url(host: Any) -> str:
    """The public URL of Flower on this target (its /etc/hosts points the name at itself)."""
    return f"https://{DOMAIN}{prefix(host)}"


# Runs inside the target, so the request really comes from its loopback, and
# goes through nginx with the certificate verified against Pebble's root.
_FETCH = """
import base64, json, ssl, sys, urllib.error, urllib.request
url, user, password, cafile = sys.argv[1:5]
request = urllib.request.Request(url)
if user:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
try:
    with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=cafile)) as response:
        print(json.dumps({"status": response.status, "body": response.read().decode()}))
except urllib.error.HTTPError as error:
    print(json.dumps({"status": error.code, "body": error.read().decode()}))
except OSError as error:
    print(json.dumps({"status": 0, "body": str(error)}))
"""


def fetch(host: Any, path: str, auth: bool = True, login: tuple[str, str] | None = None) -> tuple[int, str]:
    """GET a Flower path through nginx from inside the target, as the admin (or login: (name, password), or
    nobody without auth); returns (status, body)."""
    user, password = login or ((USER, PASSWORD) if auth else ("", ""))
    cmd = host.run("python3 -c %s %s %s %s %s", _FETCH, base_url(host) + path, user, password, CA_ON_TARGET)
    assert cmd.rc == 0, cmd.stderr
    result = json.loads(cmd.stdout)
    return result["status"], result["body"]


def fetch_json(host: Any, path: str) -> Any:
    status, body = fetch(host, path)
    assert status == 200, f"{path} answered {status}: {body[:500]}"
    return json.loads(body)


# Python on the target (it has no curl) printing what a URL answers.
GET_ON_HOST = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())
"""


def prometheus(host: Any, path: str, **params: str) -> Any:
    """The data of an answer of this host's Prometheus API (on its loopback)."""
    url = "http://127.0.0.1:9090" + path + ("?" + urllib.parse.urlencode(params) if params else "")
    cmd = host.run("python3 -c %s %s", GET_ON_HOST, url)
    assert cmd.rc == 0, cmd.stderr + service_diagnostics(host, "prometheus.service")
    answer = json.loads(cmd.stdout)
    assert answer["status"] == "success", answer
    return answer["data"]


def wait_until_healthy(host: Any) -> None:
    ok = wait_for(lambda: fetch(host, "/healthcheck", auth=False)[0] == 200, timeout=60)
    assert ok, "Flower did not answer /healthcheck" + service_diagnostics(
        host, "flower", f"{ACCOUNT['flower_account_log_dir']}/flower.log"
    )


@pytest.fixture(scope="module")
def healthy_flower(host: Any) -> Any:
    wait_until_healthy(host)
    return host


def run_playbook(
    tmp_path: Path, group_vars: dict[str, Any], playbook: str = "site.yml", *args: str, hosts: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook from the controller against the targets (the first platform unless hosts names others),
    each in its own groups with its own host_vars, with an inventory built from molecule.yml."""
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True, exist_ok=True)
    children: dict[str, Any] = {}
    connection = ssh_connection(PROJECT_DIR)
    every_host_vars = MOLECULE["provisioner"]["inventory"].get("host_vars", {})
    platforms = hosts or [INSTANCE]
    # A listed platform's further Flowers are in the inventory too (the monitoring play scrapes every Flower
    # host the inventory has, and preflight sees the machine whole), whether or not the run is limited to them.
    addresses = {every_host_vars[name]["ansible_host"] for name in platforms}
    further = [name for name in FURTHER_INSTANCES if every_host_vars[name]["ansible_host"] in addresses]
    for name in [*platforms, *further]:
        own = every_host_vars.get(name, {})
        for group in PLATFORM_GROUPS.get(name, ["flower"]):
            children.setdefault(group, {"hosts": {}})["hosts"][name] = {**connection, **own}
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": children}}))
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    return ansible_playbook(PROJECT_DIR, inventory, playbook, *args)


class FrontDoor:
    """HTTPS requests from the machine running the tests to one target's nginx, by its public name.

    The name is pinned to the container's address (no DNS here), the certificate is verified
    against the CA that issued it, and nothing follows redirects.
    """

    def __init__(self, host: Any, cafile: Path) -> None:
        self.address = address(host)
        self.prefix = prefix(host)
        self.context = ssl.create_default_context(cafile=str(cafile))

    def connection(self) -> http.client.HTTPSConnection:
        address = self.address

        class Pinned(http.client.HTTPSConnection):
            def connect(self) -> None:
                raw = socket.create_connection((address, self.port), self.timeout)
                self.sock = self._context.wrap_socket(raw, server_hostname=self.host)

        return Pinned(DOMAIN, 443, context=self.context, timeout=15)

    def request(
        self,
        method: str,
        path: str,
        login: str | None = None,
        password: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """(status, headers, body) of one request to <prefix><path>; login is a role (admin, viewer) or a name."""
        all_headers = dict(headers or {})
        if login is not None:
            user = LOGINS.get(login, {"name": login, "password": password or ""})
            token = base64.b64encode(f"{user['name']}:{password or user['password']}".encode()).decode()
            all_headers["Authorization"] = f"Basic {token}"
        connection = self.connection()
        try:
            connection.request(method, self.prefix + path, headers=all_headers)
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def pebble_root(host: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pebble's current issuing root, copied from the target."""
    path = tmp_path_factory.mktemp("pebble") / "root.pem"
    path.write_text(host.file(CA_ON_TARGET).content_string)
    return path


@pytest.fixture(scope="module")
def front_door(host: Any, pebble_root: Path) -> FrontDoor:
    return FrontDoor(host, pebble_root)


@pytest.fixture(scope="module")
def browser(host: Any) -> Iterator[Browser]:
    """Debian's chromium, headless; the public name resolves to this target's container (no DNS here)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", f"--host-resolver-rules=MAP {DOMAIN} {address(host)}"],
        )
        yield browser
        browser.close()


def login_context(browser: Browser, role: str = "admin") -> BrowserContext:
    """A browser profile that answers the front door's login prompt as this role (a cached basic-auth login).

    The certificate is Pebble's (not in chromium's store); the TLS tests verify it against Pebble's root.
    """
    login = LOGINS[role]
    return browser.new_context(
        http_credentials={"username": login["name"], "password": login["password"]},
        ignore_https_errors=True,
        viewport={"width": 1280, "height": 900},
    )


@pytest.fixture(scope="module")
def sample(healthy_flower: Any) -> dict[str, str]:
    """A finished task and the worker that ran it, as Flower knows them."""
    host = healthy_flower
    run = host.run("demo-worker-call add '[20, 22]'")
    assert run.rc == 0, run.stderr
    task_id = run.stdout.strip().splitlines()[-1]
    info = wait_for(lambda: (i := fetch_json(host, f"/api/task/info/{task_id}")) and i.get("worker") and i, 60)
    assert info, f"Flower never saw task {task_id}"
    return {"task": task_id, "worker": info["worker"]}


def record(name: str, seconds: float) -> None:
    """A drill's figure, into .artifacts/drills.json (the README's "What survives what")."""
    record_figure(PROJECT_DIR, name, seconds)
