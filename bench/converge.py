#!/usr/bin/env python3
"""How long site.yml takes on a fresh host, and what a run that changes nothing costs.

Starts a fresh systemd container from the project's image (as `make demo` does, under a name of its own),
authorizes a key for root on its OpenSSH server (the image's, as a real host has), and runs, each timed:

  1. playbooks/fixtures.yml (the demo's broker and worker; not counted),
  2. site.yml on the fresh host over SSH (pipelining, ControlPersist and Mitogen on: ansible.cfg): cold_s,
  3. site.yml again, nothing to change, over SSH, with ansible.posix.profile_tasks: rerun_s, tasks, slowest,
  4. the same re-run without Mitogen (ANSIBLE_STRATEGY=linear: a new Python on the host for every task):
     rerun_linear_s; and over docker exec (the demo's connection): rerun_docker_s,
  5. the floor: playbooks of 1 and of 101 `stat` tasks over SSH, the cheapest module call there is. Their
     difference gives what one module call costs on this connection (floor_s_per_call) and the rest what any
     run costs before its first task (floor_start_s); from them, how many module calls a re-run may make at
     most to stay within 15 % of the cold run (calls_within_15pct), against the re-run's own count (ok tasks,
     rerun_ok; skipped tasks cost no call),
  6. the same for a task that runs on the controller alone (`assert`, no module call on the host): what any
     task costs before its module (floor_s_per_controller_task), and from it how many tasks a re-run may have
     at most to stay within 15 % of the cold run, after the run's start and its health check's own seconds
     (tasks_within_15pct), against the re-run's own count (tasks); and where the re-run's seconds go, by
     module (rerun_by_action, from a re-run with the ansible.posix.json callback),
  7. what gathering every fact costs a play against the local facts alone (the roles read nothing else, and
     site.yml's plays gather only those): 10 plays of each over SSH, the difference per play
     (gather_all_minus_local_s_per_play; site.yml has four plays that gathered everything before).

Prints the figures and writes bench/results/converge.json. The container is removed at the end.

    .venv/bin/python bench/converge.py [--keep]

Needs the engine and image (scripts/prepare-engine.sh) and ssh on this machine. Bounded: each run stops after
--timeout seconds. The container and inventory code is bench/target.py's, shared with the other scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from target import (
    RESULTS,
    ROOT,
    commit,
    docker,
    now,
    recap,
    remove_container,
    run_playbook,
    snapshot,
    start_container,
    versions,
    work_dir,
    write_inventory,
)

NAME = "flowerops-bench-converge"
PROFILE = re.compile(r"^(.+?) -{2,} (\d+\.\d+)s$", re.M)
PROFILE_ENV = {
    "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
    "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "30",
    "PROFILE_TASKS_SORT_ORDER": "descending",
}


def inventory(work: Path, address: str, key: Path) -> tuple[Path, Path]:
    """The demo's inventory for this container: over SSH, and over docker."""
    over_ssh = write_inventory(
        work / "inventory-ssh",
        NAME,
        {"ansible_host": address, "ansible_user": "root", "ansible_ssh_private_key_file": str(key)},
        # A new container's host key; Mitogen's SSH reads ansible_host_key_checking, not the options.
        {
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_host_key_checking": False,
        },
    )
    over_docker = write_inventory(work / "inventory-docker", NAME, {"ansible_connection": "community.docker.docker"})
    return over_ssh, over_docker


def run(playbook: str, inventory_dir: Path, work: Path, timeout: int, strategy: str = "") -> tuple[float, str]:
    # From a copy of the commit (as bench/target.py deploys), never from a working tree being edited.
    env = {**PROFILE_ENV, **({"ANSIBLE_STRATEGY": strategy} if strategy else {})}
    return run_playbook(playbook, inventory_dir, work / "secrets", timeout, env, source=snapshot(NAME))


FLOOR_CALLS = 100


def timed_tasks(inventory_dir: Path, work: Path, timeout: int, book_name: str, tasks: list[dict]) -> float:
    """Seconds a playbook of these tasks (one play on every host, no facts) takes over the given connection."""
    book = work / f"{book_name}.yml"
    book.write_text(json.dumps([{"name": "Floor", "hosts": "all", "gather_facts": False, "tasks": tasks}]))
    return run_playbook(str(book), inventory_dir, work / "secrets", timeout, source=snapshot(NAME))[0]


def floor(inventory_dir: Path, work: Path, timeout: int, calls: int) -> float:
    """Seconds a playbook of `calls` + 1 stat tasks (no facts) takes over the given connection."""
    tasks = [{"name": f"Read / ({i})", "ansible.builtin.stat": {"path": "/"}} for i in range(calls + 1)]
    return timed_tasks(inventory_dir, work, timeout, f"floor-{calls}", tasks)


def controller_floor(inventory_dir: Path, work: Path, timeout: int, tasks: int) -> float:
    """Seconds a playbook of one stat task and `tasks` controller-only ones (assert, no facts) takes."""
    assertion = {"that": ["true"], "quiet": True}
    # The stat first, so that this playbook and floor(..., 0) pay the connection's start alike.
    body = [{"name": "Read /", "ansible.builtin.stat": {"path": "/"}}]
    body += [{"name": f"Assert ({i})", "ansible.builtin.assert": assertion} for i in range(tasks)]
    return timed_tasks(inventory_dir, work, timeout, f"floor-assert-{tasks}", body)


def by_action(inventory_dir: Path, work: Path, timeout: int) -> list[dict[str, object]]:
    """A no-op re-run's seconds and task count per module (a loop counts once), most seconds first."""
    env = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    _, output = run_playbook("site.yml", inventory_dir, work / "secrets", timeout, env, source=snapshot(NAME))
    totals: dict[str, list[float]] = {}
    for play in json.loads(output[output.index("{") :])["plays"]:
        for task in play["tasks"]:
            span = task["task"]["duration"]
            seconds = (datetime.fromisoformat(span["end"]) - datetime.fromisoformat(span["start"])).total_seconds()
            results = list(task["hosts"].values())
            action = results[0].get("action", "?") if results else "?"
            skipped = bool(results) and all(result.get("skipped") for result in results)
            entry = totals.setdefault(action + (" (skipped)" if skipped else ""), [0, 0.0])
            entry[0] += 1
            entry[1] += seconds
    rows = [{"action": name, "tasks": int(n), "s": round(s, 2)} for name, (n, s) in totals.items()]
    return sorted(rows, key=lambda row: -float(row["s"]))


GATHER_PLAYS = 10


def gather(inventory_dir: Path, work: Path, timeout: int, subset: list[str]) -> float:
    """Seconds GATHER_PLAYS plays that gather `subset` and run nothing take over the given connection."""
    book = work / f"gather-{len(subset)}.yml"
    play = {"name": "Gather", "hosts": "all", "gather_facts": True, "gather_subset": subset, "tasks": []}
    book.write_text(json.dumps([play] * GATHER_PLAYS))
    return run_playbook(str(book), inventory_dir, work / "secrets", timeout, source=snapshot(NAME))[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=int, default=1800, help="seconds each run may take at most")
    parser.add_argument("--keep", action="store_true", help="leave the container running")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flowerops-bench-converge."))
    shutil.rmtree(work_dir(NAME), ignore_errors=True)  # the copy of HEAD is taken afresh
    try:
        address = start_container(NAME)
        key = work / "ssh_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public = (work / "ssh_key.pub").read_text().strip()
        authorize = f"install -d -m 0700 /root/.ssh && echo '{public}' > /root/.ssh/authorized_keys"
        docker("exec", NAME, "sh", "-c", authorize)
        over_ssh, over_docker = inventory(work, address, key)
        run("playbooks/fixtures.yml", over_ssh, work, args.timeout)
        cold_s, _ = run("site.yml", over_ssh, work, args.timeout)
        print(f"cold site.yml over SSH: {cold_s:.1f} s", flush=True)
        rerun_s, output = run("site.yml", over_ssh, work, args.timeout)
        counts = recap(output)
        if counts["changed"]:
            sys.exit(f"the re-run changed {counts['changed']} tasks: not idempotent\n{output[-3000:]}")
        tasks = counts["ok"] + counts["skipped"]
        slowest = [{"task": name.strip(), "s": float(s)} for name, s in PROFILE.findall(output)][:10]
        rerun_linear_s, _ = run("site.yml", over_ssh, work, args.timeout, strategy="linear")
        rerun_docker_s, _ = run("site.yml", over_docker, work, args.timeout)
        one, many = floor(over_ssh, work, args.timeout, 0), floor(over_ssh, work, args.timeout, FLOOR_CALLS)
        per_call = (many - one) / FLOOR_CALLS
        start = one - per_call
        per_task = (controller_floor(over_ssh, work, args.timeout, FLOOR_CALLS) - one) / FLOOR_CALLS
        actions = by_action(over_ssh, work, args.timeout)
        # The health check that gates each Flower host (the flower_health module), from the same re-run.
        gate = sum(float(row["s"]) for row in actions if row["action"] == "flower_health")
        everything = gather(over_ssh, work, args.timeout, ["all"])
        local = gather(over_ssh, work, args.timeout, ["!all", "!min", "local"])
        result = {
            "date": now(),
            "commit": commit(),
            **versions(NAME),
            "cores": os.cpu_count(),
            "connection": "ssh (pipelining, ControlPersist)",
            "strategy": "mitogen_linear (ansible.cfg)",
            "cold_s": round(cold_s, 1),
            "rerun_s": round(rerun_s, 1),
            "rerun_ratio": round(rerun_s / cold_s, 3),
            "tasks": tasks,
            "rerun_s_per_task": round(rerun_s / tasks, 3),
            "slowest": slowest,
            "rerun_linear_s": round(rerun_linear_s, 1),
            "rerun_docker_s": round(rerun_docker_s, 1),
            "rerun_ok": counts["ok"],
            "floor_s_per_call": round(per_call, 3),
            "floor_start_s": round(start, 1),
            "calls_within_15pct": max(0, int((0.15 * cold_s - start) / per_call)),
            "floor_s_per_controller_task": round(per_task, 3),
            "rerun_gate_s": round(gate, 2),
            "tasks_within_15pct": max(0, int((0.15 * cold_s - start - gate) / per_task)),
            "rerun_by_action": actions[:12],
            "gather_all_minus_local_s_per_play": round((everything - local) / GATHER_PLAYS, 2),
        }
    finally:
        if not args.keep:
            remove_container(NAME)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"re-run over SSH: {result['rerun_s']} s for {tasks} tasks ({result['rerun_s_per_task']} s each), "
        f"{result['rerun_ratio']:.0%} of the cold run; without Mitogen (linear): {result['rerun_linear_s']} s; "
        f"over docker: {result['rerun_docker_s']} s"
    )
    print(
        f"floor over SSH: {result['floor_s_per_call']} s per module call, {result['floor_start_s']} s before the "
        f"first task: 15 % of the cold run allows {result['calls_within_15pct']} calls; the re-run made up to "
        f"{result['rerun_ok']} (ok tasks); gathering every fact costs a play "
        f"{result['gather_all_minus_local_s_per_play']} s more than the local facts alone"
    )
    print(
        f"a task on the controller alone (assert): {result['floor_s_per_controller_task']} s; after the start and "
        f"the health check ({result['rerun_gate_s']} s), 15 % of the cold run allows {result['tasks_within_15pct']} "
        f"tasks; the re-run has {tasks}"
    )
    print("the re-run by module (seconds, tasks):")
    for row in result["rerun_by_action"]:
        print(f"  {row['s']:6.2f} s  {row['tasks']:4d}  {row['action']}")
    print("slowest tasks of the re-run:")
    for task in slowest:
        print(f"  {task['s']:6.2f} s  {task['task']}")
    out = RESULTS / "converge.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
