"""The provided TLS mode (the operator's own certificate files), deployed in turn on the split scenario's Flower
host: nginx serves them, the verify stage checks them against the operator's CA, the private key never shows in
Ansible's output, and the monitoring host's scrape and the front door follow the new CA. The same run moves the
Flower group's nginx to its own logins (proxy mode), and the front door follows: it checks the logins itself, and
the gate adds nginx's own, which Flower accepts in either mode. Flower's own settings are left alone (a run of
its configure phase would put back the broker password test_split_broker_rotation.py rotated away from). Runs
last (it leaves the Flower host on the operator's certificate and nginx in proxy mode)."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

import testinfra
from conftest import (
    ADMIN,
    CA_COPY,
    DOMAIN,
    FLOWER,
    FRONT,
    MONITOR,
    flower_targets_up,
    get,
    platform_host,
    run_playbook,
    wait_for,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_provided(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An operator's own CA, and a certificate and key for the domain it signed, with the extensions a real CA
    sets (key usage and key identifiers: Python 3.13's strict verification, on Debian 13, requires them)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowerops split test provided CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
        # Python 3.13 (Debian 13) verifies strictly: a CA-issued certificate must name its issuer's key.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp_path / "ca.pem", tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o600)
    return paths


def test_the_provided_mode_in_turn_and_the_scrape_follows(flower: Any, tmp_path: Path) -> None:
    """Last: it leaves the Flower host on the operator's certificate."""
    ca, chain, key = make_provided(tmp_path)
    on_host = "/usr/local/share/ca-certificates/flowerops-split-provided.crt"
    # The operator's CA on both hosts that serve the name here: the Flower host and its front door.
    for target in (flower, platform_host(FRONT)):
        copied = target.run("echo %s | base64 -d > %s", base64.b64encode(ca.read_bytes()).decode(), on_host)
        assert copied.rc == 0, copied.stderr
    settings = {
        # The door follows its Flower host's auth mode (and a run converging both changes both).
        "flower_auth_mode": "proxy",
        "flower_tls_mode": "provided",
        "flower_tls_provided_certificate": str(chain),
        "flower_tls_provided_key": str(key),
        "flower_tls_trusted_ca": on_host,
    }
    # The stages the modes touch (the certificate, nginx, the monitoring host's scrape), and the final checks.
    tags = "flower_tls_configure,flower_proxy_configure,flower_monitoring_configure"
    # The Flower host, its door and the monitoring host alone (cluster b's Flower, behind the same door, keeps its
    # certificate: the door goes on checking its gate with the CA it recorded).
    limit = ",".join((FLOWER, FRONT, MONITOR))
    result = run_playbook("site.yml", "--limit", limit, "--tags", tags, "-e", json.dumps(settings))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert key.read_text().strip().splitlines()[1] not in output, "the private key is in Ansible's output"
    # The served certificate is the operator's: it verifies against their CA, not the local one.
    status, _ = get("/api/workers", ca, (ADMIN["name"], ADMIN["password"]))
    assert status == 200
    # The front door follows: its own certificate is the operator's too, and it checks the gate's new one with
    # the CA the Flower host recorded now.
    status, _ = get("/api/workers", ca, (ADMIN["name"], ADMIN["password"]), via=FRONT)
    assert status == 200
    # Proxy mode at the door: a wrong password is refused by the door's nginx itself (its error log names the
    # check), and the right one gets Flower's answer, which asks for nginx's login (the gate adds it).
    front = platform_host(FRONT)

    def mismatches() -> int:
        return int(front.run("grep -c 'password mismatch' /var/log/nginx/flower/error.log || true").stdout or 0)

    marks = mismatches()
    assert get("/api/workers", ca, (ADMIN["name"], "wrong-password-123"), via=FRONT)[0] == 401
    assert mismatches() == marks + 1, marks
    monitor = testinfra.get_host(f"docker://{MONITOR}")
    assert monitor.file(CA_COPY).content_string == ca.read_text()
    seen = wait_for(lambda: flower_targets_up(monitor) == {"flower": "up", "flower_queues": "up"}, timeout=90)
    assert seen, f"after the switch, targets of {FLOWER}: {flower_targets_up(monitor)}"
