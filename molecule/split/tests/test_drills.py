"""Drills on the Flower host: faults made on purpose, bounded and stopping by themselves, each ending with the
host serving again by itself. This module runs first (file order), so the rest of the scenario (the upgrade,
the checklist in test_split.py) runs on the host the drills left.

- kill -9 Flower: systemd starts it again (Restart=on-failure) and it comes back with every task of its last
  save.
- Reboot: the container restarts through systemd's own shutdown, as `reboot` does; every unit comes up again,
  nothing failed, and playbooks/health.yml passes with nobody touching anything.
- Broker outage: Redis stopped for about 60 s. Flower keeps serving its pages and the health check names the
  broker; a task sent 30 s after Redis is back, at the latest, shows in Flower, with nobody touching anything. Redis
  returns at the worst moment for Flower: just as its event listener starts waiting 32 s before its next try
  (its wait doubles after each failed one, 2 s first; reaching the 32 s wait takes about a minute), which
  without the flower role's watchdog leaves it blind for over 32 s (bench/outage.py measures both, and longer).

The seconds each took are printed and written to .artifacts/drills.json (README, "What survives what").
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import ADMIN, FLOWER, PROJECT_DIR, SECRETS, get, run_playbook, served_ca, task_state, wait_for

FIGURES = PROJECT_DIR / ".artifacts" / "drills.json"


def record(name: str, seconds: float) -> None:
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[name] = round(seconds, 1)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"{name}: {seconds:.1f} s")


def send_task(flower: Any) -> str:
    sent = flower.run("demo-worker-call add '[20, 22]'")
    assert sent.rc == 0, sent.stderr
    return sent.stdout.strip().splitlines()[-1]


def main_pid(flower: Any) -> int:
    return int(flower.run("systemctl show -p MainPID --value flower").stdout.strip() or 0)


def test_kill_9_flower_comes_back_with_its_last_save(flower: Any, tmp_path: Path) -> None:
    ca = served_ca(tmp_path)
    task_id = send_task(flower)
    assert wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=60), task_state(task_id, ca)
    # Flower saves its state on a clean stop: after this restart the task is in the last save.
    assert flower.run("systemctl restart flower").rc == 0
    assert wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=30), task_state(task_id, ca)

    pid, since = main_pid(flower), int(flower.check_output("date +%s"))
    killed = time.monotonic()
    assert flower.run(f"kill -9 {pid}").rc == 0
    back = wait_for(lambda: main_pid(flower) not in (0, pid) and task_state(task_id, ca) == "SUCCESS", timeout=60)
    assert back, f"Flower did not come back: {task_state(task_id, ca)}"
    record("kill_9_flower_back_s", time.monotonic() - killed)
    journal = flower.run("journalctl -u flower --no-pager -o cat --since @%s", str(since)).stdout
    assert "status=9/KILL" in journal, journal[-2000:]


def test_after_a_reboot_every_unit_is_up_and_the_health_check_passes(flower: Any, tmp_path: Path) -> None:
    ca = served_ca(tmp_path)
    task_id = send_task(flower)
    assert wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=60), task_state(task_id, ca)
    started = time.monotonic()
    # docker stops the container with its stop signal (SIGRTMIN+3: systemd's own shutdown, stopping every unit).
    subprocess.run(["docker", "restart", "--time", "90", FLOWER], check=True, capture_output=True, timeout=150)

    def booted() -> str:
        return flower.run("systemctl is-system-running").stdout.strip()

    assert wait_for(lambda: booted() in ("running", "degraded"), timeout=90), booted()
    assert booted() == "running", flower.run("systemctl --failed --no-legend").stdout
    # Through nginx with the login, the task Flower saved on the way down.
    back = wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=60)
    assert back, f"after the reboot: {task_state(task_id, ca)}"
    record("reboot_flower_answers_s", time.monotonic() - started)
    for unit in ("flower", "nginx", "redis-server", "demo-worker", "fail2ban", "flower-backup.timer"):
        assert flower.service(unit).is_running, unit
    assert "Status: active" in flower.check_output("ufw status")
    # The health check (workers online and events flowing included), with nobody touching anything.
    runs: list[subprocess.CompletedProcess[str]] = []

    def healthy() -> bool:
        runs.append(run_playbook("playbooks/health.yml", "--limit", FLOWER))
        return runs[-1].returncode == 0

    assert wait_for(healthy, timeout=120, interval=5), (runs[-1].stdout + runs[-1].stderr)[-3000:]
    record("reboot_health_check_passes_s", time.monotonic() - started)


FLOWER_LOG = "/var/log/flower/flower.log"
WORST_WAIT = "trying again in 32 seconds"


def test_a_broker_outage_leaves_flower_serving_and_blind_no_longer_than_30_s(flower: Any, tmp_path: Path) -> None:
    ca, login = served_ca(tmp_path), (ADMIN["name"], ADMIN["password"])
    since = int(flower.check_output("date +%s"))
    logged = int(flower.check_output(f"wc -l < {FLOWER_LOG}"))
    assert flower.run("systemctl stop redis-server").rc == 0
    stopped = time.monotonic()
    try:
        time.sleep(5)  # more than two heartbeats missed
        for page in ("/workers", "/tasks", "/api/workers"):
            status, _ = get(page, ca, login)
            assert status == 200, f"{page} answered HTTP {status} during the outage"
        health = run_playbook("playbooks/health.yml", "--limit", FLOWER, "-e", "flower_verify_retries=1")
        output = health.stdout + health.stderr
        assert health.returncode != 0, output[-3000:]
        assert "broker       failed  Flower cannot reach its broker" in output, output[-3000:]
        assert not [secret for secret in SECRETS if secret in output]

        def flower_waits_longest() -> bool:
            return WORST_WAIT in flower.run(f"tail -n +{logged + 1} {FLOWER_LOG}").stdout

        assert wait_for(flower_waits_longest, timeout=120, interval=0.5), f"Flower never logged {WORST_WAIT!r}"
    finally:
        assert flower.run("systemctl start redis-server").rc == 0
    back = time.monotonic()
    record("broker_outage_s", back - stopped)
    # A task every 2 s from the moment Redis is back. Events sent while Flower does not listen are lost for it
    # (its event queue goes with it), so a task the worker ran before Flower was back never shows: the first task
    # that shows bounds the blind spell by the moment it was sent.
    sent: list[tuple[float, str]] = []

    def first_shown() -> float | None:
        sent.append((time.monotonic() - back, send_task(flower)))
        shown = [at for at, task in sent[-3:] if task_state(task, ca) == "SUCCESS"]
        return min(shown) if shown else None

    blind = wait_for(first_shown, timeout=90, interval=2)
    watchdog = flower.run("journalctl -u flower-watchdog --no-pager -o cat --since @%s", str(since)).stdout
    print(watchdog)
    assert blind is not None, f"no task sent in the 90 s after the outage shows in Flower\n{watchdog}"
    record("broker_outage_blind_s", blind)
    assert blind <= 30, f"the first task Flower showed was sent {blind:.0f} s after Redis returned\n{watchdog}"
    assert "Restarted it" in watchdog, watchdog
