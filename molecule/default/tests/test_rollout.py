"""docs/on-call.md's "Upgrading Flower and Celery", run as written, as a rollout across both Flower hosts.

roles/flower/files/locks/ holds two locked pin sets; here they differ in Celery (5.7.0, the defaults', and
5.6.3), python-dateutil and six (only one of them has it), so each switch installs and removes packages.

The upgrade: back up, preview the new pins with --check --diff on the first host (it shows changes and changes
nothing), then site.yml on both hosts without --limit, limited to Flower's install and service phases. The first
host's sample worker is stopped beforehand, so its health check fails once it is upgraded: the Flower play runs
one host at a time (playbooks/flower.yml), so the run stops there and the second host is never reached (its
virtualenv and its Flower process are the ones it had). The rollback: the worker back, the first pins again, the
same run: both hosts in turn, the first rebuilt to exactly its old lock and restarted once, the second (already at
those pins) not restarted at all; the tasks Flower held are still there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import testinfra
import yaml
from conftest import (
    ACCOUNT,
    FURTHER_INSTANCES,
    GROUP_VARS,
    INSTANCE,
    PREFIX_INSTANCE,
    PROJECT_DIR,
    SECRETS,
    fetch_json,
    run_playbook,
    wait_until_healthy,
)
from testlib import main_pid, recap, virtualenv_and_lock, wait_for

DEFAULTS = yaml.safe_load((PROJECT_DIR / "roles" / "flower" / "defaults" / "main.yml").read_text())
FIRST = {name: DEFAULTS[name] for name in ("flower_version", "flower_celery_version", "flower_broker_client_version")}
# The other locked pin set: an older Celery (the rollback target of an upgrade to the defaults' 5.7.0).
OTHER = {**FIRST, "flower_celery_version": "5.6.3"}
APP_ROOT = ACCOUNT["flower_account_app_root"]
# The guide's run: only Flower's virtualenv and service change (preflight and the health check always run).
TAGS = "flower_install,flower_service"
BATCH = "PLAY [Run Flower as a hardened service"


def virtualenv(host: Any) -> set[str]:
    """What Flower's virtualenv holds, after checking it is exactly its lock."""
    held, wanted = virtualenv_and_lock(host, f"{APP_ROOT}/requirements.lock", f"{APP_ROOT}/venv")
    assert held == wanted, f"outside the lock: {sorted(held - wanted)}; missing: {sorted(wanted - held)}"
    return held


def starts_since(host: Any, since: int) -> int:
    journal = host.run("journalctl -u flower --no-pager -o cat --since @%s", str(since)).stdout
    return len(re.findall(r"^Started flower\.service", journal, re.MULTILINE))


def site(tmp_path: Path, pins: dict[str, Any], *args: str) -> tuple[int, str]:
    """site.yml on both Flower hosts, Flower's install and service phases, the pins set in the inventory (its
    group_vars): rc and output."""
    result = run_playbook(
        tmp_path, {**GROUP_VARS, **pins}, "site.yml", "--tags", TAGS, *args, hosts=[INSTANCE, PREFIX_INSTANCE]
    )
    output = result.stdout + result.stderr
    for secret in SECRETS:
        assert secret not in output
    return result.returncode, output


def test_an_unhealthy_host_stops_the_rollout_and_the_next_keeps_its_version(host: Any, tmp_path: Path) -> None:
    second = testinfra.get_host(f"docker://{PREFIX_INSTANCE}")
    first_before, second_before, second_pid = virtualenv(host), virtualenv(second), main_pid(second)
    assert f"celery=={FIRST['flower_celery_version']}" in first_before
    sent = host.run("demo-worker-call add '[40, 2]'")
    assert sent.rc == 0, sent.stderr
    task_id = sent.stdout.strip().splitlines()[-1]

    def state() -> str:
        return fetch_json(host, f"/api/task/info/{task_id}").get("state", "")

    assert wait_for(lambda: state() == "SUCCESS", timeout=60), state()
    # Step 4: back up now. Step 5: the preview shows changes and changes nothing.
    assert host.run("systemctl start flower-backup.service").rc == 0
    first_pid = main_pid(host)
    rc, output = site(tmp_path / "preview", OTHER, "--limit", INSTANCE, "--check", "--diff")
    assert rc == 0, output[-4000:]
    assert recap(output, INSTANCE)[1] > 0, "the preview shows no change for new pins"
    assert virtualenv(host) == first_before and main_pid(host) == first_pid, "the preview changed the host"

    assert host.run("systemctl stop demo-worker").rc == 0
    try:
        # Three tries, 5 s apart: Flower is up again by then, so what fails is its workers check.
        rc, output = site(tmp_path / "stopped", {**OTHER, "flower_verify_retries": 2})
    finally:
        assert host.run("systemctl start demo-worker").rc == 0
    assert rc != 0, "the run passed with an unhealthy first host:\n" + output[-3000:]
    assert output.count(BATCH) == 1, "the rollout went on past the unhealthy host:\n" + output[-3000:]
    assert f"fatal: [{INSTANCE}]" in output, output[-3000:]
    assert re.search(r"Flower is unhealthy after 3 attempts: workers: 0 of \d+ required workers online", output), (
        output[-3000:]
    )
    assert f"celery=={OTHER['flower_celery_version']}" in virtualenv(host), "the first host was not upgraded"
    assert virtualenv(second) == second_before, "the host after the unhealthy one was upgraded"
    assert main_pid(second) == second_pid, "the host after the unhealthy one was restarted"

    wait_until_healthy(host)
    since = int(host.check_output("date +%s")) - 1
    rc, output = site(tmp_path / "back", FIRST)
    assert rc == 0, output[-4000:]
    # One host at a time: both platforms' Flowers, then the prefix machine's second (in the inventory beside it).
    assert output.count(BATCH) == 2 + len(FURTHER_INSTANCES), "not one host at a time:\n" + output[-3000:]
    # The first batch is the first host alone, and ends with its health check passed.
    first_batch = output[output.index(BATCH) : output.index(BATCH, output.index(BATCH) + 1)]
    assert f"[{PREFIX_INSTANCE}]" not in first_batch, first_batch[-3000:]
    check = first_batch.rindex("Check Flower end to end (HTTP")
    assert f"ok: [{INSTANCE}]" in first_batch[check:], first_batch[-3000:]
    assert virtualenv(host) == first_before, "the first host is not back on the first pins"
    assert starts_since(host, since) == 1
    assert virtualenv(second) == second_before and main_pid(second) == second_pid
    assert state() == "SUCCESS", "Flower lost its tasks in the upgrade and rollback"
