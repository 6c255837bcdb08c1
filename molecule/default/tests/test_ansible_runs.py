"""Ansible against the converged target: check mode changes nothing, no
secret reaches the output, and bad input fails before the host changes.

These run ansible-playbook from the controller with an inventory built from
molecule.yml, so they exercise the same site.yml the converge used.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    FINGERPRINT,
    FURTHER_INSTANCES,
    GROUP_VARS,
    INSTANCE,
    PREFIX_INSTANCE,
    PROJECT_DIR,
    SECRETS,
    first_platform_only,
    role_defaults,
    run_playbook,
)
from testlib import main_pid, recap

EVERY_PLATFORM = True
# Molecule's check-mode run and the health run cover both platforms at once (one run, each host in its own groups).
BOTH = [INSTANCE, PREFIX_INSTANCE]
PRODUCTION_ROLES = re.findall(r"role: (\w+),", (PROJECT_DIR / "playbooks" / "preflight.yml").read_text())

# Deprecation warnings announce the next ansible-core upgrade's breakage: any
# not listed here (with the reason it cannot be fixed yet) fails the run.
KNOWN_DEPRECATIONS: dict[str, str] = {
    # ansible-core 2.19 warns on every strategy outside ansible.builtin, with no alternative planned; Mitogen's
    # (plugins/strategy) is one. `ANSIBLE_STRATEGY=linear` is the way back when it goes.
    "Use of strategy plugins not included in ansible.builtin are deprecated": "Mitogen's strategy",
}


def run_site(
    tmp_path: Path, group_vars: dict[str, Any], *args: str, playbook: str = "site.yml", hosts: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_playbook(tmp_path, group_vars, playbook, *args, hosts=hosts)


def new_deprecations(output: str) -> list[str]:
    found = re.findall(r"\[DEPRECATION WARNING\]: (.*)", output)
    return [line for line in found if not any(known in line for known in KNOWN_DEPRECATIONS)]


def molecules_runs() -> list[str]:
    """Molecule's own ansible-playbook runs of this test, in order, from the log the shared config keeps
    (ANSIBLE_LOG_PATH; the same file when verify is run by hand without it): prepare, the bare-host check,
    side_effect, converge, idempotence, the second check."""
    path = os.environ.get("ANSIBLE_LOG_PATH") or Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.log"
    log = Path(path).read_text(encoding="utf-8", errors="replace")
    runs: list[tuple[str, list[str]]] = []
    for line in log.splitlines():
        found = re.match(r"\S+ \S+ p=(\d+) ", line)
        pid = found.group(1) if found else (runs[-1][0] if runs else "")
        if not runs or runs[-1][0] != pid:
            runs.append((pid, []))
        runs[-1][1].append(line)
    texts = ["\n".join(lines) for _, lines in runs]
    starts = [i for i, text in enumerate(texts) if "PLAY [Record the host before the first check-mode run]" in text]
    assert starts, "prepare's run is not in the log"
    checks = [i for i, text in enumerate(texts) if "DRY RUN" in text]
    # Up to the second check: what comes after is the verifier's own (testinfra reads the inventory, secrets
    # and all, with ansible-inventory), not an output of Molecule's steps.
    return texts[starts[-1] : (checks[-1] + 1 if checks else None)]


def test_molecules_runs_show_no_secret_and_the_last_check_changes_nothing() -> None:
    """Molecule runs every step at -v with --diff (the shared config): converge, idempotence and both
    check-mode runs must show no secret and no new deprecation, and the check after converge must
    report 0 changed (Molecule's check step allows changes; idempotence proves the real re-run)."""
    runs = molecules_runs()
    checks = [run for run in runs if "DRY RUN" in run]
    assert len(checks) == 2, f"expected the bare-host check and the one after converge, found {len(checks)}"
    output = re.sub(r"^\S+ \S+ p=\d+ u=\S+ n=\S+ \w+\| ", "", checks[-1], flags=re.M)
    for name in [*BOTH, *FURTHER_INSTANCES]:
        _, changed, unreachable, failed = recap(output, name)
        assert (changed, unreachable, failed) == (0, 0, 0), f"{name}: " + output[-4000:]
    assert any("| changed: " in run for run in runs), "the log holds no converge"
    for run in runs:
        assert not [s for s in SECRETS if s in run], "a secret is in the output of one of Molecule's -v runs"
        assert not new_deprecations(run), new_deprecations(run)


def typed_inputs_as_typed() -> list[str]:
    """`-e name=value` for every int, float and bool input of the production roles, at the value this scenario
    deploys, as an operator types it (strings: "15000", "false"); generated from the argument specs."""
    values: dict[str, str] = {}
    for role in PRODUCTION_ROLES:
        spec_file = PROJECT_DIR / "roles" / role / "meta" / "argument_specs.yml"
        deployed = role_defaults(role)
        for spec in yaml.safe_load(spec_file.read_text())["argument_specs"].values():
            for name, option in spec.get("options", {}).items():
                value = GROUP_VARS.get(name, deployed.get(name))
                if option.get("type") in ("int", "float", "bool") and isinstance(value, (int, float)):
                    values[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return [arg for name, text in values.items() for arg in ("-e", f"{name}={text}")]


def test_configuration_from_command_line_strings_changes_nothing(host: Any, tmp_path: Path) -> None:
    """Every role's configure and service phases with every typed input given as `-e name=value` (strings):
    the same host state as the inventory's typed values, so 0 changed and Flower not restarted; the phase
    tags run preflight, the configuration and the final check, and no install task; and --limit keeps the
    other Flower host in this host's Prometheus."""
    first_platform_only(host)
    pid = main_pid(host)
    phases = [f"{role}_{phase}" for role in PRODUCTION_ROLES for phase in ("configure", "service")]
    typed = typed_inputs_as_typed()
    assert len(typed) // 2 >= 40, "the specs' typed inputs were not found"
    # Limited to this host: the other Flower host stays a scrape target of this host's Prometheus (a dropped
    # target would change its configuration).
    result = run_site(tmp_path, GROUP_VARS, "--tags", ",".join(phases), "--limit", INSTANCE, *typed, hosts=BOTH)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Validate every role's settings" in output
    assert "Ensure Flower's configuration is rendered" in output
    assert "Check Flower end to end" in output
    assert "virtualenv at the pinned versions" not in output, "a phase tag ran an install task"
    _, changed, _, _ = recap(output, INSTANCE)
    assert changed == 0, (
        "strings from -e changed what the inventory's typed values deployed:\n"
        + "\n".join(line for line in output.splitlines() if line.startswith(("changed:", "TASK [")))[-3000:]
    )
    assert main_pid(host) == pid, "Flower restarted for nothing"


def test_health_playbook_prints_one_row_per_check(tmp_path: Path) -> None:
    result = run_site(tmp_path, GROUP_VARS, playbook="playbooks/health.yml", hosts=BOTH)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for check in ("healthcheck", "api", "auth", "workers", "events"):
        rows = re.findall(rf'"msg": "{check} +ok ', output) or re.findall(rf"msg: {check} +ok ", output)
        # Both platforms' Flowers, and the prefix machine's second (the inventory has it beside its platform).
        assert len(rows) == len(BOTH) + len(FURTHER_INSTANCES), output[-3000:]
    assert not [s for s in SECRETS if s in output]


# Each expected text is the refusal's own (a task's banner, always printed, would match whatever happened). The
# other refusals run against preflight alone, with no host (tests/unit/test_preflight_cli.py): these prove on the
# converged host that a refused run leaves it as it was.
WRONG_TYPE = "argument 'flower_max_tasks' is of type str and we were unable to convert to int"
BAD_INPUT: dict[str, tuple[Any, ...]] = {
    "wrong type": ({**GROUP_VARS, "flower_max_tasks": "lots"}, WRONG_TYPE),
    # A fixture validates its own settings (playbooks/fixtures.yml), before it changes anything.
    "short redis password": (
        {**GROUP_VARS, "demo_broker_password": "short"},
        "demo_broker_password",
        "--playbook=playbooks/fixtures.yml",
    ),
    # Check mode validates as strictly as a real run.
    "bad input in check mode": ({**GROUP_VARS, "flower_max_tasks": "lots"}, WRONG_TYPE, "--check"),
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
