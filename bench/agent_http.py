#!/usr/bin/env python3
"""HTTP timing client that bench/proxy.py copies into the target and runs there with docker exec.

Standard library only (it runs with the target's /usr/bin/python3). Reads a JSON plan on stdin and
prints JSON results. A plan names targets (how to connect: Flower's unix socket in plain HTTP, or
nginx's TLS server over TCP or its unix socket, each with the Authorization header to send) and
jobs:

  {"kind": "latency", "target": T, "path": P, "method": "GET", "count": N, "auth": "Basic ..."}
      N requests one after another on one keep-alive connection (one untimed request first opens
      it); per-request seconds of the 2xx/3xx/403 answers, and 429s and other statuses counted apart.
  {"kind": "rps", "target": T, "path": P, "seconds": S, "concurrency": C}
      C processes, each with its own keep-alive connection, as fast as they can for S seconds; and the
      CPU the target's server processes (its "server_pids") used per request meanwhile.
  {"kind": "readers", "seconds": S, "readers": [{"target": T, "path": P, "concurrency": C}, ...],
   "probes": [{"name": N, "target": T, "path": P}, ...], "interval": I}
      Heavy readers (bench/readers.py, the split scenario's drill): each group's C processes loop on
      their path as fast as they can for S seconds (statuses counted); meanwhile each probe asks its path
      every I seconds on a new connection, as a health check or another user's page does (latencies,
      statuses, and the errors of requests that got no answer within TIMEOUT).

A target may name a "source" address to connect from (the rate limits count per client address).

Jobs are run in the order given, so a plan can interleave targets round by round.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

TIMEOUT = 30


class Connection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket or TCP, in TLS (with the target's server name) or not."""

    def __init__(self, target: dict[str, Any]) -> None:
        super().__init__(target["host"], timeout=TIMEOUT)
        self.target = target

    def connect(self) -> None:
        if self.target.get("unix"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(TIMEOUT)
            sock.connect(self.target["unix"])
        else:
            source = (self.target["source"], 0) if self.target.get("source") else None
            sock = socket.create_connection((self.target["address"], self.target["port"]), TIMEOUT, source)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.target["scheme"] == "https":
            sock = tls_context(self.target.get("ca", "")).wrap_socket(sock, server_hostname=self.target["host"])
        self.sock = sock


def tls_context(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()


def headers(target: dict[str, Any], job: dict[str, Any]) -> dict[str, str]:
    found = {"Host": target["host"]}
    auth = job.get("auth", target.get("auth", ""))
    if auth:
        found["Authorization"] = auth
    return found


def request(conn: Connection, job: dict[str, Any], sent: dict[str, str]) -> tuple[int, int]:
    """One request on the connection (reopened if the server closed it): status and body size."""
    conn.request(job.get("method", "GET"), job["path"], body=job.get("body"), headers=sent)
    response = conn.getresponse()
    body = response.read()
    if response.getheader("Connection", "").lower() == "close":
        conn.close()
    return response.status, len(body)


def latency(target: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    conn, sent = Connection(target), headers(target, job)
    request(conn, job, sent)
    times: list[float] = []
    statuses: dict[str, int] = {}
    size = 0
    for _ in range(job["count"]):
        started = time.perf_counter()
        status, size = request(conn, job, sent)
        elapsed = time.perf_counter() - started
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status < 400 or status == job.get("expect", 0):
            times.append(elapsed)
        if job.get("pause"):
            time.sleep(job["pause"])
    conn.close()
    return {"times": times, "statuses": statuses, "bytes": size}


def hammer(target: dict[str, Any], job: dict[str, Any], queue: multiprocessing.Queue, warm: bool = True) -> None:
    conn, sent = Connection(target), headers(target, job)
    if warm:
        request(conn, job, sent)
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + job["seconds"]
    while time.monotonic() < deadline:
        try:
            status = str(request(conn, job, sent)[0])
        except (OSError, http.client.HTTPException):
            status = "error"
            conn.close()
        statuses[status] = statuses.get(status, 0) + 1
    conn.close()
    queue.put({**statuses, "_group": job["_group"]} if "_group" in job else statuses)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU the server's processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rps(target: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    cpu_before = cpu_seconds(target.get("server_pids", []))
    queue: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=hammer, args=(target, job, queue)) for _ in range(job.get("concurrency", 1))
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    totals: dict[str, int] = {}
    for _ in workers:
        for status, count in queue.get(timeout=job["seconds"] + TIMEOUT).items():
            totals[status] = totals.get(status, 0) + count
    for worker in workers:
        worker.join(timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    ok = sum(count for status, count in totals.items() if int(status) < 400)
    cpu = cpu_seconds(target.get("server_pids", [])) - cpu_before
    return {"rps": ok / elapsed, "statuses": totals, "seconds": elapsed, "server_cpu_us": 1e6 * cpu / max(ok, 1)}


def probe(target: dict[str, Any], job: dict[str, Any], seconds: float, interval: float) -> dict[str, Any]:
    """One request every `interval` seconds on a new connection for `seconds`: latencies of the answered ones."""
    sent = headers(target, job)
    times: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        conn = Connection(target)
        try:
            status = str(request(conn, job, sent)[0])
            times.append(time.perf_counter() - started)
        except (OSError, http.client.HTTPException):
            status = "error"
        finally:
            conn.close()
        statuses[status] = statuses.get(status, 0) + 1
        time.sleep(max(0.0, interval - (time.perf_counter() - started)))
    return {"name": job["name"], "times": times, "statuses": statuses}


def readers(plan: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """Heavy readers, each group's processes on its own path, and the probes in threads meanwhile."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    groups = [{**group, "seconds": job["seconds"], "_group": index} for index, group in enumerate(job["readers"])]
    workers = [
        (index, multiprocessing.Process(target=hammer, args=(plan["targets"][group["target"]], group, queue, False)))
        for index, group in enumerate(groups)
        for _ in range(group["concurrency"])
    ]
    started = time.monotonic()
    for _, worker in workers:
        worker.start()
    probes: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda p=p: probes.append(probe(plan["targets"][p["target"]], p, job["seconds"], job["interval"]))
        )
        for p in job.get("probes", [])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=job["seconds"] + 2 * TIMEOUT)
    # Each process's counts, by the group it says it was in; then the processes end.
    totals: list[dict[str, int]] = [{} for _ in groups]
    for _ in workers:
        counted = queue.get(timeout=job["seconds"] + 2 * TIMEOUT)
        index = counted.pop("_group")
        for status, count in counted.items():
            totals[index][status] = totals[index].get(status, 0) + count
    for _, worker in workers:
        worker.join(timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    return {
        "seconds": elapsed,
        "readers": [
            {**{k: v for k, v in group.items() if k not in ("auth", "_group")}, "statuses": totals[index]}
            for index, group in enumerate(groups)
        ],
        "probes": probes,
    }


def main() -> int:
    plan = json.load(sys.stdin)
    results = []
    for job in plan["jobs"]:
        if job["kind"] == "readers":
            results.append(readers(plan, job))
            continue
        target = plan["targets"][job["target"]]
        run = latency if job["kind"] == "latency" else rps
        results.append({**{k: v for k, v in job.items() if k != "auth"}, **run(target, job)})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
