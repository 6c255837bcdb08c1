"""roles/flower_monitoring/filter_plugins/flower_monitoring.py: the scrape targets built from what each Flower host
recorded, each entry one the role's argument spec accepts (its options for flower_monitoring_targets), with the
cluster the host's flower role recorded.

Prometheus scraping them, labelled by cluster, is proven in Molecule (molecule/default/tests/test_monitoring.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from module_runner import load_file

ROLE = Path(__file__).resolve().parents[2] / "roles" / "flower_monitoring"
PLUGIN = load_file("flower_monitoring_filters", ROLE / "filter_plugins" / "flower_monitoring.py")
SPEC = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
OPTIONS: dict[str, Any] = SPEC["argument_specs"]["main"]["options"]["flower_monitoring_targets"]["options"]


def facts(cluster: str | None) -> dict[str, Any]:
    flower = {"version": "2.2.0"} | ({"cluster": cluster} if cluster else {})
    proxy = {"domain": "flower.example.com", "url_prefix": "", "queues": True, "checklist_metrics_file": "/x.prom"}
    return {"ansible_local": {"flower": flower, "flower_proxy": proxy, "flower_tls": {"ca_pem": "PEM"}}}


def test_each_target_is_one_the_argument_spec_accepts_and_carries_its_cluster() -> None:
    hostvars = {"f1": facts("orders"), "f2": facts(None), "new": {}}
    targets = PLUGIN.flower_scrape_targets(["f1", "f2", "new"], hostvars)
    assert [target["name"] for target in targets] == ["f1", "f2"]  # "new" recorded nothing yet: not a target
    for target in targets:
        assert set(target) <= set(OPTIONS), set(target) - set(OPTIONS)
        assert {name for name, option in OPTIONS.items() if option.get("required")} <= set(target)
    # A host deployed before flower_cluster existed recorded none: the spec's default.
    assert [target["cluster"] for target in targets] == ["orders", OPTIONS["cluster"]["default"]]


def test_scrape_jobs_name_each_targets_flower_and_only_the_exporters_it_serves() -> None:
    targets = [{"name": "f1", "queues": True, "checklist": True}, {"name": "f2", "queues": False}, {"name": "f3"}]
    jobs = PLUGIN.flower_scrape_jobs(targets)
    assert [(job["job_name"], job["kind"], job["target"]["name"]) for job in jobs] == [
        ("flower-f1", "flower", "f1"),
        ("flower-queues-f1", "flower_queues", "f1"),
        ("flower-checklist-f1", "flower_checklist", "f1"),
        ("flower-f2", "flower", "f2"),
        ("flower-f3", "flower", "f3"),
    ]
