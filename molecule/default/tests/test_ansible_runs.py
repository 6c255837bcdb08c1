"""Ansible against the converged target: check mode changes nothing, no
secret reaches the output, and bad input fails before the host changes.

These run ansible-playbook from the controller with an inventory built from
molecule.yml, so they exercise the same site.yml the converge used.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ACCOUNT, GROUP_VARS, INSTANCE, PREFIX_INSTANCE, SECRETS, first_platform_only, run_playbook

EVERY_PLATFORM = True
# The check-mode, -v and health runs cover both platforms at once (one run, each host in its own groups).
BOTH = [INSTANCE, PREFIX_INSTANCE]

# Deprecation warnings announce the next ansible-core upgrade's breakage: any
# not listed here (with the reason it cannot be fixed yet) fails the run.
KNOWN_DEPRECATIONS: dict[str, str] = {}
RECAP = r"{}\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
# Files and service state that must not move when a run is refused.
FINGERPRINT = (
    f"sha256sum /etc/systemd/system/flower.service {ACCOUNT['flower_account_config_dir']}/* "
    "/etc/redis/users.acl /etc/systemd/system/demo-worker.service; "
    "systemctl show -p MainPID,ActiveEnterTimestamp flower redis-server demo-worker"
)


def run_site(
    tmp_path: Path, group_vars: dict[str, Any], *args: str, playbook: str = "site.yml", hosts: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_playbook(tmp_path, group_vars, playbook, *args, hosts=hosts)


def new_deprecations(output: str) -> list[str]:
    found = re.findall(r"\[DEPRECATION WARNING\]: (.*)", output)
    return [line for line in found if not any(known in line for known in KNOWN_DEPRECATIONS)]


def recap(output: str, name: str = INSTANCE) -> tuple[int, int, int, int]:
    found = re.findall(RECAP.format(re.escape(name)), output)
    assert found, output[-3000:]
    return tuple(int(n) for n in found[-1])  # type: ignore[return-value]


def test_check_mode_reports_no_change_and_no_secret(tmp_path: Path) -> None:
    result = run_site(tmp_path, GROUP_VARS, "--check", "--diff", "-v", hosts=BOTH)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for name in BOTH:
        _, changed, unreachable, failed = recap(output, name)
        assert (changed, unreachable, failed) == (0, 0, 0), f"{name}: " + output[-4000:]
    leaked = [s for s in SECRETS if s in output]
    assert not leaked, f"{len(leaked)} secret(s) in the output of a -v --check --diff run"
    assert not new_deprecations(output), new_deprecations(output)


def test_verbose_run_changes_nothing_and_shows_no_secret(tmp_path: Path) -> None:
    result = run_site(tmp_path, GROUP_VARS, "-v", hosts=BOTH)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert [recap(output, name)[1] for name in BOTH] == [0, 0], "a second real run changed something"
    assert not [s for s in SECRETS if s in output], "a secret is in the output of a -v run"
    assert not new_deprecations(output), new_deprecations(output)


def test_configure_tag_rerenders_without_reinstalling(host: Any, tmp_path: Path) -> None:
    """`--tags flower_configure` runs preflight, the configuration and the final check, and no install task."""
    first_platform_only(host)
    pid = host.run("systemctl show -p MainPID --value flower").stdout
    result = run_site(tmp_path, GROUP_VARS, "--tags", "flower_configure")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Validate every role's settings" in output
    assert "Ensure Flower's configuration is rendered" in output
    assert "Check Flower end to end" in output
    assert "virtualenv at the pinned versions" not in output, "the configure tag ran an install task"
    assert recap(output)[1] == 0
    assert host.run("systemctl show -p MainPID --value flower").stdout == pid, "Flower restarted for nothing"


def test_health_playbook_prints_one_row_per_check(tmp_path: Path) -> None:
    result = run_site(tmp_path, GROUP_VARS, playbook="playbooks/health.yml", hosts=BOTH)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for check in ("healthcheck", "api", "auth", "workers", "events"):
        rows = re.findall(rf'"msg": "{check} +ok ', output) or re.findall(rf"msg: {check} +ok ", output)
        assert len(rows) == len(BOTH), output[-3000:]
    assert not [s for s in SECRETS if s in output]


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GROUP_VARS.items() if k != key}


BAD_INPUT: dict[str, tuple[Any, ...]] = {
    "wrong type": ({**GROUP_VARS, "flower_max_tasks": "lots"}, "flower_max_tasks"),
    "unknown state": ({**GROUP_VARS, "flower_service_state": "runing"}, "flower_service_state"),
    "missing secret": (without("flower_broker_url"), "flower_broker_url"),
    "prefix without slash": ({**GROUP_VARS, "flower_url_prefix": "flower"}, "flower_url_prefix"),
    "login without a password": ({**GROUP_VARS, "flower_users": [{"name": "admin", "role": "admin"}]}, "flower_users"),
    "non-ASCII password": (
        {**GROUP_VARS, "flower_users": [{"name": "admin", "password": "pässwörd-1234", "role": "admin"}]},
        "ASCII",
    ),
    # Flower's own basic auth has no read-only login: a viewer there could act.
    "viewer in basic mode": ({**GROUP_VARS, "flower_auth_mode": "basic"}, "only admins"),
    # The old names are refused with the new ones named, not silently ignored.
    "old login format": ({**GROUP_VARS, "flower_basic_auth": ["admin:password-1234"]}, "flower_users"),
    "old scrape setting": ({**GROUP_VARS, "flower_monitoring_scrape": False}, "flower_proxy_scrape"),
    "max_tasks over MemoryMax": ({**GROUP_VARS, "flower_max_tasks": 100000}, "flower_memory_max"),
    "no admin login": (
        {**GROUP_VARS, "flower_users": [{"name": "ro", "password": "viewer-only-pw-123", "role": "viewer"}]},
        "flower_users",
    ),
    "OAuth pattern Flower refuses": (
        {
            **GROUP_VARS,
            "flower_auth_mode": "oauth",
            "flower_oauth2_provider": "github",
            "flower_oauth2_key": "id",
            "flower_oauth2_secret": "oauth-secret-value",
            "flower_oauth2_emails": "*@*.example.com",
        },
        "flower_oauth2_emails",
    ),
    # Flower widens only ".*": this one would match nobody (the documented form before 2.2's rule was read).
    "OAuth pattern that matches nobody": (
        {
            **GROUP_VARS,
            "flower_auth_mode": "oauth",
            "flower_oauth2_provider": "github",
            "flower_oauth2_key": "id",
            "flower_oauth2_secret": "oauth-secret-value",
            "flower_oauth2_emails": "*@example.com",
        },
        "flower_oauth2_emails",
    ),
    "unknown TLS profile": ({**GROUP_VARS, "flower_proxy_tls_profile": "old"}, "flower_proxy_tls_profile"),
    # A fixture validates its own settings (playbooks/fixtures.yml), before it changes anything.
    "short redis password": (
        {**GROUP_VARS, "demo_broker_password": "short"},
        "demo_broker_password",
        "--playbook=playbooks/fixtures.yml",
    ),
    # Check mode validates as strictly as a real run.
    "bad input in check mode": ({**GROUP_VARS, "flower_max_tasks": "lots"}, "flower_max_tasks", "--check"),
    # Never contacted: the run stops in preflight.
    "remote broker not allowed": (
        {**GROUP_VARS, "flower_broker_url": "redis://:secret-pw@broker.example.invalid:6379/0"},
        "flower_ip_address_allow",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_fails_before_the_host_changes(host: Any, tmp_path: Path, case: str) -> None:
    """Against preflight alone (site.yml's first stage): seconds, not a converge."""
    first_platform_only(host)
    group_vars, expected, *args = BAD_INPUT[case]
    playbooks = [arg.split("=", 1)[1] for arg in args if arg.startswith("--playbook=")]
    args = [arg for arg in args if not arg.startswith("--playbook=")]
    playbook = playbooks[0] if playbooks else "playbooks/preflight.yml"
    before = host.run(FINGERPRINT).stdout
    result = run_site(tmp_path, group_vars, *args, playbook=playbook)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert expected in output, output[-3000:]
    assert "Validate" in output
    assert not re.search(r"^changed: ", output, re.M), "a task changed the host before the run was refused"
    assert host.run(FINGERPRINT).stdout == before, "the host changed although the input was refused"
