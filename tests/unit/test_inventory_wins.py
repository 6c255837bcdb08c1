"""Every variable a role's README documents as settable takes effect when an operator sets it in an inventory.

The list comes from the roles' argument specs (the READMEs' tables are generated from them). Each variable gets
a value of its type in an inventory's group_vars; then, for every play of site.yml and of the day-2 playbooks,
Ansible's own variable manager says what each role of the play sees at one of its tasks (role parameters,
play vars and vars_files, include vars: everything that outranks an inventory). Each must be the value set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# Ansible reads its settings when first imported: the project's roles and plugins, as make test sets them.
os.environ.setdefault("ANSIBLE_ROLES_PATH", str(ROOT / "roles"))
os.environ.setdefault("ANSIBLE_LIBRARY", str(ROOT / "library"))
os.environ.setdefault("ANSIBLE_MODULE_UTILS", str(ROOT / "module_utils"))

from ansible import context  # noqa: E402
from ansible.inventory.manager import InventoryManager  # noqa: E402
from ansible.module_utils.common.collections import ImmutableDict  # noqa: E402
from ansible.parsing.dataloader import DataLoader  # noqa: E402
from ansible.playbook import Playbook  # noqa: E402
from ansible.playbook.role_include import IncludeRole  # noqa: E402
from ansible.plugins.loader import init_plugin_loader  # noqa: E402
from ansible.template import Templar  # noqa: E402
from ansible.vars.hostvars import HostVars  # noqa: E402
from ansible.vars.manager import VariableManager  # noqa: E402

ROLES = sorted(p.parents[1].name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))
# Every playbook an operator runs: site.yml's stages and the day-2 ones.
PLAYBOOKS = ["site.yml", "playbooks/checklist.yml", "playbooks/health.yml", "playbooks/restore.yml"]


def settable(role: str) -> dict[str, dict[str, Any]]:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    merged: dict[str, dict[str, Any]] = {}
    for spec in specs.values():
        for name, option in spec.get("options", {}).items():
            merged.setdefault(name, option)
    return merged


def sentinel(name: str, option: dict[str, Any]) -> Any:
    """A value of the option's type no default has."""
    kind = option["type"]
    if kind == "bool":
        return option.get("default") is not True
    if kind == "int":
        return 7919
    if kind == "float":
        return 7.919
    if kind == "list":
        return [{"name": f"set-{name}"}] if option.get("elements") == "dict" else [f"set-{name}"]
    if kind == "dict":
        return {"set": name}
    return f"set-{name}"


SETTABLE = {role: settable(role) for role in ROLES}
VALUES = {name: sentinel(name, option) for options in SETTABLE.values() for name, option in options.items()}


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Any]:
    """(playbook, role, variable) -> the value the role sees, for every role every playbook runs."""
    inventory = tmp_path_factory.mktemp("inventory")
    groups = {"flower": {}, "flower_monitoring": {}}
    (inventory / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {g: {"hosts": {"target": None}} for g in groups}}})
    )
    (inventory / "group_vars").mkdir()
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(VALUES))
    context.CLIARGS = ImmutableDict(tags={}, skip_tags={}, check=False, diff=False)
    init_plugin_loader()
    loader = DataLoader()
    inventory_manager = InventoryManager(loader=loader, sources=[str(inventory / "hosts.yml")])
    variables = VariableManager(loader=loader, inventory=inventory_manager)
    variables._hostvars = HostVars(inventory=inventory_manager, variable_manager=variables, loader=loader)
    host = inventory_manager.get_host("target")
    found: dict[tuple[str, str, str], Any] = {}
    for playbook in PLAYBOOKS:
        for play in Playbook.load(str(ROOT / playbook), variable_manager=variables, loader=loader).get_plays():
            places = [(role.get_name(), block) for role in play.get_roles() for block in role.compile(play=play)]
            places += [
                (task._role_name, task)
                for block in play.compile()
                for task in block.block
                if isinstance(task, IncludeRole)
            ]
            for role, place in places:
                if role not in SETTABLE:
                    continue
                task = place if isinstance(place, IncludeRole) else next(iter(place.block), None)
                if task is None:
                    continue
                names = variables.get_vars(play=play, host=host, task=task)
                templar = Templar(loader=loader, variables=names)
                for name in SETTABLE[role]:
                    try:
                        found[(playbook, role, name)] = templar.template(names.get(name))
                    except Exception as exc:
                        found[(playbook, role, name)] = f"<{type(exc).__name__}>"
    return found


def test_every_role_of_every_playbook_was_inspected(seen: dict[tuple[str, str, str], Any]) -> None:
    roles = {role for _, role, _ in seen}
    assert {"flower", "flower_proxy", "flower_monitoring", "flower_checklist", "flower_backup"} <= roles


@pytest.mark.parametrize("role", ROLES)
def test_an_inventory_value_wins_everywhere_the_role_runs(seen: dict[tuple[str, str, str], Any], role: str) -> None:
    ignored = {
        f"{playbook}: {name} is {value!r}, not the inventory's {VALUES[name]!r}"
        for (playbook, seen_role, name), value in seen.items()
        if seen_role == role and value != VALUES[name]
    }
    assert not ignored, "\n".join(sorted(ignored))
