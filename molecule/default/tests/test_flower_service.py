"""Flower runs as a hardened, resource-limited service on loopback only."""

from __future__ import annotations

import json
import re
from typing import Any

from conftest import ACCOUNT, FLOWER, fetch, fetch_json, service_diagnostics, wait_for
from testlib import main_pid

# Every platform: the prefix one too.
EVERY_PLATFORM = True

LOG = f"{ACCOUNT['flower_account_log_dir']}/flower.log"
SIZES = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def to_bytes(size: str) -> int:
    return int(size[:-1]) * SIZES[size[-1]] if size[-1] in SIZES else int(size)


def show(host: Any, prop: str) -> str:
    return host.run("systemctl show -p %s --value flower.service", prop).stdout.strip()


def test_flower_enabled_and_active(host: Any) -> None:
    service = host.service("flower")
    assert service.is_enabled
    assert service.is_running, service_diagnostics(host, "flower", LOG)


def to_usec(timespan: str) -> int:
    """systemd prints CPUQuotaPerSecUSec as e.g. "1s" or "500ms"."""
    value, unit = re.fullmatch(r"([0-9.]+)(s|ms|us)", timespan).groups()
    return round(float(value) * {"s": 1_000_000, "ms": 1_000, "us": 1}[unit])


def test_limits_match_the_variables(host: Any) -> None:
    assert int(show(host, "MemoryMax")) == to_bytes(FLOWER["flower_memory_max"])
    assert int(show(host, "MemoryHigh")) == to_bytes(FLOWER["flower_memory_high"])
    # CPUQuota=100% is one second of CPU time per second.
    assert to_usec(show(host, "CPUQuotaPerSecUSec")) == int(FLOWER["flower_cpu_quota"].rstrip("%")) * 10_000


def test_runs_as_the_service_user_without_reload(host: Any) -> None:
    assert show(host, "User") == ACCOUNT["flower_account_user"]
    assert show(host, "ExecReload") == "", "a reload would send SIGHUP, which exits without saving"
    assert show(host, "KillSignal") == "15"
    assert show(host, "Restart") == "on-failure"
    assert show(host, "UMask") == "0077"


def test_unit_file_verifies(host: Any) -> None:
    result = host.run("systemd-analyze verify /etc/systemd/system/flower.service")
    assert result.rc == 0, result.stderr


def test_security_exposure_is_safe(host: Any) -> None:
    """systemd's best level (the README says so): a loosened sandbox setting drops it to OK or worse."""
    result = host.run("systemd-analyze security --no-pager flower.service")
    match = re.search(r"Overall exposure level for flower\.service: ([0-9.]+) (\w+)", result.stdout)
    assert match, result.stdout[-500:]
    assert match.group(2) == "SAFE", result.stdout[-2000:]


def test_listens_on_its_unix_socket_only(host: Any) -> None:
    socket_path = FLOWER["flower_unix_socket"]
    assert host.socket(f"unix://{socket_path}").is_listening, "Flower does not listen on its socket"
    pid = main_pid(host)
    tcp = host.run("ss -Hltnp").stdout
    assert f"pid={pid}," not in tcp, f"Flower listens on TCP too:\n{tcp}"


def test_healthcheck_answers_ok(host: Any) -> None:
    assert fetch(host, "/healthcheck", auth=False) == (200, "OK")


def test_api_refuses_requests_without_credentials(host: Any) -> None:
    assert fetch(host, "/api/workers", auth=False)[0] == 401
    status, _ = fetch(host, "/", auth=False)
    assert status == 401


def test_sample_worker_is_online(host: Any) -> None:
    worker = f"demo-worker@{host.backend.get_hostname()}"

    def online() -> bool:
        return worker in fetch_json(host, "/api/workers?refresh=1")

    assert wait_for(online, timeout=60), service_diagnostics(host, "demo-worker")
    dashboard = fetch_json(host, "/workers?json=1")
    statuses = {w["hostname"]: w["status"] for w in dashboard["data"]}
    assert statuses.get(worker) is True, json.dumps(dashboard)[:500]


def test_database_is_private(host: Any) -> None:
    db = host.file(FLOWER["flower_db"].replace("{{ flower_account_data_dir }}", ACCOUNT["flower_account_data_dir"]))
    assert wait_for(lambda: db.exists, timeout=90), "Flower has not saved its state yet"
    assert (db.user, db.mode) == (ACCOUNT["flower_account_user"], 0o600)
