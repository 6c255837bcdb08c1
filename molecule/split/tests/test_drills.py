"""Drills on the Flower host: faults made on purpose, bounded and stopping by themselves, each ending with the
host serving again by itself. This module runs first (file order), so the rest of the scenario (the checklist
in test_split.py) runs on the host the drills left.

- kill -9 Flower: systemd starts it again (Restart=on-failure) and it comes back with every task of its last
  save.
- Reboot: the container restarts through systemd's own shutdown, as `reboot` does; every unit comes up again,
  nothing failed, and playbooks/health.yml passes with nobody touching anything.
- Broker outage: Redis stopped on its host for about 60 s. Flower keeps serving its pages and the health check names the
  broker; a task sent 30 s after Redis is back, at the latest, shows in Flower, with nobody touching anything. Redis
  returns at the worst moment for Flower: just as its event listener starts waiting 32 s before its next try
  (its wait doubles after each failed one, 2 s first; reaching the 32 s wait takes about a minute), which
  without the flower role's watchdog leaves it blind for over 32 s (bench/outage.py measures both, and longer).
- Kill points and the memory cap: Flower saves to `<db>.tmp` and renames it over the database. SIGKILL at
  points through a stop's save (timed first), and Flower starts each time with every saved task and no
  `*.corrupt`; then a small MemoryMax for this run only and more tasks than fit: the kernel kills Flower in its
  cgroup (`oom-kill`), systemd starts it again, and it comes back with its last save.
- Heavy readers: clients looping on the task API and a worker's page from one address; nginx's limits hold what
  reaches Flower, and its health check and another user's page keep answering.

The seconds each took are printed and written to .artifacts/drills.json (README, "What survives what").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from conftest import (
    ADMIN,
    BROKER,
    DOMAIN,
    FLOWER,
    GROUP_VARS,
    LOCAL_CA,
    PROJECT_DIR,
    SECRETS,
    basic_auth,
    broker_url,
    container_ip,
    get,
    platform_host,
    record,
    run_playbook,
    send_task,
    served_ca,
    service_diagnostics,
    task_state,
    wait_for,
)
from testlib import main_pid


def test_kill_9_flower_comes_back_with_its_last_save(flower: Any, tmp_path: Path) -> None:
    ca = served_ca(tmp_path)
    task_id = send_task()
    assert wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=60), task_state(task_id, ca)
    # Flower saves its state on a clean stop: after this restart the task is in the last save.
    assert flower.run("systemctl restart flower").rc == 0
    assert wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=30), task_state(task_id, ca)

    pid, since = main_pid(flower), int(flower.check_output("date +%s"))
    killed = time.monotonic()
    assert flower.run(f"kill -9 {pid}").rc == 0
    back = wait_for(lambda: main_pid(flower) not in ("0", pid) and task_state(task_id, ca) == "SUCCESS", timeout=60)
    assert back, f"Flower did not come back: {task_state(task_id, ca)}"
    record("kill_9_flower_back_s", time.monotonic() - killed)
    journal = flower.run("journalctl -u flower --no-pager -o cat --since @%s", str(since)).stdout
    assert "status=9/KILL" in journal, journal[-2000:]


def test_after_a_reboot_every_unit_is_up_and_the_health_check_passes(flower: Any, tmp_path: Path) -> None:
    ca = served_ca(tmp_path)
    task_id = send_task()
    assert wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=60), task_state(task_id, ca)
    started = time.monotonic()
    # docker stops the container with its stop signal (SIGRTMIN+3: systemd's own shutdown, stopping every unit).
    subprocess.run(["docker", "restart", "--time", "90", FLOWER], check=True, capture_output=True, timeout=150)

    def booted() -> str:
        try:
            return flower.run("systemctl is-system-running").stdout.strip()
        except RuntimeError:  # testinfra's SSH backend: sshd is not listening yet
            return "unreachable over SSH"

    assert wait_for(lambda: booted() in ("running", "degraded"), timeout=90), booted()
    assert booted() == "running", flower.run("systemctl --failed --no-legend").stdout
    # Through nginx with the login, the task Flower saved on the way down.
    back = wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=60)
    assert back, f"after the reboot: {task_state(task_id, ca)}"
    record("reboot_flower_answers_s", time.monotonic() - started)
    for unit in ("flower", "nginx", "fail2ban", "flower-backup.timer"):
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
    broker = platform_host(BROKER)
    assert broker.run("systemctl stop redis-server").rc == 0
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
        assert broker.run("systemctl start redis-server").rc == 0
    back = time.monotonic()
    record("broker_outage_s", back - stopped)
    # A task every 2 s from the moment Redis is back. Events sent while Flower does not listen are lost for it
    # (its event queue goes with it), so a task the worker ran before Flower was back never shows: the first task
    # that shows bounds the blind spell by the moment it was sent.
    sent: list[tuple[float, str]] = []

    def first_shown() -> float | None:
        sent.append((time.monotonic() - back, send_task()))
        shown = [at for at, task in sent[-3:] if task_state(task, ca) == "SUCCESS"]
        return min(shown) if shown else None

    blind = wait_for(first_shown, timeout=90, interval=2)
    watchdog = flower.run("journalctl -u flower-watchdog --no-pager -o cat --since @%s", str(since)).stdout
    print(watchdog)
    assert blind is not None, f"no task sent in the 90 s after the outage shows in Flower\n{watchdog}"
    record("broker_outage_blind_s", blind)
    assert blind <= 30, f"the first task Flower showed was sent {blind:.0f} s after Redis returned\n{watchdog}"
    assert "Restarted it" in watchdog, watchdog


DATA_DIR = "/var/lib/flower"
DB = f"{DATA_DIR}/flower.db"
FLOWER_PYTHON = "/opt/flower/venv/bin/python"
AGENT = "/root/drill-agent-events.py"
TASK_TABLE = "/tasks/datatable?draw=1&start=0&length=1&order%5B0%5D%5Bcolumn%5D=0&columns%5B0%5D%5Bdata%5D=name"
# Run in the target with its python3: SIGTERM to Flower (it saves, then exits), then SIGKILL a given fraction of
# a save's duration after its temporary file `<db>.tmp*` appeared (polled every 0.5 ms). With a negative
# fraction it only times the save (the temporary file's life) and waits for the clean exit.
KILL_IN_SAVE = r"""
import glob, json, os, signal, sys, time
db, pid, fraction, save_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def saving():
    return bool(glob.glob(glob.escape(db + ".tmp") + "*"))
def alive():
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
deadline = time.monotonic() + 30
os.kill(pid, signal.SIGTERM)
while not saving() and alive() and time.monotonic() < deadline:
    time.sleep(0.0005)
began = time.monotonic()
if fraction < 0:
    while saving() and time.monotonic() < deadline:
        time.sleep(0.0005)
    saved = time.monotonic() - began
    while alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps({"save_s": saved, "exited": not alive()}))
    sys.exit(0)
time.sleep(fraction * save_s)
in_save = saving()
try:
    os.kill(pid, signal.SIGKILL)
except ProcessLookupError:  # already gone: the save and the exit were done
    pass
print(json.dumps({"in_save": in_save, "after_s": time.monotonic() - began}))
"""


def tasks_held(ca: Path) -> int:
    """How many tasks Flower holds (its task table's total, through the front door), -1 while it does not answer."""
    try:
        status, body = get(TASK_TABLE, ca, (ADMIN["name"], ADMIN["password"]))
    except OSError:
        return -1
    return int(json.loads(body)["recordsTotal"]) if status == 200 else -1


def feed(tasks: int, timeout: float, payload: int = 0) -> dict[str, Any]:
    """Real task events for `tasks` tasks (bench/agent_events.py: a Celery EventDispatcher on the broker, from the
    Flower host), each task's arguments and result `payload` characters long."""
    plan = {
        "mode": "feed",
        "tasks": tasks,
        "payload": payload,
        "timeout": timeout,
        "broker": broker_url(),
        "broker_ca": GROUP_VARS["flower_broker_ca_file"],
        "flower_socket": "/run/flower/flower.sock",
        "worker": "drill-feed@flowerops-split",
    }
    subprocess.run(["docker", "cp", str(PROJECT_DIR / "bench" / "agent_events.py"), f"{FLOWER}:{AGENT}"], check=True)
    sent = subprocess.run(
        ["docker", "exec", "-i", FLOWER, FLOWER_PYTHON, AGENT],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr[-2000:]
    return json.loads(sent.stdout)


def kill_in_save(flower: Any, fraction: float, save_s: float = 0.0) -> dict[str, Any]:
    """Kill Flower as KILL_IN_SAVE says; returns once systemd has seen its process end as well."""
    pid = main_pid(flower)
    run = flower.run(f"python3 -c %s {DB} {pid} {fraction} {save_s}", KILL_IN_SAVE)
    assert run.rc == 0, run.stderr
    # The process may be gone (a zombie) before systemd has reaped it: a `systemctl start` then finds the unit
    # still active and does nothing, and the clean exit that follows leaves it inactive (dead), no restart.
    reaped = wait_for(lambda: main_pid(flower) != pid, timeout=30, interval=0.2)
    assert reaped, f"systemd still names {pid} flower's main process 30 s after it ended"
    return json.loads(run.stdout)


def leftovers(flower: Any) -> list[str]:
    return flower.run(f"ls -1 {DATA_DIR}").stdout.split()


def oom_kills(flower: Any) -> int:
    """The kernel's OOM kills for flower.service's own memory limit (its log names the cgroup that hit it)."""
    cgroup = flower.check_output("systemctl show -p ControlGroup --value flower")
    assert cgroup, "flower.service has no cgroup (not running)"
    return int(flower.run(f"dmesg | grep -c 'oom-kill:.*oom_memcg={cgroup},'").stdout.strip() or 0)


def test_no_kill_point_in_a_save_and_no_memory_cap_kill_loses_the_history(flower: Any, tmp_path: Path) -> None:
    ca = served_ca(tmp_path)
    task_id = send_task()
    fed = feed(4000, timeout=90)
    assert fed.get("counted", 0) >= fed["sent"], fed
    assert wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=60), task_state(task_id, ca)
    assert flower.run("systemctl restart flower").rc == 0  # the clean stop saves every task
    assert wait_for(lambda: tasks_held(ca) > 4000, timeout=60), tasks_held(ca)
    saved = tasks_held(ca)

    # The stop's save, timed; then SIGKILL at points through it, and Flower started again after each.
    timed = kill_in_save(flower, -1)
    assert timed["exited"] and timed["save_s"] > 0, timed
    assert flower.run("systemctl start flower").rc == 0
    points = []
    for fraction in (0.0, 0.2, 0.4, 0.6, 0.8, 0.95, 1.2):
        # Once (two lint runs beside it) Flower stayed inactive here: the start above came before systemd had
        # reaped the process that exited (kill_in_save waits for that now); should it happen again for another
        # reason, the unit's journal and Flower's log say why.
        same = wait_for(lambda: tasks_held(ca) == saved, timeout=60)
        assert same, (tasks_held(ca), saved, service_diagnostics(flower, "flower", FLOWER_LOG))
        point = kill_in_save(flower, fraction, timed["save_s"])
        point["left"] = [name for name in leftovers(flower) if ".tmp" in name]
        # Kills on purpose, faster than the unit's start limit allows: that count is not this drill's.
        assert flower.run("systemctl reset-failed flower; systemctl start flower").rc == 0
        back = wait_for(lambda: (held := tasks_held(ca)) >= 0 and held, timeout=60)
        point["held"] = back
        points.append(point)
        assert back == saved, f"killed {point}: Flower came back with {back} tasks, {saved} saved"
        corrupt = [name for name in leftovers(flower) if name.endswith(".corrupt")]
        assert not corrupt, f"killed {point}: {corrupt}"
    print(json.dumps({"save_s": timed["save_s"], "points": points}, indent=1))
    assert sum(bool(point["left"]) for point in points) >= 3, "fewer than 3 kills landed inside the save"
    assert task_state(task_id, ca) == "SUCCESS"

    # Over its memory cap: a small MemoryMax for this run only (systemctl set-property --runtime), 32 MiB above
    # what Flower uses now, then tasks with bigger arguments and results than the sizing assumed (Flower holds
    # at most max_tasks, so more small tasks would not grow it). The kernel kills Flower inside its cgroup;
    # systemd starts it again, under the same cap, with its last save (before the push: the next periodic save
    # is a minute after the last start).
    limits = "MemoryMax", "MemorySwapMax"
    before = flower.check_output("systemctl show -p MemoryMax -p MemorySwapMax flower")
    current = int(flower.check_output("systemctl show -p MemoryCurrent --value flower"))
    cap = current + 32 * 1024 * 1024
    since, pid, oom_before = int(flower.check_output("date +%s")), main_pid(flower), oom_kills(flower)
    assert flower.run(f"systemctl set-property --runtime flower {limits[0]}={cap} {limits[1]}=0").rc == 0
    try:
        pushed = feed(10000, timeout=90, payload=4000)
        killed = time.monotonic()
        assert "flower_gone" in pushed, f"Flower held {pushed} under a cap of {cap} bytes"
        back = wait_for(lambda: main_pid(flower) not in ("0", pid) and tasks_held(ca) >= saved, timeout=60)
        assert back, f"Flower did not come back under its cap: {tasks_held(ca)} tasks"
        record("memory_cap_flower_back_s", time.monotonic() - killed)
    finally:
        flower.run("rm -rf /run/systemd/system.control/flower.service.d && systemctl daemon-reload")
    assert flower.check_output("systemctl show -p MemoryMax -p MemorySwapMax flower") == before
    journal = flower.run("journalctl -u flower --no-pager -o cat --since @%s", str(since)).stdout
    assert "status=9/KILL" in journal, journal[-2000:]
    # The kernel's word: in these containers (cgroup v1) systemd reports result 'signal', not 'oom-kill'.
    assert oom_kills(flower) == oom_before + 1, journal[-2000:]
    assert task_state(task_id, ca) == "SUCCESS"
    assert not [name for name in leftovers(flower) if name.endswith(".corrupt")]


READERS_AGENT = "/root/drill-agent-http.py"
READ_SECONDS = 15


def proxy_default(name: str) -> str:
    return yaml.safe_load((PROJECT_DIR / "roles" / "flower_proxy" / "defaults" / "main.yml").read_text())[name]


def readers_job(readers: list[dict[str, Any]], probes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "readers", "seconds": READ_SECONDS, "interval": 0.2, "readers": readers, "probes": probes}


def test_heavy_readers_meet_the_proxys_limits_and_the_ui_and_health_check_keep_answering(
    flower: Any, tmp_path: Path
) -> None:
    """Heavy readers from one address (bench/agent_http.py's readers in the Flower host, through nginx from the
    host's own address): four clients looping on /api/tasks?limit=100 with Flower holding max_tasks, a viewer
    reloading a worker's page (each one broadcasts inspections to the workers), and three groups asking Flower to
    refresh its workers (the same broadcast), the last two the ways around a filter on the query's first
    refresh argument (Flower reads the last one, and decodes an encoded name). Meanwhile Flower's /healthcheck on
    its socket, and the UI from another address (the same agent on this machine), are asked every 0.2 s. nginx's
    limits answer the readers with 429 past the heavy pages' own rate and burst, so Flower serves them no more
    than that; the health check and the other user get every answer. bench/readers.py measures the same load
    with and without the limits at 50,000 tasks: there, each task list takes about 0.1 s of Flower's one thread,
    and a viewer held to the UI's limit alone reloaded a worker's page 11.5 times a second."""
    ca = served_ca(tmp_path)
    fed = feed(max(0, 10000 - tasks_held(ca)), timeout=120)
    assert fed.get("counted", 0) >= fed["sent"], fed
    login = basic_auth((ADMIN["name"], ADMIN["password"]))
    status, body = get("/api/workers", ca, (ADMIN["name"], ADMIN["password"]))
    workers = [name for name in json.loads(body) if not name.startswith("drill-feed@")]
    assert status == 200 and workers, body[:500]
    address = container_ip(flower)
    front = {"scheme": "https", "host": DOMAIN, "address": address, "port": 443, "auth": login}
    here = {"targets": {"ui": {**front, "ca": str(ca)}}}
    here["jobs"] = [readers_job([], [{"name": "ui", "target": "ui", "path": "/"}])]
    there = {
        "targets": {
            "readers": {**front, "ca": LOCAL_CA, "source": address},
            "socket": {"scheme": "http", "unix": "/run/flower/flower.sock", "host": "localhost", "auth": login},
        },
        "jobs": [
            readers_job(
                [
                    {"target": "readers", "path": "/api/tasks?limit=100", "concurrency": 4},
                    {"target": "readers", "path": f"/worker/{workers[0]}", "concurrency": 1},
                    # A refresh makes Flower inspect every worker, like a worker's page; Flower reads the last
                    # value of a repeated argument, and decodes encoded names.
                    {"target": "readers", "path": "/api/workers?refresh=1", "concurrency": 3},
                    {"target": "readers", "path": "/workers?refresh=0&refresh=1", "concurrency": 3},
                    {"target": "readers", "path": "/api/workers?%72efresh=yes", "concurrency": 3},
                ],
                [{"name": "health", "target": "socket", "path": "/healthcheck"}],
            )
        ],
    }
    agent = PROJECT_DIR / "bench" / "agent_http.py"
    subprocess.run(["docker", "cp", str(agent), f"{FLOWER}:{READERS_AGENT}"], check=True)
    # Both start at once, each reading its plan from a file.
    plans = [tmp_path / "there.json", tmp_path / "here.json"]
    for path, plan in zip(plans, (there, here), strict=True):
        path.write_text(json.dumps(plan))
    commands = (["docker", "exec", "-i", FLOWER, "python3", READERS_AGENT], [sys.executable, str(agent)])
    runs = []
    for command, path in zip(commands, plans, strict=True):
        with path.open() as plan_file:
            runs.append(
                subprocess.Popen(command, stdin=plan_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
    outputs = [run.communicate(timeout=READ_SECONDS + 120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [stderr[-2000:] for _, stderr in outputs]
    (loaded,), (other,) = (json.loads(stdout) for stdout, _ in outputs)
    api, viewer, *refreshers = loaded["readers"]
    probes = {probe["name"]: probe for probe in loaded["probes"] + other["probes"]}
    print(json.dumps({"readers": loaded["readers"], **{k: v["statuses"] for k, v in probes.items()}}, indent=1))
    # The heavy pages' own limit for one address (a task list sorts every task Flower holds, a worker's page
    # broadcasts inspections to the workers): its rate over the run and one second more, plus its burst.
    rate = float(proxy_default("flower_proxy_rate_heavy").removesuffix("r/s"))
    most = rate * (loaded["seconds"] + 1) + int(proxy_default("flower_proxy_burst_heavy"))
    for readers in (api, viewer, *refreshers):
        served = readers["statuses"].get("200", 0)
        assert readers["statuses"].get("429", 0) > 0, f"no reader of {readers['path']} was refused: {readers}"
        assert 0 < served <= most, f"Flower served {served} of {readers['path']}, more than {most}: {readers}"
    for name, probe in probes.items():
        assert set(probe["statuses"]) == {"200"}, f"{name} did not always answer: {probe['statuses']}"
        assert len(probe["times"]) >= READ_SECONDS, f"{name}: {len(probe['times'])} answers in {READ_SECONDS} s"
        record(f"heavy_readers_{name}_p99_s", sorted(probe["times"])[int(0.99 * (len(probe["times"]) - 1))])
