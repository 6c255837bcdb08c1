#!/usr/bin/env python3
"""A throwaway webhook receiver for tests: records what Alertmanager sends.

Listens on 127.0.0.1:PORT, answers every POST with 200 and appends its JSON
body to OUTPUT as one line (a body that is not JSON is kept as a JSON string),
then exits by itself after --lifetime seconds, so a test that forgets it leaves
nothing running. Standard library only: it runs on a bare Debian 12 host.

    python3 alert_receiver.py --port 18099 --output /tmp/alerts.jsonl --lifetime 600
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 1 << 20


def record(output: Path, body: bytes) -> None:
    """Append the body as one JSON line."""
    try:
        line = json.dumps(json.loads(body), separators=(",", ":"))
    except ValueError:
        line = json.dumps(body.decode("utf-8", "replace"))
    with output.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def handler_for(output: Path, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            body = self.rfile.read(length)
            with lock:
                record(output, body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1 only)")
    parser.add_argument("--output", type=Path, required=True, help="file each POSTed body is appended to")
    parser.add_argument("--lifetime", type=float, default=600, help="seconds before it exits by itself")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(args.output, threading.Lock()))
    timer = threading.Timer(args.lifetime, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
