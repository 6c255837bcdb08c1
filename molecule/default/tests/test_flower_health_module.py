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


@pytest.fixture
def restores_services(host: Any) -> Iterator[Any]:
    yield host
    for unit in ("redis-server", "demo-worker"):
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


@pytest.fixture
def on_first_platform(host: Any) -> Any:
    """Skips before the fixtures after it are set up (so nothing is stopped or restored on the other platform)."""
    first_platform_only(host)
    return host


def test_reports_a_stopped_broker(on_first_platform: Any, restores_services: Any) -> None:
    # The URL prefix changes none of this (the healthy checks prove the module's URLs under it): 20 s saved.
    host = restores_services
    assert host.run("systemctl stop redis-server").rc == 0
    # Let the last inspection (the fixture's) and the last heartbeat age past
    # the module's limits: it counts a worker online only if it answered this
    # request's inspection, and heartbeats come every 2 s.
    time.sleep(12)
    result = flower_health(host, max_event_age=10)
    assert result["healthy"] is False
    # /healthcheck keeps saying OK with the broker down; the module must not.
    assert "healthcheck" not in failed(result)
    assert {"workers", "events"} <= failed(result), result["msg"]
