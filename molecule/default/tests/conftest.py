"""Shared helpers for the testinfra checks of the default scenario.

The test secrets and settings are read from molecule.yml and the roles'
defaults, so the tests assert against the same values the converge used.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

SCENARIO_DIR = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).resolve().parents[1]))
PROJECT_DIR = SCENARIO_DIR.parents[1]
MOLECULE = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())
GROUP_VARS: dict[str, Any] = MOLECULE["provisioner"]["inventory"]["group_vars"]["all"]
INSTANCE: str = MOLECULE["platforms"][0]["name"]
GROUPS: list[str] = MOLECULE["platforms"][0]["groups"]
SECRETS: list[str] = [
    GROUP_VARS["demo_broker_password"],
    GROUP_VARS["flower_cookie_secret"],
    *(entry.split(":", 1)[1] for entry in GROUP_VARS["flower_basic_auth"]),
]


def role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT_DIR / "roles" / role / "defaults" / "main.yml").read_text())


FLOWER = role_defaults("flower")
ACCOUNT = role_defaults("flower_account")
BASE_URL = f"http://127.0.0.1:{FLOWER['flower_port']}"
USER, PASSWORD = GROUP_VARS["flower_basic_auth"][0].split(":", 1)

# Runs inside the target, so the request really comes from its loopback.
_FETCH = """
import base64, json, sys, urllib.error, urllib.request
url, user, password = sys.argv[1:4]
request = urllib.request.Request(url)
if user:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        print(json.dumps({"status": response.status, "body": response.read().decode()}))
except urllib.error.HTTPError as error:
    print(json.dumps({"status": error.code, "body": error.read().decode()}))
except OSError as error:
    print(json.dumps({"status": 0, "body": str(error)}))
"""


def fetch(host: Any, path: str, auth: bool = True) -> tuple[int, str]:
    """GET a Flower path from inside the target; returns (status, body)."""
    user, password = (USER, PASSWORD) if auth else ("", "")
    cmd = host.run("python3 -c %s %s %s %s", _FETCH, BASE_URL + path, user, password)
    assert cmd.rc == 0, cmd.stderr
    result = json.loads(cmd.stdout)
    return result["status"], result["body"]


def fetch_json(host: Any, path: str) -> Any:
    status, body = fetch(host, path)
    assert status == 200, f"{path} answered {status}: {body[:500]}"
    return json.loads(body)


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 1.0) -> Any:
    """Poll predicate until it returns a truthy value; bounded by timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def service_diagnostics(host: Any, unit: str, log_file: str | None = None) -> str:
    journal = host.run("journalctl -u %s --no-pager -n 50", unit).stdout
    log = host.run("tail -n 50 %s", log_file).stdout if log_file else ""
    return f"\n--- journalctl -u {unit} ---\n{journal}\n--- {log_file or ''} ---\n{log}"


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
    tmp_path: Path, group_vars: dict[str, Any], playbook: str = "site.yml", *args: str
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook from the controller against the target, with an inventory built from molecule.yml."""
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True, exist_ok=True)
    target = {INSTANCE: {"ansible_connection": "community.docker.docker"}}
    hosts = {"all": {"children": {group: {"hosts": target} for group in GROUPS}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), playbook, *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
