"""library/flower_checklist.py: its HTTP items against a real Flower 2.2 (TLS, basic auth, /flower prefix), its
file-based item (the runbook) against real files, its argument checks, and its parsers of systemd, ufw and ss output.

What needs systemd, ufw, nginx and a backup timer is proven on a real host in Molecule
(molecule/default/tests/test_checklist.py): the converged host passes all 16 items, and a damaged one fails exactly
the damaged items."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from flower_stack import FLOWER_PASSWORD, FLOWER_USER, PROJECT, ModuleRun, RealFlower, run_module
from module_runner import load_file

CHECKLIST = PROJECT / "library" / "flower_checklist.py"


@pytest.fixture
def audit(tmp_path: Path) -> Callable[..., ModuleRun]:
    return lambda **args: run_module(tmp_path, args, CHECKLIST)


@pytest.fixture(scope="module")
def checklist() -> ModuleType:
    return load_file("flower_checklist", CHECKLIST)


def items(run: ModuleRun) -> dict[int, dict]:
    return {item["id"]: item for item in run.result["items"]}


def test_real_flower_items_observed_over_https(audit: Callable[..., ModuleRun], real_flower: RealFlower) -> None:
    run = audit(
        url=real_flower.url,
        ca_path=str(real_flower.ca),
        users=[{"name": FLOWER_USER, "password": FLOWER_PASSWORD, "role": "admin"}],
        burst_max=5,
    )
    assert run.rc == 0, run.stdout  # failed items do not fail the module: the caller writes its reports first
    found = items(run)
    assert sorted(found) == list(range(1, 17))
    assert found[1]["status"] == "PASS", found[1]  # Flower's basic auth refuses anonymous requests
    assert found[16]["status"] == "PASS" and f"{FLOWER_USER} (admin) logs in" in found[16]["evidence"]
    # The certificate verifies against the test CA, but nothing redirects plain HTTP on port 80.
    assert found[2]["status"] == "FAIL" and "certificate verified for 127.0.0.1" in found[2]["evidence"]
    assert "port 80" in found[2]["evidence"]
    # Flower alone sends none of the proxy's headers and has no rate limit.
    assert found[13]["status"] == "FAIL" and "Strict-Transport-Security" in found[13]["evidence"]
    assert found[14]["status"] == "FAIL" and "no HTTP 429 in 5 requests" in found[14]["evidence"]
    assert set(run.result["failed_items"]) >= {2, 13, 14} and run.result["passed"] is False
    assert FLOWER_PASSWORD not in run.stdout


def test_wrong_password_and_a_viewer_that_can_write(audit: Callable[..., ModuleRun], real_flower: RealFlower) -> None:
    run = audit(
        url=real_flower.url,
        ca_path=str(real_flower.ca),
        users=[
            {"name": FLOWER_USER, "password": "not-the-password", "role": "admin"},
            {"name": FLOWER_USER, "password": FLOWER_PASSWORD, "role": "viewer"},
        ],
        burst_max=1,
    )
    evidence = items(run)[16]["evidence"]
    assert items(run)[16]["status"] == "FAIL"
    assert "cannot log in (HTTP 401" in evidence
    # Flower itself lets every login write: the harmless write reached it (404, unknown task), not a 403.
    assert f"viewer {FLOWER_USER} was not refused a write (HTTP 404" in evidence


def test_waived_items_keep_their_evidence_and_reason(audit: Callable[..., ModuleRun], real_flower: RealFlower) -> None:
    run = audit(url=real_flower.url, ca_path=str(real_flower.ca), burst_max=1, waivers={"14": "limits at the LB"})
    item = items(run)[14]
    assert item["status"] == "WAIVED" and item["waiver"] == "limits at the LB"
    assert "no HTTP 429" in item["evidence"]
    assert 14 not in run.result["failed_items"]


@pytest.mark.parametrize(
    ("waivers", "message"),
    [({"14": "  "}, "waivers: item 14 needs a reason"), ({"17": "x"}, "waivers: '17' is not a checklist item")],
)
def test_bad_waivers_are_refused(audit: Callable[..., ModuleRun], waivers: dict, message: str) -> None:
    run = audit(url="https://flower.example.com", waivers=waivers)
    assert run.rc != 0 and message in run.result["msg"]


def test_runbook_review_age(audit: Callable[..., ModuleRun], tmp_path: Path) -> None:
    runbook = tmp_path / "runbook.md"
    fresh = (datetime.date.today() - datetime.timedelta(days=10)).isoformat()
    runbook.write_text(f"# Flower runbook\n\nLast reviewed: {fresh} by ops\n")
    # Nothing answers on this port: the HTTP items fail fast, the runbook is read all the same.
    args = dict(url="https://127.0.0.1:9/", runbook=str(runbook), burst_max=1, timeout=2)
    assert items(audit(**args))[15]["status"] == "PASS"
    assert items(audit(**args, runbook_max_age_days=5))[15]["status"] == "FAIL"
    runbook.write_text("# Flower runbook\n")
    assert "no 'Last reviewed: YYYY-MM-DD' line" in items(audit(**args))[15]["evidence"]
    assert "no runbook at" in items(audit(**{**args, "runbook": str(tmp_path / "none.md")}))[15]["evidence"]


def test_ufw_rule_ports(checklist: ModuleType) -> None:
    assert checklist._rule_ports("5555/tcp") == {5555}
    assert checklist._rule_ports("80,443/tcp") == {80, 443}
    assert checklist._rule_ports("6000:6002/tcp") == {6000, 6001, 6002}
    assert checklist._rule_ports("Anywhere") == set()


def test_listen_addresses(checklist: ModuleType) -> None:
    assert checklist._local_only("/run/flower/flower.sock")
    assert checklist._local_only("127.0.0.1:5555") and checklist._local_only("[::1]:5555")
    assert not checklist._local_only("0.0.0.0:5555") and not checklist._local_only("*:5555")
    assert checklist._port("127.0.0.1:5555") == 5555 and checklist._port("/run/x.sock") == 0


def test_flower_config_literals(checklist: ModuleType, tmp_path: Path) -> None:
    conf = tmp_path / "flowerconfig.py"
    conf.write_text(
        'import json\n_s = json.load(open("x"))\npersistent = True\nmax_tasks = 10000\ncookie_secret = _s["c"]\n'
    )
    assert checklist._literal_assignments(str(conf)) == {"persistent": True, "max_tasks": 10000}


def test_systemd_exec_start(checklist: ModuleType) -> None:
    shown = (
        "{ path=/opt/flower/venv/bin/python ; argv[]=/opt/flower/venv/bin/python /usr/local/lib/flower-backup/"
        "flower_backup.py --config /etc/flower-backup/config.json backup ; ignore_errors=no ; start_time=[n/a] }"
    )
    argv = checklist._exec_argv(shown)
    assert argv[-3:] == ["--config", "/etc/flower-backup/config.json", "backup"]


# `ufw status verbose` of a host whose firewall role allows 80 and 443 from a /24 only, with rules others added.
UFW_STATUS = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    Anywhere                   # flowerops ssh
443/tcp                    ALLOW IN    192.0.2.0/24               # flowerops proxy
80/tcp                     ALLOW IN    192.0.2.0/24               # flowerops proxy
80/tcp                     ALLOW IN    192.0.2.16/28              # a narrower rule someone added
8097/tcp                   ALLOW IN    203.0.113.9
OpenSSH                    ALLOW IN    Anywhere
3306/tcp                   DENY IN     Anywhere
22/tcp (v6)                ALLOW IN    Anywhere (v6)              # flowerops ssh
"""


def ufw_rules(checklist: ModuleType, text: str) -> list:
    return [rule for rule in map(checklist._ufw_rule, text.splitlines()) if rule]


def test_ufw_status_lines(checklist: ModuleType) -> None:
    rules = ufw_rules(checklist, UFW_STATUS)
    assert [rule.text for rule in rules][:2] == ["22/tcp ALLOW IN Anywhere", "443/tcp ALLOW IN 192.0.2.0/24"]
    proxy = rules[1]
    assert (proxy.ports, proxy.proto, str(proxy.source), proxy.comment) == (
        frozenset({443}),
        "tcp",
        "192.0.2.0/24",
        "flowerops proxy",
    )
    assert str(rules[-1].source) == "::/0" and rules[-1].ports == frozenset({22})
    every_port = checklist._ufw_rule("Anywhere                   ALLOW IN    198.51.100.7")
    assert every_port.ports is None and str(every_port.source) == "198.51.100.7/32"
    assert checklist._ufw_rule("OpenSSH                    ALLOW IN    Anywhere").ports == frozenset()
    assert not checklist._ufw_rule("3306/tcp                   DENY IN     Anywhere").admits
    assert checklist._ufw_rule("To                         Action      From") is None
    assert checklist._ufw_rule("Default: deny (incoming), allow (outgoing)") is None


def test_rules_within_the_managed_sources_pass(checklist: ModuleType) -> None:
    assert checklist._wider_than_managed(ufw_rules(checklist, UFW_STATUS), "flowerops") == []


@pytest.mark.parametrize(
    ("line", "ports"),
    [
        ("443/tcp                    ALLOW IN    Anywhere", "443"),
        ("443/tcp (v6)               ALLOW IN    Anywhere (v6)", "443"),
        ("80,443/tcp                 ALLOW IN    192.0.0.0/16", "80, 443"),
        ("Anywhere                   ALLOW IN    198.51.100.7", "22, 80, 443"),
        ("10.0.0.1 443/tcp           LIMIT IN    Anywhere", "443"),
    ],
)
def test_a_managed_port_open_wider_fails_naming_the_rule(checklist: ModuleType, line: str, ports: str) -> None:
    problems = checklist._wider_than_managed(ufw_rules(checklist, UFW_STATUS + line + "\n"), "flowerops")
    assert len(problems) == 1, problems
    assert f"opens managed port {ports} wider than its flowerops rules" in problems[0]
    assert problems[0].endswith(" ".join(line.split()))


def test_managed_rules_from_anywhere_admit_any_source(checklist: ModuleType) -> None:
    wide = UFW_STATUS.replace("192.0.2.0/24               # flowerops proxy", "Anywhere  # flowerops proxy")
    extra = "443/tcp                    ALLOW IN    203.0.113.0/24\n"
    assert checklist._wider_than_managed(ufw_rules(checklist, wide + extra), "flowerops") == []
