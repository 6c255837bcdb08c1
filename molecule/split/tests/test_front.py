"""The front door on a host of its own: nginx with TLS, the logins, the limits and fail2ban on the front host,
passing across the network to the Flower host's gate (flower_proxy_gate_listen): TLS, the gate's certificate
checked by the door for the Flower host's name, and a client certificate the gate requires.

The attackers are real clients: a browser through the door, a TLS client on the door's own host with no client
certificate or one of its own making, and a raw TCP client on a worker host.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ADMIN,
    DOMAIN,
    FLOWER,
    FLOWER_B,
    FRONT,
    HOST_VARS,
    PREFIX_B,
    USERS_B,
    WORKERS,
    connect_from,
    container_ip,
    flower_host,
    get,
    only_on,
    platform_host,
    request,
    served_ca,
    wait_for,
)
from playwright.sync_api import sync_playwright
from testlib import CHROMIUM

GATE: str = HOST_VARS[FLOWER]["flower_proxy_gate_listen"]
GATE_ADDRESS, GATE_PORT = GATE.rsplit(":", 1)
PKI = "/etc/ssl/flowerops-front"
LOGIN = (ADMIN["name"], ADMIN["password"])
# Cluster b's logins (nginx checks them at the door: its Flower host is in proxy mode).
LOGIN_B, VIEWER_B = ((user["name"], user["password"]) for user in USERS_B)
WORKER_B = f"demo-worker@{FLOWER_B}"
# flower_proxy's default flower_proxy_reader_socket on a Flower host.
READER_SOCKET = "/run/flower-proxy-readers/http.sock"


@pytest.fixture(scope="module")
def front(host: Any) -> Any:
    return only_on(host, FRONT)


def test_through_the_door_flower_shows_both_worker_hosts(front: Any, tmp_path: Path) -> None:
    """The door's own certificate (its local CA), the users' logins, and Flower's answer from the other host."""
    ca = served_ca(tmp_path, FRONT)
    status, body = get("/api/workers?status=1", ca, LOGIN, via=FRONT)
    assert status == 200, body[:300]
    online = json.loads(body)
    assert all(online.get(f"demo-worker@{name}") for name in WORKERS), online
    assert WORKER_B not in online, "cluster b's worker is in cluster a's Flower"
    assert get("/api/workers", ca, (ADMIN["name"], "wrong-password-123"), via=FRONT)[0] == 401
    assert get("/api/workers", ca, None, via=FRONT)[0] == 401


def test_one_door_serves_the_second_cluster_under_its_prefix_with_its_own_logins(front: Any, tmp_path: Path) -> None:
    """Cluster b's Flower (on the broker's host) under /flower-b at the same name: its own worker alone, its own
    logins alone (a's admin gets 401 there, b's admin gets 401 at a's root), and its viewer may only read."""
    ca = served_ca(tmp_path, FRONT)
    status, body = get(f"{PREFIX_B}/api/workers?status=1", ca, LOGIN_B, via=FRONT)
    assert status == 200, body[:300]
    online = json.loads(body)
    assert online.get(WORKER_B) is True, online
    assert not [name for name in WORKERS if f"demo-worker@{name}" in online], f"cluster a's workers in b's: {online}"
    assert get(f"{PREFIX_B}/api/workers", ca, LOGIN, via=FRONT)[0] == 401
    assert get("/api/workers", ca, LOGIN_B, via=FRONT)[0] == 401
    assert get(f"{PREFIX_B}/api/workers", ca, None, via=FRONT)[0] == 401
    assert get(f"{PREFIX_B}/api/workers", ca, VIEWER_B, via=FRONT)[0] == 200
    revoke = f"{PREFIX_B}/api/task/revoke/00000000-0000-0000-0000-000000000000"
    assert request("POST", revoke, ca, VIEWER_B, via=FRONT)[0] == 403
    assert request("POST", revoke, ca, LOGIN_B, via=FRONT)[0] == 200


def test_an_upgraded_door_keeps_no_copy_of_its_single_host_logins(front: Any) -> None:
    """A door from before it served several Flower hosts kept its one host's logins and CA in /etc/nginx
    (prepare.yml leaves such copies, with a hash of a login that host no longer has): site.yml removes them, so
    no password hash stays on disk where nothing reads it any more."""
    for leftover in ("/etc/nginx/flower.htpasswd", "/etc/nginx/flower-upstream-ca.pem"):
        assert not front.file(leftover).exists, f"{leftover} is still on the door"
    assert front.file("/etc/nginx/flower-fronted").is_directory


# A raw HTTP request on a unix socket, sent as www-data (nginx's workers' user): prints the status line.
READ_AS_WWW_DATA = r"""
import socket, sys
client = socket.socket(socket.AF_UNIX)
client.connect(sys.argv[1])
client.sendall(f"GET {sys.argv[2]} HTTP/1.0\r\nHost: door\r\n\r\n".encode())
print(client.recv(200).decode(errors="replace").split("\r\n")[0])
"""


def test_a_door_has_no_reader_socket_for_nginx_s_user_to_read_through(front: Any) -> None:
    """The reader socket serves a few read endpoints to a Flower host's local consumers (its queue exporter, the
    restore check), adding nginx's own login to Flower when nginx does the logins. A door has no such consumer, yet
    it had one, for its first Flower host: any process running as www-data there (another site's PHP, say) could
    read through it, and with a first Flower host in proxy mode it would have read that cluster's task list,
    arguments included, with no login (here the first host uses Flower's own logins: 401). Now a door has none:
    the same client as www-data reaches nothing, on any prefix."""
    for path in ("/api/tasks", f"{PREFIX_B}/api/tasks", "/healthcheck"):
        read = front.run(f"runuser -u www-data -- python3 -c %s {READER_SOCKET} {path}", READ_AS_WWW_DATA)
        assert read.rc != 0 and "HTTP/" not in read.stdout, f"www-data on the door reached {path}: {read.stdout}"
    assert not front.file(READER_SOCKET).exists


def test_a_cross_site_write_is_refused_at_the_door(front: Any, tmp_path: Path) -> None:
    """The door keeps the cross-site check: another site's form, with the admin's cached login, gets 403."""
    ca = served_ca(tmp_path, FRONT)
    headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert request("POST", "/api/task/revoke/00000000-0000-0000-0000-000000000000", ca, LOGIN, headers, FRONT)[0] == 403


def test_the_dashboard_through_the_door_shows_both_workers_in_a_browser(front: Any) -> None:
    """Chromium, the public name mapped to the door's container: the dashboard shows both worker hosts' workers,
    cluster b's under its prefix shows its worker, and the console stays free of errors (the static files and
    their CSP come through the gates)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", f"--host-resolver-rules=MAP {DOMAIN} {container_ip(front)}"],
        )
        context = browser.new_context(
            http_credentials={"username": LOGIN[0], "password": LOGIN[1]}, ignore_https_errors=True
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        response = page.goto(f"https://{DOMAIN}/", wait_until="networkidle", timeout=30000)
        assert response is not None and response.status == 200
        for name in WORKERS:
            page.get_by_text(f"demo-worker@{name}").first.wait_for(timeout=15000)
        page.wait_for_timeout(1500)  # one polling round of the UI, whose errors count too
        # Cluster b's dashboard at the same name, under its prefix, with its own login.
        context_b = browser.new_context(
            http_credentials={"username": LOGIN_B[0], "password": LOGIN_B[1]}, ignore_https_errors=True
        )
        page_b = context_b.new_page()
        page_b.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page_b.on("pageerror", lambda error: errors.append(str(error)))
        response = page_b.goto(f"https://{DOMAIN}{PREFIX_B}/", wait_until="networkidle", timeout=30000)
        assert response is not None and response.status == 200
        page_b.get_by_text(WORKER_B).first.wait_for(timeout=15000)
        page_b.wait_for_timeout(1500)
        browser.close()
    assert errors == []


# A TLS client on the door's own host, the gate's certificate checked as nginx does: the status of /healthcheck,
# or the TLS error. argv: CA, client certificate and key ("" for none).
_GATE_CLIENT = """
import http.client, socket, ssl, sys
address, port, name, ca, cert, key = sys.argv[1:7]
context = ssl.create_default_context(cafile=ca)
if cert:
    context.load_cert_chain(cert, key)
try:
    connection = http.client.HTTPSConnection(address, int(port), context=context, timeout=10)
    connection.sock = context.wrap_socket(
        socket.create_connection((address, int(port)), timeout=10), server_hostname=name)
    connection.request("GET", "/healthcheck", headers={"Host": name})
    reply = connection.getresponse()
    print(reply.status, reply.read()[:60].decode(errors="replace").replace(chr(10), " "))
except (ssl.SSLError, OSError) as error:
    print("tls-error", error)
"""


def gate_answer(cert: str = "", key: str = "") -> str:
    front = platform_host(FRONT)
    run = front.run(
        "python3 -c %s %s %s %s %s %s %s",
        _GATE_CLIENT,
        GATE_ADDRESS,
        GATE_PORT,
        DOMAIN,
        f"/etc/nginx/flower-fronted/{FLOWER}-ca.pem",
        cert,
        key,
    )
    assert run.rc == 0, run.stderr
    return run.stdout.strip()


def test_the_gate_admits_the_doors_client_certificate_alone(front: Any) -> None:
    """Without a client certificate, or with one its holder made itself, the gate answers 400 and Flower never
    sees the request; the door's own certificate gets Flower's health check through."""
    assert gate_answer(f"{PKI}/client.crt", f"{PKI}/client.key") == "200 OK"
    assert gate_answer().startswith("400 "), gate_answer()
    made = front.run(
        "cd /var/tmp && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1"
        " -keyout self.key -out self.crt -subj /CN=%s 2>&1",
        FRONT,
    )
    assert made.rc == 0, made.stdout
    try:
        assert gate_answer("/var/tmp/self.crt", "/var/tmp/self.key").startswith("400 ")
    finally:
        front.run("rm -f /var/tmp/self.key /var/tmp/self.crt")


def test_the_gate_listens_on_the_private_address_and_admits_the_door_alone(front: Any) -> None:
    """The gate binds the Flower host's private address; its port and Flower's own are filtered from a worker
    host (a raw TCP client: the connection times out, twice) and open from the door."""
    listening = flower_host().run("ss -Hltn 'sport = :%s'", GATE_PORT).stdout.split()
    assert GATE in listening, listening
    worker = platform_host(WORKERS[0])
    for port in (int(GATE_PORT), 5555):
        assert connect_from(worker, GATE_ADDRESS, port) == "filtered", port
    assert connect_from(front, GATE_ADDRESS, int(GATE_PORT)) == "open"


# A guesser on another host: wrong passwords for the admin's name through the door, a fresh TLS connection each
# (the certificate is not checked: an attacker does not care). argv: address, name, count; prints the statuses.
_GUESSER = """
import base64, http.client, ssl, sys
address, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
statuses = []
for attempt in range(count):
    login = base64.b64encode(f"{name}:guess-{attempt}".encode()).decode()
    try:
        connection = http.client.HTTPSConnection(address, 443, context=context, timeout=5)
        connection.request("GET", "/api/workers", headers={"Host": sys.argv[4], "Authorization": "Basic " + login})
        statuses.append(str(connection.getresponse().status))
        connection.close()
    except OSError as error:
        statuses.append(type(error).__name__)
print(" ".join(statuses))
"""
JAIL = "flower-nginx-auth"


def test_a_guesser_on_another_host_is_banned_at_the_door(front: Any, tmp_path: Path) -> None:
    """Whoever checks the password (nginx in proxy mode, Flower in basic mode, as here), wrong passwords through
    the door ban the guesser's address at the door's firewall, while others still get in. (Before, the jail read
    nginx's error log alone, where only nginx's own password check writes: in basic mode nothing was banned.)"""
    worker = platform_host(WORKERS[0])
    guesser, door = container_ip(worker), container_ip(front)
    retries = int(front.run("sed -n 's/^maxretry = //p' /etc/fail2ban/jail.d/flower.local").stdout.strip())
    front.run("fail2ban-client set %s unbanip %s", JAIL, guesser)
    try:
        run = worker.run("python3 -c %s %s %s %s %s", _GUESSER, door, ADMIN["name"], str(retries + 1), DOMAIN)
        assert run.rc == 0 and run.stdout.split() == ["401"] * (retries + 1), run.stdout + run.stderr
        banned = wait_for(lambda: connect_from(worker, door, 443, attempts=1) != "open", timeout=30)
        assert banned, "not banned: " + front.run("fail2ban-client status %s", JAIL).stdout
        assert guesser in front.run("fail2ban-client status %s", JAIL).stdout
        # The others still get in: this machine, with the right login.
        assert get("/api/workers", served_ca(tmp_path, FRONT), LOGIN, via=FRONT)[0] == 200
    finally:
        front.run("fail2ban-client set %s unbanip %s", JAIL, guesser)
    assert wait_for(lambda: connect_from(worker, door, 443, attempts=1) == "open", timeout=20)
