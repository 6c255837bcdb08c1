#!/usr/bin/env python3
"""Heavy readers: what a few clients looping on Flower's task API do to its UI and its health check, with and
without nginx's rate limits.

Flower serves HTTP, its events and its saves on one thread. Starts a fresh systemd container from the
project's image, deploys it as the demo is (bench/target.py) sized for --tasks (max_tasks and MemoryMax by
the role's own memory rule, as bench/capacity.py does), feeds it --tasks tasks of real Celery events, then
runs three phases of --seconds each, one after another:

  - idle:      no readers;
  - limited:   readers through nginx (TLS, the admin's login) from the container's own address, which the
               role's rate limits count (loopback would be exempt);
  - unlimited: the same readers straight on Flower's unix socket (nginx's own login to Flower).

The readers (bench/agent_http.py's "readers" job, run in the container) are --readers processes looping on
/api/tasks?limit=100 and one viewer reloading the demo worker's page (each one broadcasts inspections to
the workers). In every phase two probes ask every --interval seconds, each on a new connection:

  - health: Flower's /healthcheck on its unix socket (what flower_health and the watchdog ask);
  - ui:     Flower's workers page through nginx, from this machine (another client address), with the
            admin's login: a colleague's browser.

Prints and writes bench/results/readers.json: each phase's probe p50/p99/max (ms) and answers, and what the
readers were served (per second) and refused (429). The container is removed at the end.

    .venv/bin/python bench/readers.py [--keep] [--reuse] [--tasks 50000] [--seconds 20] [--readers 4]

Needs the engine and image (scripts/prepare-engine.sh). Bounded: three phases of --seconds, every docker
exec and playbook run has a timeout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import target
from flower_state import sized_for, sizing_rule
from proxy import basic, upstream_auth
from target import in_target

NAME = "flowerops-bench-readers"
AGENT = "/root/bench-agent-http.py"
LOCAL_AGENT = Path(__file__).with_name("agent_http.py")
TASKS_PATH = "/api/tasks?limit=100"


def address(name: str) -> str:
    return target.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()


def worker_page(name: str, socket: str, auth: str) -> str:
    """The demo worker's page (the first worker Flower knows that is not the bench's event sender)."""
    ask = (
        "import http.client, json, socket, sys\n"
        "c = http.client.HTTPConnection('localhost')\n"
        "c.sock = socket.socket(socket.AF_UNIX); c.sock.connect(sys.argv[1])\n"
        "c.request('GET', '/api/workers', headers={'Authorization': sys.argv[2]})\n"
        "print(json.dumps(list(json.loads(c.getresponse().read()))))\n"
    )
    names = json.loads(in_target(name, "python3", "-c", ask, socket, auth))
    worker = next(worker for worker in names if not worker.startswith("bench-"))
    return "/worker/" + urllib.parse.quote(worker)


def phases(args: argparse.Namespace, page: str) -> dict[str, list[dict[str, Any]]]:
    def group(where: str) -> list[dict[str, Any]]:
        return [
            {"target": where, "path": TASKS_PATH, "concurrency": args.readers},
            {"target": where, "path": page, "concurrency": 1},
        ]

    return {"idle": [], "limited": group("front"), "unlimited": group("socket")}


def run_phase(args: argparse.Namespace, there: dict[str, Any], here: dict[str, Any]) -> tuple[dict, dict]:
    """The readers and the health probe in the container, the UI probe here, at once (each agent reads its
    whole plan before it starts: from a file, so neither waits on the other's input)."""
    started = []
    commands = (["docker", "exec", "-i", args.name, "python3", AGENT], [sys.executable, str(LOCAL_AGENT)])
    for index, (command, plan) in enumerate(zip(commands, (there, here), strict=True)):
        path = target.work_dir(args.name) / f"plan-{index}.json"
        path.write_text(json.dumps(plan))
        with path.open() as plan_file:
            started.append(
                subprocess.Popen(command, stdin=plan_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
    outputs = [run.communicate(timeout=args.seconds + 180) for run in started]
    for run, (_, stderr) in zip(started, outputs, strict=True):
        if run.returncode != 0:
            sys.exit(f"the agent failed ({run.returncode}):\n{stderr[-3000:]}")
    (loaded,), (other,) = (json.loads(stdout) for stdout, _ in outputs)
    return loaded, other


def figures(loaded: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for probe in loaded["probes"] + other["probes"]:
        times = sorted(probe["times"])
        found[probe["name"]] = {
            **target.summary(times),
            "max_ms": round(times[-1] * 1000, 2) if times else None,
            "statuses": probe["statuses"],
        }
    seconds = loaded["seconds"]
    for kind, group in zip(("tasks", "worker_page"), loaded["readers"], strict=False):
        statuses = group["statuses"]
        found[f"readers_{kind}"] = {
            "served_per_s": round(statuses.get("200", 0) / seconds, 1),
            "refused_429": statuses.get("429", 0),
            "statuses": statuses,
        }
    return found


def report(result: dict[str, Any]) -> None:
    print(f"\nHeavy readers at {result['tasks_held']} tasks ({result['readers']} task-list readers and one viewer):")
    print(f"  {'phase':<10} {'health p50/p99/max ms':>24} {'UI p50/p99/max ms':>24} {'task lists/s':>13} {'429s':>8}")
    for phase, found in result["phases"].items():
        cells = []
        for probe in ("health", "ui"):
            f = found[probe]
            cells.append(f"{f['p50_ms']:.1f}/{f['p99_ms']:.1f}/{f['max_ms']:.1f}")
        tasks = found.get("readers_tasks", {})
        print(
            f"  {phase:<10} {cells[0]:>24} {cells[1]:>24} {tasks.get('served_per_s', 0):>13} "
            f"{tasks.get('refused_429', 0):>8}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target.add_arguments(parser, NAME)
    parser.add_argument("--tasks", type=int, default=50000, help="tasks fed to Flower first (max_tasks sized for it)")
    parser.add_argument("--seconds", type=float, default=20, help="seconds each phase lasts")
    parser.add_argument("--readers", type=int, default=4, help="processes looping on the task list")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between two probes")
    args = parser.parse_args()
    load = target.loadavg()
    settings = sized_for(args.tasks, sizing_rule())
    try:
        target.prepare(args, settings)
        fed = target.feed_tasks(args.name, args.tasks)
        target.copy_in(args.name, LOCAL_AGENT, AGENT)
        flower, proxy, tls = (target.fact(args.name, role) for role in ("flower", "flower_proxy", "flower_tls"))
        admin, nginx_login = basic("admin", target.secret(args.name, "admin-password")), upstream_auth(args.name)
        own = address(args.name)
        front = {"scheme": "https", "host": proxy["domain"], "address": own, "port": 443, "auth": admin}
        socket = {"scheme": "http", "unix": flower["unix_socket"], "host": "localhost", "auth": nginx_login}
        ca = target.work_dir(args.name) / "ca.crt"
        ca.write_text(tls["ca_pem"])
        page = worker_page(args.name, flower["unix_socket"], nginx_login)
        probe = {"kind": "readers", "seconds": args.seconds, "interval": args.interval}
        result: dict[str, Any] = {
            **target.header(args.name, load),
            "settings": settings,
            "fed": fed,
            "tasks_held": min(args.tasks, settings["flower_max_tasks"]),
            "readers": args.readers,
            "seconds": args.seconds,
            "interval_s": args.interval,
            "worker_page": page,
            "phases": {},
        }
        for phase, groups in phases(args, page).items():
            print(f"phase {phase}: {args.seconds:.0f} s", flush=True)
            there = {
                "targets": {"front": {**front, "ca": tls["ca_file"], "source": own}, "socket": socket},
                "jobs": [
                    {
                        **probe,
                        "readers": groups,
                        "probes": [{"name": "health", "target": "socket", "path": "/healthcheck"}],
                    }
                ],
            }
            here = {
                "targets": {"ui": {**front, "ca": str(ca)}},
                "jobs": [{**probe, "readers": [], "probes": [{"name": "ui", "target": "ui", "path": "/"}]}],
            }
            result["phases"][phase] = figures(*run_phase(args, there, here))
        result["loadavg_end"] = [round(x, 2) for x in target.loadavg()]
    finally:
        target.finish(args)
    report(result)
    target.write_result("readers.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
