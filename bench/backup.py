#!/usr/bin/env python3
"""How long the role's backup, its verify and the restore playbook take with 50,000 tasks.

Starts a fresh systemd container from the project's image and deploys it as the demo is (bench/target.py:
the fixtures, then site.yml), with flower_max_tasks 50,000 and MemoryMax sized for it by preflight's own
rule (the same inventory settings as bench/capacity.py's second half, so `--reuse --name
flowerops-bench-capacity` runs against that script's kept container). Flower is fed real Celery task
events until its last save holds 50,000 tasks (skipped when it already does), then:

  - backup_s:  `systemctl start flower-backup.service` (the role's oneshot unit: copy, archive, reopen
               the archive and count its tasks, prune), wall time of that command (backup_unit_s: the
               unit's main process alone, by systemd's timestamps);
  - archive_mb: the archive the run's status file names (flower_backup's status_file);
  - verify_s:  `flower-backup verify` (the operator's command: signature, checksum, extract and count, in
               the backup unit's sandbox), wall time; the status file only records when a verify finished,
               to the second, and the backup unit's own verify is part of backup_s;
  - restore_s: `ansible-playbook playbooks/restore.yml` against the target, wall time, everything in it
               (facts, the archive checked again, Flower stopped with its final save, the database
               swapped, Flower started and its tasks counted through its API); the slowest tasks are
               listed from ansible.posix.profile_tasks.

Prints the figures and writes bench/results/backup.json. The container is removed at the end.

    .venv/bin/python bench/backup.py [--keep] [--reuse [--name flowerops-bench-capacity]]

Needs the engine and image (scripts/prepare-engine.sh). Bounded: one feed of 50,000 tasks (--feed-timeout),
one periodic save waited for (75 s at most), one backup, one verify, one restore; every docker exec
and playbook run has a timeout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

import target
from flower_state import saved_tasks, sized_for, sizing_rule, watch_save
from target import in_target

NAME = "flowerops-bench-backup"
TASKS = 50000
PROFILE = re.compile(r"^(.+?) -{2,} (\d+\.\d+)s$", re.M)


def timed(name: str, *command: str, timeout: float = 1800) -> tuple[float, str]:
    started = time.monotonic()
    out = in_target(name, *command, timeout=timeout)
    return time.monotonic() - started, out


def fill(args: argparse.Namespace) -> dict[str, Any]:
    """50,000 tasks in Flower's last save, fed only when it holds fewer."""
    before = saved_tasks(args.name)
    if before >= TASKS:
        return {"fed": 0, "saved_before": before}
    fed = target.feed_tasks(args.name, TASKS, timeout=args.feed_timeout)
    if fed["counted"] < fed["sent"]:
        sys.exit(f"Flower counted {fed['counted']} of {fed['sent']} events fed: {fed}")
    watch_save(args.name)
    return {"fed": TASKS, "feed_s": round(fed["seconds"], 1), "saved_before": before}


def unit_seconds(name: str, unit: str) -> float:
    """How long the unit's last run took, by systemd's own clock."""
    props = in_target(
        name, "systemctl", "show", unit, "-p", "ExecMainStartTimestampMonotonic", "-p", "ExecMainExitTimestampMonotonic"
    )
    stamps = dict(line.split("=", 1) for line in props.split())
    return (int(stamps["ExecMainExitTimestampMonotonic"]) - int(stamps["ExecMainStartTimestampMonotonic"])) / 1e6


def backup(name: str) -> dict[str, Any]:
    seconds, _ = timed(name, "systemctl", "start", "flower-backup.service")
    unit_s = unit_seconds(name, "flower-backup.service")
    deployed = target.fact(name, "flower_backup")
    status = json.loads(in_target(name, "cat", deployed["status_file"]))
    if not status["ok"]:
        sys.exit(f"the backup failed: {status['error']}")
    size = int(in_target(name, "stat", "-c", "%s", f"{deployed['dir']}/{status['archive']}"))
    return {
        "backup_s": round(seconds, 1),
        "backup_unit_s": round(unit_s, 1),
        "archive_mb": round(size / 1024 / 1024, 1),
        "status": status,
    }


def verify(name: str) -> dict[str, Any]:
    command = target.fact(name, "flower_backup")["command"]
    seconds, out = timed(name, command, "verify")
    return {"verify_s": round(seconds, 1), "verified": json.loads(out.strip().splitlines()[-1])}


def restore(name: str, timeout: float) -> dict[str, Any]:
    env = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_SORT_ORDER": "descending"}
    seconds, output = target.playbook(name, "playbooks/restore.yml", timeout, env)
    slowest = [{"task": task.strip(), "s": float(s)} for task, s in PROFILE.findall(output)][:5]
    return {"restore_s": round(seconds, 1), "restore_slowest": slowest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target.add_arguments(parser, NAME)
    parser.add_argument("--feed-timeout", type=float, default=900, help="seconds the feed may take")
    args = parser.parse_args()
    load = target.loadavg()
    settings = sized_for(TASKS, sizing_rule())
    try:
        target.prepare(args, settings)
        result: dict[str, Any] = {**target.header(args.name, load), "tasks": TASKS, "settings": settings}
        result["fill"] = fill(args)
        result |= backup(args.name)
        result |= verify(args.name)
        result |= restore(args.name, args.deploy_timeout)
        result["tasks_after_restore"] = saved_tasks(args.name)
        result["loadavg_end"] = [round(x, 2) for x in target.loadavg()]
    finally:
        target.finish(args)
    print(f"{TASKS} tasks, archive {result['archive_mb']} MB ({settings})")
    print(f"backup (flower-backup.service) {result['backup_s']} s (its process {result['backup_unit_s']} s)")
    print(f"verify (flower-backup verify)  {result['verify_s']} s")
    print(f"restore (playbooks/restore.yml) {result['restore_s']} s; slowest tasks:")
    for task in result["restore_slowest"]:
        print(f"  {task['s']:6.2f} s  {task['task']}")
    target.write_result("backup.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
