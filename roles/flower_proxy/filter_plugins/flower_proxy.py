"""Filters of the flower_proxy role: the sites a front door serves, one per Flower host it passes to.

A front door (flower_proxy_upstream_hosts) serves several Flower hosts (one per Celery cluster) under one
public name, each under the URL prefix its Flower host recorded, each with that host's own logins and auth
mode: what playbooks/front.yml read from those hosts' local facts (ansible_local) and their inventory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"


def _section(facts: Any, name: str) -> Mapping[str, Any]:
    section = facts.get(name) if isinstance(facts, Mapping) else None
    return section if isinstance(section, Mapping) else {}


def flower_proxy_fronted_sites(hosts: list[str], hostvars: Mapping[str, Any], files_dir: str) -> list[dict[str, Any]]:
    """One site per Flower host, in the order given: where its gate is, how its certificate is checked, who
    logs in (its flower_users and flower_auth_mode; proxy when unset, as in the flower role) and where this
    door keeps its logins and CA (files_dir/<host>.htpasswd, files_dir/<host>-ca.pem)."""
    sites = []
    for index, host in enumerate(hosts):
        host_vars = hostvars[host]
        facts = host_vars.get("ansible_local", {})
        proxy, tls = _section(facts, "flower_proxy"), _section(facts, "flower_tls")
        mode = str(host_vars.get("flower_auth_mode", "proxy"))
        ca_pem = str(tls.get("ca_pem", "") or "")
        sites.append(
            {
                "id": index,
                "host": host,
                "prefix": str(proxy.get("url_prefix", "") or ""),
                "upstream": str(proxy.get("gate", "") or ""),
                "tls": True,
                # nginx checks the logins (proxy mode); Flower does (basic: the client's login is passed on);
                # or Flower's OAuth2 login does, with nothing to check here.
                "auth": mode == "proxy",
                "forward_client_login": mode == "basic",
                "users": list(host_vars.get("flower_users", []) or []) if mode == "proxy" else [],
                "htpasswd": f"{files_dir}/{host}.htpasswd",
                "ca_pem": ca_pem,
                "ca": f"{files_dir}/{host}-ca.pem" if ca_pem else SYSTEM_CAS,
                "name": str(proxy.get("domain", "") or ""),
            }
        )
    return sites


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"flower_proxy_fronted_sites": flower_proxy_fronted_sites}
