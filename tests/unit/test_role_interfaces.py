"""Each role's interface: its manual (defaults/main.yml), argument specs, README, tags, and its line in preflight."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
import flower_state  # noqa: E402
import role_docs  # noqa: E402


def load(*parts: str) -> Any:
    return yaml.safe_load((ROOT / Path(*parts)).read_text()) or {}


def test_every_role_has_argument_specs_and_a_readme() -> None:
    assert sorted(p.name for p in (ROOT / "roles").iterdir()) == ROLES
    for role in ROLES:
        assert (ROOT / "roles" / role / "README.md").exists(), f"{role} has no README.md"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_the_argument_specs(role: str) -> None:
    defaults = load("roles", role, "defaults", "main.yml")
    specs = load("roles", role, "meta", "argument_specs.yml")["argument_specs"]
    options = specs["main"]["options"]
    required = {name for name, option in options.items() if option.get("required")}
    assert set(defaults) == set(options) - required, "defaults/main.yml and argument_specs.yml list other keys"
    for name, value in defaults.items():
        assert options[name].get("default") == value, f"{name}: the spec's default differs from defaults/main.yml"
        assert name.startswith(role + "_"), f"{name} is not prefixed with the role's name"
    for name in required:
        assert options[name].get("no_log") or "secret" not in options[name]["description"].lower()
    # preflight validates what main would; verify needs only some of the same options, defined the same way.
    assert specs["preflight"]["options"] == options, "entry point preflight validates other options"
    for entry, spec in specs.items():
        for name, option in spec["options"].items():
            assert options.get(name) == option, f"entry point {entry} defines {name} differently from main"


def test_generated_docs_are_current() -> None:
    """Role READMEs, the root README and the comments in defaults/main.yml all come from the specs."""
    stale = [str(path.relative_to(ROOT)) for path, text in role_docs.generated().items() if path.read_text() != text]
    assert not stale, f"stale (run `make docs`): {', '.join(stale)}"


FIXTURES = [role for role in ROLES if role.startswith(("demo_", "test_"))]


def test_every_role_runs_its_preflight_from_the_one_list() -> None:
    """Production roles are validated once, by site.yml's preflight; fixtures only by their own playbook."""
    play = load("playbooks", "preflight.yml")[0]
    listed = [entry["role"] for entry in play["vars"]["_flowerops_roles"]]
    # The checklist is not a stage of site.yml: playbooks/checklist.yml validates it itself. A role may be listed
    # once per group it runs on (the front door's roles on flower_front too).
    assert sorted(set(listed)) == sorted(set(ROLES) - set(FIXTURES) - {"flower_checklist"})
    entries = [(entry["role"], entry["group"]) for entry in play["vars"]["_flowerops_roles"]]
    assert len(entries) == len(set(entries)), entries
    stages = [item["ansible.builtin.import_playbook"] for item in load("site.yml")]
    assert stages[0] == "playbooks/preflight.yml"
    text = "".join((ROOT / stage).read_text() for stage in stages[1:])
    for entry in play["vars"]["_flowerops_roles"]:
        assert f"hosts: {entry['group']}" in text, f"no stage of site.yml runs on group {entry['group']}"


def test_production_paths_do_not_know_the_fixtures() -> None:
    """site.yml, its stages and the example inventories name no demo or test group, role or play."""
    stages = [ROOT / "site.yml"] + [ROOT / item["ansible.builtin.import_playbook"] for item in load("site.yml")]
    inventories = [p for env in ("production", "staging") for p in (ROOT / "inventories" / env).rglob("*.yml")]
    for path in stages + inventories:
        text = path.read_text()
        for fixture in FIXTURES:
            assert fixture not in text, f"{path.relative_to(ROOT)} names the fixture {fixture}"
        assert "fixtures.yml" not in text and "vars/wiring.yml" not in text, path
        assert "_flowerops_preflight_done" not in text, path


@pytest.mark.parametrize("role", ROLES)
def test_every_phase_has_its_tag(role: str) -> None:
    """`--tags <role>_configure` re-renders configuration without a reinstall."""
    main = load("roles", role, "tasks", "main.yml")
    # Roles site.yml runs are validated by its preflight; a fixture or a role outside
    # site.yml (the checklist) validates itself first, under every tag.
    if role in FIXTURES or role == "flower_checklist":
        preflight, *phases = main
        assert "when" not in preflight and preflight["tags"] == ["always"], "it should validate first"
    else:
        phases = main
    for task in phases:
        assert "ansible.builtin.include_tasks" not in task, f"{role}: main.yml validates again"
        phase = task["ansible.builtin.import_tasks"].removesuffix(".yml")
        assert task["tags"] == [f"{role}_{phase}"], f"{role}: {phase}.yml is not tagged {role}_{phase}"


def test_the_docs_quote_the_memory_rules_save_factor_from_its_one_source() -> None:
    """The save factor lives in roles/flower/vars/main.yml; the READMEs that quote it must say the same."""
    factor = yaml.safe_load((ROOT / "roles" / "flower" / "vars" / "main.yml").read_text())["_flower_memory_save_factor"]
    for readme in (ROOT / "README.md", ROOT / "roles" / "flower" / "README.md"):
        quoted = re.findall(r"needs up to ([0-9.]+) times as much", " ".join(readme.read_text().split()))
        assert quoted == [str(factor)], f"{readme.name} says {quoted}, the rule uses {factor}"


def test_the_memory_rule_is_the_one_capacity_py_measured_and_covers_its_figures() -> None:
    """bench/capacity.py records the rule it ran against; the role's rule must still be that one (change a constant,
    run the bench again), and must cover what it measured: every save's peak (periodic, and the highest RSS since
    Flower started), the bytes per task, and MemoryMax's 30 % headroom at the default max_tasks."""
    measured = json.loads((ROOT / "bench" / "results" / "capacity.json").read_text())
    rule = flower_state.sizing_rule()  # read from the role, as the bench reads it
    assert measured["rule"] == rule, "the rule changed since bench/capacity.py measured it: run it again"

    for tasks, save in ((10000, measured["save_10k"]), (50000, measured["save_50k"])):
        peak = max(save["peak_mb"], save["peak_since_start_mb"])
        need = flower_state.need_mib(tasks, rule)
        assert need >= peak, f"at {tasks} tasks the rule says {need:.0f} MiB, measured {peak}"
    assert rule["per_task_kib"] >= measured["kib_per_task"]
    assert rule["save_factor"] >= measured["save_factor_measured"]
    memory_max = float(rule["default_memory_max"].rstrip("M"))
    assert memory_max == measured["memory_max_mb"]
    peak_at_default = max(measured["save_10k"]["peak_mb"], measured["save_10k"]["peak_since_start_mb"])
    assert measured["headroom_pct"] >= 30
    assert (memory_max - peak_at_default) / memory_max >= 0.30, f"{peak_at_default} MiB of {memory_max}"
