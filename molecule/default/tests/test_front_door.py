"""The front door, from the machine running the tests: nginx on 443 with a
certificate Pebble issued through certbot, the header set on every answer,
logins with admin and viewer tiers, rate limits, bans, and Flower reachable
through nothing but nginx."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DOMAIN,
    FLOWER,
    GROUP_VARS,
    FrontDoor,
    container_ip,
    fetch,
    first_platform_only,
    prefix,
    role_defaults,
    run_playbook,
    wait_for,
)
from testlib import main_pid

# Also on the platform with flower_url_prefix /flower: the same checks under the prefix.
EVERY_PLATFORM = True
PROXY = role_defaults("flower_proxy")
HEADERS = {
    "Strict-Transport-Security": "max-age=63072000",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": PROXY["flower_proxy_permissions_policy"],
    "Content-Security-Policy": PROXY["flower_proxy_content_security_policy"],
}
REFUSED = {401, 403}
REDIRECTS = {301, 302, 303, 307, 308}


def assert_headers(headers: Any, what: str) -> None:
    for name, value in HEADERS.items():
        assert headers.get(name) == value, f"{what}: {name} is {headers.get(name)!r}"
    assert headers.get("Server") == "nginx", f"{what}: nginx shows its version: {headers.get('Server')}"
    assert headers.get("Access-Control-Allow-Origin") is None, f"{what}: Flower's CORS * got through"


def handshake(address: str, version: ssl.TLSVersion, cafile: Path | None = None) -> ssl.SSLSocket | str:
    """The TLS socket, or the error, of a handshake offering exactly one protocol version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = version
    if cafile:
        context.load_verify_locations(str(cafile))
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # Let this client offer old versions at all: the server must be the one refusing.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    raw = socket.create_connection((address, 443), timeout=10)
    try:
        return context.wrap_socket(raw, server_hostname=DOMAIN)
    except ssl.SSLError as error:
        raw.close()
        return f"{error.reason}: {error}"


# --- TLS ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused(host: Any, version: ssl.TLSVersion) -> None:
    result = handshake(container_ip(host), version)
    assert isinstance(result, str), f"nginx accepted {version.name}"
    assert "NO_PROTOCOLS_AVAILABLE" not in result, f"this client could not offer {version.name}: {result}"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_current_tls_versions_are_accepted(host: Any, pebble_root: Path, version: ssl.TLSVersion) -> None:
    result = handshake(container_ip(host), version, pebble_root)
    assert not isinstance(result, str), f"{version.name} refused: {result}"
    with result:
        assert result.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]


def test_certificate_was_issued_by_pebble_for_the_domain(host: Any, pebble_root: Path) -> None:
    tls = handshake(container_ip(host), ssl.TLSVersion.TLSv1_3, pebble_root)
    assert not isinstance(tls, str), tls  # verified: Pebble's chain, and the name matches
    with tls:
        certificate = tls.getpeercert()
    issuer = dict(item[0] for item in certificate["issuer"])
    assert "Pebble" in issuer.get("commonName", ""), issuer
    assert ("DNS", DOMAIN) in certificate["subjectAltName"]


def test_http_redirects_to_https_except_acme_challenges(host: Any) -> None:
    address = container_ip(host)
    for path, expected in (("/tasks?x=1", 301), ("/.well-known/acme-challenge/missing", 404)):
        with socket.create_connection((address, 80), timeout=10) as raw:
            raw.sendall(f"GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode())
            answer = raw.makefile("rb").read().decode("latin-1")
        assert answer.split()[1] == str(expected), answer[:300]
        if expected == 301:
            assert f"Location: https://{DOMAIN}{path}" in answer


# --- headers -----------------------------------------------------------------


def test_header_set_on_200_401_404(front_door: FrontDoor) -> None:
    for path, login, expected in (
        ("/", "admin", 200),
        ("/tasks", None, 401),
        ("/api/task/info/no-such-task", "admin", 404),
        ("/static/css/flower.css", "admin", 200),
    ):
        status, headers, _ = front_door.request("GET", path, login)
        assert status == expected, f"{path}: {status}"
        assert_headers(headers, f"{path} ({status})")


def test_static_files_come_from_nginx_with_cache_headers(front_door: FrontDoor) -> None:
    status, headers, _ = front_door.request("GET", "/static/js/flower.js", "admin", headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert "max-age=2592000" in headers.get("Cache-Control", "")
    assert headers.get("Content-Encoding") == "gzip"


# --- logins and tiers --------------------------------------------------------


def flower_routes(host: Any) -> list[str]:
    """Every route in Flower's own URL table, with its parameters filled in."""
    venv = FLOWER["flower_venv"].replace("{{ flower_account_app_root }}", "/opt/flower")
    script = (
        "import json; from flower.urls import handlers;"
        " print(json.dumps([h[0] if isinstance(h, tuple) else h.regex.pattern for h in handlers]))"
    )
    patterns = json.loads(host.check_output("%s/bin/python -c %s", venv, script))
    routes = []
    for pattern in patterns:
        if pattern == ".*":  # the catch-all 404 handler
            pattern = "/no-such-page"
        route = re.sub(r"\([^)]*\)", "x", pattern).replace("/?", "").rstrip("$")
        routes.append(route)
    return routes


def past_the_burst(front_door: FrontDoor, method: str, path: str, login: str | None = None) -> tuple[int, Any, bytes]:
    """A request that waits for the API's rate (bounded: 10 tries a quarter second apart) while it gets 429."""
    answer = front_door.request(method, path, login)
    for _ in range(10):
        if answer[0] != 429:
            break
        time.sleep(0.25)
        answer = front_door.request(method, path, login)
    return answer


def test_every_flower_route_refuses_anonymous_get_and_post(host: Any, front_door: FrontDoor) -> None:
    routes = flower_routes(host)
    assert "/api/task/revoke/x" in routes and len(routes) > 25
    wrong = []
    # Static files are public, as Flower serves them (nginx serves them from the venv, no password).
    for route in (r for r in routes if not r.startswith("/static/")):
        for method in ("GET", "POST"):
            # This test is about auth: past the API's burst, wait for its rate (bounded) and ask again.
            status, headers, _ = past_the_burst(front_door, method, route)
            location = headers.get("Location", "")
            if not (status in REFUSED or (status in REDIRECTS and "login" in location)):
                wrong.append(f"{method} {route}: {status}")
    assert not wrong, wrong


def test_viewer_reads_but_cannot_revoke_and_admin_can(host: Any, front_door: FrontDoor, healthy_flower: Any) -> None:
    task_id = str(uuid.uuid4())
    origin = {"Origin": f"https://{DOMAIN}"}
    # The test before spends this address's API burst on purpose: this one is about the tiers, not the limits.
    assert past_the_burst(front_door, "GET", "/api/workers", "viewer")[0] == 200
    assert front_door.request("GET", "/tasks", "viewer")[0] == 200

    status, headers, _ = front_door.request("POST", f"/api/task/revoke/{task_id}", "viewer", headers=origin)
    assert status == 403
    assert_headers(headers, "viewer's revoke")

    def revoked_at_the_worker() -> bool:
        # The worker's own word (Flower's cached inspection of revoked ids can lag).
        return (
            task_id in host.run("journalctl -u demo-worker --no-pager --since -5min | grep 'flagged as revoked'").stdout
        )

    time.sleep(3)
    assert not revoked_at_the_worker(), "the viewer's revoke reached the worker"
    status, _, body = front_door.request("POST", f"/api/task/revoke/{task_id}", "admin", headers=origin)
    assert status == 200, body
    assert wait_for(revoked_at_the_worker, timeout=20), "the admin's revoke did not reach the worker"


def test_viewer_cannot_use_any_other_mutating_method(front_door: FrontDoor) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        assert front_door.request(method, "/api/workers", "viewer")[0] == 403


def test_passwords_are_bcrypt_hashes_only(host: Any) -> None:
    htpasswd = host.file("/etc/nginx/flower.htpasswd")
    assert htpasswd.user == "root" and htpasswd.group == "www-data" and htpasswd.mode == 0o640
    lines = htpasswd.content_string.split()
    assert len(lines) == len(GROUP_VARS["flower_users"])
    assert all(re.match(r"^[^:]+:\$2[aby]\$", line) for line in lines), "not bcrypt"
    for user in GROUP_VARS["flower_users"]:
        found = host.run("grep -rlF -- %s /etc/nginx /etc/flower /opt/flower/static", user["password"])
        assert found.stdout == "", f"a plain-text password is on disk: {found.stdout}"


def test_metrics_and_healthcheck_only_from_allowed_addresses(host: Any, front_door: FrontDoor) -> None:
    assert front_door.request("GET", "/metrics")[0] == 403
    assert front_door.request("GET", "/healthcheck")[0] == 403
    status, body = fetch(host, "/metrics", auth=False)
    assert status == 200 and "flower_events_total" in body
    assert fetch(host, "/healthcheck", auth=False) == (200, "OK")


def test_flower_socket_is_closed_to_other_local_users(host: Any) -> None:
    probe = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
        " s.sendall(b'GET ' + sys.argv[2].encode() + b' HTTP/1.0\\r\\n\\r\\n'); print(s.recv(64))"
    )
    path = FLOWER["flower_unix_socket"]
    route = prefix(host) + "/api/workers"
    other = host.run("runuser -u nobody -- python3 -c %s %s %s", probe, path, route)
    assert other.rc != 0 and "Permission denied" in other.stderr, other.stdout + other.stderr
    # The proxy's group reaches the socket, and Flower still wants nginx's own login there.
    proxy = host.run("runuser -u www-data -- python3 -c %s %s %s", probe, path, route)
    assert proxy.rc == 0 and " 401 " in proxy.stdout, proxy.stderr


# --- abuse -------------------------------------------------------------------


def test_a_burst_over_the_api_limit_gets_429_with_headers(front_door: FrontDoor) -> None:
    statuses = []
    for _ in range(PROXY["flower_proxy_burst_api"] + 100):
        status, headers, _ = front_door.request("GET", "/api/task/types", "admin")
        statuses.append(status)
        if status == 429:
            assert_headers(headers, "429")
            break
    assert 429 in statuses, statuses
    time.sleep(5)  # let the bucket drain for the tests after this one


def test_ui_traffic_under_the_rate_is_never_limited(front_door: FrontDoor) -> None:
    """Pages polling at 80 % of flower_proxy_rate_ui, for more requests than the burst holds: none is refused.
    A rate lower than configured (or a zone shared with another limit) refuses some once the burst is spent."""
    rate = int(PROXY["flower_proxy_rate_ui"].removesuffix("r/s"))
    count = PROXY["flower_proxy_burst_ui"] + 2 * rate
    statuses: list[int] = []
    start = time.monotonic()
    for sent in range(count):
        time.sleep(max(0.0, start + sent / (0.8 * rate) - time.monotonic()))
        statuses.append(front_door.request("GET", "/workers?json=1", "admin")[0])
    refused = [i for i, status in enumerate(statuses) if status != 200]
    assert not refused, f"{len(refused)} of {count} refused, the first at request {refused[0]}: {set(statuses)}"


def test_repeated_wrong_passwords_ban_the_address_until_the_ban_expires(host: Any, front_door: FrontDoor) -> None:
    first_platform_only(host)
    address = container_ip(host)

    def reachable() -> bool:
        try:
            with socket.create_connection((address, 443), timeout=2):
                return True
        except OSError:
            return False

    assert reachable()
    for attempt in range(GROUP_VARS["flower_fail2ban_maxretry"] + 1):
        status = front_door.request("GET", "/", "admin", password=f"wrong-{attempt}")[0]
        assert status == 401
    banned = wait_for(lambda: not reachable(), timeout=30)
    assert banned, "no ban: " + host.run("fail2ban-client status flower-nginx-auth").stdout
    assert wait_for(reachable, timeout=GROUP_VARS["flower_fail2ban_bantime"] + 40), "the ban did not expire"
    assert front_door.request("GET", "/", "admin")[0] == 200


def test_a_login_is_added_and_removed_with_the_users_tag(host: Any, front_door: FrontDoor, tmp_path: Path) -> None:
    """The on-call procedure (docs/on-call.md, "Logins"): edit flower_users, run `site.yml --tags flower_users`.
    Only the login file changes; Flower is not restarted; the new login works at once and is gone after removal."""
    first_platform_only(host)
    pid = main_pid(host)
    oncall = {"name": "oncall", "password": "on-call-password-8c1d", "role": "viewer"}
    added = {**GROUP_VARS, "flower_users": [*GROUP_VARS["flower_users"], oncall]}
    try:
        run = run_playbook(tmp_path / "add", added, "site.yml", "--tags", "flower_users")
        assert run.returncode == 0, run.stdout[-3000:]
        assert re.search(r"changed=1\s", run.stdout), run.stdout[-3000:]
        assert oncall["password"] not in run.stdout
        assert front_door.request("GET", "/api/workers", "oncall", oncall["password"])[0] == 200
    finally:
        back = run_playbook(tmp_path / "remove", GROUP_VARS, "site.yml", "--tags", "flower_users")
        assert back.returncode == 0, back.stdout[-3000:]
    assert front_door.request("GET", "/api/workers", "oncall", oncall["password"])[0] == 401
    assert front_door.request("GET", "/api/workers", "admin")[0] == 200
    assert main_pid(host) == pid, "a login change restarted Flower"


# --- configuration safety ----------------------------------------------------


def test_a_broken_nginx_file_is_refused_and_nginx_keeps_serving(host: Any, tmp_path: Path) -> None:
    first_platform_only(host)
    headers = "/etc/nginx/snippets/flower-headers.conf"
    before = host.file(headers).sha256sum
    broken = {**GROUP_VARS, "flower_proxy_permissions_policy": 'camera=()" always; broken'}
    run = run_playbook(tmp_path, broken, "site.yml", "--tags", "flower_proxy_configure")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "nginx -t refused the rendered configuration" in output, output[-3000:]
    assert host.file(headers).sha256sum == before
    assert host.run("nginx -t").rc == 0
    assert not host.run("ls /etc/nginx/snippets/ | grep '~$' || true").stdout
    assert fetch(host, "/healthcheck", auth=False) == (200, "OK")


def test_renewal_against_pebble_runs_the_deploy_hook_and_nginx_serves_the_new_certificate(
    host: Any, pebble_root: Path
) -> None:
    first_platform_only(host)

    def serial() -> int:
        tls = handshake(container_ip(host), ssl.TLSVersion.TLSv1_3, pebble_root)
        assert not isinstance(tls, str), tls
        with tls:
            der = tls.getpeercert(binary_form=True)
        pem = ssl.DER_cert_to_PEM_cert(der)
        return int(host.check_output("echo %s | openssl x509 -noout -serial", pem).split("=")[1], 16)

    before = serial()
    renew = host.run(
        "REQUESTS_CA_BUNDLE=%s certbot renew --force-renewal --no-random-sleep-on-renew --server %s",
        GROUP_VARS["flower_tls_acme_ca_bundle"],
        GROUP_VARS["flower_tls_acme_server"],
    )
    assert renew.rc == 0, renew.stdout + renew.stderr
    log = host.run("tail -n 200 /var/log/letsencrypt/letsencrypt.log").stdout
    assert "Running deploy-hook command: /etc/letsencrypt/renewal-hooks/deploy/flowerops-reload-proxy" in log
    assert wait_for(lambda: serial() != before, timeout=20), "nginx still serves the old certificate"


def test_certbot_renews_by_its_own_timer(host: Any) -> None:
    assert host.service("certbot.timer").is_running
    assert host.file("/etc/letsencrypt/renewal-hooks/deploy/flowerops-reload-proxy").mode == 0o755


def test_prefix_alone_redirects_and_nothing_else_is_exposed(host: Any, front_door: FrontDoor) -> None:
    here = prefix(host)
    if not here:
        pytest.skip("no url_prefix on this platform")
    front_door.prefix = ""
    status, headers, _ = front_door.request("GET", here, "admin")
    assert (status, headers.get("Location")) == (301, f"{here}/")
    for path in ("/", "/tasks", "/api/workers", "/static/js/flower.js"):
        status, headers, _ = front_door.request("GET", path, "admin")
        assert status == 404, f"{path} outside {here}/ answered {status}"
        assert_headers(headers, f"{path} outside the prefix")
    front_door.prefix = here


def test_oauth_mode_sends_anonymous_visitors_to_the_provider_and_refuses_cross_site_posts(
    host: Any, front_door: FrontDoor, tmp_path: Path
) -> None:
    """OAuth2, converged for real: anonymous visitors go to the provider; a cross-site POST gets 403 from nginx."""
    first_platform_only(host)
    oauth = {
        **GROUP_VARS,
        "flower_auth_mode": "oauth",
        "flower_oauth2_provider": "github",
        "flower_oauth2_key": "molecule-oauth-client-id",
        "flower_oauth2_secret": "molecule-oauth-secret-4d2a",
        "flower_oauth2_emails": ".*@example.com",
    }
    tags = ("--tags", "flower_configure,flower_service,flower_proxy_configure,flower_proxy_service")
    try:
        run = run_playbook(tmp_path / "oauth", oauth, "site.yml", *tags)
        assert run.returncode == 0, run.stdout[-3000:]
        assert "molecule-oauth-secret-4d2a" not in run.stdout
        status, headers, _ = front_door.request("GET", "/")
        assert status == 302 and headers["Location"].startswith("/login?next="), (status, headers.get("Location"))
        status, headers, _ = front_door.request("GET", "/login")
        location = headers.get("Location", "")
        assert status == 302 and location.startswith("https://github.com/login/oauth/authorize?"), location
        assert f"redirect_uri=https%3A%2F%2F{DOMAIN}%2Flogin" in location
        assert "client_id=molecule-oauth-client-id" in location
        for attack in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            status = front_door.request("POST", f"/api/task/revoke/{uuid.uuid4()}", headers=attack)[0]
            assert status == 403, f"oauth: a cross-site POST got {status}"
    finally:
        back = run_playbook(tmp_path / "proxy", GROUP_VARS, "site.yml", *tags)
        assert back.returncode == 0, back.stdout[-3000:]
    assert front_door.request("GET", "/", "admin")[0] == 200
