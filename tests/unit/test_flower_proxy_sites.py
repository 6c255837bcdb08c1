"""roles/flower_proxy/filter_plugins/flower_proxy.py: the sites a front door serves, one per Flower host, each with
that host's recorded prefix, gate and CA, and that host's own auth mode and logins.

nginx serving them (each prefix with its own logins, a viewer read-only) is proven in Molecule
(molecule/split/tests/test_front.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from module_runner import load_file

ROLE = Path(__file__).resolve().parents[2] / "roles" / "flower_proxy"
PLUGIN = load_file("flower_proxy_filters", ROLE / "filter_plugins" / "flower_proxy.py")
USERS = [{"name": "ops", "password": "a-long-password-1", "role": "admin"}]


def host(prefix: str, mode: str | None, ca_pem: str = "") -> dict[str, Any]:
    recorded = {"flower_proxy": {"url_prefix": prefix, "gate": "10.0.0.5:8443", "domain": "f.internal"}}
    recorded["flower_tls"] = {"ca_pem": ca_pem} if ca_pem else {}
    return {"ansible_local": recorded, "flower_users": USERS} | ({"flower_auth_mode": mode} if mode else {})


def test_each_host_is_a_site_with_its_own_logins_only_where_nginx_checks_them() -> None:
    hostvars = {"a": host("", "basic"), "b": host("/flower-b", None, "PEM"), "c": host("/c", "oauth")}
    sites = PLUGIN.flower_proxy_fronted_sites(["b", "a", "c"], hostvars, "/etc/nginx/flower-fronted")
    assert [(s["id"], s["host"], s["prefix"]) for s in sites] == [(0, "b", "/flower-b"), (1, "a", ""), (2, "c", "/c")]
    by_host = {s["host"]: s for s in sites}
    # Unset auth mode: the flower role's default, proxy: nginx checks the host's logins, in a file of its own.
    assert by_host["b"]["auth"] and by_host["b"]["users"] == USERS and not by_host["b"]["forward_client_login"]
    assert by_host["b"]["htpasswd"] == "/etc/nginx/flower-fronted/b.htpasswd"
    # Basic: Flower checks them, the client's login is passed on; no password reaches the door's files.
    assert not by_host["a"]["auth"] and by_host["a"]["forward_client_login"] and by_host["a"]["users"] == []
    assert not by_host["c"]["auth"] and not by_host["c"]["forward_client_login"] and by_host["c"]["users"] == []
    # The gate's certificate: checked with the CA the host recorded, else the system's.
    assert by_host["b"]["ca"] == "/etc/nginx/flower-fronted/b-ca.pem" and by_host["b"]["ca_pem"] == "PEM"
    assert by_host["a"]["ca"] == PLUGIN.SYSTEM_CAS


def test_a_host_that_recorded_nothing_yet_is_a_site_without_a_gate() -> None:
    """Check mode before the Flower host ever ran: preflight and front.yml's assert stop a real run there."""
    (site,) = PLUGIN.flower_proxy_fronted_sites(["new"], {"new": {}}, "/d")
    assert site["upstream"] == "" and site["prefix"] == "" and site["auth"]
