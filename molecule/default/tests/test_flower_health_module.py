"""The flower_health module on the converged host: healthy, then unhealthy for
the right reason when the worker stops and when the broker stops."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    CA_ON_TARGET,
    FINGERPRINT,
    PASSWORD,
    PLATFORM_GROUPS,
    USER,
    base_url,
    first_platform_only,
    wait_for,
    wait_until_healthy,
)
from testinfra.modules.ansible import AnsibleException

# Every platform: the prefix one too.
EVERY_PLATFORM = True


def flower_health(host: Any, **options: Any) -> dict[str, Any]:
    args = {
        "url": base_url(host),
        "ca_path": CA_ON_TARGET,
        "username": USER,
        "password": PASSWORD,
        "timeout": 15,
        **options,
    }
    try:
        return host.ansible("flower_health", json.dumps(args), check=False)
    except AnsibleException as failure:
        return failure.result


def failed(result: dict[str, Any]) -> set[str]:
    return {check["name"] for check in result["checks"] if not check["ok"]}


def broker_unit(host: Any) -> str:
    """The broker this platform's Flower watches: RabbitMQ where the demo_rabbitmq fixture runs, else Redis."""
    return "rabbitmq-server" if "demo_rabbitmq" in PLATFORM_GROUPS[host.backend.get_hostname()] else "redis-server"


@pytest.fixture
def restores_services(host: Any) -> Iterator[Any]:
    yield host
    for unit in (broker_unit(host), "demo-worker"):
        host.run("systemctl start %s", unit)
    # Flower's reconnect back-off grows without a cap: restart it so that later
    # tests do not wait for it to notice the broker is back.
    host.run("systemctl restart flower")
    wait_until_healthy(host)
    assert wait_for(lambda: flower_health(host).get("healthy"), timeout=90), "Flower did not recover"


def test_reports_healthy_on_the_converged_host(host: Any) -> None:
    before = host.run(FINGERPRINT).stdout
    result = flower_health(host, retries=6, delay=5)
    assert result["healthy"] is True, result.get("msg")
    assert host.run(FINGERPRINT).stdout == before, "the health check changed the host"
    assert failed(result) == set()
    assert {"healthcheck", "api", "auth", "workers", "events", "tls"} <= {c["name"] for c in result["checks"]}
    assert result["workers_online"] >= 1
    assert all(w["online"] for w in result["workers"].values())
    assert PASSWORD not in json.dumps(result)


def test_wrong_password_is_a_clear_failure(host: Any) -> None:
    result = flower_health(host, password="not-the-password")
    assert result["healthy"] is False
    assert "api" in failed(result)
    assert "Traceback" not in result["msg"]


def test_reports_a_stopped_worker(restores_services: Any) -> None:
    host = restores_services
    first_platform_only(host)  # the prefix platform's URLs are covered by the two tests above
    assert host.run("systemctl stop demo-worker").rc == 0
    result = flower_health(host)
    assert result["healthy"] is False
    assert "workers" in failed(result), result["msg"]
    assert "workers" in result["msg"]
    assert result["workers_online"] == 0


def test_reports_a_stopped_broker(restores_services: Any) -> None:
    """Redis on the first platform; RabbitMQ on the prefix one, where Flower answers /api/queues/length with 200
    and no queue while the broker (its management API) is down: the broker check must fail on both."""
    host = restores_services
    assert host.run("systemctl stop %s", broker_unit(host)).rc == 0
    # Let the last inspection (the fixture's) and the last heartbeat age past
    # the module's limits: it counts a worker online only if it answered this
    # request's inspection, and heartbeats come every 2 s: the newest is 6 s
    # old or more, over the 4 s allowed here.
    time.sleep(6)
    result = flower_health(host, max_event_age=4)
    assert result["healthy"] is False
    # /healthcheck keeps saying OK with the broker down; the module must not.
    assert "healthcheck" not in failed(result)
    assert {"broker", "workers", "events"} <= failed(result), result["msg"]
