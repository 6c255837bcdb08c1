#!/usr/bin/python3
"""Restart Flower when it has gone blind: its broker or its workers answer again, yet no event reaches it.

Flower 2.2's event listener doubles its wait after each failed reconnect, with no cap (its events.py): after a
broker outage it can stay blind for a minute or more once the broker is back, while its pages and /healthcheck
look fine. flower-watchdog.timer runs this once every few seconds; each run decides once:

1. Flower is not active, or the newest worker heartbeat it holds (/workers?json=1; workers send one every 2 s)
   is at most --blind-after seconds old: nothing to do.
2. Flower's log says its event listener sleeps longer than --interval more before its next try, and Flower's
   broker answers (/api/queues/length): the broker is back and Flower would stay blind that long. Restart it.
3. Flower has run for --blind-after seconds at least and inspects its workers through the broker
   (/api/workers?refresh=1): some answer, yet none of their events reaches Flower. Restart it. None answers:
   the broker or the workers are down, which a restart would not help (the health check names the broker).

A restart (Flower saves its state on the way down) happens at most once per --min-gap seconds, so a fault a
restart does not cure cannot become a restart loop.

It talks to Flower's own listener with nginx's login, read from Flower's secrets file, and prints no secret:
only its decisions, to the journal (as notices).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Flower:
    def __init__(self, url: str, unix_socket: str, login: str, timeout: float) -> None:
        self.url, self.unix_socket, self.timeout = urlsplit(url), unix_socket, timeout
        self.headers = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}

    def get(self, path: str) -> object:
        if self.unix_socket:
            connection: http.client.HTTPConnection = UnixConnection(self.unix_socket, self.timeout)
        else:
            connection = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=self.timeout)
        try:
            connection.request("GET", self.url.path + path, headers={"Host": self.url.netloc, **self.headers})
            reply = connection.getresponse()
            body = reply.read()
        finally:
            connection.close()
        if reply.status != 200:
            raise OSError(f"{path} answered HTTP {reply.status}")
        return json.loads(body)


def seconds_since_start(unit: str) -> float | None:
    """Seconds since Flower's unit became active (one `systemctl show` per run); None: it is not active."""
    shown = subprocess.run(
        ["systemctl", "show", unit, "-p", "ActiveState", "-p", "ActiveEnterTimestampMonotonic"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    unit = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    if unit.get("ActiveState") != "active":
        return None
    return time.clock_gettime(time.CLOCK_MONOTONIC) - int(unit.get("ActiveEnterTimestampMonotonic") or 0) / 1e6


def newest_heartbeat_age(flower: Flower) -> float | None:
    """Seconds since the newest worker heartbeat Flower received (stamped with Flower's clock); None: none held."""
    rows = flower.get("/workers?json=1")
    data = rows.get("data", []) if isinstance(rows, dict) else []
    beats = [beat for row in data for beat in (row.get("heartbeats") or []) if isinstance(beat, (int, float))]
    return time.time() - max(beats) if beats else None


def answering_workers(flower: Flower) -> list[str]:
    """Workers that answered the inspection Flower sends through the broker for this very request."""
    asked = time.time()
    workers = flower.get("/api/workers?refresh=1")
    items = workers.items() if isinstance(workers, dict) else []
    return sorted(name for name, info in items if isinstance(info, dict) and info.get("timestamp", 0) >= asked)


def read_login(secrets: Path, user: str) -> str:
    logins = json.loads(secrets.read_text(encoding="utf-8"))["basic_auth"]
    return next(login for login in logins if login.split(":", 1)[0] == user)


LISTENER_FAILED = re.compile(
    r"^\[E (\d{6} \d\d:\d\d:\d\d) events:\d+\] Failed to capture events: .*, trying again in (\d+) seconds\.$"
)


def listener_wait_left(log: Path, since: float) -> float:
    """Seconds Flower's event listener still sleeps before its next try at the broker, from the last failure it
    logged since `since` (Flower's log is Tornado's: local time, whole seconds); 0 when it does not sleep."""
    try:
        with log.open("rb") as file:
            file.seek(max(0, file.seek(0, 2) - 65536))
            lines = file.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0.0
    for line in reversed(lines):
        failed = LISTENER_FAILED.match(line)
        if failed:
            at = time.mktime(time.strptime(failed.group(1), "%y%m%d %H:%M:%S"))
            return max(0.0, at + int(failed.group(2)) - time.time()) if at >= since - 1 else 0.0
    return 0.0


def broker_answers(flower: Flower) -> bool:
    """Flower asks its broker for its queues' lengths (Redis directly, RabbitMQ through its management API). It
    asks for one queue at least, and on RabbitMQ answers 200 with none when the management API fails."""
    try:
        lengths = flower.get("/api/queues/length")
    except (OSError, ValueError):
        return False
    return isinstance(lengths, dict) and bool(lengths.get("active_queues"))


def restart(args: argparse.Namespace, why: str) -> str:
    last = float(args.last_restart.read_text()) if args.last_restart.exists() else 0.0
    ago = time.time() - last
    if ago < args.min_gap:
        return f"Flower is blind: {why}; restarted {ago:.0f} s ago, so left alone"
    args.last_restart.write_text(f"{time.time():.0f}\n")
    subprocess.run(["systemctl", "restart", args.unit], check=True, timeout=args.timeout + 120)
    return f"Flower was blind: {why}. Restarted it"


def decide(args: argparse.Namespace) -> str | None:
    """What this run saw, or None when all is well (nothing is printed then)."""
    running_for = seconds_since_start(args.unit)
    if running_for is None:
        return None
    flower = Flower(args.url, args.unix_socket, read_login(args.secrets, args.user), args.timeout)
    age = newest_heartbeat_age(flower)
    if age is not None and age <= args.blind_after:
        return None
    heard = "no worker heartbeat since it started" if age is None else f"no event for {age:.0f} s"
    # Flower's listener sleeps past the next look while the broker is back: it would stay blind that long.
    left = listener_wait_left(args.log, time.time() - running_for)
    if left > args.interval and broker_answers(flower):
        return restart(args, f"{heard}, its event listener waits {left:.0f} s more although the broker answers")
    if running_for < args.blind_after:
        return None
    workers = answering_workers(flower)
    if workers:
        return restart(args, f"{heard} while {', '.join(workers)} answer through the broker")
    return None if age is None else f"{heard}, and no worker answers through the broker"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", default="flower.service", help="Flower's systemd unit")
    parser.add_argument("--url", required=True, help="Flower's own URL with its prefix (the Host for a socket)")
    parser.add_argument("--unix-socket", default="", help="Flower's Unix socket, when it listens on one")
    parser.add_argument("--secrets", type=Path, required=True, help="Flower's secrets file (basic_auth logins)")
    parser.add_argument("--user", required=True, help="whose login to use (nginx's)")
    parser.add_argument("--blind-after", type=float, required=True, help="seconds without an event that count")
    parser.add_argument("--min-gap", type=float, required=True, help="seconds between two restarts at least")
    parser.add_argument("--last-restart", type=Path, required=True, help="where the last restart's time is kept")
    parser.add_argument("--log", type=Path, required=True, help="Flower's log (its listener's failures)")
    parser.add_argument("--interval", type=float, required=True, help="seconds between two looks")
    parser.add_argument("--timeout", type=float, default=10, help="seconds each request may take")
    args = parser.parse_args()
    try:
        said = decide(args)
    except (OSError, ValueError, KeyError, StopIteration, subprocess.SubprocessError) as exc:
        # Flower down or restarting: systemd's Restart= and the health check deal with that, not the watchdog.
        said = f"could not judge Flower this time: {type(exc).__name__}: {exc}"
    if said:
        print(f"<5>{said}", flush=True)  # a notice: the unit's LogLevelMax lets these through
    return 0


if __name__ == "__main__":
    sys.exit(main())
