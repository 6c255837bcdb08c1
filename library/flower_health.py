#!/usr/bin/python

# Copyright: (c) 2026, flowerops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# validate-modules requires DOCUMENTATION, EXAMPLES and RETURN above every import but __future__.
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flower_health
short_description: Prove that a Flower (Celery monitoring) instance is healthy
version_added: "1.0.0"
description:
  - Checks a running Flower 2.x instance from the host the module runs on and reports each check separately.
  - Read-only; never changes anything, so it reports C(changed=false) and behaves the same in check mode.
  - Checks, in order; only those that apply are run.
  - C(healthcheck) - Flower answers C(/healthcheck) with C(OK). Flower answers this even when its broker is down,
    so it only proves that the process serves HTTP.
  - C(api) - the API answers C(/api/workers?refresh=1) with the given credentials. The refresh makes Flower inspect
    the workers through the broker.
  - C(auth) - with O(require_auth), requests without credentials to C(/api/workers) and C(/workers) are refused
    (HTTP 401 or 403, or a redirect to a login page).
  - C(workers) - at least O(min_workers) workers answered that broker inspection. With the broker down Flower keeps
    answering C(/api/workers) from its cache; a worker counts as online only when its inspection timestamp is no
    older than the request (Flower's clock, from the C(Date) header, with 2 seconds of slack). A refresh joins an
    inspection already under way (Flower starts one when it starts), which may predate a worker, so when too few
    workers answered the module refreshes once more.
  - C(events) - events are flowing, that is the newest worker heartbeat Flower received (C(/workers?json=1),
    stamped with Flower's clock) is at most O(max_event_age) seconds old. This catches a Flower that lost its event
    stream, for instance while it waits to reconnect to the broker.
  - C(latency) - with O(max_latency_ms), C(/healthcheck) answered within that many milliseconds.
  - C(tls) - for C(https) URLs and O(cert_min_days) above 0, the server certificate is valid for at least that many
    more days.
  - C(version) - with O(expect_version), every online worker reports that Celery version.
  - When any check fails the module fails, naming every failed check, and still returns all the values below.
author:
  - flowerops contributors (@flowerops)
options:
  url:
    description:
      - Base URL of Flower, including the C(url_prefix) if Flower runs under one, for example
        C(http://127.0.0.1:5555) or C(https://flower.example.com/flower).
      - Every route is requested below it (C(<url>/healthcheck), C(<url>/api/workers)).
      - With O(unix_socket) the host part is only sent as the C(Host) header.
    type: str
    required: true
  username:
    description:
      - User name for HTTP basic authentication (Flower's C(basic_auth)).
    type: str
  password:
    description:
      - Password for HTTP basic authentication.
    type: str
  validate_certs:
    description:
      - Verify the server's TLS certificate and host name.
      - The certificate's expiry (O(cert_min_days)) is checked either way.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of CA certificates to trust instead of the system's.
    type: path
  timeout:
    description:
      - Seconds to wait for each request. C(/api/workers?refresh=1) waits for Flower's C(inspect_timeout)
        (1 second by default) and longer when the broker is unreachable.
    type: float
    default: 10
  unix_socket:
    description:
      - Talk to Flower on this Unix socket (Flower's C(unix_socket) option) instead of over TCP.
    type: path
  min_workers:
    description:
      - How many workers must be online. With C(0) no worker is required, and the C(events) check passes while no
        worker has sent a heartbeat.
    type: int
    default: 1
  require_auth:
    description:
      - Prove that Flower refuses requests without credentials to its API and pages.
    type: bool
    default: true
  max_event_age:
    description:
      - The newest worker heartbeat Flower received must be at most this many seconds old (workers send one
        every 2 seconds). Flower's clock is read from its C(Date) header, which has a resolution of 1 second.
      - C(0) disables the C(events) check.
    type: int
    default: 60
  max_latency_ms:
    description:
      - Fail when C(/healthcheck) takes longer than this many milliseconds. Without it the latency is only
        reported.
    type: int
  cert_min_days:
    description:
      - For C(https) URLs, fail when the server certificate expires in fewer than this many days.
      - C(0) disables the C(tls) check; RV(tls_days_left) is still reported.
    type: int
    default: 14
  expect_version:
    description:
      - Celery version every online worker must report, compared component by component as a prefix
        (C(5.7) matches C(5.7.0) but not C(5.70.1)).
      - Flower 2.2 publishes no version of its own over HTTP (not in headers, pages, API or metrics), so this
        compares the C(sw_ver) that workers send with their events.
    type: str
  retries:
    description:
      - Run all checks again this many times while any of them fails, to wait for a service that is still
        starting.
    type: int
    default: 0
  delay:
    description:
      - Seconds to wait between attempts.
    type: float
    default: 5
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - Flower's C(/healthcheck) and C(/metrics) are never authenticated; C(/api/*) answers 401 without credentials
    when basic authentication is on (and, unless C(FLOWER_UNAUTHENTICATED_API) is set, also when it is off).
  - Credentials are sent pre-emptively, because Flower's API answers 401 without a C(WWW-Authenticate) header.
  - Redirects are not followed, so a login redirect (OAuth) shows up as such.
requirements:
  - Flower 2.x
"""

EXAMPLES = r"""
- name: Wait until Flower sees at least two workers
  flowerops.checks.flower_health:
    url: http://127.0.0.1:5555
    username: admin
    password: "{{ flower_password }}"
    min_workers: 2
    retries: 12
    delay: 5

- name: Check Flower behind the proxy, under its prefix
  flowerops.checks.flower_health:
    url: https://flower.example.com/flower
    username: admin
    password: "{{ flower_password }}"
    cert_min_days: 21
    max_latency_ms: 500
  delegate_to: localhost

- name: Check Flower on its Unix socket, without authentication
  flowerops.checks.flower_health:
    url: http://localhost
    unix_socket: /run/flower/flower.sock
    require_auth: false
    min_workers: 0
"""

RETURN = r"""
healthy:
  description: Whether every check passed.
  returned: always
  type: bool
  sample: true
checks:
  description: Every check that was run, in order. A check that could not run because Flower did not answer is
    listed as failed with a detail starting with C(not run).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: One of C(healthcheck), C(api), C(auth), C(workers), C(events), C(latency), C(tls), C(version).
      type: str
      returned: always
    ok:
      description: Whether the check passed.
      type: bool
      returned: always
    detail:
      description: What was measured, or why the check failed.
      type: str
      returned: always
  sample:
    - {name: healthcheck, ok: true, detail: "answered OK in 1.2 ms"}
    - {name: workers, ok: true, detail: "1 of 1 required workers online"}
workers_online:
  description: Number of workers that answered Flower's broker inspection.
  returned: always
  type: int
  sample: 2
workers:
  description: Every worker Flower knows, by name.
  returned: always
  type: dict
  sample: {"celery@web1": {"online": true, "active": 0, "processed": 118}}
  contains:
    online:
      description: Whether the worker answered Flower's broker inspection.
      type: bool
      returned: always
    active:
      description: Tasks the worker is executing, from the events Flower received.
      type: int
      returned: always
    processed:
      description: Tasks the worker has received since Flower started counting, from its events.
      type: int
      returned: always
latency_ms:
  description: Time C(/healthcheck) took to answer, in milliseconds; null when it did not answer.
  returned: always
  type: float
  sample: 1.4
tls_days_left:
  description: Whole days until the server certificate expires (negative once expired); null for C(http).
  returned: always
  type: int
  sample: 62
attempts:
  description: How many times the checks were run.
  returned: always
  type: int
  sample: 1
"""

import calendar
import json
import socket
import ssl
import time
from email.message import Message
from email.utils import mktime_tz, parsedate_tz
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import Request, make_context

# A worker's inspection timestamp may predate the request's Date header by the header's 1 s resolution, or by
# an inspection another client started just before: allow this much.
INSPECT_SLACK = 2.0
REFUSED_STATUSES = (301, 302, 303, 307, 308, 401, 403)
MAX_SNIPPET = 120


class FetchError(Exception):
    """A request got no HTTP answer (bad URL, refused, timed out, TLS failure)."""


class Reply:
    def __init__(self, status: int, body: bytes, headers: Message | None, elapsed_ms: float, started: float) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.elapsed_ms = elapsed_ms
        self.started = started

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        return json.loads(self.text())

    def header(self, name: str) -> str | None:
        return self.headers.get(name) if self.headers is not None else None

    def server_time(self) -> float:
        """Flower's clock at the request, from the Date header (1 s resolution), else ours."""
        parsed = parsedate_tz(self.header("Date") or "")
        return float(mktime_tz(parsed)) if parsed else self.started

    def describe(self) -> str:
        if 300 <= self.status < 400:
            return f"HTTP {self.status} redirect to {self.header('Location') or '?'}"
        text = " ".join(self.text().split())
        if self.status == 404:
            return "HTTP 404 (check the url and Flower's url_prefix)"
        if not text or text.startswith("<"):  # an HTML error page says nothing useful on one line
            return f"HTTP {self.status}"
        return f"HTTP {self.status}: {text[:MAX_SNIPPET]}"


class Check:
    def __init__(self, name: str, ok: bool, detail: str) -> None:
        self.name = name
        self.ok = ok
        self.detail = detail

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def describe_error(exc: BaseException, timeout: float) -> str:
    reason: object = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {reason.verify_message or reason.reason}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failure: {reason.reason or reason}"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name: {reason.strerror}"
    if isinstance(reason, FileNotFoundError):
        return "no such Unix socket"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


class FlowerClient:
    def __init__(self, params: dict) -> None:
        self.base = params["url"].rstrip("/")
        self.timeout = params["timeout"]
        self.has_credentials = params["username"] is not None
        common = dict(
            timeout=self.timeout,
            # One context for every request: building it loads the CA bundle (~30 ms), which would skew latency.
            context=make_context(cafile=params["ca_path"], validate_certs=params["validate_certs"]),
            unix_socket=params["unix_socket"],
            follow_redirects="none",
            use_netrc=False,
            http_agent="flowerops-flower_health",
            headers={"Accept": "application/json"},
        )
        self.authenticated = Request(
            url_username=params["username"],
            url_password=params["password"],
            force_basic_auth=self.has_credentials,
            **common,
        )
        self.anonymous = Request(**common)

    def get(self, path: str, authenticated: bool = True) -> Reply:
        url = self.base + path
        request = self.authenticated if authenticated else self.anonymous
        started = time.time()
        clock = time.monotonic()
        try:
            try:
                response = request.open("GET", url)
                status, headers, body = response.getcode(), response.headers, response.read()
            except HTTPError as exc:
                status, headers, body = exc.code, exc.headers, _read_error_body(exc)
        except (URLError, OSError, HTTPException, ValueError, UrlsConnectionError) as exc:
            raise FetchError(f"GET {url}: {describe_error(exc, self.timeout)}") from exc
        return Reply(status, body, headers, (time.monotonic() - clock) * 1000.0, started)


def _read_error_body(exc: HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except (OSError, HTTPException, ValueError, AttributeError):
        return b""


# --- TLS certificate expiry, from the DER certificate (works without verification) ---


def _der_items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, content start, content end) of each DER element between start and end."""
    items = []
    pos = start
    while pos < end:
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            size = length & 0x7F
            length = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        items.append((tag, pos, pos + length))
        pos += length
    return items


def cert_not_after(der: bytes) -> float:
    """Epoch seconds of an X.509 certificate's notAfter."""
    certificate = _der_items(der, 0, len(der))[0]
    tbs = _der_items(der, certificate[1], certificate[2])[0]
    fields = _der_items(der, tbs[1], tbs[2])
    if fields[0][0] == 0xA0:  # explicit version tag
        fields = fields[1:]
    validity = fields[3]  # after serial, signature algorithm, issuer
    tag, start, end = _der_items(der, validity[1], validity[2])[1]
    text = der[start:end].decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime: two-digit year, 50-99 meaning 19xx (RFC 5280)
        year = int(text[:2])
        text = str(1900 + year if year >= 50 else 2000 + year) + text[2:]
    return float(calendar.timegm(time.strptime(text[:14], "%Y%m%d%H%M%S")))


def tls_days_left(params: dict) -> int:
    """Whole days until the server certificate expires; raises FetchError when it cannot be read."""
    parts = urlsplit(params["url"])
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # expiry is read even from an untrusted certificate
    try:
        if params["unix_socket"]:
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.settimeout(params["timeout"])
        else:
            raw = socket.create_connection((host, port), timeout=params["timeout"])
        with raw:
            if params["unix_socket"]:
                raw.connect(params["unix_socket"])
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError) as exc:
        raise FetchError(f"TLS handshake with {host}:{port}: {describe_error(exc, params['timeout'])}") from exc
    if not der:
        raise FetchError(f"{host}:{port} sent no certificate")
    try:
        not_after = cert_not_after(der)
    except (IndexError, ValueError) as exc:
        raise FetchError(f"cannot read the certificate's expiry date: {exc}") from exc
    return int((not_after - time.time()) // 86400)


# --- the checks ---


class Attempt:
    """One run of every check, and the values it measured."""

    def __init__(self, client: FlowerClient, params: dict) -> None:
        self.client = client
        self.params = params
        self.checks: list[Check] = []
        self.workers: dict[str, dict[str, object]] = {}
        self.latency_ms: float | None = None
        self.tls_days_left: int | None = None
        self.sw_versions: dict[str, str] = {}

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def workers_online(self) -> int:
        return sum(1 for worker in self.workers.values() if worker["online"])

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def run(self) -> Attempt:
        params = self.params
        reachable = self.check_healthcheck()
        if reachable:
            api = self.check_api()
            if params["require_auth"]:
                self.check_auth()
            events = self.fetch_events()
            self.check_workers(api)
            if params["max_event_age"] > 0:
                self.check_events(events)
            if params["max_latency_ms"] is not None:
                self.check_latency()
        else:
            for name in self.planned_after_healthcheck():
                self.add(name, False, "not run: no Flower answered /healthcheck")
        if urlsplit(params["url"]).scheme == "https":
            self.check_tls()
        if params["expect_version"]:
            if reachable:
                self.check_version()
            else:
                self.add("version", False, "not run: no Flower answered /healthcheck")
        return self

    def planned_after_healthcheck(self) -> list[str]:
        params = self.params
        names = ["api"]
        names += ["auth"] if params["require_auth"] else []
        names += ["workers"]
        names += ["events"] if params["max_event_age"] > 0 else []
        names += ["latency"] if params["max_latency_ms"] is not None else []
        return names

    def check_healthcheck(self) -> bool:
        try:
            reply = self.client.get("/healthcheck", authenticated=False)
        except FetchError as exc:
            self.add("healthcheck", False, str(exc))
            return False
        self.latency_ms = round(reply.elapsed_ms, 1)
        if reply.status == 200 and reply.text().strip() == "OK":
            self.add("healthcheck", True, f"answered OK in {self.latency_ms} ms")
            return True
        self.add("healthcheck", False, f"/healthcheck answered {reply.describe()}")
        # A 404 means no Flower under this URL: every other route would say the same.
        return reply.status != 404

    def refresh_workers(self) -> tuple[Reply | None, dict, str]:
        """/api/workers?refresh=1: Flower inspects the workers through the broker before it answers."""
        try:
            reply = self.client.get("/api/workers?refresh=1")
        except FetchError as exc:
            return None, {}, str(exc)
        if reply.status == 401:
            why = "wrong username or password" if self.client.has_credentials else "set username and password"
            return None, {}, f"/api/workers answered HTTP 401: {why}"
        if reply.status != 200:
            return None, {}, f"/api/workers answered {reply.describe()}"
        try:
            data = reply.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return None, {}, f"/api/workers did not answer a JSON object: {reply.describe()}"
        return reply, data, ""

    def check_api(self) -> tuple[Reply, dict] | None:
        reply, data, error = self.refresh_workers()
        if reply is None:
            self.add("api", False, error)
            return None
        self.add("api", True, f"/api/workers answered with {len(data)} known workers")
        return reply, data

    def check_auth(self) -> None:
        problems = []
        for path in ("/api/workers", "/workers?json=1"):
            try:
                reply = self.client.get(path, authenticated=False)
            except FetchError as exc:
                problems.append(str(exc))
                continue
            if 200 <= reply.status < 300:
                problems.append(
                    f"{path} answered HTTP {reply.status} without credentials: authentication is not enforced"
                )
            elif reply.status not in REFUSED_STATUSES:
                problems.append(f"{path} answered {reply.describe()} without credentials (expected 401)")
        if problems:
            self.add("auth", False, "; ".join(problems))
        else:
            self.add("auth", True, "requests without credentials are refused")

    def fetch_events(self) -> tuple[Reply | None, list[dict], str]:
        """Flower's event-based view of the workers (the UI's /workers?json=1)."""
        try:
            reply = self.client.get("/workers?json=1")
        except FetchError as exc:
            return None, [], str(exc)
        if reply.status != 200:
            return reply, [], f"/workers?json=1 answered {reply.describe()}"
        try:
            data = reply.json()
        except ValueError:
            data = None
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            return reply, [], f"/workers?json=1 did not answer Flower's worker list: {reply.describe()}"
        rows = [row for row in rows if isinstance(row, dict) and row.get("hostname")]
        for row in rows:
            self.workers[str(row["hostname"])] = {
                "online": False,
                "active": _as_int(row.get("active")),
                "processed": _as_int(row.get("processed")),
            }
            if row.get("sw_ver"):
                self.sw_versions[str(row["hostname"])] = str(row["sw_ver"])
        return reply, rows, ""

    def check_workers(self, api: tuple[Reply, dict] | None) -> None:
        if api is None:
            self.add("workers", False, "not run: the API check failed")
            return
        self.mark_online(*api)
        required = self.params["min_workers"]
        if self.workers_online < required:
            # A refresh joins the inspection already under way, if any (Flower starts one when it starts, and
            # for other clients), which may have begun before a worker could answer: ask once more.
            reply, data, _error = self.refresh_workers()
            if reply is not None:
                self.mark_online(reply, data)
        online = self.workers_online
        detail = f"{online} of {required} required workers online"
        stale = sorted(name for name, worker in self.workers.items() if not worker["online"])
        if stale:
            detail += " (did not answer the broker inspection: " + ", ".join(stale) + ")"
        self.add("workers", online >= required, detail)

    def mark_online(self, reply: Reply, data: dict) -> None:
        fresh_after = reply.server_time() - INSPECT_SLACK
        for name, info in data.items():
            stamp = info.get("timestamp") if isinstance(info, dict) else None
            online = isinstance(stamp, (int, float)) and stamp >= fresh_after
            worker = self.workers.setdefault(str(name), {"online": False, "active": 0, "processed": 0})
            worker["online"] = bool(worker["online"]) or online

    def check_events(self, events: tuple[Reply | None, list[dict], str]) -> None:
        reply, rows, error = events
        if reply is None or error:
            self.add("events", False, error)
            return
        beats = [
            beat
            for row in rows
            for beat in (row.get("heartbeats") or [])
            if isinstance(beat, (int, float)) and not isinstance(beat, bool)
        ]
        limit = self.params["max_event_age"]
        if not beats:
            if self.params["min_workers"] == 0:
                self.add("events", True, "no worker has sent a heartbeat, and none is required")
            else:
                self.add("events", False, "Flower has received no worker heartbeat")
            return
        age = max(0.0, reply.server_time() - max(beats))
        detail = f"newest worker heartbeat is {age:.0f} s old (max {limit} s)"
        self.add("events", age <= limit, detail)

    def check_latency(self) -> None:
        limit = self.params["max_latency_ms"]
        latency = self.latency_ms if self.latency_ms is not None else float("inf")
        self.add("latency", latency <= limit, f"/healthcheck took {self.latency_ms} ms (max {limit} ms)")

    def check_tls(self) -> None:
        minimum = self.params["cert_min_days"]
        try:
            self.tls_days_left = tls_days_left(self.params)
        except FetchError as exc:
            if minimum > 0:
                self.add("tls", False, str(exc))
            return
        if minimum > 0:
            detail = f"certificate expires in {self.tls_days_left} days (min {minimum})"
            self.add("tls", self.tls_days_left >= minimum, detail)

    def check_version(self) -> None:
        expected = self.params["expect_version"]
        online = [name for name, worker in sorted(self.workers.items()) if worker["online"]]
        if not online:
            self.add("version", False, f"no online worker to compare with {expected}")
            return
        wrong = [
            f"{name} runs {self.sw_versions.get(name, 'an unknown version')}"
            for name in online
            if not version_matches(self.sw_versions.get(name, ""), expected)
        ]
        if wrong:
            self.add("version", False, f"expected Celery {expected}: " + ", ".join(wrong))
        else:
            self.add("version", True, f"{len(online)} online workers run Celery {expected}")


def version_matches(actual: str, expected: str) -> bool:
    want = expected.strip().split(".")
    return actual.strip().split(".")[: len(want)] == want


def _as_int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value)
    return 0


def failure_message(attempt: Attempt, attempts: int) -> str:
    failed = [check for check in attempt.checks if not check.ok]
    ran = [f"{check.name}: {check.detail}" for check in failed if not check.detail.startswith("not run")]
    skipped = [check.name for check in failed if check.detail.startswith("not run")]
    msg = "Flower is unhealthy"
    if attempts > 1:
        msg += f" after {attempts} attempts"
    msg += ": " + "; ".join(ran)
    if skipped:
        msg += f" (not run: {', '.join(skipped)})"
    return msg


def validate(module: AnsibleModule) -> None:
    params = module.params
    parts = urlsplit(params["url"])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        module.fail_json(msg=f"url must be an absolute http:// or https:// URL, got {params['url']!r}")
    try:
        port = parts.port
    except ValueError as exc:
        module.fail_json(msg=f"url has an invalid port: {exc}")
    if port == 0:
        module.fail_json(msg="url has an invalid port: 0")
    for name in ("min_workers", "retries", "delay", "max_event_age", "cert_min_days"):
        if params[name] < 0:
            module.fail_json(msg=f"{name} must not be negative")
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be greater than 0")


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            username=dict(type="str"),
            password=dict(type="str", no_log=True),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            timeout=dict(type="float", default=10),
            unix_socket=dict(type="path"),
            min_workers=dict(type="int", default=1),
            require_auth=dict(type="bool", default=True),
            max_event_age=dict(type="int", default=60),
            max_latency_ms=dict(type="int"),
            cert_min_days=dict(type="int", default=14),
            expect_version=dict(type="str"),
            retries=dict(type="int", default=0),
            delay=dict(type="float", default=5),
        ),
        required_together=[("username", "password")],
        supports_check_mode=True,
    )
    validate(module)
    client = FlowerClient(module.params)
    attempts = 0
    while True:
        attempts += 1
        attempt = Attempt(client, module.params).run()
        if attempt.healthy or attempts > module.params["retries"]:
            break
        time.sleep(module.params["delay"])
    result = dict(
        changed=False,
        healthy=attempt.healthy,
        checks=[check.as_dict() for check in attempt.checks],
        workers_online=attempt.workers_online,
        workers=attempt.workers,
        latency_ms=attempt.latency_ms,
        tls_days_left=attempt.tls_days_left,
        attempts=attempts,
    )
    if attempt.healthy:
        module.exit_json(**result)
    module.fail_json(msg=failure_message(attempt, attempts), **result)


if __name__ == "__main__":
    main()
