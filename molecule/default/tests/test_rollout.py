"""The Flower play is a rollout: one host at a time, each gated on its health check (playbooks/flower.yml).

Both Flower hosts get new pins (Celery 5.6.3, the other locked set; docs/on-call.md, "Upgrading Flower and
Celery") from one site.yml run without --limit, limited to Flower's install and service phases as the guide's
upgrade is. The first host's sample worker is stopped beforehand, so its health check fails once it is upgraded:
the run stops there, and the second host is never reached (its virtualenv and its Flower process are the ones it
had). With the worker back, the first pins again, the same way: the run goes through both hosts in turn, the first
restarted once, the second (already at those pins) not at all, and every host ends as the converge left it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import testinfra
import yaml
from conftest import GROUP_VARS, INSTANCE, PREFIX_INSTANCE, PROJECT_DIR, SECRETS, run_playbook, wait_until_healthy
from testlib import virtualenv_and_lock

DEFAULTS = yaml.safe_load((PROJECT_DIR / "roles" / "flower" / "defaults" / "main.yml").read_text())
FIRST = {name: DEFAULTS[name] for name in ("flower_version", "flower_celery_version", "flower_broker_client_version")}
OTHER = {**FIRST, "flower_celery_version": "5.6.3"}
APP_ROOT = yaml.safe_load((PROJECT_DIR / "roles" / "flower_account" / "defaults" / "main.yml").read_text())[
    "flower_account_app_root"
]
TAGS = "flower_install,flower_service"
BATCH = "PLAY [Run Flower as a hardened service"


def virtualenv(host: Any) -> set[str]:
    return virtualenv_and_lock(host, f"{APP_ROOT}/requirements.lock", f"{APP_ROOT}/venv")[0]


def main_pid(host: Any) -> str:
    return host.run("systemctl show -p MainPID --value flower").stdout.strip()


def starts_since(host: Any, since: int) -> int:
    journal = host.run("journalctl -u flower --no-pager -o cat --since @%s", str(since)).stdout
    return len(re.findall(r"^Started flower\.service", journal, re.MULTILINE))


def rollout(tmp_path: Path, pins: dict[str, Any]) -> str:
    """site.yml on both Flower hosts, Flower's install and service phases, with pins from -e; the run's output."""
    # The scenario converges its two hosts side by side (molecule.yml); this is the default, one at a time.
    result = run_playbook(
        tmp_path, GROUP_VARS, "site.yml", "--tags", TAGS, "-e", json.dumps(pins), hosts=[INSTANCE, PREFIX_INSTANCE]
    )
    output = result.stdout + result.stderr
    for secret in SECRETS:
        assert secret not in output
    return output if result.returncode == 0 else f"rc={result.returncode}\n{output}"


def test_an_unhealthy_host_stops_the_rollout_and_the_next_keeps_its_version(host: Any, tmp_path: Path) -> None:
    second = testinfra.get_host(f"docker://{PREFIX_INSTANCE}")
    first_before, second_before, second_pid = virtualenv(host), virtualenv(second), main_pid(second)
    assert f"celery=={FIRST['flower_celery_version']}" in first_before
    assert host.run("systemctl stop demo-worker").rc == 0
    try:
        # Three tries, 5 s apart: Flower is up by then, so what fails is its workers check.
        output = rollout(tmp_path / "stopped", {**OTHER, "flower_verify_retries": 2})
    finally:
        assert host.run("systemctl start demo-worker").rc == 0
    assert output.startswith("rc="), "the run passed with an unhealthy first host:\n" + output[-3000:]
    assert output.count(BATCH) == 1, "the rollout went on past the unhealthy host:\n" + output[-3000:]
    assert re.search(r"fatal: \[" + INSTANCE + r"\].*workers", output), output[-3000:]
    assert f"celery=={OTHER['flower_celery_version']}" in virtualenv(host), "the first host was not upgraded"
    assert virtualenv(second) == second_before, "the host after the unhealthy one was upgraded"
    assert main_pid(second) == second_pid, "the host after the unhealthy one was restarted"

    wait_until_healthy(host)
    since = int(host.check_output("date +%s")) - 1
    output = rollout(tmp_path / "back", FIRST)
    assert not output.startswith("rc="), output[-4000:]
    assert output.count(BATCH) == 2, "not one host at a time:\n" + output[-3000:]
    # The first batch is the first host alone, and ends with its health check passed.
    first_batch = output[output.index(BATCH) : output.index(BATCH, output.index(BATCH) + 1)]
    assert f"[{PREFIX_INSTANCE}]" not in first_batch, first_batch[-3000:]
    assert re.search(r"Check Flower end to end \(HTTP.*\n(.*\n)*?ok: \[" + INSTANCE + r"\]", first_batch), first_batch[
        -3000:
    ]
    assert virtualenv(host) == first_before, "the first host is not back on the first pins"
    assert starts_since(host, since) == 1
    assert virtualenv(second) == second_before and main_pid(second) == second_pid
