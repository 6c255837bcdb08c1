#!/usr/bin/python3
"""Export the lengths of Celery's queues, as Flower counts them, as Prometheus metrics.

Flower answers GET <url_prefix>/api/queues/length with
{"active_queues": [{"name": "celery", "messages": 0}, ...]}: the queues its workers
consume (or, with no worker known, the default queue and task_queues), each the sum
of LLEN over its priority keys on Redis. It does not put these in its own /metrics.

This server answers GET /metrics on a Unix socket, asking Flower afresh on every
scrape, over Flower's Unix socket or TCP, with a timeout:

  flowerops_queue_up 1|0                       Flower answered 200 with the expected JSON
  flowerops_queue_length{queue="NAME"} N        only when it did
  flowerops_queue_scrape_duration_seconds S     time spent asking Flower

/metrics is always 200, so Prometheus sees the exporter up and flowerops_queue_up
says whether Flower answered. Standard library only (Debian's /usr/bin/python3).
Flower's basic-auth "user:password", if any, is read from a file (systemd's
LoadCredential=), never from the command line. Errors go to stderr, one line each, with the
journal's `<3>` prefix.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import grp
import http.client
import json
import os
import re
import signal
import socket
import socketserver
import stat
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUEUES_PATH = "/api/queues/length"
SOCKET_MODE = 0o660
MAX_ANSWER_BYTES = 1 << 20  # far above any real queue list; a guard against a runaway answer


def log(level: int, message: str) -> None:
    """One line for the journal; the <N> prefix sets its syslog priority."""
    print(f"<{level}>{' '.join(message.split())}", file=sys.stderr, flush=True)


class FlowerError(Exception):
    """Flower did not answer, or not with the queue lengths."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket; the URL's host is then only the Host header."""

    def __init__(self, host: str, unix_socket: str, timeout: float) -> None:
        super().__init__(host, timeout=timeout)
        self.unix_socket = unix_socket

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_socket)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Flower:
    """Where and how to ask Flower for its queue lengths."""

    url: str
    unix_socket: str
    url_prefix: str
    timeout: float
    authorization: str  # a ready "Basic ..." header value, or ""

    @property
    def path(self) -> str:
        prefix = self.url_prefix.strip("/")
        return urlsplit(self.url).path.rstrip("/") + (f"/{prefix}" if prefix else "") + QUEUES_PATH

    def connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        if self.unix_socket:
            return UnixHTTPConnection(parts.netloc, self.unix_socket, self.timeout)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.netloc, timeout=self.timeout)
        return http.client.HTTPConnection(parts.netloc, timeout=self.timeout)

    def where(self) -> str:
        """The request in nginx's notation, without credentials: for the log."""
        if self.unix_socket:
            return f"unix:{self.unix_socket}:{self.path}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{self.path}"

    def queue_lengths(self) -> dict[str, int]:
        """Flower's answer as {queue: messages}; FlowerError when there is none to trust."""
        headers = {"Accept": "application/json", "User-Agent": "flower-queue-exporter"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        connection = self.connection()
        try:
            connection.request("GET", self.path, headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise FlowerError(f"Flower did not answer at {self.where()}: {describe(exc)}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise FlowerError(f"Flower answered HTTP {response.status} {response.reason} at {self.where()}")
        if len(body) > MAX_ANSWER_BYTES:
            raise FlowerError(f"Flower's answer at {self.where()} is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            return parse_queues(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            raise FlowerError(f"Flower's answer at {self.where()} is not the queue lengths: {exc}") from None


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def parse_queues(data: object) -> dict[str, int]:
    """{"active_queues": [{"name": str, "messages": int}, ...]} as {name: messages}."""
    if not isinstance(data, dict) or not isinstance(data.get("active_queues"), list):
        raise ValueError('no "active_queues" list')
    lengths: dict[str, int] = {}
    for queue in data["active_queues"]:
        if not isinstance(queue, dict):
            raise ValueError(f"a queue entry is not an object: {queue!r}")
        name, messages = queue.get("name"), queue.get("messages")
        if not isinstance(name, str) or isinstance(messages, bool) or not isinstance(messages, int):
            raise ValueError(f"a queue entry lacks a name or a message count: {queue!r}")
        lengths[name] = messages
    return lengths


def escape_label(value: str) -> str:
    """A label value in the text exposition format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(lengths: dict[str, int] | None, seconds: float) -> str:
    """The exposition text; `lengths` is None when Flower gave no answer to trust."""
    lines = [
        "# HELP flowerops_queue_up Whether Flower answered its queue lengths on this scrape (1) or not (0).",
        "# TYPE flowerops_queue_up gauge",
        f"flowerops_queue_up {0 if lengths is None else 1}",
    ]
    if lengths is not None:
        lines += [
            "# HELP flowerops_queue_length Messages waiting in a Celery queue, as Flower counts them.",
            "# TYPE flowerops_queue_length gauge",
            *(f'flowerops_queue_length{{queue="{escape_label(name)}"}} {lengths[name]}' for name in sorted(lengths)),
        ]
    lines += [
        "# HELP flowerops_queue_scrape_duration_seconds Time spent asking Flower for the queue lengths.",
        "# TYPE flowerops_queue_scrape_duration_seconds gauge",
        f"flowerops_queue_scrape_duration_seconds {seconds:.6f}",
    ]
    return "\n".join(lines) + "\n"


def scrape(flower: Flower) -> str:
    started = time.monotonic()
    try:
        lengths: dict[str, int] | None = flower.queue_lengths()
    except FlowerError as exc:
        log(3, str(exc))
        lengths = None
    return render(lengths, time.monotonic() - started)


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    server_version = "flower-queue-exporter"
    sys_version = ""
    timeout = 30  # a client that stops talking does not hold a thread forever

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.answer(404, "text/plain; charset=utf-8", "Not found: the metrics are at /metrics\n")
            return
        self.answer(200, CONTENT_TYPE, scrape(self.server.flower))

    def answer(self, status: int, content_type: str, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"  # a Unix socket's peer has no address

    def log_message(self, format: str, *args: object) -> None:
        """No access log: one line per scrape would drown the errors."""


class MetricsServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, flower: Flower, group: str) -> None:
        self.flower = flower
        remove_stale_socket(path)
        previous = os.umask(0o777 & ~SOCKET_MODE)  # the socket is born 0660, never wider
        try:
            super().__init__(path, MetricsHandler)
        finally:
            os.umask(previous)
        Path(path).chmod(SOCKET_MODE)
        if group:
            # The proxy's group may connect; the exporter is a member (SupplementaryGroups=).
            os.chown(path, -1, grp.getgrnam(group).gr_gid)


def remove_stale_socket(path: str) -> None:
    """A socket left by an earlier run would make bind() fail; anything else there is not ours to remove."""
    try:
        mode = Path(path).lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    Path(path).unlink()


def basic_auth(auth_file: str) -> str:
    """The Authorization header for the "user:password" in `auth_file` (empty path: none)."""
    if not auth_file:
        return ""
    credentials = Path(auth_file).read_text().rstrip("\r\n")
    if not re.fullmatch(r"[^:\s]+:[ -~]+", credentials):
        raise ValueError(f'{auth_file} does not hold one line "user:password" in ASCII')
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--listen", default="/run/flower-queue-exporter/metrics.sock", help="Unix socket to serve on")
    parser.add_argument("--socket-group", default="", help="group given the socket (mode 0660); empty: keep")
    parser.add_argument("--flower-url", default="http://localhost", help="Flower's base URL (http or https)")
    parser.add_argument("--flower-unix-socket", default="", help="Flower's Unix socket; the URL's host is then a name")
    parser.add_argument("--url-prefix", default="", help="Flower's url_prefix, e.g. /flower")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for Flower")
    parser.add_argument(
        "--auth-file",
        default="",
        help='file holding Flower\'s basic-auth "user:password" (LoadCredential=); default: no auth',
    )
    args = parser.parse_args(argv)
    url = urlsplit(args.flower_url)
    if url.scheme not in ("http", "https") or not url.hostname or "@" in url.netloc:
        parser.error(f"--flower-url must be an http(s) URL without credentials, got {args.flower_url!r}")
    if not Path(args.listen).is_absolute():
        parser.error(f"--listen must be an absolute path, got {args.listen!r}")
    if args.timeout <= 0:
        parser.error("--timeout must be more than 0")
    return args


def stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        flower = Flower(
            url=args.flower_url,
            unix_socket=args.flower_unix_socket,
            url_prefix=args.url_prefix,
            timeout=args.timeout,
            authorization=basic_auth(args.auth_file),
        )
        server = MetricsServer(args.listen, flower, args.socket_group)
    except (OSError, ValueError, KeyError) as exc:
        log(3, f"cannot start: {exc}")
        return 1
    signal.signal(signal.SIGTERM, stop)
    log(6, f"serving /metrics on {args.listen}, asking Flower at {flower.where()}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        with contextlib.suppress(OSError):
            Path(args.listen).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
