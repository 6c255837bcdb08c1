"""Filters of the flower_monitoring role: the scrape targets, from what each Flower host's roles recorded.

Each Flower host's flower role records the cluster its Flower watches, and its front door (the flower_proxy
role) records in its local facts where and under which name it is scraped, and whether it serves the queue
exporter; the flower_tls role records the CA its certificate is checked with (its content: a path on the Flower
host means nothing here). A host with no such facts yet (never deployed, or a check-mode preview before the first
run) is not a target.
"""

from __future__ import annotations

from typing import Any


def flower_scrape_targets(hosts: list[str], hostvars: Any) -> list[dict[str, Any]]:
    """Scrape targets (name, cluster, address, server_name, url_prefix, queues, checklist, ca_pem) of the hosts
    that opt in; a Flower that recorded no cluster (deployed before flower_cluster) is in the cluster "default"."""
    targets = []
    for name in hosts:
        local = hostvars[name].get("ansible_local") or {}
        proxy = local.get("flower_proxy") or {}
        if not proxy or not proxy.get("scrape", True):
            continue
        targets.append(
            {
                "name": name,
                "cluster": (local.get("flower") or {}).get("cluster") or "default",
                "address": proxy.get("scrape_address") or f"{proxy['domain']}:443",
                "server_name": proxy["domain"],
                "url_prefix": proxy.get("url_prefix", ""),
                "queues": bool(proxy.get("queues", False)),
                "checklist": bool(proxy.get("checklist_metrics_file")),
                "ca_pem": (local.get("flower_tls") or {}).get("ca_pem", ""),
            }
        )
    return targets


# Each scrape kind of a target, and the target's key that turns it on (None: always).
SCRAPE_KINDS = (("flower", None), ("flower_queues", "queues"), ("flower_checklist", "checklist"))


def flower_scrape_jobs(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each scrape job of the targets (job_name, kind, target), in order: Flower, then its queue exporter and its
    checklist watcher when the target serves them. templates/prometheus.yml.j2 writes them, and the role waits
    until Prometheus lists every one (tasks/service.yml)."""
    return [
        {"job_name": f"{kind.replace('_', '-')}-{target['name']}", "kind": kind, "target": target}
        for target in targets
        for kind, switch in SCRAPE_KINDS
        if switch is None or target.get(switch, False)
    ]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"flower_scrape_targets": flower_scrape_targets, "flower_scrape_jobs": flower_scrape_jobs}
