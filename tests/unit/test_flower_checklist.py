"""library/flower_checklist.py: its HTTP items against a real Flower 2.2 (TLS, basic auth, /flower prefix), its
file-based items against real files (the runbook; Flower's database opened with Flower's Python, item 7; the status
file the real backup tool writes, item 11), item 8 on the figure it is given, its argument checks, and its parsers of
ufw and ss output.

What needs systemd, ufw, nginx and a backup timer is proven on a real host in Molecule
(molecule/default/tests/test_checklist.py): the converged host passes all 16 items, and a damaged one fails exactly
the damaged items."""

from __future__ import annotations

import datetime
import dbm.dumb
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from backup_tool import live_source, run_tool, write_config
from flower_stack import FLOWER_PASSWORD, FLOWER_USER, PROJECT, ModuleRun, RealFlower, run_module
from module_runner import load_file

CHECKLIST = PROJECT / "library" / "flower_checklist.py"
WATCHER = PROJECT / "roles" / "flower_checklist" / "files" / "checklist_watch.py"
# The firewall role's list, as the role passes it (the module has no default of its own).
FORBIDDEN = {"forbidden_ports": [5555, 6379]}


@pytest.fixture
def audit(tmp_path: Path) -> Callable[..., ModuleRun]:
    return lambda **args: run_module(tmp_path, {**FORBIDDEN, **args}, CHECKLIST)


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


def test_figures_other_roles_own_have_no_default(tmp_path: Path) -> None:
    """forbidden_ports is required; the memory rule's inputs and the backup's command line are no options."""
    bare = run_module(tmp_path, {"url": "https://flower.example.com"}, CHECKLIST)
    assert bare.rc != 0 and "missing required arguments: forbidden_ports" in bare.result["msg"]
    for old in ("memory_base_mib", "memory_per_task_kib", "memory_save_factor", "backup_command"):
        run = run_module(tmp_path, {"url": "https://flower.example.com", **FORBIDDEN, old: 1}, CHECKLIST)
        assert run.rc != 0 and f"Unsupported parameters for (basic.py) module: {old}." in run.result["msg"]


def test_runbook_review_age(audit: Callable[..., ModuleRun], tmp_path: Path) -> None:
    runbook = tmp_path / "runbook.md"
    fresh = (datetime.date.today() - datetime.timedelta(days=10)).isoformat()
    runbook.write_text(f"# Flower runbook\n\nLast reviewed: {fresh} by ops\n")
    # Nothing answers on this port: the HTTP items fail fast, the runbook is read all the same.
    args = dict(url="https://127.0.0.1:9/", runbook=str(runbook), burst_max=1, timeout=2)
    # Reviewed, but it does not name this host's URL (no Flower runs here: the URL is all it must name).
    assert "does not name this host's https://127.0.0.1:9" in items(audit(**args))[15]["evidence"]
    runbook.write_text(f"# Flower runbook\n\nLast reviewed: {fresh} by ops\n\nURL: https://127.0.0.1:9\n")
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


@functools.cache
def watcher() -> ModuleType:
    return load_file("checklist_watch", WATCHER)


def auditor(checklist: ModuleType, config: dict[str, Any], unit: dict[str, str], **params: Any) -> Any:
    """An Audit of a Flower this test describes (its configuration in force and its unit's properties): the items
    that need no systemd or HTTP run on it as on a host."""
    audit = checklist.Audit.__new__(checklist.Audit)
    # Real commands, run as the checklist's watcher runs them (its stand-in for AnsibleModule).
    audit.module, audit.params, audit.unit = watcher().Host(params), params, unit
    audit.config = {"_argv": [str(Path(sys.executable).parent / "celery"), "flower"], **config}
    audit.pid, audit.cwd = 0, "/"
    return audit


MIB = 1048576

# `systemd-analyze calendar --iterations=2 '*-*-* *:00:00'` on Debian 13 (systemd 257), as it printed there.
TRIXIE_CALENDAR = """  Original form: *-*-* *:00:00
Normalized form: *-*-* *:00:00
    Next elapse: Wed 2026-12-02 13:00:00 UTC
       From now: 48min left
   Iteration #2: Wed 2026-12-02 14:00:00 UTC
       From now: 1h 48min left
"""


def test_the_backup_timers_interval_is_read_from_both_releases_systemd(checklist: ModuleType) -> None:
    audit = auditor(checklist, {}, {})
    calendar = "{ OnCalendar=*-*-* *:00:00 ; next_elapse=Wed 2026-12-02 13:00:00 UTC }"
    assert audit.timer_interval(calendar) == 3600  # this machine's systemd-analyze
    audit.run = lambda argv: (0, TRIXIE_CALENDAR)
    assert audit.timer_interval(calendar) == 3600


@pytest.mark.parametrize(
    ("params", "ok", "evidence"),
    [
        ({}, False, "Flower runs with max_tasks 10000, but its memory figure was not given"),
        ({"memory_need_bytes": 0, "memory_need_max_tasks": 10000}, False, "its memory figure was not given"),
        ({"memory_need_bytes": 180 * MIB, "memory_need_max_tasks": 5000}, False,
         "Flower runs with max_tasks 10000 but its memory figure is for 5000: run site.yml"),
        ({"memory_need_bytes": 180 * MIB, "memory_need_max_tasks": 10000}, True,
         "max_tasks 10000: a state save needs ~180 MiB, MemoryMax 256 MiB"),
        ({"memory_need_bytes": 300 * MIB, "memory_need_max_tasks": 10000}, False, "needs ~300 MiB, MemoryMax 256 MiB"),
    ],
    ids=["not given", "zero", "for another max_tasks", "fits", "too big"],
)  # fmt: skip
def test_item_8_judges_the_figure_it_is_given(checklist: ModuleType, params: dict, ok: bool, evidence: str) -> None:
    given = {"memory_need_bytes": None, "memory_need_max_tasks": None, "users": [], **params}
    audit = auditor(checklist, {"max_tasks": 10000}, {"MemoryMax": str(256 * MIB)}, **given)
    verdict = audit.item_8()
    assert (verdict.ok, evidence in verdict.evidence) == (ok, True), verdict.evidence


def test_item_8_fails_a_configuration_changed_after_flower_started(checklist: ModuleType, tmp_path: Path) -> None:
    """The file says max_tasks 10000, but Flower started 100 s before it was written: the value in force is not
    known until a restart."""
    conf = tmp_path / "flowerconfig.py"
    conf.write_text("max_tasks = 10000\n")
    started = {"ExecMainStartTimestampMonotonic": str(int((time.monotonic() - 100) * 1e6)), "MemoryMax": str(256 * MIB)}
    figure = {"memory_need_bytes": 180 * MIB, "memory_need_max_tasks": 10000, "users": []}
    audit = auditor(checklist, {"max_tasks": 10000, "_conf": str(conf)}, started, **figure)
    audit.pid = 1
    verdict = audit.item_8()
    assert not verdict.ok and f"{conf} changed 100 s after Flower started" in verdict.evidence, verdict.evidence
    # Written before the start: the file is what Flower runs with.
    os.utime(conf, (time.time() - 200, time.time() - 200))
    verdict = audit.item_8()
    assert verdict.ok and "max_tasks 10000" in verdict.evidence, verdict.evidence


def test_item_7_asks_flowers_python_which_files_the_database_is(checklist: ModuleType, tmp_path: Path) -> None:
    """No list of dbm suffixes in the module: Flower's Python's dbm finds the database's files, whatever the
    backend - one file (gdbm, as the role installs), or .dat/.dir/.bak (dumb)."""
    saved = live_source(tmp_path, tasks=2)  # a real state saved with shelve, as Flower saves it
    verdict = auditor(checklist, {"persistent": True, "db": str(saved)}, {}).item_7()
    assert verdict.ok and f"persistent on; {saved} (dbm." in verdict.evidence, verdict.evidence
    # The two keys Flower saves its state under, named rather than counted.
    assert "opens with Flower's Python and holds Flower's saved state (counter, events)" in verdict.evidence
    dumb = tmp_path / "dumb" / "flower.db"
    dumb.parent.mkdir()
    with dbm.dumb.open(str(dumb), "c") as db:
        db[b"events"] = b"x"
    assert not dumb.exists() and (dumb.parent / "flower.db.dat").exists()
    verdict = auditor(checklist, {"persistent": "True", "db": str(dumb)}, {}).item_7()
    assert verdict.ok and f"{dumb} (dbm.dumb) opens" in verdict.evidence, verdict.evidence
    assert "holds no state Flower saved (its keys: events;" in verdict.evidence
    missing = auditor(checklist, {"persistent": True, "db": str(tmp_path / "none.db")}, {}).item_7()
    assert not missing.ok and f"no database at {tmp_path / 'none.db'}" in missing.evidence
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    broken = auditor(checklist, {"persistent": True, "db": str(garbage)}, {}).item_7()
    assert not broken.ok and "does not open with Flower's Python" in broken.evidence
    assert "not a database of any dbm backend" in broken.evidence
    off = auditor(checklist, {"persistent": False, "db": str(saved)}, {}).item_7()
    assert not off.ok and off.evidence == "Flower runs with persistent off"


def test_item_7_fails_while_flowers_periodic_saves_fail(checklist: ModuleType, tmp_path: Path) -> None:
    """Flower saves every state_save_interval and serves on when a save fails (a full volume): its database,
    older than two intervals while Flower has run longer than that, is what shows it. Its temporary save file
    (the failed save's leftover) is not its database."""
    saved = live_source(tmp_path, tasks=2)
    config = {"persistent": True, "db": str(saved), "state_save_interval": 10000}

    files = list(saved.parent.glob(saved.name + "*"))  # whichever files this Python's dbm made

    def item_7(up_s: float, saved_s_ago: float) -> Any:
        for name in files:
            os.utime(name, (time.time() - saved_s_ago, time.time() - saved_s_ago))
        unit = {"ExecMainStartTimestampMonotonic": str(int((time.monotonic() - up_s) * 1e6))}
        audit = auditor(checklist, config, unit)
        audit.pid = 1
        return audit.item_7()

    Path(f"{saved}.tmp").write_bytes(b"")  # newer than the database
    verdict = item_7(up_s=100, saved_s_ago=60)
    assert not verdict.ok, verdict.evidence
    assert verdict.evidence.startswith("Flower's last save is 60 s old, though it saves every 10 s: its saves fail")
    assert item_7(up_s=100, saved_s_ago=20).ok  # within two intervals and the slack
    assert item_7(up_s=20, saved_s_ago=600).ok  # started 20 s ago: its first save is not due yet
    assert auditor(checklist, {**config, "state_save_interval": 0}, {}).item_7().ok  # saves only on a stop


# --- item 11 on the status file the real backup tool writes ---------------------------------------------------------

TIMER, HOUR = "flower-backup.timer", 3600.0


@pytest.fixture
def backed_up(tmp_path: Path) -> Path:
    """Settings of a backup that has run once, well (roles/flower_backup/files/flower_backup.py)."""
    config = write_config(tmp_path, live_source(tmp_path, tasks=5))
    result = run_tool(config, "backup")
    assert result.returncode == 0, result.stderr
    return config


def judge(checklist: ModuleType, config: Path, interval: float = HOUR) -> Any:
    """Item 11 past the timer's state (systemd): the status file read and judged."""
    path = json.loads(config.read_text())["status_file"]
    status, problem = checklist._backup_status(path)
    return checklist.Verdict(False, problem) if problem else checklist._judge_backup(TIMER, interval, path, status)


def rewrite_status(config: Path, **changes: Any) -> None:
    path = Path(json.loads(config.read_text())["status_file"])
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_item_11_passes_a_fresh_verified_backup(checklist: ModuleType, backed_up: Path) -> None:
    verdict = judge(checklist, backed_up)
    assert verdict.ok, verdict.evidence
    status = json.loads(Path(json.loads(backed_up.read_text())["status_file"]).read_text())
    assert f"{TIMER} active (every 60 min)" in verdict.evidence
    assert f"last backup {status['archive']}, finished " in verdict.evidence
    assert verdict.evidence.endswith(" ago): 5 tasks, verified"), verdict.evidence
    # Summarised for an operator: no path of the status file, no hash.
    assert status["sha256"][:12] not in verdict.evidence and "status.json" not in verdict.evidence


def test_item_11_fails_a_failed_run_naming_the_last_good_one(checklist: ModuleType, backed_up: Path) -> None:
    good = json.loads(Path(json.loads(backed_up.read_text())["status_file"]).read_text())
    settings = json.loads(backed_up.read_text())
    for file in Path(settings["source"]).parent.iterdir():
        file.unlink()
    assert run_tool(backed_up, "backup").returncode == 1
    verdict = judge(checklist, backed_up)
    assert not verdict.ok
    assert "the last backup run failed 20" in verdict.evidence and "no database at" in verdict.evidence
    assert f"last good: {good['archive']}, {good['finished'][:10]} " in verdict.evidence


def test_item_11_fails_an_archive_a_later_verify_refused(checklist: ModuleType, backed_up: Path) -> None:
    status = json.loads(Path(json.loads(backed_up.read_text())["status_file"]).read_text())
    archive = Path(json.loads(backed_up.read_text())["backup_dir"]) / status["archive"]
    archive.write_bytes(archive.read_bytes() + b"\0")
    assert run_tool(backed_up, "verify").returncode == 1
    verdict = judge(checklist, backed_up)
    assert not verdict.ok and f"{status['archive']} failed flower-backup verify 20" in verdict.evidence
    assert "does not match the manifest" in verdict.evidence  # the cause, at the end of the tool's message


def test_item_11_fails_a_backup_older_than_twice_the_interval(checklist: ModuleType, backed_up: Path) -> None:
    three_hours_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=3)
    rewrite_status(backed_up, finished=three_hours_ago.isoformat(timespec="seconds"))
    verdict = judge(checklist, backed_up)
    assert not verdict.ok
    assert f"the last backup run finished 3.0 h ago, more than twice {TIMER}'s interval (60 min)" in verdict.evidence
    assert judge(checklist, backed_up, interval=2 * HOUR).ok
    unknown = judge(checklist, backed_up, interval=0)
    assert not unknown.ok and "interval is unknown" in unknown.evidence


@pytest.mark.parametrize(
    ("changes", "evidence"),
    [
        ({"verified": False}, "was not verified after it was written"),
        ({"schema": 2}, "has schema 2, this audit reads 1"),
        ({"finished": "yesterday"}, "has no UTC finished time ('yesterday')"),
        ({"ok": True, "error": "disk on fire"}, "the last backup run failed 20"),
    ],
)
def test_item_11_fails_a_status_that_does_not_say_all_is_well(
    checklist: ModuleType, backed_up: Path, changes: dict, evidence: str
) -> None:
    rewrite_status(backed_up, **changes)
    verdict = judge(checklist, backed_up)
    assert not verdict.ok and evidence in verdict.evidence, verdict.evidence


def test_item_11_reads_only_a_regular_status_file(checklist: ModuleType, backed_up: Path, tmp_path: Path) -> None:
    path = Path(json.loads(backed_up.read_text())["status_file"])
    real = tmp_path / "elsewhere.json"
    path.rename(real)
    _status, missing = checklist._backup_status(str(path))
    assert missing.startswith(f"no backup status at {path}")
    path.symlink_to(real)  # the backup user could plant a link to a file only root may read
    _status, linked = checklist._backup_status(str(path))
    assert linked.startswith(f"the backup status {path} is unreadable")
    path.unlink()
    path.mkdir()
    assert checklist._backup_status(str(path))[1] == f"the backup status {path} is not a regular file"
    path.rmdir()
    path.write_text("{not json")
    assert checklist._backup_status(str(path))[1].startswith(f"the backup status {path} is not JSON")


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


# --- evidence an operator reads (issue 19) --------------------------------------------------------------------------

# Words no evidence text of the module's own has: a fragment of one (RAVO, CHARL) in evidence is text cut mid-word.
WORDS = ["ALFA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL", "INDIA", "JULIETT", "KILO", "LIMA",
         "MIKE", "NOVEMBER", "OSCAR", "PAPA", "QUEBEC", "ROMEO", "SIERRA", "TANGO", "UNIFORM", "VICTOR", "WHISKEY",
         "XRAY", "YANKEE", "ZULU", "ENOSPC"]  # fmt: skip
LONG_TEXT = " ".join(WORDS[n % 26] for n in range(97)) + " ENOSPC"  # 700 characters, the cause last
SANE = 600  # characters an operator reads on one line of a table


def cut_words(evidence: str) -> list[str]:
    """Capitalised tokens of the evidence that are fragments of WORDS, not whole ones."""
    tokens = [token.strip("()[],;:.'\"") for token in evidence.split()]
    return [t for t in tokens if t.isalpha() and t not in WORDS and any(t in word for word in WORDS)]


def test_item_11_a_long_error_is_cut_between_words(checklist: ModuleType, backed_up: Path) -> None:
    rewrite_status(backed_up, ok=False, error=f"no good copy after 3 attempts: {LONG_TEXT}")
    verdict = judge(checklist, backed_up)
    assert not verdict.ok
    assert cut_words(verdict.evidence) == [], verdict.evidence
    assert "no good copy after 3 attempts" in verdict.evidence and "ENOSPC" in verdict.evidence  # what, and why
    assert " … " in verdict.evidence and len(verdict.evidence) <= SANE, verdict.evidence


def test_item_10_summarises_promtool(checklist: ModuleType) -> None:
    rules = "/etc/prometheus/rules/flower.yml"
    seen = {"host": "mon1", "rules_file": rules, "rules_file_exists": True, "rule_groups": ["flower"]}
    failed = {**seen, "rules_check_rc": 1, "rules_check_output": f"Checking {rules}\n  FAILED:\n{rules}: {LONG_TEXT}\n"}
    verdict = auditor(checklist, {}, {}, monitoring=failed).item_10()
    assert not verdict.ok and cut_words(verdict.evidence) == [], verdict.evidence
    assert "ENOSPC" in verdict.evidence and len(verdict.evidence) <= SANE
    passed = {**seen, "rules_check_rc": 0, "rules_check_output": f"Checking {rules}\n  SUCCESS: 4 rules found\n\n"}
    verdict = auditor(checklist, {}, {}, monitoring=passed).item_10()
    # promtool's "Checking <file>" line does not repeat the file the evidence names.
    assert verdict.ok and verdict.evidence.count(rules) == 1 and "4 rules found" in verdict.evidence


def size_in_bytes(evidence: str, name: str) -> float:
    """The figure after `name`, with its binary unit, in bytes."""
    match = re.search(rf"{name} ([0-9.]+) (B|KiB|MiB|GiB)\b", evidence)
    assert match, f"no {name} with a unit in {evidence!r}"
    return float(match.group(1)) * 1024 ** ["B", "KiB", "MiB", "GiB"].index(match.group(2))


def cpu_percent(evidence: str) -> float:
    match = re.search(r"CPUQuota ([0-9.]+) %", evidence)
    assert match, f"no CPUQuota in % in {evidence!r}"
    return float(match.group(1))


def limited(checklist: ModuleType, unit: dict[str, str], cgroup: dict[str, str] | None, root: Path) -> Any:
    """Item 6 of a running unit, with its cgroup's files (None: no cgroup files, systemd's figures only)."""
    group = "/docker/5f3c0ffee/system.slice/flower.service"  # a container's cgroup: no help to an operator
    audit = auditor(checklist, {}, {"ControlGroup": group, **unit}, service="flower.service")
    audit.pid, audit.cgroup_root = os.getpid(), str(root)
    if cgroup is not None:
        (root / group.lstrip("/")).mkdir(parents=True)
        for name, value in cgroup.items():
            (root / group.lstrip("/") / name).write_text(value + "\n")
    return audit.item_6()


def test_item_6_from_systemd_in_units_without_the_cgroup(checklist: ModuleType, tmp_path: Path) -> None:
    unit = {"MemoryMax": "402653184", "MemoryCurrent": "[not set]", "CPUQuotaPerSecUSec": "500ms"}
    verdict = limited(checklist, unit, None, tmp_path)
    assert verdict.ok, verdict.evidence
    assert size_in_bytes(verdict.evidence, "MemoryMax") == 402653184 and cpu_percent(verdict.evidence) == 50
    assert "/docker/" not in verdict.evidence and "cgroup" not in verdict.evidence
    assert not re.search(r"\d{4,}", verdict.evidence), verdict.evidence  # no raw byte count


def test_item_6_from_the_kernel_in_units(checklist: ModuleType, tmp_path: Path) -> None:
    """The cgroup's figures win over systemd's (they are what the kernel enforces)."""
    unit = {"MemoryMax": "infinity", "CPUQuotaPerSecUSec": "infinity"}
    cgroup = {"memory.max": "1610612736", "memory.current": "100663296", "cpu.max": "150000 100000"}
    verdict = limited(checklist, unit, cgroup, tmp_path)
    assert verdict.ok, verdict.evidence
    assert size_in_bytes(verdict.evidence, "MemoryMax") == 1610612736 and cpu_percent(verdict.evidence) == 150
    assert "96 MiB in use" in verdict.evidence
    assert "/docker/" not in verdict.evidence and not re.search(r"\d{4,}", verdict.evidence)


def test_item_6_without_limits_says_which_is_missing(checklist: ModuleType, tmp_path: Path) -> None:
    unit = {"MemoryMax": "infinity", "CPUQuotaPerSecUSec": "infinity"}
    verdict = limited(checklist, unit, {"memory.max": "max", "cpu.max": "max 100000"}, tmp_path)
    assert not verdict.ok
    assert "no MemoryMax" in verdict.evidence and "no CPUQuota" in verdict.evidence, verdict.evidence
    assert "max 100000" not in verdict.evidence and "/docker/" not in verdict.evidence


def test_every_evidence_is_one_sane_line_of_whole_words(
    audit: Callable[..., ModuleRun], real_flower: RealFlower
) -> None:
    """The whole module, on a real Flower and a monitoring host whose promtool and Prometheus say a lot."""
    rules = "/etc/prometheus/rules/flower.yml"
    target = {"labels": {"job": "flower", "instance": "127.0.0.1"}, "health": "down", "lastError": LONG_TEXT,
              "scrapeUrl": f"{real_flower.url.rstrip('/')}/metrics"}  # fmt: skip
    monitoring = {"host": "mon1", "targets": [target], "rules_file": rules, "rules_file_exists": True,
                  "rules_check_rc": 1, "rules_check_output": f"Checking {rules}\n  FAILED:\n{rules}: {LONG_TEXT}\n",
                  "rule_groups": []}  # fmt: skip
    run = audit(url=real_flower.url, ca_path=str(real_flower.ca), burst_max=1, monitoring=monitoring)
    found = items(run)
    assert found[9]["status"] == "FAIL" and found[10]["status"] == "FAIL", json.dumps(found, indent=1)
    for number, item in found.items():
        evidence = item["evidence"]
        assert evidence and "\n" not in evidence and len(evidence) <= SANE, (number, evidence)
        assert cut_words(evidence) == [], (number, evidence)
        assert not re.search(r'[{}]|"\w+": ', evidence), (number, evidence)  # no slice of raw JSON
        assert not re.search(r"\b\d{4,} bytes\b", evidence), (number, evidence)  # sizes in units


def test_the_watcher_observes_what_the_module_observes(
    audit: Callable[..., ModuleRun], real_flower: RealFlower, tmp_path: Path
) -> None:
    """checklist_watch.py (the flower_checklist role's timer) runs the module's own audit() with its stand-ins for
    AnsibleModule and Ansible's Request, from the files as the role copies them: against the same real Flower
    over TLS, the items it observes get the module's verdicts and evidence, and each is published for
    Prometheus."""
    settings = {"url": real_flower.url, "ca_path": str(real_flower.ca), "runbook": str(tmp_path / "none.md")}
    module = items(audit(**settings, burst_max=1))
    lib = tmp_path / "lib"
    lib.mkdir()
    for source in (CHECKLIST, PROJECT / "module_utils" / "flower_probe.py", WATCHER):
        shutil.copy(source, lib)
    (tmp_path / "settings.json").write_text(json.dumps({**FORBIDDEN, **settings}))
    out = tmp_path / "checklist.prom"
    # The host's own Python, isolated (-I), as the unit runs it: nothing of Ansible's is importable.
    run = subprocess.run(
        [sys.executable, "-I", str(lib / "checklist_watch.py"), "--config", str(tmp_path / "settings.json"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    published = dict(re.findall(r'^flowerops_checklist_item_passing\{item="(\d+)",name="[^"]*"\} (\S+)$',
                                out.read_text(), re.MULTILINE))  # fmt: skip
    watched = (1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 15)
    assert sorted(map(int, published)) == list(watched)
    for number in watched:
        line = f"item {number} {module[number]['status']}: {module[number]['name']}: {module[number]['evidence']}"
        assert line in run.stdout, (line, run.stdout)
        assert float(published[str(number)]) == (1.0 if module[number]["status"] == "PASS" else 0.0)
    # This Flower's basic auth refuses anonymous requests, and its certificate verifies: not every item fails.
    assert published["1"] == "1.0" and module[1]["status"] == "PASS"
