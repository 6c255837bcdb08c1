#!/usr/bin/env python3
"""Measure Flower's memory against the number of tasks it holds.

Starts a throw-away Redis and a real Flower (both on 127.0.0.1, random ports),
feeds Flower N tasks' worth of real Celery events through the broker, then
reads Flower's resident memory, stops it with SIGTERM (which saves its state)
and reads the peak. Prints one row per N and the per-task slope, next to the
sizing rule preflight uses: peak <= save factor x (base + per-task x max_tasks),
with the figures read from the flower role (vars/main.yml and defaults/main.yml),
so the bench and preflight cannot disagree.

    .venv/bin/python bench/flower_memory.py [--tasks 0,10000,30000] [--payload BYTES]

Needs redis-server on PATH and flower + celery[redis] in the running Python
(requirements.txt and scripts/host-packages.txt; `make test` installs both). Bounded: each point stops after
--timeout seconds at most.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from celery import Celery
from flower_state import sizing_rule

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def succeeded_events(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("flower_events_total{") and 'type="task-succeeded"' in line
        )
    )


def send_tasks(broker: str, count: int, payload: int) -> None:
    args, result = repr(("x" * payload,)), repr("y" * payload)
    app = Celery(broker=broker)
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname="bench@flowerops", enabled=True)
        for _ in range(count):
            task_id = str(uuid.uuid4())
            common = {"uuid": task_id}
            dispatcher.send("task-received", name="bench.add", args=args, kwargs="{}", retries=0, **common)
            dispatcher.send("task-started", **common)
            dispatcher.send("task-succeeded", result=result, runtime=0.001, **common)
        dispatcher.close()


def measure(tasks: int, payload: int, workdir: Path, timeout: float) -> dict[str, float]:
    redis_port, flower_port = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    broker = f"redis://127.0.0.1:{redis_port}/0"
    db = workdir / f"flower-{tasks}.db"
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", f"--broker={broker}", "flower", "--address=127.0.0.1",
         f"--port={flower_port}", f"--max_tasks={max(tasks, 1)}", "--persistent=True", f"--db={db}",
         "--state_save_interval=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: succeeded_events(flower_port) >= 0, 30, "Flower to answer")
        time.sleep(1)  # the event receiver connects just after the HTTP server
        started = time.monotonic()
        send_tasks(broker, tasks, payload)
        wait_until(lambda: succeeded_events(flower_port) >= tasks, timeout, f"{tasks} tasks to reach Flower")
        ingest = time.monotonic() - started
        time.sleep(1)
        rss = status_kib(flower.pid, "VmRSS") / 1024
        peak = rss
        stop = time.monotonic()
        flower.send_signal(signal.SIGTERM)
        while flower.poll() is None and time.monotonic() - stop < timeout:
            try:
                peak = max(peak, status_kib(flower.pid, "VmHWM") / 1024)
            except (FileNotFoundError, ProcessLookupError, KeyError):
                break
            time.sleep(0.02)
        return {
            "tasks": tasks,
            "rss_mib": round(rss, 1),
            "peak_mib": round(peak, 1),
            "ingest_s": round(ingest, 1),
            "stop_s": round(time.monotonic() - stop, 1),
            # The dbm backend decides the suffixes (flower.db, flower.db.db, .dat/.dir).
            "db_mib": round(sum(f.stat().st_size for f in workdir.glob(db.name + "*")) / MIB, 1),
        }
    finally:
        for proc in (flower, redis):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description="Flower memory against tasks held")
    parser.add_argument("--tasks", default="0,10000,30000", help="comma-separated task counts")
    parser.add_argument("--payload", type=int, default=0, help="extra bytes in each task's args and in its result")
    parser.add_argument("--timeout", type=float, default=120, help="seconds allowed per point")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    counts = [int(n) for n in args.tasks.split(",")]
    with tempfile.TemporaryDirectory(prefix="flower-bench-") as tmp:
        rows = [measure(n, args.payload, Path(tmp), args.timeout) for n in counts]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"payload: {args.payload} extra bytes in each task's args and result")
    print(f"{'tasks':>7} {'RSS MiB':>8} {'peak MiB':>9} {'rule MiB':>9} {'ingest s':>9} {'stop s':>7} {'db MiB':>7}")
    role_rule = sizing_rule()
    base_mib, per_task_kib, save_factor = role_rule["base_mib"], role_rule["per_task_kib"], role_rule["save_factor"]
    for row in rows:
        rule = save_factor * (base_mib + per_task_kib * row["tasks"] / 1024)
        print(
            f"{row['tasks']:>7} {row['rss_mib']:>8} {row['peak_mib']:>9} {rule:>9.0f} "
            f"{row['ingest_s']:>9} {row['stop_s']:>7} {row['db_mib']:>7}"
        )
    base, top = rows[0], rows[-1]
    if top["tasks"] > base["tasks"]:
        slope = (top["rss_mib"] - base["rss_mib"]) * 1024 / (top["tasks"] - base["tasks"])
        print(
            f"base RSS {base['rss_mib']} MiB, {slope:.1f} KiB per task held "
            f"(rule: {save_factor} x ({base_mib:g} MiB + {per_task_kib:g} KiB per task))"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
