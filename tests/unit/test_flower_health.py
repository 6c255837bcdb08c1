"""library/flower_health.py against real servers on 127.0.0.1: a real Flower 2.2 with Redis and a Celery worker, and
small stdlib servers (tests/unit/fakeflower.py) for failures that a real Flower cannot cheaply show."""

from __future__ import annotations

import ast
import json
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import celery
import pytest
from fakeflower import Behaviour, FakeFlowerServer, FakeWorker
from flower_stack import (
    FLOWER_PASSWORD,
    FLOWER_USER,
    MODULE,
    MODULE_UTILS,
    PROJECT,
    VENV_BIN,
    Cert,
    ModuleRun,
    RealFlower,
    Stack,
    fetch_json,
    flower_sees_live_worker,
    free_port,
    module_env,
    redis_answers,
    tls_server,
    wait_for,
)

Run = Callable[..., ModuleRun]
ALL_REAL_CHECKS = ["healthcheck", "api", "broker", "auth", "workers", "events", "latency", "tls", "version"]


def failed_names(run: ModuleRun) -> list[str]:
    """Every check that did not pass: failed or skipped."""
    return [check["name"] for check in run.result["checks"] if not check["ok"]]


def statuses(run: ModuleRun) -> dict[str, str]:
    return {check["name"]: check["status"] for check in run.result["checks"]}


def assert_healthy(run: ModuleRun) -> None:
    assert run.rc == 0, run.result.get("msg")
    assert run.result["healthy"] is True
    assert all(check["ok"] for check in run.result["checks"]), run.result["checks"]
    assert set(statuses(run).values()) == {"ok"}


def assert_unhealthy(run: ModuleRun, *names: str) -> None:
    """The module failed, and its message names every failed check, which are exactly `names`."""
    assert run.rc == 1
    assert run.result["failed"] is True
    assert run.result["healthy"] is False
    assert failed_names(run) == list(names), run.result["checks"]
    for name in names:
        assert f"{name}" in run.result["msg"]
    for key in ("checks", "workers_online", "workers", "latency_ms", "tls_days_left", "attempts"):
        assert key in run.result  # the same values as on success


# --- a real Flower ---------------------------------------------------------------------------------------------


def real_args(flower: RealFlower, **overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "url": flower.url,
        "username": FLOWER_USER,
        "password": FLOWER_PASSWORD,
        "ca_path": str(flower.ca),
        "min_workers": 1,
    }
    args.update(overrides)
    return args


def test_real_flower_is_healthy(real_flower: RealFlower, run_module: Run) -> None:
    sender = celery.Celery(broker=real_flower.stack.broker)
    for number in range(3):
        sender.send_task("tasksapp.add", (number, number))
    sender.close()
    wait_for(
        "Flower counting the processed tasks",
        lambda: any(
            (row.get("processed") or 0) >= 3  # Flower says null until the worker's first task
            for row in fetch_json(
                real_flower.url + "/workers?json=1",
                (FLOWER_USER, FLOWER_PASSWORD),
                ssl.create_default_context(cafile=str(real_flower.ca)),
            )["data"]
        ),
        timeout=20,
    )

    run = run_module(**real_args(real_flower, max_latency_ms=2000, expect_version=celery.__version__, max_event_age=10))

    assert_healthy(run)
    assert [check["name"] for check in run.result["checks"]] == ALL_REAL_CHECKS
    assert run.result["workers_online"] == 1
    assert run.result["workers"] == {"w1@flowerops-test": {"online": True, "active": 0, "processed": 3}}
    assert 0 < run.result["latency_ms"] < 2000
    assert run.result["tls_days_left"] in (88, 89)  # made valid for 90 days
    assert run.result["attempts"] == 1
    assert FLOWER_PASSWORD not in run.stdout  # no_log


def test_check_mode_reports_the_same(real_flower: RealFlower, run_module: Run) -> None:
    run = run_module(_ansible_check_mode=True, **real_args(real_flower))

    assert_healthy(run)
    assert run.result["workers_online"] == 1


def test_wrong_password_is_named(real_flower: RealFlower, run_module: Run) -> None:
    run = run_module(**real_args(real_flower, password="not-the-Pw-42"))

    assert_unhealthy(run, "api", "broker", "workers", "events")
    assert "wrong username or password" in run.checks["api"]["detail"]
    assert run.checks["auth"]["ok"]  # anonymous requests are still refused
    assert "not-the-Pw-42" not in run.stdout  # no_log


def test_missing_credentials_are_named(real_flower: RealFlower, run_module: Run) -> None:
    run = run_module(url=real_flower.url, ca_path=str(real_flower.ca))

    assert_unhealthy(run, "api", "broker", "workers", "events")
    assert "set username and password" in run.result["msg"]


def test_url_without_the_prefix_is_404(real_flower: RealFlower, run_module: Run) -> None:
    run = run_module(**real_args(real_flower, url=real_flower.url.removesuffix("/flower")))

    assert_unhealthy(run, "healthcheck", "api", "broker", "auth", "workers", "events")
    assert "url_prefix" in run.checks["healthcheck"]["detail"]
    assert statuses(run) == {
        "healthcheck": "failed", "api": "skipped", "broker": "skipped", "auth": "skipped", "workers": "skipped",
        "events": "skipped",
        "tls": "ok",
    }  # fmt: skip


def test_untrusted_certificate_is_a_clear_error(real_flower: RealFlower, run_module: Run) -> None:
    run = run_module(**real_args(real_flower, ca_path=None))

    assert_unhealthy(run, "healthcheck", "api", "broker", "auth", "workers", "events")
    assert "TLS certificate verification failed: self-signed certificate" in run.result["msg"]
    assert run.result["tls_days_left"] in (88, 89)  # read even from an untrusted certificate


def test_too_few_workers_after_retries(real_flower: RealFlower, run_module: Run) -> None:
    run = run_module(**real_args(real_flower, min_workers=2, retries=1, delay=0.2))

    assert_unhealthy(run, "workers")
    assert run.checks["workers"]["detail"] == "1 of 2 required workers online"
    assert run.result["attempts"] == 2
    assert "after 2 attempts" in run.result["msg"]


def test_wrong_celery_version(real_flower: RealFlower, run_module: Run) -> None:
    run = run_module(**real_args(real_flower, expect_version="4"))

    assert_unhealthy(run, "version")
    assert f"w1@flowerops-test runs {celery.__version__}" in run.result["msg"]


def test_unix_socket(real_flower: RealFlower, run_module: Run) -> None:
    run = run_module(url="http://localhost", unix_socket=real_flower.socket, require_auth=False, min_workers=1)

    assert_healthy(run)
    assert run.result["workers_online"] == 1
    assert run.result["tls_days_left"] is None


def test_unauthenticated_api_fails_require_auth(real_flower: RealFlower, run_module: Run) -> None:
    run = run_module(url="http://localhost", unix_socket=real_flower.socket)

    assert_unhealthy(run, "auth")
    assert "authentication is not enforced" in run.checks["auth"]["detail"]


PRIVATE_AUTH = ("ops-user", "ops-Pw-7")  # no_log masks the password wherever it appears: keep it distinctive


def start_private_flower(stack: Stack) -> str:
    """Redis, a worker and Flower (plain HTTP, basic auth PRIVATE_AUTH) in `stack`; Flower's URL once it sees the
    worker's heartbeats."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stack.start_redis()
    stack.start_worker()
    stack.start_flower("flower", ["--address=127.0.0.1", f"--port={port}", "--basic_auth=" + ":".join(PRIVATE_AUTH)])
    wait_for(
        "Flower seeing the worker",
        lambda: flower_sees_live_worker(lambda: fetch_json(url + "/workers?json=1", PRIVATE_AUTH)),
        logs=stack.directory,
    )
    return url


def private_args(url: str, **overrides: object) -> dict[str, object]:
    return {"url": url, "username": PRIVATE_AUTH[0], "password": PRIVATE_AUTH[1], "timeout": 20, **overrides}


def test_broker_down_shows_although_healthcheck_says_ok(private_stack: Stack, run_module: Run) -> None:
    args = private_args(start_private_flower(private_stack), max_event_age=3)
    assert_healthy(run_module(**args))

    private_stack.stop("redis")
    wait_for("redis to stop", lambda: not redis_answers(private_stack.redis_port), timeout=10)
    time.sleep(4)  # longer than max_event_age since the last heartbeat Flower could receive
    run = run_module(**args)

    assert_unhealthy(run, "broker", "workers", "events")
    assert "broker: Flower cannot reach its broker: /api/queues/length answered HTTP 500" in run.result["msg"]
    assert run.checks["healthcheck"]["ok"]  # Flower's own /healthcheck cannot tell
    assert run.checks["api"]["ok"]  # Flower answers /api/workers from its cache...
    assert run.result["workers"]["w1@flowerops-test"]["online"] is False  # ...but the worker did not answer
    assert run.result["workers_online"] == 0


def flower_got_worker_offline(url: str) -> bool:
    rows = fetch_json(url + "/workers?json=1", PRIVATE_AUTH)["data"]  # type: ignore[index]
    return any(row.get("worker-offline") for row in rows)


def test_clean_worker_stop_says_no_worker_online(private_stack: Stack, run_module: Run) -> None:
    # A worker that stops cleanly sends worker-offline, and Flower (Celery's events State) then empties that
    # worker's heartbeats: Flower did receive heartbeats, up to a moment ago.
    url = start_private_flower(private_stack)
    assert_healthy(run_module(**private_args(url, max_event_age=10)))  # the worker answers an inspection now

    private_stack.stop("worker")  # SIGTERM: a warm shutdown, which sends worker-offline
    wait_for("Flower to receive worker-offline", lambda: flower_got_worker_offline(url), timeout=10)
    # Past the 2 s the workers check allows a cached inspection (the healthy run's), counted on Flower's Date
    # header, which has whole seconds: 2 s here passed for 1.x s there, and the worker still counted online.
    time.sleep(3.5)
    run = run_module(**private_args(url, max_event_age=10))

    assert_unhealthy(run, "workers", "events")
    detail = run.checks["events"]["detail"]
    assert "received no worker heartbeat" not in detail
    found = re.fullmatch(r"no worker online: w1@flowerops-test went offline, last seen (\d+) s ago \(.+\)", detail)
    assert found, detail
    assert int(found.group(1)) <= 10  # the healthy run's inspection, a few seconds before

    run = run_module(**private_args(url, max_event_age=10, min_workers=0))

    assert_healthy(run)
    assert run.checks["events"]["detail"].startswith("no worker online, and none is required: w1@flowerops-test went")


# --- stdlib servers that answer like Flower -----------------------------------------------------------------------


def fake_args(server: FakeFlowerServer, **overrides: object) -> dict[str, object]:
    args: dict[str, object] = {"url": server.url, "username": "admin", "password": "s3cret"}
    args.update(overrides)
    return args


def test_fake_flower_under_a_prefix_is_healthy(run_module: Run) -> None:
    with FakeFlowerServer(Behaviour(prefix="/flower")) as server:
        run = run_module(**fake_args(server))

    assert_healthy(run)
    assert [check["name"] for check in run.result["checks"]] == ["healthcheck", "api", "auth", "workers", "events"]
    assert run.result["workers"] == {"celery@fake": {"online": True, "active": 0, "processed": 7}}


@pytest.mark.parametrize("queues", [[], [{"name": "celery", "messages": 3}]])
def test_a_queue_list_with_no_queue_fails_the_broker_check(run_module: Run, queues: list[dict[str, object]]) -> None:
    """Flower 2.2 on RabbitMQ answers /api/queues/length with 200 and no queue when the management API fails
    (read in its utils/broker.py: the error is logged, [] returned), though it always asks for one queue at
    least; the default scenario's RabbitMQ host shows it live (test_flower_health_module.py)."""
    with FakeFlowerServer(Behaviour(queues=queues)) as server:
        run = run_module(**fake_args(server))

    if queues:
        assert_healthy(run)
        assert run.checks["broker"]["detail"] == "Flower's broker answered /api/queues/length: celery"
    else:
        assert_unhealthy(run, "broker")
        assert "broker: Flower's broker answered no queue on /api/queues/length" in run.result["msg"]


def test_dead_broker_and_stale_events_are_both_named(run_module: Run) -> None:
    stale = {"celery@a": FakeWorker(inspected_ago=300, heartbeat_ago=300), "celery@b": FakeWorker(600, None)}
    with FakeFlowerServer(Behaviour(workers=stale)) as server:
        run = run_module(**fake_args(server, min_workers=2))

    assert_unhealthy(run, "workers", "events")
    assert "workers: 0 of 2 required workers online" in run.result["msg"]
    assert "did not answer the broker inspection: celery@a, celery@b" in run.result["msg"]
    # Flower's clock comes from the Date header, whole seconds
    assert re.search(r"events: newest worker heartbeat is (299|300) s old \(max 60 s\)", run.result["msg"])


def test_blind_flower_fails_only_events(run_module: Run) -> None:
    # Measured on Flower 2.2: after a broker outage, workers answer the inspection again while Flower's event
    # stream waits out its reconnect back-off (128 s after a 2.5 min outage).
    blind = {"celery@a": FakeWorker(inspected_ago=0, heartbeat_ago=150)}
    with FakeFlowerServer(Behaviour(workers=blind)) as server:
        run = run_module(**fake_args(server))

    assert_unhealthy(run, "events")
    assert run.result["workers_online"] == 1


def test_workers_stopped_cleanly_are_named_with_when_last_seen(run_module: Run) -> None:
    stopped = {"celery@a": FakeWorker(inspected_ago=30, offline=True), "celery@b": FakeWorker(90, offline=True)}
    with FakeFlowerServer(Behaviour(workers=stopped)) as server:
        run = run_module(**fake_args(server, min_workers=0))

    assert_healthy(run)
    assert re.fullmatch(
        r"no worker online, and none is required: celery@a, celery@b went offline, last seen (29|30) s ago \(.+\)",
        run.checks["events"]["detail"],
    ), run.checks["events"]["detail"]


def test_worker_that_never_sent_a_heartbeat(run_module: Run) -> None:
    # Online (it answers the inspection) but Flower got no heartbeat from it: events are not flowing.
    with FakeFlowerServer(Behaviour(workers={"celery@a": FakeWorker(heartbeat_ago=None)})) as server:
        run = run_module(**fake_args(server))

    assert_unhealthy(run, "events")
    assert run.checks["events"]["detail"] == "Flower has received no worker heartbeat"


def test_no_workers_needed_and_none_seen(run_module: Run) -> None:
    with FakeFlowerServer(Behaviour(workers={})) as server:
        run = run_module(**fake_args(server, min_workers=0))

    assert_healthy(run)
    assert run.result["workers"] == {}


def test_http_500_from_the_api(run_module: Run) -> None:
    with FakeFlowerServer(Behaviour(api_status=500)) as server:
        run = run_module(**fake_args(server))

    assert_unhealthy(run, "api", "workers")
    assert run.checks["api"]["detail"] == "/api/workers answered HTTP 500"
    assert run.checks["workers"] == {
        "name": "workers", "status": "skipped", "ok": False, "detail": "not run: the API check failed"
    }  # fmt: skip
    assert statuses(run)["events"] == "ok"  # needs no API
    assert run.result["msg"] == "Flower is unhealthy: api: /api/workers answered HTTP 500 (not run: workers)"
    assert run.result["workers"] == {"celery@fake": {"online": False, "active": 0, "processed": 7}}


def test_slow_flower_fails_latency(run_module: Run) -> None:
    with FakeFlowerServer(Behaviour(healthcheck_delay=0.3)) as server:
        run = run_module(**fake_args(server, max_latency_ms=100))

    assert_unhealthy(run, "latency")
    assert run.result["latency_ms"] >= 300


def test_timeout_is_a_clear_error(run_module: Run) -> None:
    with FakeFlowerServer(Behaviour(healthcheck_delay=30)) as server:
        run = run_module(**fake_args(server, timeout=1))

    assert_unhealthy(run, "healthcheck", "api", "broker", "auth", "workers", "events")
    assert f"GET {server.url}/healthcheck: timed out after 1 s" in run.result["msg"]
    assert run.result["latency_ms"] is None
    assert run.seconds < 10


def test_open_api_fails_auth(run_module: Run) -> None:
    with FakeFlowerServer(Behaviour(anonymous_allowed=True)) as server:
        run = run_module(**fake_args(server))

    assert_unhealthy(run, "auth")
    detail = run.checks["auth"]["detail"]
    assert "/api/workers answered HTTP 200 without credentials: authentication is not enforced" in detail
    assert "/workers?json=1 answered HTTP 200" in detail


def test_require_auth_false_skips_the_probe(run_module: Run) -> None:
    with FakeFlowerServer(Behaviour(anonymous_allowed=True)) as server:
        run = run_module(**fake_args(server, require_auth=False))

    assert_healthy(run)
    assert "auth" not in run.checks


def test_connection_refused(run_module: Run) -> None:
    port = free_port()  # nothing listens there any more
    run = run_module(url=f"http://127.0.0.1:{port}", username="admin", password="x", max_latency_ms=5)

    assert_unhealthy(run, "healthcheck", "api", "broker", "auth", "workers", "events", "latency")
    assert statuses(run) == {
        "healthcheck": "failed", "api": "skipped", "broker": "skipped", "auth": "skipped", "workers": "skipped",
        "events": "skipped",
        "latency": "skipped",
    }  # fmt: skip
    assert all(check["detail"] == "not run: no Flower answered /healthcheck" for check in run.result["checks"][1:])
    assert run.result["msg"] == (
        f"Flower is unhealthy: healthcheck: GET http://127.0.0.1:{port}/healthcheck: connection refused"
        " (not run: api, broker, auth, workers, events, latency)"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:5555", "url must be an absolute http:// or https:// URL, got '127.0.0.1:5555'"),
        ("ftp://127.0.0.1/", "url must be an absolute http:// or https:// URL"),
        ("http://127.0.0.1:99999", "url has an invalid port"),
        ("http:///healthcheck", "url must be an absolute http:// or https:// URL"),
    ],
)
def test_bad_url(run_module: Run, url: str, message: str) -> None:
    run = run_module(url=url)

    assert run.rc == 1
    assert message in run.result["msg"]


def test_missing_unix_socket(run_module: Run, tmp_path: Path) -> None:
    run = run_module(url="http://localhost", unix_socket=str(tmp_path / "nothing.sock"))

    assert_unhealthy(run, "healthcheck", "api", "broker", "auth", "workers", "events")
    assert "nothing.sock" in run.checks["healthcheck"]["detail"]


def test_password_without_username_is_refused(run_module: Run) -> None:
    run = run_module(url="http://127.0.0.1:1", password="x")

    assert run.rc == 1
    assert "parameters are required together: username, password" in run.result["msg"]


# --- TLS -----------------------------------------------------------------------------------------------------------


def test_certificate_close_to_expiry(make_cert: Callable[..., Cert], run_module: Run) -> None:
    cert = make_cert("soon", days=5.5)
    with tls_server(cert) as server:
        run = run_module(**fake_args(server, ca_path=str(cert.cert)))

    assert_unhealthy(run, "tls")
    assert run.checks["tls"]["detail"] == "certificate expires in 5 days (min 14)"
    assert run.result["tls_days_left"] == 5


def test_expired_certificate_without_validation(make_cert: Callable[..., Cert], run_module: Run) -> None:
    cert = make_cert("expired", days=-2.5)
    with tls_server(cert) as server:
        run = run_module(**fake_args(server, validate_certs=False))

    assert_unhealthy(run, "tls")
    assert run.result["tls_days_left"] == -3


def test_expired_certificate_with_validation(make_cert: Callable[..., Cert], run_module: Run) -> None:
    cert = make_cert("expired2", days=-1)
    with tls_server(cert) as server:
        run = run_module(**fake_args(server, ca_path=str(cert.cert), cert_min_days=0))

    assert_unhealthy(run, "healthcheck", "api", "broker", "auth", "workers", "events")
    assert "TLS certificate verification failed: certificate has expired" in run.result["msg"]


def test_wrong_host_name(make_cert: Callable[..., Cert], run_module: Run) -> None:
    cert = make_cert("other", days=60, names=("flower.example.invalid",))
    with tls_server(cert) as server:
        run = run_module(**fake_args(server, ca_path=str(cert.cert)))

    assert_unhealthy(run, "healthcheck", "api", "broker", "auth", "workers", "events")
    assert "TLS certificate verification failed: IP address mismatch" in run.checks["healthcheck"]["detail"]


def test_self_signed_accepted_without_validation(make_cert: Callable[..., Cert], run_module: Run) -> None:
    cert = make_cert("selfsigned", days=30.5)
    with tls_server(cert) as server:
        run = run_module(**fake_args(server, validate_certs=False, cert_min_days=30))

    assert_healthy(run)
    assert run.checks["tls"]["detail"] == "certificate expires in 30 days (min 30)"


def test_plain_http_to_a_tls_port(make_cert: Callable[..., Cert], run_module: Run) -> None:
    with tls_server(make_cert("plain", days=60)) as server:
        run = run_module(**fake_args(server, url=server.url.replace("https://", "http://")))

    assert run.rc == 1
    assert run.checks["healthcheck"]["ok"] is False


# --- the module's own constraints ------------------------------------------------------------------------------


def test_ansible_runs_the_module_with_its_module_utils() -> None:
    # The other tests run the module through module_runner.py; here Ansible itself builds the module's payload,
    # finding library/ and module_utils/ through the project's ansible.cfg alone.
    env = {key: value for key, value in module_env().items() if not key.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    with FakeFlowerServer(Behaviour()) as server:
        proc = subprocess.run(
            [str(VENV_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
             "-e", f"ansible_python_interpreter={sys.executable}",
             "-m", "flower_health", "-a", json.dumps(fake_args(server))],
            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "localhost | SUCCESS => " in proc.stdout, proc.stdout
    result = json.loads(proc.stdout.split(" => ", 1)[1])
    assert result["healthy"] is True
    assert [check["status"] for check in result["checks"]] == ["ok"] * 5


CODE_FOR_TARGETS = [MODULE, *sorted(MODULE_UTILS.glob("*.py"))]


@pytest.mark.parametrize("path", CODE_FOR_TARGETS, ids=lambda path: path.name)
def test_parses_as_python_3_8(path: Path) -> None:
    # ansible-core 2.19 runs modules on Python 3.8 and later; scripts/sanity.sh compiles them with each found.
    ast.parse(path.read_text(), feature_version=(3, 8))


@pytest.mark.parametrize("path", CODE_FOR_TARGETS, ids=lambda path: path.name)
def test_imports_only_stdlib_and_module_utils(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    # cryptography reads the certificate's expiry (every managed host has it: ansible-core needs it);
    # test_flower_probe.py proves its import is guarded and the only one beyond the standard library.
    allowed = {*sys.stdlib_module_names, "ansible", *({"cryptography"} if path.name == "flower_probe.py" else set())}
    assert imported <= allowed, imported - allowed
    ansible_imports = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module.startswith("ansible")
    }
    assert all(name.startswith("ansible.module_utils.") for name in ansible_imports)
