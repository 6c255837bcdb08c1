#!/usr/bin/env python3
"""How long Flower stays blind after a broker outage, without and with the flower role's watchdog.

Flower 2.2's event listener doubles its wait after each failed reconnect (2, 4, 8 ... s, no cap), so how long it
stays blind once the broker is back depends on where in that doubling the broker returns. This script makes it
the worst case each time: it stops Redis on a bench target (bench/target.py), waits until Flower's log says it
starts its --wait second wait, and starts Redis again at once. Then it sends a task through the demo's worker
every 2 s until one shows in Flower: the moment that task was sent bounds the blind spell. Once with
flower-watchdog.timer stopped, once with it running. Bounded: each phase stops after --timeout seconds.

Prints the figures and writes bench/results/outage.json.

    .venv/bin/python bench/outage.py [--wait 64] [--keep | --reuse]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import target
from target import in_target

FLOWER_LOG = "/var/log/flower/flower.log"
# Asks Flower's own socket, with nginx's login (from Flower's secrets file), which of the tasks succeeded.
SHOWN = r"""
import base64, http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(sys.argv[1])
login = [l for l in json.load(open(sys.argv[2]))["basic_auth"] if l.startswith("flowerops-nginx:")][0]
headers = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode(), "Host": "localhost"}
for task in sys.argv[3:]:
    try:
        connection = Unix("localhost", timeout=10)
        connection.request("GET", f"/api/task/info/{task}", headers=headers)
        reply = connection.getresponse()
        if reply.status == 200 and json.loads(reply.read()).get("state") == "SUCCESS":
            print(task)
    except OSError:
        pass
"""


def outage(name: str, wait: int, timeout: float, socket_path: str) -> dict[str, Any]:
    """One outage ending as Flower starts its `wait`-second wait: seconds down, and until a new task showed."""
    logged = int(in_target(name, "sh", "-c", f"wc -l < {FLOWER_LOG}").strip())
    in_target(name, "systemctl", "stop", "redis-server")
    stopped = time.monotonic()
    marker = f"trying again in {wait} seconds"
    while marker not in in_target(name, "tail", "-n", f"+{logged + 1}", FLOWER_LOG):
        if time.monotonic() - stopped > timeout:
            in_target(name, "systemctl", "start", "redis-server")
            sys.exit(f"Flower did not log {marker!r} within {timeout} s")
        time.sleep(0.5)
    in_target(name, "systemctl", "start", "redis-server")
    back = time.monotonic()
    # A task every 2 s: events sent while Flower does not listen are lost for it, so the first task that shows
    # bounds the blind spell by the moment it was sent.
    sent: list[tuple[float, str]] = []
    while time.monotonic() - back < timeout:
        task = in_target(name, "demo-worker-call", "add", "[20, 22]").strip().splitlines()[-1]
        sent.append((time.monotonic() - back, task))
        recent = dict((task, at) for at, task in sent[-3:])
        shown = in_target(name, "/usr/bin/python3", "-c", SHOWN, socket_path, "/etc/flower/secrets.json", *recent)
        if shown.split():
            blind = min(recent[task] for task in shown.split())
            return {"outage_s": round(back - stopped, 1), "blind_s": round(blind, 1), "tasks_sent": len(sent)}
        time.sleep(2)
    return {"outage_s": round(back - stopped, 1), "blind_s": None, "tasks_sent": len(sent)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target.add_arguments(parser, "flowerops-bench-outage")
    parser.add_argument("--wait", type=int, default=64, help="Flower's wait (s) at whose start Redis returns")
    parser.add_argument("--timeout", type=float, default=300, help="seconds each phase may take at most")
    args = parser.parse_args()
    if args.wait < 2 or args.wait & (args.wait - 1):
        sys.exit("--wait is one of Flower's waits: 2, 4, 8, 16, 32, 64, 128 ...")
    target.prepare(args)
    load = target.loadavg()
    socket_path = target.fact(args.name, "flower").get("unix_socket") or "/run/flower/flower.sock"
    result: dict[str, Any] = {**target.header(args.name, load), "flower_wait_s": args.wait}
    try:
        for phase, action in (("without_watchdog", "stop"), ("with_watchdog", "start")):
            in_target(args.name, "systemctl", action, "flower-watchdog.timer")
            time.sleep(35)  # past the watchdog's grace after a restart, and heartbeats flowing again
            result[phase] = outage(args.name, args.wait, args.timeout, socket_path)
            print(f"{phase}: {result[phase]}", flush=True)
        journal = in_target(args.name, "journalctl", "-u", "flower-watchdog", "--no-pager", "-o", "cat", "-n", "5")
        result["watchdog_said"] = [line for line in journal.splitlines() if "Flower" in line][-1:]
        result["loadavg_end"] = [round(x, 2) for x in target.loadavg()]
    finally:
        in_target(args.name, "systemctl", "start", "redis-server", "flower-watchdog.timer", check=False)
        target.finish(args)
    target.write_result("outage.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
