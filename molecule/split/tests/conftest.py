"""Shared helpers of the split scenario's checks: Flower on one host, Prometheus on another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

SCENARIO_DIR = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).resolve().parents[1]))
PROJECT_DIR = SCENARIO_DIR.parents[1]
sys.path.insert(0, str(PROJECT_DIR / "molecule" / "resources"))
from testlib import ansible_playbook, container_ip, service_diagnostics, wait_for  # noqa: E402

__all__ = ["container_ip", "service_diagnostics", "wait_for"]

MOLECULE = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())
GROUP_VARS: dict[str, Any] = MOLECULE["provisioner"]["inventory"]["group_vars"]["all"]
FLOWER, MONITOR = (platform["name"] for platform in MOLECULE["platforms"])
DOMAIN: str = GROUP_VARS["flower_domain"]
ADMIN: dict[str, str] = GROUP_VARS["flower_users"][0]
SECRETS = [GROUP_VARS["demo_broker_password"], ADMIN["password"]]


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


def run_playbook(playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook from the controller with the scenario's own inventory (Molecule's)."""
    inventory = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
    return ansible_playbook(PROJECT_DIR, inventory, playbook, *args)


def prometheus_targets(monitor: Any) -> list[dict[str, Any]]:
    """Prometheus' active targets, asked on the monitoring host (it listens on loopback only)."""
    run = monitor.run(
        "python3 -c %s",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9090/api/v1/targets').read().decode())",
    )
    return json.loads(run.stdout)["data"]["activeTargets"] if run.rc == 0 else []


def flower_targets_up(monitor: Any) -> dict[str, str]:
    """job -> health of the Flower host's targets."""
    return {
        t["labels"]["job"]: t["health"]
        for t in prometheus_targets(monitor)
        if t["labels"].get("instance") == FLOWER and t["labels"]["job"] in ("flower", "flower_queues")
    }
