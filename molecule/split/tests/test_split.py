"""Flower and its monitoring on hosts of their own, as the README recommends for production.

Prometheus on the monitoring host scrapes the Flower host across the network, trusting the CA that host's
flower_tls recorded (a local CA here: selfsigned); Flower checks the users' own logins (basic mode); the
production checklist passes with its items 9 and 10 observed on the other host; the local CA may sign only
the served name; and the Flower host
re-deployed with the provided TLS mode is test_tls_provided.py's (it runs after this module).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ADMIN,
    BROKER,
    BROKER_CA,
    CA_COPY,
    DOMAIN,
    FLOWER,
    FLOWER_B,
    FRONT,
    GROUP_VARS,
    LOCAL_CA,
    MONITOR,
    PROJECT_DIR,
    SECRETS,
    WORKERS,
    connect_from,
    container_ip,
    flower_host,
    flower_targets_up,
    get,
    platform_host,
    prometheus_data,
    request,
    run_playbook,
    served_ca,
    wait_for,
)


def test_prometheus_scrapes_flower_across_the_network(monitor: Any) -> None:
    seen = wait_for(lambda: flower_targets_up(monitor) == {"flower": "up", "flower_queues": "up"}, timeout=90)
    assert seen, f"targets of {FLOWER}: {flower_targets_up(monitor)}"


def test_the_scrape_trusts_the_ca_the_flower_host_recorded(monitor: Any) -> None:
    """The CA's content reached the monitoring host, where the prometheus user reads it (not a path into the
    Flower host's root-only directory)."""
    copy = monitor.file(CA_COPY)
    assert copy.exists and copy.mode == 0o644
    assert copy.content_string == flower_host().file(LOCAL_CA).content_string
    assert monitor.run("runuser -u prometheus -- cat %s", CA_COPY).rc == 0


def test_flower_checks_the_users_own_login(flower: Any, tmp_path: Path) -> None:
    """Basic mode: nginx passes the user's login through and Flower checks it."""
    ca = served_ca(tmp_path)
    status, body = get("/api/workers", ca, (ADMIN["name"], ADMIN["password"]))
    assert status == 200 and json.loads(body), body[:300]
    assert get("/api/workers", ca, (ADMIN["name"], "wrong-password-123"))[0] == 401
    assert get("/api/workers", ca, None)[0] == 401


def test_a_cross_site_post_is_refused_in_basic_mode(flower: Any, tmp_path: Path) -> None:
    """A page on another site, sending the admin's own login (a browser adds basic auth by itself): 403 from
    nginx, before Flower; the same request from Flower's own page goes through."""
    ca, login, task = served_ca(tmp_path), (ADMIN["name"], ADMIN["password"]), str(uuid.uuid4())
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        status = request("POST", f"/api/task/revoke/{task}", ca, login, headers)[0]
        assert status == 403, f"a cross-site POST with {headers} got {status}"
    same = request("POST", f"/api/task/revoke/{task}", ca, login, {"Origin": f"https://{DOMAIN}"})[0]
    assert same == 200, f"the same-origin POST got {same}"


def test_the_checklist_passes_with_monitoring_on_its_own_host(flower: Any) -> None:
    result = run_playbook("playbooks/checklist.yml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # Both clusters' Flower hosts: a on its own, b beside its broker.
    for name in (FLOWER, FLOWER_B):
        report = json.loads((PROJECT_DIR / ".artifacts" / "checklist" / f"{name}.json").read_text())
        items = {item["id"]: item for item in report["items"]}
        assert [n for n, item in items.items() if item["status"] != "PASS"] == [], report
        assert "up" in items[9]["evidence"], items[9]
    assert not [s for s in SECRETS if s in output]


# A client that knows the password but speaks Redis's plain protocol to the broker's port.
PLAIN_CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 6379), timeout=5) as conn:
        conn.sendall(b"AUTH " + sys.argv[2].encode() + b"\\r\\nPING\\r\\n")
        print(repr(conn.recv(200)))
except OSError as exc:
    print(repr(exc))
"""


def test_the_broker_speaks_tls_alone_and_only_to_clients_that_trust_its_ca(flower: Any) -> None:
    """The broker is Redis over TLS (rediss://, demo_broker_tls) on a host of its own: a plain client on the
    Flower host with the right password gets no answer on its port, a TLS client checking against Debian's trust
    store refuses the broker's certificate, and one given the broker's CA (as Flower and the workers are,
    flower_broker_ca_file) is answered. Flower watching this broker is what the other tests and the drills show
    (its workers online, tasks arriving)."""
    password = GROUP_VARS["demo_broker_password"]
    plain = flower.run("python3 -c %s %s %s", PLAIN_CLIENT, BROKER, password)
    assert plain.rc == 0, plain.stderr
    assert "PONG" not in plain.stdout and "+OK" not in plain.stdout, plain.stdout
    broker = platform_host(BROKER)
    untrusted = broker.run("redis-cli --tls -h localhost --no-auth-warning -a %s ping", password)
    assert "PONG" not in untrusted.stdout, untrusted.stdout
    assert "certificate verify failed" in untrusted.stdout + untrusted.stderr, untrusted.stdout + untrusted.stderr
    trusted = broker.run("redis-cli --tls --cacert %s -h localhost --no-auth-warning -a %s ping", BROKER_CA, password)
    assert trusted.stdout.strip() == "PONG", trusted.stdout + trusted.stderr


def test_the_brokers_port_admits_flower_and_the_workers_alone(flower: Any) -> None:
    """The broker host's firewall (flower_firewall_extra_rules in molecule.yml) opens Redis's port to the Flower
    and worker hosts' addresses alone: from the monitoring host the connection times out (dropped), and Redis
    listens beyond loopback, so it is the firewall that holds."""
    broker = platform_host(BROKER)
    address = container_ip(broker)
    assert [line for line in broker.run("ss -Hltn 'sport = :6379'").stdout.splitlines() if "0.0.0.0:" in line]
    assert connect_from(platform_host(MONITOR), address, 6379) == "filtered"
    for source in (FLOWER, *WORKERS):
        assert connect_from(platform_host(source), address, 6379) == "open", source
    assert "Status: active" in broker.check_output("ufw status")


def workers_online(ca: Path) -> dict[str, bool]:
    """Flower's view of its workers (name -> online), through the front door on its own host."""
    status, body = get("/api/workers?status=1", ca, (ADMIN["name"], ADMIN["password"]), via=FRONT)
    return json.loads(body) if status == 200 else {}


def worker_offline_alerts() -> list[str]:
    """The workers FlowerWorkerOffline fires for, from Prometheus on the monitoring host."""
    alerts = prometheus_data(platform_host(MONITOR), "alerts").get("alerts", [])
    return [
        alert["labels"].get("worker", "")
        for alert in alerts
        if alert["labels"]["alertname"] == "FlowerWorkerOffline" and alert["state"] == "firing"
    ]


def test_a_stopped_worker_host_shows_offline_in_flower_and_fires_the_alert(flower: Any, tmp_path: Path) -> None:
    """Both worker hosts' workers are online in Flower, through the front door's host; the second worker host shut down
    (docker stop: systemd's own shutdown, the worker says goodbye) shows offline there, and Prometheus fires
    FlowerWorkerOffline naming it (flower_monitoring_worker_offline_for is 10s here). Started again, it comes
    back online and the alert clears."""
    ca = served_ca(tmp_path, FRONT)
    names = [f"demo-worker@{name}" for name in WORKERS]
    assert wait_for(lambda: all(workers_online(ca).get(name) for name in names), timeout=60), workers_online(ca)
    stopped = names[-1]
    subprocess.run(["docker", "stop", "--time", "60", WORKERS[-1]], check=True, capture_output=True, timeout=90)
    try:
        assert wait_for(lambda: workers_online(ca).get(stopped) is False, timeout=60), workers_online(ca)
        assert workers_online(ca).get(names[0]) is True, workers_online(ca)
        fired = wait_for(lambda: stopped in worker_offline_alerts(), timeout=90, interval=2)
        assert fired, f"FlowerWorkerOffline fires for {worker_offline_alerts()}"
        assert worker_offline_alerts() == [stopped]
    finally:
        subprocess.run(["docker", "start", WORKERS[-1]], check=True, capture_output=True, timeout=60)
    assert wait_for(lambda: workers_online(ca).get(stopped) is True, timeout=90), workers_online(ca)
    assert wait_for(lambda: not worker_offline_alerts(), timeout=60, interval=2), worker_offline_alerts()


def test_debian_13s_openssl_negotiates_the_post_quantum_hybrid_group(flower: Any) -> None:
    """OpenSSL 3.5 (this scenario's Debian 13) knows X25519MLKEM768, and the proxy offers it first; a client
    that offers it alone gets it (Debian 12's OpenSSL 3.0 does not know it: the default scenario's nginx starts
    without it)."""
    library = flower.run("openssl version").stdout.split()
    if len(library) < 2 or tuple(int(n) for n in library[1].split(".")[:2]) < (3, 5):
        pytest.skip(f"OpenSSL {library[1:2]} predates X25519MLKEM768 (FLOWEROPS_DEBIAN_RELEASE=12)")
    run = flower.run(
        "openssl s_client -connect 127.0.0.1:443 -servername %s -groups X25519MLKEM768 -brief < /dev/null", DOMAIN
    )
    assert "Negotiated TLS1.3 group: X25519MLKEM768" in run.stdout + run.stderr, (run.stdout + run.stderr)[-600:]


def test_the_local_ca_may_sign_only_the_served_name(flower: Any) -> None:
    """The selfsigned mode's CA (the one operators are told to trust), as deployed here, carries name constraints:
    openssl refuses a certificate it signed for another name."""
    ca_dir = LOCAL_CA.rsplit("/", 1)[0]  # <flower_tls_dir>/ca
    ca, ca_key, tls_dir = LOCAL_CA, f"{ca_dir}/ca.key", ca_dir.rsplit("/", 1)[0]
    constraints = flower.run("openssl x509 -in %s -noout -ext nameConstraints", ca).stdout
    assert "critical" in constraints and f"Permitted:\n      DNS:{DOMAIN}" in constraints, constraints
    served = flower.run("openssl verify -CAfile %s %s/%s/fullchain.pem", ca, tls_dir, DOMAIN)
    assert served.rc == 0, served.stdout + served.stderr
    try:
        forged = flower.run(
            "cd /var/tmp && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout evil.key"
            " -subj /CN=evil.example -addext subjectAltName=DNS:evil.example -out evil.csr 2>/dev/null"
            " && openssl x509 -req -in evil.csr -CA %s -CAkey %s -CAcreateserial -days 1 -copy_extensions copy"
            " -out evil.crt 2>/dev/null && openssl verify -CAfile %s evil.crt",
            ca,
            ca_key,
            ca,
        )
        assert forged.rc != 0 and "permitted subtree violation" in forged.stdout + forged.stderr, forged.stdout
    finally:
        flower.run("rm -f /var/tmp/evil.key /var/tmp/evil.csr /var/tmp/evil.crt %s/ca.srl", ca_dir)
