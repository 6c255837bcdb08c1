#!/usr/bin/env python3
"""Render the flower_monitoring role's Prometheus files with its defaults, for promtool on this machine.

The role's templates, variables and defaults are the one source: this renders
them as Ansible's template module does (same delimiters, trim_blocks), so
`promtool test rules` proves the rules a host gets with the defaults.

python scripts/render_monitoring.py [--out DIR]
    [--target NAME=ADDRESS[,cluster=C][,server_name=N][,url_prefix=P][,queues][,checklist]]...

writes DIR/flower.yml (the rules) and DIR/prometheus.yml (whose rule_files
points at DIR/flower.yml); DIR defaults to .cache/monitoring.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles" / "flower_monitoring"
MANAGED = "Rendered by scripts/render_monitoring.py from roles/flower_monitoring"


def comment(text: str) -> str:
    """Ansible's `comment` filter with its defaults."""
    return "#\n" + "".join(f"# {line}\n" for line in text.splitlines()) + "#"


TYPED_COPY = re.compile(r"^\{\{ (\w+) \| (int|bool|float) \}\}$")
CONVERT = {"int": int, "float": float, "bool": bool}


def role_vars() -> dict[str, Any]:
    variables: dict[str, Any] = {"ansible_managed": MANAGED}
    for part in ("defaults", "vars"):
        variables.update(yaml.safe_load((ROLE / part / "main.yml").read_text()) or {})
    # The role's typed copies of its inputs (vars/main.yml: _name: "{{ name | int }}"), as Ansible resolves them.
    for name, value in list(variables.items()):
        typed = TYPED_COPY.match(value) if isinstance(value, str) else None
        if typed:
            variables[name] = CONVERT[typed[2]](variables[typed[1]])
    return variables


def role_filters() -> dict[str, Any]:
    """The role's own filters (filter_plugins/), which its templates call as Ansible gives them."""
    spec = importlib.util.spec_from_file_location(
        "flower_monitoring_filters", ROLE / "filter_plugins" / "flower_monitoring.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def render(name: str, variables: dict[str, Any], **delimiters: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
        **delimiters,
    )
    env.filters.update(role_filters())
    env.filters["comment"] = comment
    return env.get_template(name).render(variables)


def parse_target(text: str) -> dict[str, Any]:
    """NAME=ADDRESS[,cluster=C][,server_name=N][,url_prefix=P][,queues][,checklist] -> one flower_monitoring_targets
    entry."""
    head, *options = text.split(",")
    name, _, address = head.partition("=")
    target: dict[str, Any] = {
        "name": name,
        "cluster": "default",
        "address": address,
        "server_name": name,
        "url_prefix": "",
        "queues": False,
    }
    for option in options:
        key, _, value = option.partition("=")
        target[key] = value if value else True
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "monitoring")
    parser.add_argument("--target", action="append", default=[], type=parse_target, help="a scrape target")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    variables = role_vars()
    variables["_flower_monitoring_rules_file"] = str(out / "flower.yml")
    if args.target:
        variables["flower_monitoring_targets"] = args.target
    rules = render("flower-rules.yml.j2", variables, **variables["_flower_monitoring_rules_delimiters"])
    (out / "flower.yml").write_text(rules)
    (out / "prometheus.yml").write_text(render("prometheus.yml.j2", variables))
    print(out / "flower.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
