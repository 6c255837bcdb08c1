"""Flower on a bench target: the role's memory rule, its process's memory, its saves and restarts.

Shared by bench/capacity.py and bench/backup.py. What runs in the target runs with its /usr/bin/python3
(standard library) or, to open Flower's database, with Flower's own virtualenv Python.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import target
import yaml
from target import in_target

ROLE = target.ROOT / "roles" / "flower"
MIB = 1024 * 1024
# Put before both scripts that watch Flower's memory (WATCH_SAVE, RESTART): a field of /proc/PID/status in KiB
# (VmRSS, VmHWM); OSError once the process is gone, None when it lacks the field (a process being reaped).
PROC_STATUS = r"""
def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None
"""
# Polls for Flower's temporary save file and its RSS every 5 ms until one save has come and gone.
# Waits out a save in progress, then polls for Flower's temporary save file and its RSS every 5 ms
# until the next save has come and gone (VmHWM reset just before, so it holds that save's peak).
WATCH_SAVE = r"""
import glob, json, sys, time
db, pid, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + timeout
def saving():
    return bool(glob.glob(glob.escape(db + ".tmp") + "*"))
while saving() and time.monotonic() < deadline:
    time.sleep(0.005)
before, since_start, peak, began = status(pid, "VmRSS"), status(pid, "VmHWM"), 0, None
open(f"/proc/{pid}/clear_refs", "w").write("5")
while time.monotonic() < deadline:
    present = saving()
    peak = max(peak, status(pid, "VmRSS"))
    if present and began is None:
        began = time.monotonic()
    if began is not None and not present:
        break
    time.sleep(0.005)
ended = time.monotonic()
done = began is not None and ended < deadline
print(json.dumps({"rss_before_kib": before, "peak_polled_kib": peak, "hwm_kib": status(pid, "VmHWM"),
                  "hwm_start_kib": since_start, "save_s": None if began is None else ended - began,
                  "completed": done}))
"""
RESTART = r"""
import json, socket, subprocess, sys, time
sock_path = sys.argv[1]
def ready():
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(sock_path)
            s.sendall(b"GET /healthcheck HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
# The stop's final save: Flower's peak RSS through it (VmHWM, reset first, read until the process is gone).
pid = int(sys.argv[2])
before, peak = status(pid, "VmRSS"), 0
open(f"/proc/{pid}/clear_refs", "w").write("5")
t0 = time.monotonic()
stop = subprocess.Popen(["systemctl", "stop", "flower"])
while stop.poll() is None:
    try:
        hwm = status(pid, "VmHWM")
    except OSError:
        break
    if hwm is None:
        break
    peak = max(peak, hwm)
    time.sleep(0.01)
stop.wait(timeout=120)
t1 = time.monotonic()
subprocess.run(["systemctl", "start", "flower"], check=True, timeout=60)
while not ready() and time.monotonic() - t1 < 120:
    time.sleep(0.02)
ready_s = time.monotonic() - t1
print(json.dumps({"stop_s": t1 - t0, "ready_s": ready_s, "rss_before_kib": before, "stop_peak_kib": peak}))
"""
UNPICKLE = r"""
import json, shelve, sys, time
t = time.perf_counter()
with shelve.open(sys.argv[1], flag="r") as state:
    events = state["events"]
print(json.dumps({"unpickle_s": time.perf_counter() - t, "tasks": len(events.tasks)}))
"""


def sizing_rule() -> dict[str, float]:
    """Preflight's memory rule, read from the role (the one place it is written)."""
    internal = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    return {
        "base_mib": float(internal["_flower_memory_base_mib"]),
        "per_task_kib": float(defaults["flower_memory_per_task_kib"]),
        "save_factor": float(internal["_flower_memory_save_factor"]),
        "default_max_tasks": int(defaults["flower_max_tasks"]),
        "default_memory_max": defaults["flower_memory_max"],
        "default_memory_high": defaults["flower_memory_high"],
    }


def need_mib(tasks: int, rule: dict[str, Any]) -> float:
    """The rule's peak for `tasks` held: a state save's factor times the base and the tasks' memory."""
    return rule["save_factor"] * (rule["base_mib"] + rule["per_task_kib"] * tasks / 1024)


def sized_for(tasks: int, rule: dict[str, Any]) -> dict[str, Any]:
    """Inventory settings for `tasks`: MemoryMax the rule's peak rounded up to 64 MiB, MemoryHigh at the
    defaults' ratio of it."""
    memory_max = 64 * math.ceil(need_mib(tasks, rule) / 64)
    ratio = int(rule["default_memory_high"].rstrip("M")) / int(rule["default_memory_max"].rstrip("M"))
    return {
        "flower_max_tasks": tasks,
        "flower_memory_max": f"{memory_max}M",
        "flower_memory_high": f"{int(memory_max * ratio)}M",
    }


def flower_pid(name: str) -> str:
    return in_target(name, "systemctl", "show", "-p", "MainPID", "--value", "flower").strip()


def memory_max_mb(name: str) -> float:
    return int(in_target(name, "systemctl", "show", "-p", "MemoryMax", "--value", "flower")) / MIB


def rss_mb(name: str) -> float:
    status = in_target(name, "cat", f"/proc/{flower_pid(name)}/status")
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def watch_save(name: str) -> dict[str, Any]:
    """One of Flower's periodic saves: its duration and Flower's peak RSS during it."""
    db = target.fact(name, "flower")["db"]
    out = json.loads(
        in_target(name, "python3", "-c", PROC_STATUS + WATCH_SAVE, db, flower_pid(name), "75", timeout=120)
    )
    if not out["completed"]:
        sys.exit(f"no periodic save of {db} seen within 75 s: {out}")
    before, peak = out["rss_before_kib"] / 1024, max(out["hwm_kib"], out["peak_polled_kib"]) / 1024
    return {
        "save_s": round(out["save_s"], 2),
        "rss_before_mb": round(before, 1),
        "peak_mb": round(peak, 1),
        "save_factor": round(peak / before, 2),
        # Flower's peak since it started (event ingestion included), before the reset.
        "peak_since_start_mb": round(out["hwm_start_kib"] / 1024, 1),
    }


def restart_and_load(name: str) -> dict[str, Any]:
    flower = target.fact(name, "flower")
    timed = json.loads(
        in_target(name, "python3", "-c", PROC_STATUS + RESTART, flower["unix_socket"], flower_pid(name), timeout=300)
    )
    python = f"{flower['venv']}/bin/python"
    unpickle = json.loads(in_target(name, python, "-c", UNPICKLE, flower["db"], timeout=300))
    before, peak = timed["rss_before_kib"] / 1024, timed["stop_peak_kib"] / 1024
    return {
        "stop_s": round(timed["stop_s"], 2),
        # The final save on stop (SIGTERM): Flower's peak RSS through it, against its RSS just before.
        "stop_rss_before_mb": round(before, 1),
        "stop_peak_mb": round(peak, 1),
        "stop_save_factor": round(peak / before, 2) if before else None,
        "ready_s": round(timed["ready_s"], 2),
        "unpickle_s": round(unpickle["unpickle_s"], 2),
        "tasks_in_db": unpickle["tasks"],
    }


def saved_tasks(name: str) -> int:
    """Tasks in Flower's last save (its database opened read-only with Flower's Python)."""
    flower = target.fact(name, "flower")
    python = f"{flower['venv']}/bin/python"
    return json.loads(in_target(name, python, "-c", UNPICKLE, flower["db"], timeout=300))["tasks"]
