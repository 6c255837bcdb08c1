"""The production checklist (playbooks/checklist.yml) on the converged hosts: all 16 items pass on both platforms
(the prefix one observed by the first platform's Prometheus), read-only and the same under --check; after
deliberate damage it fails exactly the damaged items, naming what it saw."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FINGERPRINT,
    GROUP_VARS,
    INSTANCE,
    PREFIX_INSTANCE,
    SECRETS,
    fetch,
    first_platform_only,
    run_playbook,
    wait_for,
    wait_until_healthy,
)

EVERY_PLATFORM = True
# Both platforms in one audit run: the first is the monitoring host items 9 and 10 look at.
BOTH = [INSTANCE, PREFIX_INSTANCE]

SITE = "/etc/nginx/sites-available/flower.conf"
HEADERS = "/etc/nginx/snippets/flower-headers.conf"


def audit(
    tmp_path: Path, *args: str, group_vars: dict[str, Any] | None = None, name: str = INSTANCE
) -> tuple[Any, dict]:
    reports = tmp_path / "reports"
    extra = ("-e", f"flower_checklist_report_dir={reports}", *args)
    hosts = BOTH if name != INSTANCE else [INSTANCE]
    run = run_playbook(tmp_path, group_vars or GROUP_VARS, "playbooks/checklist.yml", *extra, hosts=hosts)
    report_file = reports / f"{name}.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return run, report


def statuses(report: dict) -> dict[int, str]:
    return {item["id"]: item["status"] for item in report["items"]}


@pytest.fixture(scope="module")
def backed_up(host: Any) -> None:
    """The role takes a first backup at deploy; take one if the host still has no status of a run."""
    if not host.file("/var/backups/flower/status.json").exists:
        assert host.run("systemctl start flower-backup.service").rc == 0


def test_converged_host_passes_all_16_items(host: Any, tmp_path: Path, backed_up: None) -> None:
    name = host.backend.get_hostname()
    before = host.run(FINGERPRINT).stdout
    run, report = audit(tmp_path, name=name)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert statuses(report) == {number: "PASS" for number in range(1, 17)}, json.dumps(report, indent=1)
    assert "16 passed, 0 failed, 0 waived" in output
    # Every item's evidence is on the console table, and no secret is.
    for item in report["items"]:
        assert item["evidence"] and item["name"] in output
    for secret in SECRETS:
        assert secret not in output
    suite = ET.parse(tmp_path / "reports" / f"{name}.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "16" and suite.get("failures") == "0"
    assert host.run(FINGERPRINT).stdout == before, "the audit changed the host"


def test_check_mode_runs_the_same_and_changes_nothing(host: Any, tmp_path: Path, backed_up: None) -> None:
    name = host.backend.get_hostname()
    before = host.run(FINGERPRINT).stdout
    run, report = audit(tmp_path, "--check", name=name)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert report["check_mode"] is True and set(statuses(report).values()) == {"PASS"}
    assert host.run(FINGERPRINT).stdout == before, "the audit in check mode changed the host"


@pytest.fixture
def damaged(host: Any) -> Iterator[None]:
    """Firewall off, backup timer stopped, a header removed, nginx's logins off; all put back afterwards."""
    first_platform_only(host)
    files = (SITE, HEADERS)
    for path in files:
        assert host.run(f"cp -a {path} {path}.checklist-test").rc == 0
    try:
        assert host.run("ufw --force disable").rc == 0
        assert host.run("systemctl stop flower-backup.timer").rc == 0
        assert host.run(f"sed -i '/X-Frame-Options/d' {HEADERS}").rc == 0
        assert host.run(f"sed -i 's/auth_basic \"Flower\";/auth_basic off;/' {SITE}").rc == 0
        assert host.run("nginx -t && systemctl reload nginx").rc == 0
        yield
    finally:
        for path in files:
            host.run(f"mv {path}.checklist-test {path}")
        host.run("nginx -t && systemctl reload nginx")
        host.run("ufw --force enable")
        host.run("systemctl start flower-backup.timer")
        wait_until_healthy(host)


def test_damage_fails_exactly_the_damaged_items(host: Any, tmp_path: Path, backed_up: None, damaged: None) -> None:
    # nginx applies a reload in its new workers: wait until logins are really off.
    assert wait_for(lambda: fetch(host, "/api/workers", auth=False)[0] == 200), "nginx still asks for a login"
    run, report = audit(tmp_path / "damaged")
    output = run.stdout + run.stderr
    assert run.returncode != 0 and "fails the production checklist" in output
    assert report["failed_items"] == [1, 4, 11, 13], json.dumps(report, indent=1)
    evidence = {item["id"]: item["evidence"] for item in report["items"]}
    assert "authentication is not enforced" in evidence[1]
    assert "ufw is not active" in evidence[4]
    assert "flower-backup.timer is inactive" in evidence[11]
    assert "lacks X-Frame-Options" in evidence[13]
    junit = ET.parse(tmp_path / "damaged" / "reports" / f"{INSTANCE}.xml")
    failures = {case.get("name", "")[:2] for case in junit.iter("testcase") if case.find("failure") is not None}
    assert failures == {"01", "04", "11", "13"}

    # A waiver turns a failed item into WAIVED with its reason; the others still fail the run.
    waived = {**GROUP_VARS, "flower_checklist_waivers": {"11": "backups move to the new NAS today (OPS-7)"}}
    run, report = audit(tmp_path / "waived", group_vars=waived)
    assert run.returncode != 0 and report["failed_items"] == [1, 4, 13]
    item = next(item for item in report["items"] if item["id"] == 11)
    assert item["status"] == "WAIVED" and item["waiver"] == "backups move to the new NAS today (OPS-7)"
    assert "flower-backup.timer is inactive" in item["evidence"]


def test_a_waiver_without_a_reason_is_refused(host: Any, tmp_path: Path) -> None:
    first_platform_only(host)
    run, _report = audit(tmp_path, group_vars={**GROUP_VARS, "flower_checklist_waivers": {"4": " "}})
    assert run.returncode != 0
    assert "flower_checklist_waivers: 4 must be a checklist item (1 to 16) with a reason" in run.stdout + run.stderr
