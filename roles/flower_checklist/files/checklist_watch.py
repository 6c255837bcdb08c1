#!/usr/bin/env python3
"""The production checklist between Ansible runs: the flower_checklist module's own observations, run on this
host by flowerops-checklist-watch.timer, each item's state published for Prometheus.

The module file and its flower_probe are the very files Ansible ships (the role copies them next to this
script). This script stands in for the two parts of Ansible they import - AnsibleModule (parameters, commands)
and ansible.module_utils.urls' Request (one HTTP request, over TCP or nginx's Unix socket, redirects not
followed, the login sent at once) - and calls the module's audit() on the items a host can observe alone and
without a password:

- not 9 and 10, which only the monitoring host sees (Prometheus alerts on its own targets and rules);
- not 14, whose burst would spend the allowance of the clients the limits protect, every few minutes;
- not 16, and item 13 and the tasks held (item 8) without a login: no password is stored on the host.

Writes the Prometheus text format (prometheus_client: Debian's python3-prometheus-client) to --out,
atomically, and one line per item to the journal. Exits 0 whatever the verdicts, and when an observation
could not be made this time (said in the journal; FlowerChecklistWatcherSilent fires if that lasts).

    python3 checklist_watch.py --config /etc/flowerops/checklist-watch.json --out /var/lib/.../checklist.prom
"""

from __future__ import annotations

import argparse
import base64
import http.client
import importlib.util
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import types
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

ITEMS = (1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 15)
HERE = Path(__file__).resolve().parent


class Host:
    """What the checklist's Audit asks of AnsibleModule: its parameters, and commands run on this host."""

    check_mode = True

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def get_bin_path(self, name: str) -> str | None:
        return shutil.which(name)

    def run_command(self, argv: list[str], environ_update: dict[str, str] | None = None) -> tuple[int, str, str]:
        env = {**os.environ, **(environ_update or {})}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
        return done.returncode, done.stdout, done.stderr


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def getcode(self) -> int:
        return self.status

    def read(self) -> bytes:
        return self.body


class Request:
    """ansible.module_utils.urls.Request as flower_probe uses it: open() makes one request; an answer of 300 or
    more raises HTTPError (redirects are not followed), as Request does with follow_redirects="none"."""

    def __init__(
        self,
        timeout: float,
        context: ssl.SSLContext,
        unix_socket: str | None = None,
        http_agent: str = "",
        headers: dict[str, str] | None = None,
        url_username: str | None = None,
        url_password: str | None = None,
        force_basic_auth: bool = False,
        **_ignored: object,
    ) -> None:
        self.timeout, self.context, self.unix_socket = timeout, context, unix_socket
        self.headers = {**(headers or {}), "User-Agent": http_agent}
        if force_basic_auth and url_username is not None:
            login = f"{url_username}:{url_password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(login).decode()

    def open(self, method: str, url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> Response:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        kind = http.client.HTTPSConnection if tls else http.client.HTTPConnection
        extra = {"context": self.context} if tls else {}
        connection = kind(parts.hostname or "", parts.port, timeout=self.timeout, **extra)
        if self.unix_socket:
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.settimeout(self.timeout)
            raw.connect(self.unix_socket)
            connection.sock = self.context.wrap_socket(raw, server_hostname=parts.hostname) if tls else raw
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(method, target, body=data, headers={**self.headers, **(headers or {})})
            reply = connection.getresponse()
            body = reply.read()
        finally:
            connection.close()
        if reply.status >= 300:
            raise HTTPError(url, reply.status, reply.reason, reply.headers, io.BytesIO(body))
        return Response(reply.status, reply.headers, body)


def make_context(cafile: str | None = None, validate_certs: bool = True) -> ssl.SSLContext:
    if not validate_certs:
        return ssl._create_unverified_context()  # as Request does with validate_certs=False
    return ssl.create_default_context(cafile=cafile or None)


def missing_required_lib(library: str, reason: str | None = None, **_ignored: object) -> str:
    return f"Failed to import the required Python library ({library}){' (' + reason + ')' if reason else ''}."


def load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_checklist(lib: Path) -> types.ModuleType:
    """The module, its two imports from ansible.module_utils resolved to the files beside it."""
    basic = types.ModuleType("ansible.module_utils.basic")
    basic.AnsibleModule = Host  # type: ignore[attr-defined]  # only named in annotations
    basic.missing_required_lib = missing_required_lib  # type: ignore[attr-defined]
    urls = types.ModuleType("ansible.module_utils.urls")
    urls.Request, urls.make_context, urls.ConnectionError = Request, make_context, ConnectionError  # type: ignore[attr-defined]
    sys.modules.update(
        {
            "ansible": types.ModuleType("ansible"),
            "ansible.module_utils": types.ModuleType("ansible.module_utils"),
            "ansible.module_utils.basic": basic,
            "ansible.module_utils.urls": urls,
        }
    )
    load(lib / "flower_probe.py", "ansible.module_utils.flower_probe")
    return load(lib / "flower_checklist.py", "flower_checklist")


def parameters(checklist: types.ModuleType, given: dict[str, Any]) -> dict[str, Any]:
    """The module's defaults (its ARGUMENT_SPEC), then the role's settings; never a login."""
    params = {name: spec.get("default") for name, spec in checklist.ARGUMENT_SPEC.items()}
    params.update(given, users=[], health={}, monitoring={}, waivers={})
    return params


def publish(items: list[dict[str, Any]], out: Path) -> None:
    registry = CollectorRegistry()
    passing = Gauge(
        "flowerops_checklist_item_passing",
        "1 when the production checklist item passes on this host, 0 when it fails (flowerops-checklist-watch)",
        ["item", "name"],
        registry=registry,
    )
    for item in items:
        passing.labels(str(item["id"]), item["name"]).set(1 if item["status"] == "PASS" else 0)
    Gauge(
        "flowerops_checklist_last_run_timestamp_seconds",
        "When flowerops-checklist-watch last observed this host",
        registry=registry,
    ).set_to_current_time()
    write_to_textfile(str(out), registry)
    out.chmod(0o644)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the role's settings (JSON)")
    parser.add_argument("--out", type=Path, required=True, help="the Prometheus text file to write")
    parser.add_argument("--lib", type=Path, default=HERE, help="where flower_checklist.py and flower_probe.py are")
    args = parser.parse_args()
    checklist = load_checklist(args.lib)
    params = parameters(checklist, json.loads(args.config.read_text()))
    try:
        items = checklist.audit(Host(params), {}, ITEMS)
    except Exception as exc:  # a race with Flower's (re)start: said, and retried on the next run
        print(f"could not observe this time: {type(exc).__name__}: {exc}")
        return 0
    publish(items, args.out)
    for item in items:
        print(f"item {item['id']} {item['status']}: {item['name']}: {item['evidence']}")
    failed = [str(item["id"]) for item in items if item["status"] != "PASS"]
    print(f"{len(items) - len(failed)} of {len(items)} observed items pass; failing: {', '.join(failed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
