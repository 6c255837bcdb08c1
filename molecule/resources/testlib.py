"""Helpers every scenario's testinfra checks share (each scenario's conftest.py imports them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import jinja2
import yaml

# Debian's chromium, which playwright drives for the browser tests.
CHROMIUM = "/usr/bin/chromium"
RECAP = r"{}\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 1.0) -> Any:
    """Poll predicate until it returns a truthy value; bounded by timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def record(project_dir: Path, name: str, seconds: float) -> None:
    """A drill's figure, into .artifacts/drills.json (the README's "What survives what" quotes them)."""
    figures_file = project_dir / ".artifacts" / "drills.json"
    figures = json.loads(figures_file.read_text()) if figures_file.exists() else {}
    figures[name] = round(seconds, 1 if seconds >= 1 else 3)
    figures_file.parent.mkdir(parents=True, exist_ok=True)
    figures_file.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"{name}: {figures[name]} s")


def service_diagnostics(host: Any, unit: str, log_file: str | None = None) -> str:
    journal = host.run("journalctl -u %s --no-pager -n 50", unit).stdout
    log = host.run("tail -n 50 %s", log_file).stdout if log_file else ""
    return f"\n--- journalctl -u {unit} ---\n{journal}\n--- {log_file or ''} ---\n{log}"


def main_pid(host: Any, unit: str = "flower") -> str:
    """A unit's main process ("0" when it runs none): a new one means the unit was (re)started."""
    return host.run("systemctl show -P MainPID %s", unit).stdout.strip() or "0"


def container_ip(host: Any) -> str:
    name = host.backend.get_hostname()
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    inspect = subprocess.run(
        ["docker", "inspect", "-f", template, name], capture_output=True, text=True, timeout=30, check=True
    )
    return inspect.stdout.split()[0]


def ssh_connection(project_dir: Path) -> dict[str, str]:
    """How Molecule's inventory reaches the containers (the shared config's SSH settings, the run's directory
    filled in): for the inventories the tests write themselves."""
    shared = yaml.safe_load((project_dir / ".config" / "molecule" / "config.yml").read_text())
    settings = shared["provisioner"]["inventory"]["group_vars"]["all"]
    return {name: os.path.expandvars(str(value)) for name, value in settings.items()}


def ansible_playbook(project_dir: Path, inventory: Path, playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook from the controller, in the project's directory, without colours (tests read its output)."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    env.pop("ANSIBLE_LOG_PATH", None)  # the log is Molecule's own steps (test_ansible_runs.py reads it)
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), playbook, *args],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def recap(output: str, name: str) -> tuple[int, int, int, int]:
    """ok, changed, unreachable and failed of host `name` in an ansible-playbook run's last recap."""
    found = re.findall(RECAP.format(re.escape(name)), output)
    assert found, output[-3000:]
    return tuple(int(n) for n in found[-1])  # type: ignore[return-value]


def virtualenv_and_lock(host: Any, lock_file: str, venv: str) -> tuple[set[str], set[str]]:
    """What Flower's virtualenv holds (pip freeze) and what its lock names for this host's Python (the lock's
    markers evaluated there), both as normalised name==version pins."""
    lock = host.file(lock_file).content_string
    pins = [re.match(r"^([A-Za-z0-9][\w.-]*==[^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", ln) for ln in lock.splitlines()]
    pins = [pin for pin in pins if pin]
    assert len(pins) > 10 and lock.count("--hash=sha256:") >= len(pins), f"{lock_file} is not a hashed closure"
    markers = sorted({pin[2] for pin in pins if pin[2]})
    evaluate = "import sys; from packaging.markers import Marker; print([Marker(m).evaluate() for m in sys.argv[1:]])"
    answers = json.loads(host.check_output("python3 -c %s" + " %s" * len(markers), evaluate, *markers).lower())
    applies = dict(zip(markers, answers, strict=True))
    wanted = {_normalized(pin[1]) for pin in pins if not pin[2] or applies[pin[2]]}
    freeze = host.run("%s/bin/python -m pip freeze", venv)
    assert freeze.rc == 0, freeze.stderr
    return {_normalized(line) for line in freeze.stdout.splitlines() if "==" in line}, wanted


def _normalized(pin: str) -> str:
    name, _, version = pin.partition("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def role_settings(project_dir: Path, role: str, inventory: dict[str, Any], part: str = "defaults") -> dict[str, Any]:
    """A role's defaults (part "vars": its internal names) as a scenario deploys them: the values that follow
    other settings ("{{ flower_db }}", "/var/lib/flower{{ _flower_account_suffix }}") rendered with every role's
    vars and defaults and the scenario's group_vars (a value that needs the host, such as ansible_local, stays
    as written)."""
    every: dict[str, Any] = {}
    for kind in ("vars", "defaults"):
        for path in sorted((project_dir / "roles").glob(f"*/{kind}/main.yml")):
            every.update(yaml.safe_load(path.read_text()) or {})
    every.update(inventory)
    own = yaml.safe_load((project_dir / "roles" / role / part / "main.yml").read_text())
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)

    def render(value: Any, depth: int = 0) -> Any:
        if not isinstance(value, str) or "{{" not in value or depth > 5:
            return value
        try:
            rendered = environment.from_string(value).render(every)
        except (jinja2.TemplateError, TypeError, AttributeError):
            return value
        return render(rendered, depth + 1)

    return {name: render(value) for name, value in own.items()}
