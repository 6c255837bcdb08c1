"""A second Flower on one machine: the prefix platform's cluster c (flower_instance c, an inventory host of its own at
the platform's address), watching the Redis beside the platform's RabbitMQ, next to cluster b's Flower. Its own unit,
socket, directories, database, backups and checklist watcher; one nginx serving /flower (cluster b) and /flower-c
(cluster c), each behind its own logins; each Flower seeing its own cluster's worker alone. Prometheus' labels for
cluster c are test_monitoring.py's (Prometheus runs on the first platform)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import _FETCH, CA_ON_TARGET, DOMAIN, LOGINS, FrontDoor, host_vars, wait_for
from testlib import main_pid

# Collected for the further Flowers of a platform's machine alone (conftest.platform_skip).
FURTHER_INSTANCE = True

# The first Flower of the same machine (cluster b), as molecule.yml sets it.
FIRST_PREFIX = "/flower"
FIRST_ADMIN = (LOGINS["admin"]["name"], LOGINS["admin"]["password"])


def own(host: Any) -> dict[str, Any]:
    """This instance's settings: its name, prefix, logins (molecule.yml host_vars)."""
    settings = host_vars(host)
    logins = {user["role"]: (user["name"], user["password"]) for user in reversed(settings["flower_users"])}
    return {"name": settings["flower_instance"], "prefix": settings["flower_url_prefix"], "logins": logins}


def get(host: Any, prefix: str, path: str, login: tuple[str, str]) -> tuple[int, str]:
    """GET through nginx from the machine's own loopback, by the public name, the certificate verified."""
    cmd = host.run("python3 -c %s %s %s %s %s", _FETCH, f"https://{DOMAIN}{prefix}{path}", *login, CA_ON_TARGET)
    assert cmd.rc == 0, cmd.stderr
    answer = json.loads(cmd.stdout)
    return answer["status"], answer["body"]


def workers(host: Any, prefix: str, login: tuple[str, str]) -> set[str]:
    status, body = get(host, prefix, "/api/workers", login)
    assert status == 200, f"{prefix}/api/workers answered {status}: {body[:300]}"
    return set(json.loads(body))


def test_the_second_flower_runs_as_a_unit_of_its_own(host: Any) -> None:
    name = own(host)["name"]
    unit = host.service(f"flower-{name}")
    assert unit.is_running and unit.is_enabled
    first, second = main_pid(host, "flower"), main_pid(host, f"flower-{name}")
    assert "0" not in (first, second) and first != second
    # Its own settings, virtualenv, socket and database: nothing of the first Flower's.
    start = host.run("systemctl show -p ExecStart --value flower-%s", name).stdout
    assert f"/opt/flower-{name}/venv/bin/celery" in start and f"--conf=/etc/flower-{name}/flowerconfig.py" in start
    config = host.file(f"/etc/flower-{name}/flowerconfig.py").content_string
    assert f'db = "/var/lib/flower-{name}/flower.db"' in config
    assert f'unix_socket = "/run/flower-{name}/flower.sock"' in config
    assert host.socket(f"unix:///run/flower-{name}/flower.sock").is_listening
    # Each records what it deployed in its own facts directory.
    assert (
        json.loads(host.file(f"/etc/ansible/facts.d/{name}/flower.fact").content_string)["url_prefix"]
        == (own(host)["prefix"])
    )
    assert json.loads(host.file("/etc/ansible/facts.d/flower.fact").content_string)["url_prefix"] == FIRST_PREFIX


def test_one_nginx_serves_both_clusters_each_behind_its_own_logins(host: Any, tmp_path: Path) -> None:
    """From the controller, as a client on the network: each prefix lets in its own logins and no other's."""
    mine = own(host)
    root = tmp_path / "root.pem"
    root.write_text(host.file(CA_ON_TARGET).content_string)
    second = FrontDoor(host, root)
    first = FrontDoor(host, root)
    first.prefix = FIRST_PREFIX
    admin, viewer = mine["logins"]["admin"], mine["logins"]["viewer"]
    assert second.request("GET", "/api/workers", *admin)[0] == 200
    assert second.request("GET", "/api/workers", *viewer)[0] == 200
    assert first.request("GET", "/api/workers", *FIRST_ADMIN)[0] == 200
    # Another cluster's login is nobody here, either way round.
    assert second.request("GET", "/api/workers", *FIRST_ADMIN)[0] == 401
    assert first.request("GET", "/api/workers", *admin)[0] == 401
    # The second Flower's viewer reads, and is refused a write (its own tiers, as the first's).
    status, _, body = second.request("POST", "/api/worker/pool/restart/nobody@nowhere", *viewer)
    assert status == 403, body[:200]


def test_each_flower_sees_its_own_cluster_s_worker_alone(host: Any) -> None:
    mine = own(host)
    names = wait_for(lambda: workers(host, mine["prefix"], mine["logins"]["admin"]) or None, timeout=60, interval=2)
    assert names and all(worker.startswith(f"demo-worker-{mine['name']}@") for worker in names), names
    first = workers(host, FIRST_PREFIX, FIRST_ADMIN)
    assert first and not any(worker.startswith(f"demo-worker-{mine['name']}@") for worker in first), first


def test_the_second_flower_is_backed_up_on_its_own(host: Any) -> None:
    name = own(host)["name"]
    timer = host.service(f"flower-backup-{name}.timer")
    assert timer.is_running and timer.is_enabled
    before = host.file("/var/backups/flower/status.json").content_string
    # A task of cluster c, saved by its Flower (it saves when it stops), then its backup run.
    call = host.run("DEMO_WORKER=%s demo-worker-call add '[20, 22]'", name)
    assert call.rc == 0, call.stderr
    task = call.stdout.strip().splitlines()[-1]
    admin = own(host)["logins"]["admin"]
    seen = wait_for(lambda: task in json.loads(get(host, own(host)["prefix"], "/api/tasks", admin)[1]), timeout=60)
    assert seen, f"cluster c's Flower never showed task {task}"
    assert host.run("systemctl restart flower-%s", name).rc == 0
    run = host.run("flower-backup-%s backup", name)
    assert run.rc == 0, run.stdout + run.stderr
    status = json.loads(host.file(f"/var/backups/flower-{name}/status.json").content_string)
    assert status["ok"] and status["verified"], status
    assert status["source"] == f"/var/lib/flower-{name}/flower.db"
    assert status["tasks"] >= 1
    # The first Flower's backups are untouched by it.
    assert host.file("/var/backups/flower/status.json").content_string == before


def test_the_checklist_watcher_passes_the_second_flower(host: Any) -> None:
    """Its own watcher (units and settings), observing its unit, its backups, its logrotate file: every item passes."""
    name = own(host)["name"]
    assert host.service(f"flowerops-checklist-watch-{name}.timer").is_running
    # Observe now rather than wait for the timer.
    assert host.run("systemctl start flowerops-checklist-watch-%s.service", name).rc == 0
    metrics = host.file(f"/var/lib/flowerops-checklist/checklist-{name}.prom").content_string
    items = [line for line in metrics.splitlines() if line.startswith("flowerops_checklist_item_passing{")]
    assert len(items) >= 10, metrics
    failing = [line for line in items if not line.endswith(" 1.0")]
    assert not failing, failing


@pytest.mark.parametrize("role", ["admin"])
def test_the_second_flower_s_pages_work_in_a_browser(host: Any, browser: Any, role: str) -> None:
    mine = own(host)
    name, password = mine["logins"][role]
    context = browser.new_context(http_credentials={"username": name, "password": password}, ignore_https_errors=True)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(f"https://{DOMAIN}{mine['prefix']}/workers", wait_until="networkidle")
        page.wait_for_selector(f"text=demo-worker-{mine['name']}@", timeout=20000)
        assert not errors, errors
    finally:
        context.close()
