"""bench/agent_http.py's readers job, the client the heavy-readers drill and bench/readers.py rely on: each group's
answers are counted apart, and the probes keep asking while the readers run. Against a real HTTP server on
loopback that refuses every other request on one path with 429, as nginx's limits do."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

AGENT = Path(__file__).resolve().parents[2] / "bench" / "agent_http.py"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counts: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            seen = self.counts[self.path] = self.counts.get(self.path, 0) + 1
        status = 429 if self.path == "/limited" and seen % 2 == 0 else 200
        body = b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    Handler.counts.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()


def test_readers_are_counted_by_group_while_the_probes_keep_asking(server: int) -> None:
    target = {"scheme": "http", "host": "localhost", "address": "127.0.0.1", "port": server, "source": "127.0.0.1"}
    plan = {
        "targets": {"t": target},
        "jobs": [
            {
                "kind": "readers",
                "seconds": 1.5,
                "interval": 0.25,
                "readers": [
                    {"target": "t", "path": "/limited", "concurrency": 2},
                    {"target": "t", "path": "/open", "concurrency": 1},
                ],
                "probes": [{"name": "health", "target": "t", "path": "/probe"}],
            }
        ],
    }
    run = subprocess.run(
        [sys.executable, str(AGENT)], input=json.dumps(plan), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    (result,) = json.loads(run.stdout)
    limited, open_ = result["readers"]
    assert set(limited["statuses"]) == {"200", "429"}, limited
    assert set(open_["statuses"]) == {"200"}, open_
    # Every request the server saw was counted once, in its own group.
    assert sum(limited["statuses"].values()) == Handler.counts["/limited"]
    assert sum(open_["statuses"].values()) == Handler.counts["/open"]
    (probe,) = result["probes"]
    assert probe["name"] == "health" and probe["statuses"] == {"200": Handler.counts["/probe"]}
    assert 5 <= len(probe["times"]) <= 7, probe  # one every 0.25 s for 1.5 s
