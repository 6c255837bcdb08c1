"""Small stdlib HTTP(S) servers that answer like Flower 2.2 does, for the failures a real Flower cannot cheaply show.

Shapes and status codes are those measured on a real Flower 2.2.0: `/healthcheck` answers a fixed `OK`,
`/api/workers` a JSON object of workers with the `timestamp` of their last broker inspection, `/workers?json=1`
`{"data": [...]}` with each worker's `heartbeats` (Flower's clock, emptied by a clean stop's worker-offline) and
Flower's counts of its events by type, and both answer 401 without credentials.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class FakeWorker:
    inspected_ago: float = 0.0  # seconds since the worker last answered a broker inspection
    heartbeat_ago: float | None = 1.0  # seconds since its newest heartbeat; None: never sent one
    offline: bool = False  # stopped cleanly: Flower got its worker-offline and emptied its heartbeats
    active: int = 0
    processed: int = 7
    sw_ver: str = "5.7.0"


@dataclass
class Behaviour:
    prefix: str = ""
    credentials: tuple[str, str] | None = ("admin", "s3cret")
    anonymous_allowed: bool = False  # answer /api and pages without credentials
    healthcheck_delay: float = 0.0
    api_status: int = 200
    # The first this many requests answered 429, as nginx's limit_req does once another client spent the allowance.
    rate_limited: int = 0
    workers: dict[str, FakeWorker] = field(default_factory=lambda: {"celery@fake": FakeWorker()})
    # /api/queues/length's active_queues; None: 404, as Flower answers for a broker it cannot ask
    queues: list[dict[str, object]] | None = None


class FakeFlowerServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.behaviour = behaviour
        self.stopping = threading.Event()  # releases handlers that are sleeping
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}{self.behaviour.prefix}"

    def __enter__(self) -> FakeFlowerServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: FakeFlowerServer
    server_version = "TornadoServer/6.6.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        behaviour = self.server.behaviour
        parts = urlsplit(self.path)
        if not parts.path.startswith(behaviour.prefix + "/"):
            self.reply(404, "text/html", "<html><title>404: Not Found</title></html>")
            return
        route = parts.path[len(behaviour.prefix) :]
        if behaviour.rate_limited > 0:
            behaviour.rate_limited -= 1
            self.reply(429, "text/html", "<html><title>429 Too Many Requests</title></html>")
        elif route == "/healthcheck":
            self.server.stopping.wait(behaviour.healthcheck_delay)
            self.reply(200, "text/html", "OK")
        elif route == "/api/workers" and self.authorized():
            if behaviour.api_status != 200:
                self.reply(behaviour.api_status, "text/html", "<html><title>500: Internal Server Error</title></html>")
            else:
                self.reply(200, "application/json", json.dumps(self.api_workers()))
        elif route == "/api/queues/length" and behaviour.queues is not None and self.authorized():
            self.reply(200, "application/json", json.dumps({"active_queues": behaviour.queues}))
        elif route == "/workers" and self.authorized():
            self.reply(200, "application/json", json.dumps({"data": self.event_workers()}))
        elif route in ("/api/workers", "/workers"):
            self.reply(401, "text/html", "<html><title>401: Unauthorized</title></html>")
        else:
            self.reply(404, "text/html", "<html><title>404: Not Found</title></html>")

    def authorized(self) -> bool:
        behaviour = self.server.behaviour
        if behaviour.anonymous_allowed or behaviour.credentials is None:
            return True
        expected = base64.b64encode(":".join(behaviour.credentials).encode()).decode()
        return self.headers.get("Authorization") == f"Basic {expected}"

    def api_workers(self) -> dict[str, dict[str, object]]:
        now = time.time()
        return {
            name: {"timestamp": now - worker.inspected_ago, "stats": {"pid": 1}, "registered": []}
            for name, worker in self.server.behaviour.workers.items()
        }

    def event_workers(self) -> list[dict[str, object]]:
        return [self.event_row(name, worker) for name, worker in self.server.behaviour.workers.items()]

    @staticmethod
    def event_row(name: str, worker: FakeWorker) -> dict[str, object]:
        """Flower's row: its counts of the worker's events by type, then Celery's Worker fields, then `status`."""
        counts = {"worker-heartbeat": 3} if worker.heartbeat_ago is not None else {}
        if worker.offline:
            counts["worker-offline"] = 1
        ago = None if worker.offline else worker.heartbeat_ago
        beats = [] if ago is None else [time.time() - ago]
        return {
            **counts,
            "hostname": name,
            "heartbeats": beats,
            "active": worker.active,
            "processed": worker.processed,
            "sw_ver": worker.sw_ver,
            "status": ago is not None and ago < 4,
        }

    def reply(self, status: int, content_type: str, body: str) -> None:
        data = body.encode()
        self.send_response(status)  # adds Date, which the module reads as Flower's clock
        self.send_header("Content-Type", f"{content_type}; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
