#!/usr/bin/python3
"""Export the lengths of Celery's queues, and how old Flower's worker heartbeats are, as Prometheus metrics.

Flower answers GET <url_prefix>/api/queues/length with
{"active_queues": [{"name": "celery", "messages": 0}, ...]}: the queues its workers
consume (or, with no worker known, the default queue and task_queues), each the sum
of LLEN over its priority keys on Redis. It does not put these in its own /metrics.

Flower's UI answers GET <url_prefix>/workers?json=1 with {"data": [{"hostname": ...,
"heartbeats": [epoch seconds, ...], ...}, ...]}: the worker heartbeats its event
listener received. Flower 2.2 counts no heartbeat in its own /metrics
(flower_events_total has task events only), so a Flower whose listener lost the
broker shows its workers online there while it sees nothing.

This server answers GET /metrics on a Unix socket, asking Flower afresh on every
scrape, over Flower's Unix socket or TCP, within one timeout for both requests:

  flowerops_queue_up 1|0                       Flower answered 200 with the queue lengths
  flowerops_queue_length{queue="NAME"} N        only when it did
  flowerops_worker_heartbeat_age_seconds{worker="HOST"} S
                                               Flower's clock (its Date header) minus the
                                               worker's newest heartbeat; only for workers
                                               with one, only when /workers?json=1 answered
  flowerops_queue_scrape_duration_seconds S     time spent asking Flower

/metrics is always 200, so Prometheus sees the exporter up and flowerops_queue_up
says whether Flower answered the queue lengths; a failed /workers?json=1 only
leaves the heartbeat lines out. Other paths are 404.

The metrics come from a custom collector of prometheus_client, which writes the
exposition format (the text format, or OpenMetrics when the scraper asks for it;
gzip when it accepts it) and serves it as a WSGI application, here on wsgiref's
server bound to a Unix socket. prometheus_client is in Flower's virtualenv (Flower
depends on it), so the unit runs this with that virtualenv's Python, isolated (-I).
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.utils import mktime_tz, parsedate_tz
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer


def log(level: int, message: str) -> None:
    """One line for the journal; the <N> prefix sets its syslog priority."""
    print(f"<{level}>{' '.join(message.split())}", file=sys.stderr, flush=True)


try:
    from prometheus_client import make_wsgi_app
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import CollectorRegistry
except ImportError as exc:  # run by a Python without it: say which, rather than a traceback
    log(3, f"cannot start: {exc}: run me with the Python of Flower's virtualenv ({sys.executable} lacks it)")
    sys.exit(1)

QUEUES_PATH = "/api/queues/length"
WORKERS_PATH = "/workers?json=1"  # Flower's UI page of workers, as JSON: their heartbeats among the rest
SOCKET_MODE = 0o660
MAX_ANSWER_BYTES = 8 << 20  # far above any real queue or worker list; a guard against a runaway answer
SERVER = "flower-queue-exporter"  # the Server header, instead of wsgiref's name and Python's version
StartResponse = Callable[..., Any]


class FlowerError(Exception):
    """Flower did not answer, or not with what was asked."""


class FlowerUnreachable(FlowerError):
    """No HTTP answer at all: refused, timed out, no socket."""


@dataclass(frozen=True)
class Answer:
    """Flower's 200 answer: its JSON, and its clock (the Date header, 1 s resolution; else ours)."""

    data: object
    server_time: float


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
        return self.path_of(QUEUES_PATH)

    def path_of(self, endpoint: str) -> str:
        prefix = self.url_prefix.strip("/")
        return urlsplit(self.url).path.rstrip("/") + (f"/{prefix}" if prefix else "") + endpoint

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        if self.unix_socket:
            return UnixHTTPConnection(parts.netloc, self.unix_socket, timeout)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.netloc, timeout=timeout)
        return http.client.HTTPConnection(parts.netloc, timeout=timeout)

    def where(self, endpoint: str = QUEUES_PATH) -> str:
        """The request in nginx's notation, without credentials: for the log."""
        if self.unix_socket:
            return f"unix:{self.unix_socket}:{self.path_of(endpoint)}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{self.path_of(endpoint)}"

    def get(self, endpoint: str, timeout: float) -> Answer:
        """Flower's 200 JSON answer at `endpoint`; FlowerError (FlowerUnreachable: no answer at all) otherwise."""
        headers = {"Accept": "application/json", "User-Agent": "flower-queue-exporter"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        where = self.where(endpoint)
        connection = self.connection(timeout)
        started = time.time()
        try:
            connection.request("GET", self.path_of(endpoint), headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise FlowerUnreachable(f"Flower did not answer at {where}: {describe(exc)}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise FlowerError(f"Flower answered HTTP {response.status} {response.reason} at {where}")
        if len(body) > MAX_ANSWER_BYTES:
            raise FlowerError(f"Flower's answer at {where} is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FlowerError(f"Flower's answer at {where} is not JSON: {exc}") from None
        date = parsedate_tz(response.getheader("Date") or "")
        return Answer(data, float(mktime_tz(date)) if date else started)

    def queue_lengths(self) -> dict[str, int]:
        """Flower's answer as {queue: messages}; FlowerError when there is none to trust."""
        answer = self.get(QUEUES_PATH, self.timeout)
        try:
            return parse_queues(answer.data)
        except ValueError as exc:
            raise FlowerError(f"Flower's answer at {self.where()} is not the queue lengths: {exc}") from None

    def heartbeat_ages(self, timeout: float) -> dict[str, float]:
        """{worker: seconds since its newest heartbeat, by Flower's clock}; FlowerError when there is none to trust."""
        answer = self.get(WORKERS_PATH, timeout)
        try:
            return parse_heartbeat_ages(answer.data, answer.server_time)
        except ValueError as exc:
            raise FlowerError(f"Flower's answer at {self.where(WORKERS_PATH)} is not its workers: {exc}") from None


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


def parse_heartbeat_ages(data: object, now: float) -> dict[str, float]:
    """{"data": [{"hostname": str, "heartbeats": [float, ...]}, ...]} as {hostname: now - newest heartbeat}.

    Workers without a heartbeat (none received yet, or cleared by worker-offline) are left out. The heartbeats
    are stamped by the workers' clocks, so skew between them and Flower's shows in the age; never below 0.
    """
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError('no "data" list')
    ages: dict[str, float] = {}
    for worker in data["data"]:
        if not isinstance(worker, dict) or not isinstance(worker.get("hostname"), str):
            raise ValueError(f"a worker entry lacks a hostname: {str(worker)[:200]}")
        beats = [
            beat
            for beat in (worker.get("heartbeats") or [])
            if isinstance(beat, (int, float)) and not isinstance(beat, bool)
        ]
        if beats:
            ages[worker["hostname"]] = max(0.0, now - max(beats))
    return ages


@dataclass(frozen=True)
class Scrape:
    """What Flower answered on one scrape; `lengths` or `ages` is None when it gave no answer to trust."""

    lengths: dict[str, int] | None
    ages: dict[str, float] | None
    seconds: float


def scrape(flower: Flower) -> Scrape:
    """Both requests share --timeout, so a slow Flower cannot hold the scrape for twice as long."""
    started = time.monotonic()
    lengths: dict[str, int] | None = None
    ages: dict[str, float] | None = None
    try:
        lengths = flower.queue_lengths()
    except FlowerUnreachable as exc:
        log(3, str(exc))
        return Scrape(None, None, time.monotonic() - started)  # asking again would fail the same way
    except FlowerError as exc:
        log(3, str(exc))
    left = flower.timeout - (time.monotonic() - started)
    if left <= 0:
        log(3, f"Flower's workers not asked at {flower.where(WORKERS_PATH)}: the queue lengths took the whole timeout")
    else:
        try:
            ages = flower.heartbeat_ages(left)
        except FlowerError as exc:
            log(3, str(exc))
    return Scrape(lengths, ages, time.monotonic() - started)


def queue_up() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "flowerops_queue_up", "Whether Flower answered its queue lengths on this scrape (1) or not (0)."
    )


def queue_length() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "flowerops_queue_length", "Messages waiting in a Celery queue, as Flower counts them.", labels=["queue"]
    )


def heartbeat_age() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "flowerops_worker_heartbeat_age_seconds",
        "Flower's clock minus a worker's newest heartbeat.",
        labels=["worker"],
        unit="seconds",
    )


def scrape_duration() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "flowerops_queue_scrape_duration_seconds",
        "Time spent asking Flower (queue lengths and workers).",
        unit="seconds",
    )


class FlowerCollector:
    """prometheus_client's custom collector: asks Flower on every collect(), that is on every scrape."""

    def __init__(self, flower: Flower) -> None:
        self.flower = flower

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """The families without samples, so that the registry knows their names without asking Flower."""
        return [queue_up(), queue_length(), heartbeat_age(), scrape_duration()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        answer = scrape(self.flower)
        up = queue_up()
        up.add_metric([], 0 if answer.lengths is None else 1)
        yield up
        if answer.lengths is not None:
            lengths = queue_length()
            for name in sorted(answer.lengths):
                lengths.add_metric([name], answer.lengths[name])
            yield lengths
        if answer.ages:
            ages = heartbeat_age()
            for name in sorted(answer.ages):
                ages.add_metric([name], round(answer.ages[name], 3))
            yield ages
        duration = scrape_duration()
        duration.add_metric([], round(answer.seconds, 6))
        yield duration


def application(flower: Flower) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """prometheus_client's WSGI application over a registry holding only the collector, at /metrics alone."""
    registry = CollectorRegistry(auto_describe=False)  # not prometheus_client's global one: no process metrics
    registry.register(FlowerCollector(flower))
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def respond(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
            return start_response(status, [*headers, ("Cache-Control", "no-store"), ("Server", SERVER)], exc_info)

        if environ.get("PATH_INFO") != "/metrics":  # prometheus_client serves its metrics at any path
            respond("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"Not found: the metrics are at /metrics\n"]
        return metrics(environ, respond)

    return app


class QuietHandler(WSGIRequestHandler):
    timeout = 30  # a client that stops talking does not hold a thread forever

    def version_string(self) -> str:
        """The Server header of the error pages of malformed requests (400, 414), which never reach the app."""
        return SERVER

    def log_message(self, format: str, *args: object) -> None:
        """No access log: one line per scrape would drown the errors."""


class MetricsServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's WSGI server, on a Unix socket (mode 0660, and the proxy's group) instead of a TCP port."""

    address_family = socket.AF_UNIX
    allow_reuse_address = False  # no TIME_WAIT on a Unix socket; a stale file is removed instead
    daemon_threads = True

    def __init__(self, path: str, group: str) -> None:
        remove_stale_socket(path)
        previous = os.umask(0o777 & ~SOCKET_MODE)  # the socket is born 0660, never wider
        try:
            super().__init__(path, QuietHandler)
        finally:
            os.umask(previous)
        try:
            Path(path).chmod(SOCKET_MODE)
            if group:
                # The proxy's group may connect; the exporter is a member (SupplementaryGroups=).
                os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except (OSError, KeyError):
            self.server_close()
            Path(path).unlink()
            raise

    def server_bind(self) -> None:
        """bind() to the path; HTTPServer's own would look the address up as a host name."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", 0  # what wsgiref puts in SERVER_NAME and SERVER_PORT
        self.setup_environ()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """A Unix socket's peer has no address; wsgiref wants a (host, port) for REMOTE_ADDR."""
        connection, _ = self.socket.accept()
        return connection, ("unix", 0)

    def handle_error(self, request: object, client_address: object) -> None:
        """One line, not socketserver's traceback: a client that timed out or went away mid-request."""
        exc = sys.exc_info()[1]
        log(4, f"a request on the metrics socket failed: {describe(exc) if exc else 'unknown error'}")


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
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for Flower on each scrape, both requests together"
    )
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
        server = MetricsServer(args.listen, args.socket_group)
    except (OSError, ValueError, KeyError) as exc:
        log(3, f"cannot start: {exc}")
        return 1
    server.set_app(application(flower))
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
