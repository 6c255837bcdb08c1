"""The README's two commands are the whole set-up: CI runs nothing a newcomer would not."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "scripts" / "host-packages.txt"


def listed_packages() -> set[str]:
    lines = (re.sub(r"#.*", "", line).strip() for line in PACKAGES.read_text().splitlines())
    return {line.split()[0] for line in lines if line}


def test_ci_only_calls_the_readme_test_command() -> None:
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "make test"
    extra = [c for c in commands[:-1] if not re.match(r"^(set -[a-z]+( pipefail)?|cd .*)$", c)]
    assert not extra, f".ci/run does more than the README's command: {extra}"
    assert "make test" in (ROOT / "README.md").read_text()


def test_make_installs_the_host_packages_first() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/host-packages.sh" in makefile
    for target in ("venv", "engine"):
        rule = re.search(rf"^{target}:(.*)$", makefile, re.M)
        assert rule and "host-packages" in rule.group(1), f"`make {target}` does not install the host packages first"


def test_every_tool_the_tests_run_is_in_the_one_list() -> None:
    """Each program the suite calls comes from a listed package (or ships with Debian 12 and Python)."""
    needed = {"redis-server": "redis-server", "docker": "docker.io", "dockerd": "docker.io",
              "debootstrap": "debootstrap", "git": "git", "ip": "iproute2", "ssh": "openssh-client"}  # fmt: skip
    missing = {tool: package for tool, package in needed.items() if package not in listed_packages()}
    assert not missing, f"scripts/host-packages.txt lacks {missing}"
    # And on this machine, having run `make`, they are really there.
    assert all(shutil.which(tool) for tool in needed), [tool for tool in needed if not shutil.which(tool)]
