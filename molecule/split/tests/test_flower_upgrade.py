"""docs/on-call.md's "Upgrading Flower and Celery (one host)", run as written on the Flower host, both ways:
back up now, preview the change of pins with --check --diff, run site.yml with Flower's install and service
phases, and the same back to the first pins (the rollback). roles/flower/files/locks/ holds both pin sets'
locks (scripts/lock_flower.py wrote them); here they differ in Celery, python-dateutil and six (only one of
them has it), so each switch installs and removes packages.

Each real run rebuilds the virtualenv to exactly its lock, restarts Flower once, ends with site.yml's health
check, and keeps the tasks Flower held. This module runs first (file order): test_split.py's checklist then
passes on the host after the round trip, the guide's last step.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from conftest import ADMIN, FLOWER, PROJECT_DIR, get, run_playbook, served_ca, wait_for
from testlib import recap, virtualenv_and_lock

DEFAULTS = yaml.safe_load((PROJECT_DIR / "roles" / "flower" / "defaults" / "main.yml").read_text())
PINS = ("flower_version", "flower_celery_version", "flower_broker_client_version")
FIRST = {name: DEFAULTS[name] for name in PINS}
# The other locked pin set: an older Celery (the rollback target of an upgrade to the defaults' 5.7.0).
OTHER = {**FIRST, "flower_celery_version": "5.6.3"}
APP_ROOT = yaml.safe_load((PROJECT_DIR / "roles" / "flower_account" / "defaults" / "main.yml").read_text())[
    "flower_account_app_root"
]
# The guide's run: only Flower's virtualenv and service change (preflight and the health check always run).
TAGS = "flower_install,flower_service"


def held_and_wanted(flower: Any) -> tuple[set[str], set[str]]:
    return virtualenv_and_lock(flower, f"{APP_ROOT}/requirements.lock", f"{APP_ROOT}/venv")


def starts_since(flower: Any, since: int) -> int:
    journal = flower.run("journalctl -u flower --no-pager -o cat --since @%s", str(since)).stdout
    return len(re.findall(r"^Started flower\.service", journal, re.MULTILINE))


def switch(flower: Any, pins: dict[str, str], preview: bool) -> None:
    """Step 5 of the guide: preview (optional), then the run; the virtualenv is the new lock, Flower started once."""
    before, _ = held_and_wanted(flower)
    pid = flower.run("systemctl show -p MainPID --value flower").stdout.strip()
    common = ("site.yml", "--limit", FLOWER, "--tags", TAGS, "-e", json.dumps(pins))
    if preview:
        result = run_playbook(*common, "--check", "--diff")
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        assert recap(result.stdout, FLOWER)[1] > 0, "the preview shows no change for new pins"
        assert held_and_wanted(flower)[0] == before, "the preview changed the virtualenv"
        assert flower.run("systemctl show -p MainPID --value flower").stdout.strip() == pid
    since = int(flower.check_output("date +%s")) - 1
    result = run_playbook(*common)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    held, wanted = held_and_wanted(flower)
    assert held == wanted, f"outside the lock: {sorted(held - wanted)}; missing: {sorted(wanted - held)}"
    assert f"celery=={pins['flower_celery_version']}" in held
    assert held != before, "the run left the virtualenv as it was"
    assert starts_since(flower, since) == 1, flower.run("journalctl -u flower --no-pager -n 30").stdout


def test_upgrade_and_rollback_as_the_on_call_guide_writes_them(flower: Any, tmp_path: Path) -> None:
    ca, login = served_ca(tmp_path), (ADMIN["name"], ADMIN["password"])
    sent = flower.run("demo-worker-call add '[40, 2]'")
    assert sent.rc == 0, sent.stderr
    task_id = sent.stdout.strip().splitlines()[-1]

    def state() -> str:
        status, body = get(f"/api/task/info/{task_id}", ca, login)
        return json.loads(body).get("state", "") if status == 200 else f"HTTP {status}"

    assert wait_for(lambda: state() == "SUCCESS", timeout=60), state()
    # Step 4: back up now (the state Flower saved last; the service says how old).
    assert flower.run("systemctl start flower-backup.service").rc == 0
    switch(flower, OTHER, preview=True)
    assert state() == "SUCCESS", "Flower lost its tasks in the upgrade"
    time.sleep(1)  # the next run's journal window starts after this start
    switch(flower, FIRST, preview=False)
    assert state() == "SUCCESS", "Flower lost its tasks in the rollback"
