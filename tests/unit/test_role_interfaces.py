"""Each role's manual (defaults/main.yml), its argument specs and the README agree."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())
sys.path.insert(0, str(ROOT / "scripts"))
import variables_table  # noqa: E402


def load(role: str, *parts: str) -> Any:
    return yaml.safe_load((ROOT / "roles" / role / Path(*parts)).read_text()) or {}


def test_every_role_has_argument_specs() -> None:
    assert sorted(p.name for p in (ROOT / "roles").iterdir()) == ROLES


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_the_argument_specs(role: str) -> None:
    defaults = load(role, "defaults", "main.yml")
    specs = load(role, "meta", "argument_specs.yml")["argument_specs"]
    options = specs["main"]["options"]
    required = {name for name, option in options.items() if option.get("required")}
    assert set(defaults) == set(options) - required, "defaults/main.yml and argument_specs.yml list other keys"
    for name, value in defaults.items():
        assert options[name].get("default") == value, f"{name}: the spec's default differs from defaults/main.yml"
        assert name.startswith(role + "_"), f"{name} is not prefixed with the role's name"
    for name in required:
        assert options[name].get("no_log") or "secret" not in options[name]["description"].lower()
    # Every entry point validates the same options, so preflight refuses what main would.
    for entry, spec in specs.items():
        assert spec["options"] == options, f"entry point {entry} validates other options"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_comment(role: str) -> None:
    lines = (ROOT / "roles" / role / "defaults" / "main.yml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):
            above = lines[number - 1]
            assert above.startswith("#") or re.match(r"^[a-z_]+:", above), f"{line} has no comment above it"


def test_readme_variable_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert variables_table.render() in readme, "README's variable table is stale: run `make docs`"
