"""The production checklist (playbooks/checklist.yml) on the converged hosts: all 16 items pass on both platforms
(the prefix one observed by the first platform's Prometheus), read-only and the same under --check; after
deliberate damage it fails exactly the damaged items, naming what it saw."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import (
    FINGERPRINT,
    GROUP_VARS,
    INSTANCE,
    PREFIX_INSTANCE,
    SECRETS,
    fetch,
    first_platform_only,
    prometheus,
    run_playbook,
    wait_for,
    wait_until_healthy,
)

EVERY_PLATFORM = True
# Both platforms in one audit run: the first is the monitoring host items 9 and 10 look at.
BOTH = [INSTANCE, PREFIX_INSTANCE]

SITE = "/etc/nginx/sites-available/flower.conf"
# The first Flower's part of that server: its upstream, and its locations (flower_proxy's README).
UPSTREAMS = "/etc/nginx/flowerops/flower.http.conf"
LOCATIONS = "/etc/nginx/flowerops/flower.locations.conf"
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


FLOWER_CONF = "/etc/flower/flowerconfig.py"
FLOWER_UNIT = "/etc/systemd/system/flower.service"
PROMETHEUS = "/etc/prometheus/prometheus.yml"
RULES = "/etc/prometheus/rules/flower.yml"
HTPASSWD = "/etc/nginx/flower.htpasswd"
RUNBOOK = "/usr/local/share/doc/flowerops/runbook.md"


class Damage(NamedTuple):
    """Something an operator or a fault does to the live host, the one item it must fail, and what that item's
    evidence must then say."""

    item: int
    evidence: str
    commands: tuple[str, ...]


# Three rounds, applied one on top of the other; within a round every damage aims at another item, so a round
# fails exactly its items while the items of the rounds not yet applied still pass.
ROUNDS: tuple[tuple[Damage, ...], ...] = (
    (
        Damage(
            2, "port 80 answered HTTP 200", (f"sed -i 's|return 301 https://$host$request_uri;|return 200;|' {SITE}",)
        ),
        Damage(5, "flower.service disabled, active (running)", ("systemctl disable flower.service",)),
        Damage(
            7, "Flower runs with persistent off", (f"sed -i 's/^persistent = True$/persistent = False/' {FLOWER_CONF}",)
        ),
        # This host's scrape targets emptied on the monitoring host (the prefix host's stay).
        Damage(
            9,
            "has no target for flower.molecule.test/metrics",
            (
                f"sed -i 's|- targets: \\[\"flower.molecule.test:443\"\\]|- targets: []|' {PROMETHEUS}",
                "systemctl reload prometheus",
            ),
        ),
        Damage(12, "logrotate.timer is inactive (enabled): nothing rotates", ("systemctl stop logrotate.timer",)),
        Damage(
            15, "last reviewed 2020-01-01", (f"sed -i 's/^Last reviewed: .*/Last reviewed: 2020-01-01/' {RUNBOOK}",)
        ),
    ),
    (
        # Flower moved to TCP on every address "to debug", nginx pointed at it.
        Damage(
            3,
            "Flower listens on 0.0.0.0:5555",
            (
                f"sed -i 's|^unix_socket = .*|address = \"0.0.0.0\"\\nport = 5555|' {FLOWER_CONF}",
                f"sed -i 's|server unix:/run/flower/flower.sock;|server 127.0.0.1:5555;|' {UPSTREAMS}",
            ),
        ),
        Damage(6, "no CPUQuota", (f"sed -i '/^CPUQuota=/d' {FLOWER_UNIT}",)),
        Damage(
            8,
            "runs with max_tasks 1000000 but its memory figure is for",
            (f"sed -i 's/^max_tasks = .*/max_tasks = 1000000/' {FLOWER_CONF}",),
        ),
        Damage(
            10, "but Prometheus has loaded no rules", (f"echo 'groups: []' > {RULES}", "systemctl reload prometheus")
        ),
        Damage(14, "no HTTP 429 in", (f"sed -i '/limit_req zone=flower_api/d' {LOCATIONS}",)),
        # The viewer's hash replaced by the admin's: the viewer's password no longer works.
        Damage(
            16,
            "viewer cannot log in",
            (f'sed -i "s|^viewer:.*|viewer:$(awk -F: \'$1 == \\"admin\\" {{print $2}}\' {HTPASSWD})|" {HTPASSWD}',),
        ),
    ),
    (
        Damage(
            1, "authentication is not enforced", (f"sed -i 's/auth_basic \"Flower\";/auth_basic off;/' {LOCATIONS}",)
        ),
        Damage(4, "ufw is not active", ("ufw --force disable",)),
        Damage(11, "flower-backup.timer is inactive", ("systemctl stop flower-backup.timer",)),
        Damage(13, "lacks X-Frame-Options", (f"sed -i '/X-Frame-Options/d' {HEADERS}",)),
    ),
)
# After each round: apply what changed (Flower restarts with its unit and settings, nginx reloads).
APPLY = "systemctl daemon-reload && systemctl restart flower && nginx -t && systemctl reload nginx"


def on_host(host: Any, code: str) -> str:
    """Python on the target (it has no curl): what the code prints, or "" when it fails."""
    run = host.run("python3 -c %s", code)
    return run.stdout.strip() if run.rc == 0 else ""


def port_80_status(host: Any) -> str:
    return on_host(
        host,
        "import http.client; c = http.client.HTTPConnection('127.0.0.1', 80, timeout=5); "
        "c.request('GET', '/', headers={'Host': 'flower.molecule.test'}); print(c.getresponse().status)",
    )


def in_force(host: Any, damages: tuple[Damage, ...]) -> bool:
    """Whether the round's damages are what nginx, Flower and Prometheus now serve (a reload is not instant)."""
    items = {damage.item for damage in damages}
    checks = {
        2: lambda: port_80_status(host) == "200",
        3: lambda: host.socket("tcp://0.0.0.0:5555").is_listening and fetch(host, "/api/workers")[0] == 200,
        9: lambda: (
            not any(
                "flower.molecule.test:443" in target["scrapeUrl"]
                for target in prometheus(host, "/api/v1/targets")["activeTargets"]
            )
        ),
        1: lambda: fetch(host, "/api/workers", auth=False)[0] == 200,
    }
    return all(check() for item, check in checks.items() if item in items)


@pytest.fixture
def damaged(host: Any, tmp_path: Path) -> Iterator[list[tuple[tuple[Damage, ...], Any, dict]]]:
    """Each round applied on top of the last and audited; the host is repaired by site.yml whatever happens."""
    first_platform_only(host)
    audits: list[tuple[tuple[Damage, ...], Any, dict]] = []

    def next_round() -> tuple[Any, dict]:
        damages = ROUNDS[len(audits)]
        for damage in damages:
            for command in damage.commands:
                assert host.run(command).rc == 0, command
        assert host.run(APPLY).rc == 0
        assert wait_for(lambda: in_force(host, damages), timeout=30), f"round {len(audits) + 1} is not in force"
        run, report = audit(tmp_path / f"round{len(audits) + 1}")
        audits.append((damages, run, report))
        return run, report

    repaired = {"done": False}
    try:
        yield next_round, repaired
    finally:
        if not repaired["done"]:
            run_playbook(tmp_path / "repair", GROUP_VARS, "site.yml", "--limit", INSTANCE, hosts=BOTH)
        wait_until_healthy(host)


def test_every_item_fails_on_its_damage_and_site_yml_repairs_them_all(
    host: Any, tmp_path: Path, backed_up: None, damaged: Any
) -> None:
    next_round, repaired = damaged
    failing: list[int] = []
    for number, damages in enumerate(ROUNDS, start=1):
        run, report = next_round()
        failing = sorted(failing + [damage.item for damage in damages])
        output = run.stdout + run.stderr
        assert run.returncode != 0 and "fails the production checklist" in output
        assert report["failed_items"] == failing, f"round {number}: " + json.dumps(report, indent=1)
        evidence = {item["id"]: item["evidence"] for item in report["items"]}
        for damage in damages:
            assert damage.evidence in evidence[damage.item], (damage, evidence[damage.item])
        for secret in SECRETS:
            assert secret not in output
    assert failing == list(range(1, 17))
    junit = ET.parse(tmp_path / "round3" / "reports" / f"{INSTANCE}.xml")
    failures = {case.get("name", "")[:2] for case in junit.iter("testcase") if case.find("failure") is not None}
    assert failures == {f"{item:02d}" for item in range(1, 17)}

    # A waiver turns a failed item into WAIVED with its reason; the others still fail the run.
    waived = {**GROUP_VARS, "flower_checklist_waivers": {"11": "backups move to the new NAS today (OPS-7)"}}
    run, report = audit(tmp_path / "waived", group_vars=waived)
    assert run.returncode != 0 and report["failed_items"] == [item for item in range(1, 17) if item != 11]
    item = next(item for item in report["items"] if item["id"] == 11)
    assert item["status"] == "WAIVED" and item["waiver"] == "backups move to the new NAS today (OPS-7)"
    assert "flower-backup.timer is inactive" in item["evidence"]

    # The operator's repair: site.yml, nothing by hand.
    repair = run_playbook(tmp_path / "repair", GROUP_VARS, "site.yml", "--limit", INSTANCE, hosts=BOTH)
    repaired["done"] = True
    assert repair.returncode == 0, (repair.stdout + repair.stderr)[-4000:]
    wait_until_healthy(host)
    run, report = audit(tmp_path / "repaired")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert statuses(report) == {number: "PASS" for number in range(1, 17)}, json.dumps(report, indent=1)


def test_a_waiver_without_a_reason_is_refused(host: Any, tmp_path: Path) -> None:
    first_platform_only(host)
    run, _report = audit(tmp_path, group_vars={**GROUP_VARS, "flower_checklist_waivers": {"4": " "}})
    assert run.returncode != 0
    assert "flower_checklist_waivers: 4 must be a checklist item (1 to 16) with a reason" in run.stdout + run.stderr
