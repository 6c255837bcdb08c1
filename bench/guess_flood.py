#!/usr/bin/env python3
"""An admin's latency while another address floods the front door with wrong passwords.

Before the rate limits covered every location, each wrong password cost nginx a
bcrypt check in its event loop, and a modest flood stalled the whole front door.
This measures it on a running target (the demo host by default, or a Molecule
container): the admin's requests go through nginx's local HTTPS socket on the
target (a second address, its own loopback), timed there, first at rest, then
while this machine sends wrong passwords to `/` for a bounded time from a few
threads. The flooding address is kept out of fail2ban for the run (its bans are
tested elsewhere) and put back after. Prints the figures and writes
bench/results/guess_flood.json.

    .venv/bin/python bench/guess_flood.py [--container flowerops-demo] [--seconds 10] [--threads 8]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JAIL = "flower-nginx-auth"
# Runs on the target: N timed GETs of /api/workers as the admin through nginx's local socket.
ADMIN_PROBE = r"""
import base64, json, socket, ssl, statistics, sys, time
sock_path, name, user, password, count, prefix = sys.argv[1:7]
context = ssl.create_default_context(); context.check_hostname = False; context.verify_mode = ssl.CERT_NONE
token = base64.b64encode(f"{user}:{password}".encode()).decode()
times, statuses = [], []
for _ in range(int(count)):
    started = time.perf_counter()
    raw = socket.socket(socket.AF_UNIX); raw.settimeout(30); raw.connect(sock_path)
    conn = context.wrap_socket(raw, server_hostname=name)
    conn.sendall(f"GET {prefix}/api/workers HTTP/1.0\r\nHost: {name}\r\nAuthorization: Basic {token}\r\n\r\n".encode())
    statuses.append(conn.recv(12).decode(errors="replace")[9:12])
    while conn.recv(65536):
        pass
    conn.close()
    times.append((time.perf_counter() - started) * 1000)
    time.sleep(0.25)  # under the API's sustained rate (the local socket is limited like any client)
times.sort()
print(json.dumps({"p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1],
                  "max_ms": times[-1], "statuses": sorted(set(statuses))}))
"""


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120).stdout


def flood(address: str, name: str, prefix: str, seconds: float, stop: threading.Event, counts: Counter) -> None:
    """Wrong passwords on one keep-alive connection at a time, until the time is up."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    token = base64.b64encode(b"admin:not-the-password").decode()
    request = f"GET {prefix}/ HTTP/1.1\r\nHost: {name}\r\nAuthorization: Basic {token}\r\n\r\n".encode()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with context.wrap_socket(socket.create_connection((address, 443), timeout=5), server_hostname=name) as conn:
                for _ in range(100):
                    conn.sendall(request)
                    head = conn.recv(65536).decode(errors="replace")
                    counts[head[9:12] or "closed"] += 1
                    if "Connection: close" in head or time.monotonic() > deadline:
                        break
        except OSError:
            counts["refused"] += 1
            time.sleep(0.25)  # under the API's sustained rate (the local socket is limited like any client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", default="flowerops-demo")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the flood lasts (bounded)")
    parser.add_argument("--threads", type=int, default=8, help="flooding connections at once")
    parser.add_argument("--requests", type=int, default=40, help="admin requests timed at rest and under flood")
    args = parser.parse_args()

    site = docker("exec", args.container, "cat", "/etc/nginx/sites-available/flower.conf")
    name = next(line.split()[1].rstrip(";") for line in site.splitlines() if line.strip().startswith("server_name"))
    prefix = docker(
        "exec",
        args.container,
        "sh",
        "-c",
        "grep -o 'url_prefix = \"[^\"]*\"' /etc/flower/flowerconfig.py | cut -d'\"' -f2",
        check=False,
    ).strip()
    address = docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", args.container
    ).split()[0]
    gateway = docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.Gateway}} {{end}}", args.container
    ).split()[0]
    # The admin's login as nginx knows it is a bcrypt hash: the bench takes the password from the demo's file,
    # or FLOWEROPS_ADMIN_USER / FLOWEROPS_ADMIN_PASSWORD for another target.
    user = os.environ.get("FLOWEROPS_ADMIN_USER", "admin")
    password = os.environ.get("FLOWEROPS_ADMIN_PASSWORD") or (ROOT / ".demo" / "admin-password").read_text().strip()
    local_socket = "/run/flower-proxy/https.sock"

    def admin() -> dict[str, object]:
        out = docker(
            "exec",
            args.container,
            "python3",
            "-c",
            ADMIN_PROBE,
            local_socket,
            name,
            user,
            password,
            str(args.requests),
            prefix,
        )
        return json.loads(out)

    at_rest = admin()
    docker("exec", args.container, "fail2ban-client", "set", JAIL, "addignoreip", gateway, check=False)
    counts: Counter = Counter()
    stop = threading.Event()
    threads = [
        threading.Thread(target=flood, args=(address, name, prefix, args.seconds, stop, counts))
        for _ in range(args.threads)
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1)
        under_flood = admin()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        docker("exec", args.container, "fail2ban-client", "set", JAIL, "delignoreip", gateway, check=False)
        docker("exec", args.container, "fail2ban-client", "set", JAIL, "unbanip", gateway, check=False)

    nginx = docker("exec", args.container, "sh", "-c", "nginx -v 2>&1").strip().split("/")[-1]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "target": args.container,
        "nginx": nginx,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "flood_seconds": args.seconds,
        "flood_threads": args.threads,
        "flood_answers": dict(counts),
        "admin_at_rest": at_rest,
        "admin_under_flood": under_flood,
    }
    print(f"flood: {sum(counts.values())} wrong-password requests in {args.seconds:.0f} s: {dict(counts)}")
    for label, figures in (("admin at rest", at_rest), ("admin under flood", under_flood)):
        print(
            f"{label:>18}: p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
            f"max {figures['max_ms']:.1f} ms, statuses {figures['statuses']}"
        )
    out = ROOT / "bench" / "results" / "guess_flood.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
