"""Tasks sent through the real broker show up in Flower and survive a restart."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import fetch, fetch_json, wait_for, wait_until_healthy
from testlib import main_pid

# Every platform: the prefix one too.
EVERY_PLATFORM = True


def send(host: Any, task: str, args: str = "[]") -> str:
    result = host.run("demo-worker-call %s %s", task, args)
    assert result.rc == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def task_info(host: Any, task_id: str) -> dict[str, Any] | None:
    status, _ = fetch(host, f"/api/task/info/{task_id}")
    return fetch_json(host, f"/api/task/info/{task_id}") if status == 200 else None


def wait_for_state(host: Any, task_id: str, state: str) -> dict[str, Any]:
    info = wait_for(lambda: (i := task_info(host, task_id)) and i.get("state") == state and i, timeout=60)
    assert info, f"task {task_id} never reached {state}: {task_info(host, task_id)}"
    return info


@pytest.fixture(scope="module")
def sent_tasks(healthy_flower: Any) -> dict[str, str]:
    host = healthy_flower
    ids = {"success": send(host, "add", "[2, 3]"), "failure": send(host, "fail", '["boom from the tests"]')}
    wait_for_state(host, ids["success"], "SUCCESS")
    wait_for_state(host, ids["failure"], "FAILURE")
    return ids


def test_successful_task_is_listed(host: Any, sent_tasks: dict[str, str]) -> None:
    tasks = fetch_json(host, "/api/tasks?limit=1000&state=SUCCESS")
    assert sent_tasks["success"] in tasks
    assert tasks[sent_tasks["success"]]["result"] == "5"


def test_failed_task_has_its_traceback(host: Any, sent_tasks: dict[str, str]) -> None:
    info = task_info(host, sent_tasks["failure"])
    assert info and info["state"] == "FAILURE"
    assert "boom from the tests" in info["exception"]
    assert "Traceback" in info["traceback"] and "RuntimeError" in info["traceback"]


def test_tasks_survive_a_restart(host: Any, sent_tasks: dict[str, str]) -> None:
    before = main_pid(host)
    assert host.run("systemctl restart flower").rc == 0
    assert main_pid(host) != before
    wait_until_healthy(host)
    assert task_info(host, sent_tasks["success"])["state"] == "SUCCESS"
    assert task_info(host, sent_tasks["failure"])["state"] == "FAILURE"
