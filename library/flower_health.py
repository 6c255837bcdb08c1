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
  - C(broker) - Flower reaches its broker, that is it answers C(/api/queues/length), which it gets from the broker
    (Redis directly, RabbitMQ through Flower's C(broker_api)). Skipped when Flower cannot ask its kind of broker
    (HTTP 404). With the broker down, Flower's other pages keep answering from what it holds.
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
  - When a worker stops cleanly it sends C(worker-offline), and Flower then drops that worker's heartbeat times.
    With no worker online, C(events) says so, names the workers that went offline and when Flower last saw one
    (its newest broker inspection answer), and fails unless O(min_workers) is C(0). It reports that Flower has
    received no worker heartbeat only when no worker sent one since Flower started.
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
        worker is online (none has sent a heartbeat, or all went offline).
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
  flower_health:
    url: http://127.0.0.1:5555
    username: admin
    password: "{{ flower_password }}"
    min_workers: 2
    retries: 12
    delay: 5

- name: Check Flower behind the proxy, under its prefix
  flower_health:
    url: https://flower.example.com/flower
    username: admin
    password: "{{ flower_password }}"
    cert_min_days: 21
    max_latency_ms: 500
  delegate_to: localhost

- name: Check Flower on its Unix socket, without authentication
  flower_health:
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
  description: Every check that applies, in order, each with its outcome. A check that could not run (no Flower
    answered C(/healthcheck), or the C(api) check failed before C(workers)) is listed with RV(checks[].status)
    C(skipped).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: >-
        One of C(healthcheck), C(api), C(broker), C(auth), C(workers), C(events), C(latency), C(tls), C(version).
      type: str
      returned: always
    status:
      description: C(ok) when the check passed, C(failed) when it failed, C(skipped) when it could not run.
      type: str
      returned: always
      choices: [ok, failed, skipped]
    ok:
      description: Whether the check passed (false for a skipped check).
      type: bool
      returned: always
    detail:
      description: What was measured, or why the check failed; for a skipped check, why it was not run
        (starting with C(not run)).
      type: str
      returned: always
  sample:
    - {name: healthcheck, status: ok, ok: true, detail: "answered OK in 1.2 ms"}
    - {name: workers, status: ok, ok: true, detail: "1 of 1 required workers online"}
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

import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.flower_probe import (
    FetchError,
    FlowerClient,
    Reply,
    refused_without_credentials,
    tls_days_left,
    url_problem,
)

# A worker's inspection timestamp may predate the request's Date header by the header's 1 s resolution, or by
# an inspection another client started just before: allow this much.
INSPECT_SLACK = 2.0
# A check's status. (One assignment each: ansible-doc warns about tuple assignments in a module.)
OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"


class Check:
    def __init__(self, name: str, status: str, detail: str) -> None:
        self.name = name
        self.status = status
        self.detail = detail

    @property
    def ok(self) -> bool:
        return self.status == OK

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "status": self.status, "ok": self.ok, "detail": self.detail}


def verdict(name: str, ok: bool, detail: str) -> Check:
    return Check(name, OK if ok else FAILED, detail)


def skipped(name: str, why: str) -> Check:
    return Check(name, SKIPPED, f"not run: {why}")


# --- what Flower says about its workers ---


class Inspection(NamedTuple):
    """One /api/workers?refresh=1: Flower inspects the workers through the broker before it answers."""

    known: list[str]  # every worker Flower lists, from this inspection or its cache
    online: list[str]  # those whose inspection timestamp is no older than this request
    seen: dict[str, float]  # each worker's newest inspection answer (Flower's clock), fresh or cached


class Events(NamedTuple):
    """Flower's event-based view of the workers (the UI's /workers?json=1); reply is None when none came."""

    reply: Reply | None
    rows: list[dict]
    error: str


def inspect_workers(client: FlowerClient) -> tuple[Inspection | None, str]:
    """The inspection, or None and why there is none."""
    try:
        reply = client.get("/api/workers?refresh=1")
    except FetchError as exc:
        return None, str(exc)
    if reply.status == 401:
        why = "wrong username or password" if client.has_credentials else "set username and password"
        return None, f"/api/workers answered HTTP 401: {why}"
    if reply.status != 200:
        return None, f"/api/workers answered {reply.describe()}"
    try:
        data = reply.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return None, f"/api/workers did not answer a JSON object: {reply.describe()}"
    seen = {str(name): stamp for name, info in data.items() if (stamp := _inspected_at(info)) is not None}
    fresh_after = reply.server_time() - INSPECT_SLACK
    online = [name for name, stamp in seen.items() if stamp >= fresh_after]
    return Inspection([str(name) for name in data], online, seen), ""


def _inspected_at(info: object) -> float | None:
    stamp = info.get("timestamp") if isinstance(info, dict) else None
    return float(stamp) if _is_number(stamp) else None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fetch_events(client: FlowerClient) -> Events:
    try:
        reply = client.get("/workers?json=1")
    except FetchError as exc:
        return Events(None, [], str(exc))
    if reply.status != 200:
        return Events(reply, [], f"/workers?json=1 answered {reply.describe()}")
    try:
        data = reply.json()
    except ValueError:
        data = None
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return Events(reply, [], f"/workers?json=1 did not answer Flower's worker list: {reply.describe()}")
    return Events(reply, [row for row in rows if isinstance(row, dict) and row.get("hostname")], "")


def merge_workers(events: Events | None, inspections: list[Inspection]) -> dict[str, dict[str, object]]:
    """Every worker Flower knows: counters from its events, online when any inspection of the attempt saw it."""
    workers: dict[str, dict[str, object]] = {}
    for row in events.rows if events is not None else []:
        workers[str(row["hostname"])] = {
            "online": False,
            "active": _as_int(row.get("active")),
            "processed": _as_int(row.get("processed")),
        }
    for inspection in inspections:
        for name in inspection.known:
            workers.setdefault(name, {"online": False, "active": 0, "processed": 0})
        for name in inspection.online:
            workers[name]["online"] = True
    return workers


def went_offline(events: Events) -> list[str]:
    """Workers whose clean stop (worker-offline) Flower received and that sent no heartbeat since: Celery's events
    State empties a worker's heartbeats on worker-offline, and Flower counts each worker's events by type."""
    return sorted(
        str(row["hostname"]) for row in events.rows if _as_int(row.get("worker-offline")) and not row.get("heartbeats")
    )


def last_seen(inspections: list[Inspection], names: list[str]) -> float | None:
    """The newest inspection answer of any of these workers, the last moment Flower knew one was alive."""
    stamps = [inspection.seen[name] for inspection in inspections for name in names if name in inspection.seen]
    return max(stamps, default=None)


def count_online(workers: dict[str, dict[str, object]]) -> int:
    return sum(1 for worker in workers.values() if worker["online"])


def sw_versions(events: Events) -> dict[str, str]:
    return {str(row["hostname"]): str(row["sw_ver"]) for row in events.rows if row.get("sw_ver")}


# --- the checks ---


class Attempt:
    """One run of the checks in PLAN, and what Flower answered to them."""

    def __init__(self, client: FlowerClient, params: dict) -> None:
        self.client = client
        self.params = params
        self.checks: list[Check] = []
        self.reachable = False  # some Flower answered /healthcheck: the checks that need one can run
        self.latency_ms: float | None = None
        self.inspections: list[Inspection] = []
        self.events: Events | None = None  # see worker_events()
        self.tls_days_left: int | None = None

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def workers(self) -> dict[str, dict[str, object]]:
        """The workers as far as this attempt saw them; never fetches anything itself."""
        return merge_workers(self.events, self.inspections)

    def run(self) -> Attempt:
        for step in PLAN:
            if not step.applies(self.params):
                continue
            if step.needs_flower and not self.reachable:
                check: Check | None = skipped(step.name, "no Flower answered /healthcheck")
            else:
                check = step.check(self)
            if check is not None:
                self.checks.append(check)
        return self

    def worker_events(self) -> Events:
        """Fetched once per attempt, by the first check that reads it (workers, which always runs with Flower)."""
        if self.events is None:
            self.events = fetch_events(self.client)
        return self.events

    def check_healthcheck(self) -> Check:
        try:
            reply = self.client.get("/healthcheck", authenticated=False)
        except FetchError as exc:
            return verdict("healthcheck", False, str(exc))
        self.latency_ms = round(reply.elapsed_ms, 1)
        # A 404 means no Flower under this URL: every other route would say the same.
        self.reachable = reply.status != 404
        if reply.status == 200 and reply.text().strip() == "OK":
            return verdict("healthcheck", True, f"answered OK in {self.latency_ms} ms")
        return verdict("healthcheck", False, f"/healthcheck answered {reply.describe()}")

    def check_api(self) -> Check:
        inspection, error = inspect_workers(self.client)
        if inspection is None:
            return verdict("api", False, error)
        self.inspections.append(inspection)
        return verdict("api", True, f"/api/workers answered with {len(inspection.known)} known workers")

    def check_broker(self) -> Check | None:
        try:
            reply = self.client.get("/api/queues/length")
        except FetchError as exc:
            return verdict("broker", False, f"/api/queues/length: {exc}")
        if reply.status == 404:
            return None  # Flower cannot ask this kind of broker (neither Redis nor RabbitMQ)
        if reply.status in (401, 403):
            return skipped("broker", "Flower refused the credentials (the api check says how)")
        if reply.status == 200:
            # Flower always asks for one queue at least (its workers' queues, else the default one). Redis
            # answers each; on RabbitMQ, Flower answers 200 with no queue when the management API fails.
            try:
                queues = reply.json().get("active_queues")
            except (ValueError, AttributeError):
                queues = None
            if queues:
                names = ", ".join(str(queue.get("name")) for queue in queues)
                return verdict("broker", True, f"Flower's broker answered /api/queues/length: {names}")
            detail = (
                "Flower's broker answered no queue on /api/queues/length (on RabbitMQ: its management API did not"
                " answer Flower; Flower's log says why)"
            )
            return verdict("broker", False, detail)
        detail = f"Flower cannot reach its broker: /api/queues/length answered {reply.describe()}"
        return verdict("broker", False, detail)

    def check_auth(self) -> Check:
        ok, detail = refused_without_credentials(self.client, ("/api/workers", "/workers?json=1"))
        return verdict("auth", ok, detail)

    def check_workers(self) -> Check:
        events = self.worker_events()  # also for the returned workers when this check cannot run
        if not self.inspections:
            return skipped("workers", "the API check failed")
        required = self.params["min_workers"]
        if count_online(merge_workers(events, self.inspections)) < required:
            # A refresh joins the inspection already under way, if any (Flower starts one when it starts, and
            # for other clients), which may have begun before a worker could answer: ask once more.
            inspection, _error = inspect_workers(self.client)
            if inspection is not None:
                self.inspections.append(inspection)
        workers = merge_workers(events, self.inspections)
        online = count_online(workers)
        detail = f"{online} of {required} required workers online"
        stale = sorted(name for name, worker in workers.items() if not worker["online"])
        if stale:
            detail += " (did not answer the broker inspection: " + ", ".join(stale) + ")"
        return verdict("workers", online >= required, detail)

    def check_events(self) -> Check:
        events = self.worker_events()
        if events.reply is None or events.error:
            return verdict("events", False, events.error)
        beats = [beat for row in events.rows for beat in (row.get("heartbeats") or []) if _is_number(beat)]
        limit = self.params["max_event_age"]
        if beats:
            age = max(0.0, events.reply.server_time() - max(beats))
            return verdict("events", age <= limit, f"newest worker heartbeat is {age:.0f} s old (max {limit} s)")
        none_required = self.params["min_workers"] == 0
        stopped = went_offline(events)
        if stopped:
            detail = "no worker online" + (", and none is required: " if none_required else ": ")
            return verdict("events", none_required, detail + self._offline_detail(events.reply, stopped))
        if none_required:
            return verdict("events", True, "no worker has sent a heartbeat, and none is required")
        return verdict("events", False, "Flower has received no worker heartbeat")

    def _offline_detail(self, reply: Reply, stopped: list[str]) -> str:
        detail = ", ".join(stopped) + " went offline"
        seen = last_seen(self.inspections, stopped)
        if seen is not None:
            detail += f", last seen {max(0.0, reply.server_time() - seen):.0f} s ago"
        return detail + " (Flower drops a stopped worker's heartbeats)"

    def check_latency(self) -> Check:
        limit = self.params["max_latency_ms"]
        latency = self.latency_ms if self.latency_ms is not None else float("inf")
        return verdict("latency", latency <= limit, f"/healthcheck took {self.latency_ms} ms (max {limit} ms)")

    def check_tls(self) -> Check | None:
        """Measures tls_days_left for every https URL; judges it only with cert_min_days above 0."""
        params = self.params
        minimum = params["cert_min_days"]
        try:
            self.tls_days_left = tls_days_left(params["url"], params["timeout"], params["unix_socket"])
        except FetchError as exc:
            return verdict("tls", False, str(exc)) if minimum > 0 else None
        if minimum == 0:
            return None
        detail = f"certificate expires in {self.tls_days_left} days (min {minimum})"
        return verdict("tls", self.tls_days_left >= minimum, detail)

    def check_version(self) -> Check:
        expected = self.params["expect_version"]
        versions = sw_versions(self.worker_events())
        online = [name for name, worker in sorted(self.workers.items()) if worker["online"]]
        if not online:
            return verdict("version", False, f"no online worker to compare with {expected}")
        wrong = [
            f"{name} runs {versions.get(name, 'an unknown version')}"
            for name in online
            if not version_matches(versions.get(name, ""), expected)
        ]
        if wrong:
            return verdict("version", False, f"expected Celery {expected}: " + ", ".join(wrong))
        return verdict("version", True, f"{len(online)} online workers run Celery {expected}")


class Step(NamedTuple):
    name: str
    applies: Callable[[dict], bool]  # to these module parameters
    needs_flower: bool  # skipped unless a Flower answered /healthcheck
    check: Callable[[Attempt], Check | None]  # None: nothing to judge, only measured


def _always(params: dict) -> bool:
    return True


# The one list of checks, in the order they run; Attempt.run() runs or skips each from it. tls needs no Flower:
# it reads the certificate from the TLS handshake alone.
PLAN = (
    Step("healthcheck", _always, False, Attempt.check_healthcheck),
    Step("api", _always, True, Attempt.check_api),
    Step("broker", _always, True, Attempt.check_broker),
    Step("auth", lambda params: params["require_auth"], True, Attempt.check_auth),
    Step("workers", _always, True, Attempt.check_workers),
    Step("events", lambda params: params["max_event_age"] > 0, True, Attempt.check_events),
    Step("latency", lambda params: params["max_latency_ms"] is not None, True, Attempt.check_latency),
    Step("tls", lambda params: urlsplit(params["url"]).scheme == "https", False, Attempt.check_tls),
    Step("version", lambda params: bool(params["expect_version"]), True, Attempt.check_version),
)


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
    failed = [f"{check.name}: {check.detail}" for check in attempt.checks if check.status == FAILED]
    not_run = [check.name for check in attempt.checks if check.status == SKIPPED]
    msg = "Flower is unhealthy"
    if attempts > 1:
        msg += f" after {attempts} attempts"
    msg += ": " + "; ".join(failed)
    if not_run:
        msg += f" (not run: {', '.join(not_run)})"
    return msg


def validate(module: AnsibleModule) -> None:
    params = module.params
    problem = url_problem(params["url"])
    if problem:
        module.fail_json(msg=problem)
    for name in ("min_workers", "retries", "delay", "max_event_age", "cert_min_days"):
        if params[name] < 0:
            module.fail_json(msg=f"{name} must not be negative")
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be greater than 0")


def make_client(params: dict) -> FlowerClient:
    return FlowerClient(
        params["url"],
        username=params["username"],
        password=params["password"],
        timeout=params["timeout"],
        ca_path=params["ca_path"],
        validate_certs=params["validate_certs"],
        unix_socket=params["unix_socket"],
        agent="flowerops-flower_health",
    )


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
    client = make_client(module.params)
    attempts = 0
    while True:
        attempts += 1
        attempt = Attempt(client, module.params).run()
        if attempt.healthy or attempts > module.params["retries"]:
            break
        time.sleep(module.params["delay"])
    workers = attempt.workers
    result = dict(
        changed=False,
        healthy=attempt.healthy,
        checks=[check.as_dict() for check in attempt.checks],
        workers_online=count_online(workers),
        workers=workers,
        latency_ms=attempt.latency_ms,
        tls_days_left=attempt.tls_days_left,
        attempts=attempts,
    )
    if attempt.healthy:
        module.exit_json(**result)
    module.fail_json(msg=failure_message(attempt, attempts), **result)


if __name__ == "__main__":
    main()
