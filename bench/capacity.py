#!/usr/bin/env python3
"""How many events Flower keeps up with, and its memory and save/load times at 10,000 and 50,000 tasks.

Starts a fresh systemd container from the project's image and deploys it as the demo is (bench/target.py:
the fixtures, then site.yml), so Flower runs as the role's flower.service (its MemoryMax, MemoryHigh,
CPUQuota) with the demo's Redis as broker. Every event is a real Celery event: a Celery EventDispatcher
(bench/agent_events.py, run in the target with Flower's own Python) publishes task-received, -started
and -succeeded through that Redis; Flower's own counter (`flower_events_total` on its /metrics, read
from its socket) says what it handled.

  1. At the role's defaults (flower_max_tasks 10,000): event rates in steps (--rates, each --step-seconds,
     then up to 15 s to catch up). Flower keeps up with a rate when it has counted every event and was
     at most 1 s of events behind when sending stopped; events_per_s_max is the highest such step. The
     steps stop at the first one it falls behind at (a backlog Redis would cut off is never built).
  2. 10,000 tasks fed: rss_mb_10k (VmRSS of Flower's main process). Then one of Flower's own periodic
     saves (state_save_interval, every 60 s): its peak RSS (VmHWM, reset with /proc/PID/clear_refs just
     before), its duration (how long Flower's temporary file `<db>.tmp*` exists, polled every 5 ms in the
     target). memory_max_mb is the unit's MemoryMax (systemctl show); headroom_pct its room above that peak.
  3. Redeployed through the inventory with flower_max_tasks 50,000 (above the default), and MemoryMax sized
     by preflight's own rule for it (roles/flower/vars/main.yml) with MemoryHigh at the defaults' ratio:
     50,000 tasks fed, rss_mb_50k, a periodic save (save_50k_s, its peak), then Flower restarted:
     stop_50k_s (systemctl stop: its final save; stop_peak_mb_50k its peak RSS, VmHWM reset just before
     and read until the process is gone), load_50k_s (systemctl start to Flower answering
     /healthcheck on its socket: Flower loads its state before it listens), and the unpickle alone
     (shelve, as Flower's load_state does, in Flower's Python).

The save factor (peak RSS during a save / RSS before it) and KiB per task ((RSS 50k - RSS 10k) / 40,000)
are printed beside the rule's constants. Prints the figures and writes bench/results/capacity.json. The
container is removed at the end. (bench/flower_memory.py measures the same slope outside systemd, on
any machine with redis-server; this script measures the deployed unit.)

    .venv/bin/python bench/capacity.py [--keep] [--reuse] [--rates 500,1000,...] [--payload 0]

Needs the engine and image (scripts/prepare-engine.sh). Bounded: at most len(--rates) steps of
--step-seconds, two feeds (10,000 and 50,000 tasks, each under --feed-timeout), three periodic saves
waited for at most 75 s each; every docker exec and playbook run has a timeout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import target
from flower_state import memory_max_mb, restart_and_load, rss_mb, sized_for, sizing_rule, watch_save
from target import in_target

NAME = "flowerops-bench-capacity"
RATES = "1000,1500,2000,2500,3000,3500,4000,5000,6000,8000"


def event_steps(args: argparse.Namespace) -> list[dict[str, Any]]:
    flower = target.fact(args.name, "flower")
    agent = "/root/bench-agent-events.py"
    target.copy_in(args.name, Path(__file__).with_name("agent_events.py"), agent)
    plan = {
        "mode": "steps",
        "rates": [float(r) for r in args.rates.split(",")],
        "seconds": args.step_seconds,
        "senders": args.senders,
        "grace": 15,
        "payload": args.payload,
        "broker": f"redis://:{target.secret(args.name, 'redis-password')}@127.0.0.1:6379/0",
        "flower_socket": flower["unix_socket"],
    }
    budget = len(plan["rates"]) * (args.step_seconds + 20) + 60
    python = f"{flower['venv']}/bin/python"
    return json.loads(in_target(args.name, python, agent, stdin=json.dumps(plan), timeout=budget))["steps"]


def feed(args: argparse.Namespace, tasks: int) -> dict[str, Any]:
    fed = target.feed_tasks(args.name, tasks, args.payload, args.feed_timeout)
    if fed["counted"] < fed["sent"]:
        sys.exit(f"Flower counted {fed['counted']} of {fed['sent']} events fed: {fed}")
    return {"tasks": tasks, "seconds": round(fed["seconds"], 1), "events_per_s": round(fed["sent"] / fed["seconds"])}


def at_defaults(args: argparse.Namespace, rule: dict[str, float]) -> dict[str, Any]:
    steps = event_steps(args)
    kept = [s["rate"] for s in steps if s["kept_up"] and not s["sender_limited"]]
    fed = feed(args, rule["default_max_tasks"])
    rss = rss_mb(args.name)
    save = watch_save(args.name)
    limit = memory_max_mb(args.name)
    return {
        "steps": steps,
        "events_per_s_max": max(kept) if kept else 0,
        "events_handled_per_s_max": max(s["handled_rate"] for s in steps),
        "events_catch_up_per_s_max": max((s["catch_up_rate"] or 0) for s in steps),
        "feed_10k": fed,
        "rss_mb_10k": round(rss, 1),
        "save_10k": save,
        "memory_max_mb": round(limit, 1),
        "headroom_pct": round(100 * (limit - save["peak_mb"]) / limit, 1),
    }


def at_50k(args: argparse.Namespace, rule: dict[str, float]) -> dict[str, Any]:
    settings = sized_for(50000, rule)
    target.redeploy(args, settings)
    fed = feed(args, 50000)
    rss = rss_mb(args.name)
    save = watch_save(args.name)
    loaded = restart_and_load(args.name)
    return {
        "settings_50k": settings,
        "feed_50k": fed,
        "rss_mb_50k": round(rss, 1),
        "save_50k": save,
        "restart_50k": loaded,
        "load_50k_s": loaded["ready_s"],
        "save_50k_s": save["save_s"],
        "stop_peak_mb_50k": loaded["stop_peak_mb"],
    }


def report(result: dict[str, Any], rule: dict[str, float]) -> None:
    for s in result["steps"]:
        print(
            f"  {s['rate']:>7.0f} events/s asked, {s['sent_rate']:>7.0f} sent: lag {s['lag_at_end_s']} s at the end, "
            f"caught up in {s['catch_up_s']} s, {'kept up' if s['kept_up'] else 'FELL BEHIND'}"
            f"{' (sender-limited)' if s['sender_limited'] else ''}"
        )
    print(
        f"events_per_s_max {result['events_per_s_max']} (the highest step kept up with); the most Flower handled "
        f"in a step: {result['events_handled_per_s_max']} events/s; working off a backlog alone (senders "
        f"stopped): {result['events_catch_up_per_s_max']} events/s"
    )
    print(f"RSS at 10k tasks {result['rss_mb_10k']} MiB, at 50k {result['rss_mb_50k']} MiB")
    for label in ("save_10k", "save_50k"):
        s = result[label]
        print(
            f"{label}: {s['save_s']} s, RSS {s['rss_before_mb']} -> peak {s['peak_mb']} MiB (x{s['save_factor']}); "
            f"peak since start {s['peak_since_start_mb']} MiB"
        )
    print(
        f"MemoryMax at the defaults {result['memory_max_mb']} MiB; room above a save's peak: {result['headroom_pct']}%"
    )
    r = result["restart_50k"]
    print(
        f"50k: stop (final save) {r['stop_s']} s, RSS {r['stop_rss_before_mb']} -> peak {r['stop_peak_mb']} MiB "
        f"(x{r['stop_save_factor']}); start to ready {r['ready_s']} s, unpickle alone {r['unpickle_s']} s"
    )
    print(
        f"measured: {result['kib_per_task']} KiB per task, save factor {result['save_factor_measured']}; "
        f"rule: {rule['per_task_kib']} KiB per task, save factor {rule['save_factor']}, base {rule['base_mib']} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target.add_arguments(parser, NAME)
    parser.add_argument("--rates", default=RATES, help="event rates (events/s) to step through")
    parser.add_argument("--senders", type=int, default=2, help="sender processes sharing each rate")
    parser.add_argument("--step-seconds", type=float, default=8, help="seconds each rate is sent for")
    parser.add_argument("--payload", type=int, default=0, help="extra bytes in each task's args and in its result")
    parser.add_argument("--feed-timeout", type=float, default=900, help="seconds a feed may take")
    args = parser.parse_args()
    load = target.loadavg()
    rule = sizing_rule()
    try:
        target.prepare(args)
        result: dict[str, Any] = {**target.header(args.name, load), "payload": args.payload, "rule": rule}
        result |= at_defaults(args, rule)
        result |= at_50k(args, rule)
        result["kib_per_task"] = round((result["rss_mb_50k"] - result["rss_mb_10k"]) * 1024 / 40000, 2)
        result["save_factor_measured"] = max(
            result["save_10k"]["save_factor"],
            result["save_50k"]["save_factor"],
            result["restart_50k"]["stop_save_factor"] or 0,
        )
        result["loadavg_end"] = [round(x, 2) for x in target.loadavg()]
    finally:
        target.finish(args)
    report(result, rule)
    target.write_result("capacity.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
