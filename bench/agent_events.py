#!/usr/bin/env python3
"""Celery event sender that bench/capacity.py and bench/backup.py copy into the target and run there.

Runs with Flower's own virtualenv Python (it has Celery and the Redis client), as root, with docker
exec. Sends real task events (task-received, -started, -succeeded: three per task) through the
target's Redis broker with a Celery EventDispatcher, and reads Flower's own counter of the events it
handled (`flower_events_total` on /metrics, straight from Flower's unix socket) for the worker name
the events carry. A JSON plan on stdin, JSON results on stdout:

Common keys: "broker" (its URL), "broker_ca" (for rediss://: the CA file the broker's certificate is verified
against), "flower_socket".

  {"mode": "feed", "tasks": N, ...}   N tasks as fast as Flower keeps up (the sender waits while more
                                      than --backlog events are unhandled: Redis drops a subscriber
                                      whose output buffer overflows), until Flower has counted them all,
                                      or Flower stops answering ("flower_gone": a memory-cap drill).
  {"mode": "steps", "rates": [...], "seconds": S, "senders": K, ...}
                                      each rate (events/s, shared by K sender processes) for S seconds,
                                      paced, then up to `grace` seconds for Flower to count them; stops
                                      after the first step Flower fell behind at (or the senders could
                                      not send at).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import socket
import ssl
import sys
import time
import uuid
from typing import Any

from celery import Celery

TIMEOUT = 30
TYPES = ("task-received", "task-started", "task-succeeded")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(self.unix_path)
        self.sock = sock


def counted(flower_socket: str, worker: str) -> int:
    """Events of this worker Flower has handled (its /metrics counter)."""
    conn = UnixHTTPConnection(flower_socket)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    label = f'worker="{worker}"'
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("flower_events_total{") and label in line
        )
    )


class Sender:
    """One EventDispatcher on the broker, sending whole tasks' events for one worker name."""

    def __init__(self, plan: dict[str, Any], worker: str) -> None:
        self.app = Celery(broker=plan["broker"])
        if plan.get("broker_ca"):  # rediss://: verify the broker as Flower does
            self.app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": plan["broker_ca"]}
        self.conn = self.app.connection_for_write()
        self.dispatcher = self.app.events.Dispatcher(self.conn, hostname=worker, enabled=True)
        payload = plan.get("payload", 0)
        self.args, self.result = repr(("x" * payload,)), repr("y" * payload)
        self.sent = 0

    def task(self) -> None:
        common = {"uuid": str(uuid.uuid4())}
        self.dispatcher.send("task-received", name="bench.add", args=self.args, kwargs="{}", retries=0, **common)
        self.dispatcher.send("task-started", **common)
        self.dispatcher.send("task-succeeded", result=self.result, runtime=0.001, **common)
        self.sent += len(TYPES)

    def close(self) -> None:
        self.dispatcher.close()
        self.conn.release()


def wait_counted(plan: dict[str, Any], worker: str, target: int, timeout: float) -> tuple[int, float]:
    """Poll Flower's counter until it reaches target or timeout: (last count, seconds waited)."""
    started = time.monotonic()
    seen = counted(plan["flower_socket"], worker)
    while seen < target and time.monotonic() - started < timeout:
        time.sleep(0.1)
        seen = counted(plan["flower_socket"], worker)
    return seen, time.monotonic() - started


def feed(plan: dict[str, Any]) -> dict[str, Any]:
    worker = plan.get("worker", f"bench-feed-{uuid.uuid4().hex[:6]}@target")
    sender = Sender(plan, worker)
    backlog, chunk = plan.get("backlog", 6000), plan.get("chunk", 500)
    started = time.monotonic()
    deadline = started + plan.get("timeout", 600)
    try:
        for done in range(plan["tasks"]):
            sender.task()
            if done % chunk == chunk - 1:
                while sender.sent - counted(plan["flower_socket"], worker) > backlog and time.monotonic() < deadline:
                    time.sleep(0.05)
        seen, _ = wait_counted(plan, worker, sender.sent, max(1.0, deadline - time.monotonic()))
    except OSError as exc:  # Flower stopped answering (a drill pushing it over its memory cap wants that)
        sender.close()
        return {"tasks": plan["tasks"], "sent": sender.sent, "flower_gone": str(exc)}
    sender.close()
    return {"tasks": plan["tasks"], "sent": sender.sent, "counted": seen, "seconds": time.monotonic() - started}


def paced(sender: Sender, rate: float, seconds: float) -> float:
    """Send at `rate` events/s (whole tasks) for `seconds`; the rate actually sent."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        due = rate * elapsed
        while sender.sent < due and time.monotonic() - started < seconds:
            sender.task()
        time.sleep(0.002)
    return sender.sent / (time.monotonic() - started)


def send_share(plan: dict[str, Any], worker: str, rate: float, seconds: float) -> tuple[int, float]:
    """One sender process's share of a step: events sent, and at what rate."""
    sender = Sender(plan, worker)
    sent_rate = paced(sender, rate, seconds)
    sender.close()
    return sender.sent, sent_rate


def step(plan: dict[str, Any], rate: float) -> dict[str, Any]:
    worker = f"bench-rate-{int(rate)}-{uuid.uuid4().hex[:4]}@target"
    seconds, senders = plan.get("seconds", 8), plan.get("senders", 2)
    with multiprocessing.Pool(senders) as pool:
        shares = pool.starmap(send_share, [(plan, worker, rate / senders, seconds)] * senders)
    sent, sent_rate = sum(s for s, _ in shares), sum(r for _, r in shares)
    at_end = counted(plan["flower_socket"], worker)
    seen, caught_up = wait_counted(plan, worker, sent, plan.get("grace", 15))
    lag_s = (sent - at_end) / rate
    return {
        "rate": rate,
        "senders": senders,
        "sent_rate": round(sent_rate, 1),
        "sent": sent,
        "counted_at_end": at_end,
        "counted": seen,
        "lag_at_end_s": round(lag_s, 2),
        "catch_up_s": round(caught_up, 2),
        "handled_rate": round(seen / (seconds + caught_up), 1),
        # Once the senders stop, Flower has the CPU to itself: the rate it works off the backlog at.
        "catch_up_rate": round((seen - at_end) / caught_up, 1) if caught_up > 0.2 else None,
        "kept_up": seen >= sent and lag_s <= plan.get("max_lag_s", 1.0),
        "sender_limited": sent_rate < 0.95 * rate,
    }


def steps(plan: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for rate in plan["rates"]:
        rows.append(step(plan, rate))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if not rows[-1]["kept_up"] or rows[-1]["sender_limited"]:
            break
        time.sleep(plan.get("rest", 2))
    return {"steps": rows}


def main() -> int:
    plan = json.load(sys.stdin)
    result = feed(plan) if plan["mode"] == "feed" else steps(plan)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
