"""The front door under attack, each attack made by a real client: a page on
another origin in Chromium, raw TLS connections from the machine running the
tests, and other local users on the target. Each test here was written against
the weakness first (it failed on the code before the fix) and stays as its guard."""

from __future__ import annotations

import base64
import hashlib
import http.server
import ipaddress
import random
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import testinfra
from conftest import (
    ACCOUNT,
    DOMAIN,
    FLOWER,
    LOGINS,
    MOLECULE,
    FrontDoor,
    container_ip,
    fetch,
    fetch_json,
    first_platform_only,
    host_vars,
    login_context,
    prefix,
    role_defaults,
    wait_for,
)
from playwright.sync_api import Browser
from testlib import main_pid, virtualenv_and_lock

# The browser's own buttons and the cross-site checks run under /flower too.
EVERY_PLATFORM = True
PROXY = role_defaults("flower_proxy")
FAIL2BAN = role_defaults("flower_fail2ban")
JAIL = "flower-nginx-auth"
LOG_DIR = "/var/log/nginx/flower"
# The log fail2ban reads: a line per 401 answered to a request with a login.
LOGIN_FAILED = f"{LOG_DIR}/login-failed.log"
OTHER_INSTANCE = MOLECULE["platforms"][1]["name"]
WRITE = {"Origin": f"https://{DOMAIN}"}
PROXY_SITE = "/etc/nginx/sites-available/flower.conf"


def worker_journal(host: Any, pattern: str, also: str = "") -> str:
    """The demo worker's recent log lines holding pattern (and also, ignoring case)."""
    lines = host.run("journalctl -u demo-worker --no-pager --since -10min | grep -F -- %s || true", pattern).stdout
    return "\n".join(line for line in lines.splitlines() if also.lower() in line.lower())


def pool_processes(host: Any, worker: str) -> int:
    workers = fetch_json(host, "/api/workers?refresh=1")
    return len(workers[worker]["stats"]["pool"]["processes"])


# --- 1. cross-site requests ---------------------------------------------------


class AttackerSite:
    """Another origin (http://127.0.0.1:<port> on the machine running the tests) whose pages auto-submit forms."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def form(self, name: str, action: str, fields: dict[str, str], enctype: str = "") -> str:
        inputs = "".join(f"<input type=hidden name='{k}' value='{v}'>" for k, v in fields.items())
        enc = f" enctype='{enctype}'" if enctype else ""
        self.pages[f"/{name}"] = (
            f"<html><body><form method=POST action='{action}'{enc}>{inputs}</form>"
            "<script>document.forms[0].submit()</script></body></html>"
        )
        return f"{self.origin}/{name}"


@pytest.fixture(scope="module")
def attacker() -> Iterator[AttackerSite]:
    site = AttackerSite()
    yield site
    site.server.shutdown()


def submit_from_attacker(browser: Browser, host: Any, url: str) -> list[int]:
    """An admin who is logged in opens the attacker's page: the statuses of Flower's answers to its form."""
    context = login_context(browser)
    page = context.new_page()
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if DOMAIN in r.url and r.request.method == "POST" else None)
    try:
        assert page.goto(f"https://{DOMAIN}{prefix(host)}/", wait_until="networkidle").status == 200
        page.goto(url)
        answered = wait_for(lambda: [s for s in statuses if s != 401], timeout=15, interval=0.2)
        assert answered, f"Flower never answered the cross-site form past the login prompt: {statuses}"
    finally:
        context.close()
    return statuses


def test_a_cross_site_page_cannot_make_flower_act(
    browser: Browser, host: Any, attacker: AttackerSite, sample: dict[str, str]
) -> None:
    first_platform_only(host)
    base = f"https://{DOMAIN}{prefix(host)}"
    worker = sample["worker"]
    task_id = str(uuid.uuid4())
    mark = random.randint(100000, 900000)
    processes = pool_processes(host, worker)
    attacks = {
        "revoke": attacker.form("revoke", f"{base}/api/task/revoke/{task_id}?terminate=true", {}),
        "shrink": attacker.form("shrink", f"{base}/api/worker/pool/shrink/{worker}", {"n": "1"}),
        # text/plain delivers "name=value": a JSON body Flower reads whatever the content type.
        "send-task": attacker.form(
            "send",
            f"{base}/api/task/send-task/sample_tasks.add",
            {f'{{"args": [{mark}, 1], "x": "': '"}'},
            "text/plain",
        ),
    }
    answers = {name: submit_from_attacker(browser, host, url) for name, url in attacks.items()}
    for name, statuses in answers.items():
        assert statuses and all(s == 403 for s in statuses if s != 401), f"{name}: Flower answered {statuses}"
    time.sleep(3)
    assert not worker_journal(host, task_id, "revoke"), "the cross-site revoke reached the worker"
    assert not worker_journal(host, f": {mark + 1}"), "the cross-site send-task ran on the worker"
    assert pool_processes(host, worker) == processes, "the cross-site shrink changed the pool"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": f"https://{DOMAIN}.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": f"https://other.{DOMAIN}"},
    ],
    ids=["foreign-origin", "null-origin", "lookalike-origin", "cross-site", "same-site"],
)
def test_an_unsafe_method_from_another_site_gets_403(front_door: FrontDoor, headers: dict[str, str]) -> None:
    task_id = str(uuid.uuid4())
    status, _, body = front_door.request("POST", f"/api/task/revoke/{task_id}", "admin", headers=headers)
    assert status == 403, (status, body[:200])


def test_flowers_own_buttons_still_work(browser: Browser, host: Any, sample: dict[str, str]) -> None:
    """Flower's JS sends X-XSRFToken from the same origin: revoke and pool grow/shrink take effect."""
    worker = sample["worker"]
    run = host.run("demo-worker-call sleep '[30]'")
    assert run.rc == 0, run.stderr
    task_id = run.stdout.strip().splitlines()[-1]
    assert wait_for(lambda: fetch_json(host, f"/api/task/info/{task_id}").get("state") == "STARTED", 30)
    context = login_context(browser)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        page.goto(f"https://{DOMAIN}{prefix(host)}/task/{task_id}", wait_until="networkidle")
        # A running task offers Terminate (a revoke with terminate=true).
        page.locator("#task-terminate").click()
        assert wait_for(lambda: worker_journal(host, task_id, "terminating"), 20), "the terminate button did nothing"
        before = pool_processes(host, worker)
        page.goto(f"https://{DOMAIN}{prefix(host)}/worker/{worker}", wait_until="networkidle")
        page.locator("#pool-size").fill("1")
        page.locator("#worker-pool-grow").click()
        assert wait_for(lambda: pool_processes(host, worker) == before + 1, 20), "the grow button did nothing"
        page.locator("#worker-pool-shrink").click()
        assert wait_for(lambda: pool_processes(host, worker) == before, 20), "the shrink button did nothing"
    finally:
        context.close()
    assert errors == []


# The OAuth2 mode's cross-site POSTs are refused in the same converge that
# proves its login redirect: test_front_door.py::test_oauth_mode_* (one
# converge there, not two). Basic mode's is in the split scenario's test_split.py.


# --- 2. and 4. bans that cannot be dodged, and what a ban blocks ---------------


def tls_connection(host: Any) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((container_ip(host), 443), timeout=5)
    return context.wrap_socket(raw, server_hostname=DOMAIN)


def raw_request(host: Any, request: bytes) -> bytes:
    with tls_connection(host) as conn:
        conn.sendall(request)
        return conn.recv(200)


def reachable(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def wrong_login(attempt: int) -> str:
    token = base64.b64encode(f"{LOGINS['admin']['name']}:wrong-{attempt}".encode()).decode()
    return f"Basic {token}"


def controller_address(host: Any) -> str:
    """This machine's address as the target sees it (the bridge's gateway)."""
    template = "{{range .NetworkSettings.Networks}}{{.Gateway}} {{end}}"
    name = host.backend.get_hostname()
    inspect = subprocess.run(["docker", "inspect", "-f", template, name], capture_output=True, text=True, check=True)
    return inspect.stdout.split()[0]


def unban(host: Any, address: str) -> None:
    host.run("fail2ban-client set %s unbanip %s", JAIL, address)


def test_failed_logins_with_a_spaced_referer_are_banned_on_the_front_door_ports_only(
    host: Any, front_door: FrontDoor
) -> None:
    first_platform_only(host)
    address, me = container_ip(host), controller_address(host)
    unban(host, me)
    # A stand-in for sshd on the SSH port, for 120 s at most.
    host.run("systemd-run --unit=ssh-stand-in -p RuntimeMaxSec=120 python3 -m http.server 22")
    try:
        assert wait_for(lambda: reachable(address, 22), 15), "the stand-in listener did not start"
        kept = tls_connection(host)
        kept.sendall(
            f"GET {prefix(host)}/ HTTP/1.1\r\nHost: {DOMAIN}\r\nAuthorization: {wrong_login(0)}\r\n\r\n".encode()
        )
        assert b" 401 " in kept.recv(200)
        for attempt in range(FAIL2BAN["flower_fail2ban_maxretry"] + 1):
            headers = {"Referer": "a b", "Authorization": wrong_login(attempt)}
            assert front_door.request("GET", "/", headers=headers)[0] == 401
        banned = wait_for(lambda: not reachable(address, 443), timeout=30)
        assert banned, "not banned: " + host.run("fail2ban-client status %s", JAIL).stdout
        rules = host.run("ufw status").stdout
        ban_lines = [line for line in rules.splitlines() if me in line]
        assert ban_lines and all(re.search(r"\b80,443/tcp\b", line) for line in ban_lines), rules
        assert reachable(address, 22), "the ban cut the SSH port too"
        # The keep-alive connection opened before the ban cannot go on guessing.
        try:
            kept.sendall(f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\nAuthorization: {wrong_login(9)}\r\n\r\n".encode())
            kept.settimeout(5)
            answer = kept.recv(200)
        except OSError:
            answer = b""
        assert b"HTTP/1.1" not in answer, f"the banned address was still answered: {answer!r}"
    finally:
        unban(host, me)
        host.run("systemctl stop ssh-stand-in")
    assert wait_for(lambda: reachable(address, 443), 20)


def test_failed_logins_without_a_host_header_are_banned(host: Any) -> None:
    first_platform_only(host)
    address, me = container_ip(host), controller_address(host)
    unban(host, me)
    try:
        for attempt in range(FAIL2BAN["flower_fail2ban_maxretry"] + 1):
            answer = raw_request(
                host, f"GET {prefix(host)}/ HTTP/1.0\r\nAuthorization: {wrong_login(attempt)}\r\n\r\n".encode()
            )
            assert b" 401 " in answer, answer
        banned = wait_for(lambda: not reachable(address, 443), timeout=30)
        assert banned, "not banned: " + host.run("fail2ban-client status %s", JAIL).stdout
    finally:
        unban(host, me)


def test_an_address_the_operator_trusts_is_never_banned(host: Any) -> None:
    """An office behind one NAT address: its mistyped passwords ban nobody (flower_fail2ban_ignoreip, set for the
    prefix platform only, so the first one still bans this machine for the tests above)."""
    trusted = host_vars(host).get("flower_fail2ban_ignoreip") or []
    if not trusted:
        pytest.skip("this platform trusts no address")
    address, me = container_ip(host), controller_address(host)
    assert any(ipaddress.ip_address(me) in ipaddress.ip_network(net) for net in trusted), (me, trusted)

    def ignored() -> int:
        return int(host.run("grep -c -F -e %s /var/log/fail2ban.log || true", f"Ignore {me} ").stdout.strip() or 0)

    before = ignored()
    for attempt in range(FAIL2BAN["flower_fail2ban_maxretry"] + 2):
        answer = raw_request(
            host,
            f"GET {prefix(host)}/ HTTP/1.1\r\nHost: {DOMAIN}\r\nAuthorization: {wrong_login(attempt)}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert b" 401 " in answer, answer
    # fail2ban read the failures and ignored them (its log says so), rather than not reading them at all.
    assert wait_for(lambda: ignored() > before, timeout=20), host.run("tail -n 20 /var/log/fail2ban.log").stdout
    status = host.run("fail2ban-client status %s", JAIL).stdout
    assert re.search(r"Currently banned:\s+0", status), status
    assert reachable(address, 443), "the trusted address was banned"


def test_the_projects_filter_matches_every_failed_login_nginx_logged(host: Any) -> None:
    """Each failure nginx's password check wrote to its error log (the earlier tests' guesses, spaced Referers and
    requests without Host among them) has its line in the log fail2ban reads, and the filter matches every line
    there that names an address (the root-only local socket's clients have none)."""
    first_platform_only(host)
    errors = f"{LOG_DIR}/error.log"
    checked = int(host.run("grep -cE 'password mismatch|was not found in' %s || true", errors).stdout or 0)
    assert checked > 0, "no failed login in nginx's error log to compare with"
    lines = [line for line in host.file(LOGIN_FAILED).content_string.splitlines() if "client: unix:" not in line]
    assert len(lines) >= checked, f"{checked} failed password checks, {len(lines)} lines in {LOGIN_FAILED}"
    run = host.run("fail2ban-regex %s /etc/fail2ban/filter.d/%s.conf", LOGIN_FAILED, JAIL)
    assert run.rc == 0, run.stdout + run.stderr
    matched = int(re.search(r"Lines: \d+ lines, \d+ ignored, (\d+) matched", run.stdout).group(1))
    assert matched == len(lines), run.stdout


# --- 3. guessing without a limit ----------------------------------------------


@pytest.fixture()
def not_banned(host: Any) -> Iterator[str]:
    """The rate limits, not the bans, are under test: this machine is not banned meanwhile. An address the jail
    already ignores (flower_fail2ban_ignoreip) stays ignored afterwards."""
    me = controller_address(host)
    listed = host.run("fail2ban-client get %s ignoreip", JAIL).stdout
    ignored = re.search(rf"[|`]- {re.escape(me)}(/32)?$", listed, re.MULTILINE) is not None

    def failures_and_ignores() -> tuple[int, int]:
        """This machine's lines in the log fail2ban reads, and the failures fail2ban has judged ignored."""
        counts = host.run(
            "awk -v ip=%s '$NF == ip' %s | wc -l; grep -c -F -e %s /var/log/fail2ban.log",
            me,
            LOGIN_FAILED,
            f"Ignore {me} ",
        ).stdout.split()
        return int(counts[0]), int(counts[1])

    if not ignored:
        host.run("fail2ban-client set %s addignoreip %s", JAIL, me)
    logged, judged = failures_and_ignores()
    yield me
    if not ignored:
        # fail2ban reads nginx's log a moment after the write: every failure logged meanwhile must be judged while
        # the address is still ignored, or the last ones ban it after the unban below.
        def all_judged() -> bool:
            now_logged, now_judged = failures_and_ignores()
            return now_judged - judged >= now_logged - logged

        assert wait_for(all_judged, timeout=15), failures_and_ignores()
        host.run("fail2ban-client set %s delignoreip %s", JAIL, me)
        unban(host, me)


@pytest.mark.parametrize("path", ["/", "/api/workers", "/static/js/flower.js", "/metrics"])
def test_a_flood_of_wrong_passwords_meets_429_and_admins_are_still_served(
    host: Any, front_door: FrontDoor, not_banned: str, path: str
) -> None:
    first_platform_only(host)
    # Several guessers at once: one client in sequence may not outpace the static files' sustained rate
    # (50 r/s); bounded, and every thread stops at the first 429.
    threads, total = 8, max(PROXY[f"flower_proxy_burst_{kind}"] for kind in ("ui", "api", "static")) + 300
    statuses: list[int] = []
    seen_429 = threading.Event()

    def guess(first: int) -> None:
        for attempt in range(first, total, threads):
            if seen_429.is_set():
                return
            status = front_door.request("GET", path, headers={"Authorization": wrong_login(attempt)})[0]
            statuses.append(status)
            if status == 429:
                seen_429.set()

    with ThreadPoolExecutor(threads) as pool:
        running = [pool.submit(guess, first) for first in range(threads)]
        time.sleep(0.2)
        admin_during = fetch(host, "/api/workers")[0]
        for future in running:
            future.result()
    assert seen_429.is_set(), f"{path}: no 429 after {len(statuses)} wrong passwords: {sorted(set(statuses))}"
    assert admin_during == 200
    time.sleep(5)  # let the bucket drain for the tests after this one


def test_idle_connections_from_one_address_do_not_lock_out_another(host: Any) -> None:
    """More idle TLS connections than nginx has slots (its workers' worker_connections) from this machine;
    the target's own loopback (a second address) is still served meanwhile."""
    first_platform_only(host)
    slots = int(host.run("nginx -T 2>/dev/null | grep -oP 'worker_connections\\s+\\K\\d+'").stdout.split()[0])
    workers = int(host.run("pgrep -c -f 'nginx: worker'").stdout.strip())
    held: list[ssl.SSLSocket] = []
    refused = 0
    try:
        for _ in range(slots * workers + 100):
            try:
                held.append(tls_connection(host))
            except OSError:
                refused += 1
                if refused > 20:
                    break
        served = fetch(host, "/healthcheck", auth=False)[0]
    finally:
        for conn in held:
            conn.close()
    assert served == 200, f"{len(held)} idle connections from one address locked the front door ({served})"
    assert refused, f"all {len(held)} idle connections from one address were accepted"


def test_ipv6_clients_count_per_64_in_rate_limits(host: Any) -> None:
    """The rendered map from client address to rate-limit key, run in a throwaway nginx on the target with
    the addresses set by realip (the test network carries no IPv6)."""
    first_platform_only(host)
    site = host.file(PROXY_SITE).content_string
    client_map = re.search(r"^map \$remote_addr \$flower_client \{.*?^\}", site, re.M | re.S).group(0)
    conf = f"""pid /var/tmp/keys/nginx.pid; error_log /var/tmp/keys/error.log; events {{}}
http {{ access_log off; {client_map}
server {{ listen unix:/var/tmp/keys/s.sock; set_real_ip_from unix:; real_ip_header X-Client;
location / {{ return 200 "$flower_client"; }} }} }}"""
    host.run("rm -rf /var/tmp/keys && mkdir -p /var/tmp/keys")
    host.run("printf '%%s' %s > /var/tmp/keys/nginx.conf", conf)
    probe = (
        "import socket, sys\n"
        "for a in sys.argv[1:]:\n"
        " s = socket.socket(socket.AF_UNIX); s.connect('/var/tmp/keys/s.sock')\n"
        " s.sendall(f'GET / HTTP/1.0\\r\\nX-Client: {a}\\r\\n\\r\\n'.encode())\n"
        " print(s.recv(999).split(b'\\r\\n\\r\\n')[1].decode())"
    )
    addresses = [
        "2001:db8:1:2:aaaa::1",
        "2001:db8:1:2:bbbb:1:2:3",
        "2001:db8:1:3::1",
        "2001:db8::5",
        "2001:db8:0:0:7::",
        "192.0.2.7",
    ]
    try:
        started = host.run("nginx -c /var/tmp/keys/nginx.conf -p /var/tmp/keys")
        assert started.rc == 0, started.stderr
        run = host.run("python3 -c %s" + " %s" * len(addresses), probe, *addresses)
    finally:
        host.run("kill $(cat /var/tmp/keys/nginx.pid); rm -rf /var/tmp/keys")
    assert run.rc == 0, run.stderr
    keys = dict(zip(addresses, run.stdout.split(), strict=True))
    nets = {a: str(ipaddress.ip_network(f"{a}/64", strict=False)) for a in addresses if ":" in a}
    for address, net in nets.items():
        assert ipaddress.ip_network(keys[address]) == ipaddress.ip_network(net), (address, keys[address])
    assert keys["192.0.2.7"] == "192.0.2.7"


def test_an_ipv6_ban_covers_the_clients_64_on_the_front_door_ports(host: Any) -> None:
    first_platform_only(host)
    address = "2001:db8:77:1::5"
    host.run("fail2ban-client set %s banip %s", JAIL, address)
    try:
        rules = wait_for(lambda: "2001:db8:77:1::/64" in (r := host.run("ufw status").stdout) and r, 15)
    finally:
        unban(host, address)
    assert rules, host.run("ufw status").stdout
    assert re.search(r"^80,443/tcp.*DENY.*2001:db8:77:1::/64", rules, re.M), rules
    assert wait_for(lambda: "2001:db8:77:1::/64" not in host.run("ufw status").stdout, 15), "the unban left the rule"


# --- 5. a neighbour on the host -----------------------------------------------


def socket_post(host: Any, user: str, route: str) -> Any:
    probe = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
        " s.sendall(b'POST ' + sys.argv[2].encode() + b' HTTP/1.0\\r\\nContent-Length: 3\\r\\n\\r\\nn=1');"
        " print(s.recv(64))"
    )
    return host.run("runuser -u %s -- python3 -c %s %s %s", user, probe, FLOWER["flower_unix_socket"], route)


def test_the_proxys_group_cannot_act_on_flower(host: Any, sample: dict[str, str]) -> None:
    first_platform_only(host)
    worker = sample["worker"]
    before = pool_processes(host, worker)
    route = prefix(host) + f"/api/worker/pool/grow/{worker}"
    as_proxy = socket_post(host, "www-data", route)
    assert as_proxy.rc == 0, as_proxy.stderr
    assert re.search(r"HTTP/1\.[01] 40[13]", as_proxy.stdout), as_proxy.stdout
    task = str(uuid.uuid4())
    revoke = socket_post(host, "www-data", prefix(host) + f"/api/task/revoke/{task}")
    assert re.search(r"HTTP/1\.[01] 40[13]", revoke.stdout), revoke.stdout
    time.sleep(2)
    assert pool_processes(host, worker) == before
    assert not worker_journal(host, task, "revoke")
    other = socket_post(host, "nobody", route)
    assert other.rc != 0 and "Permission denied" in other.stderr


def test_the_queue_exporter_cannot_read_the_password_hashes(host: Any) -> None:
    first_platform_only(host)
    pid = main_pid(host, "flower-queue-exporter")
    assert pid not in ("", "0"), "the exporter is not running"
    status = host.file(f"/proc/{pid}/status").content_string
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
    gids = re.search(r"^Groups:\s*(.*)$", status, re.M).group(1).split()
    gid = re.search(r"^Gid:\s+(\d+)", status, re.M).group(1)
    groups = ",".join(gids) or gid
    read = host.run("setpriv --reuid=%s --regid=%s --groups=%s cat /etc/nginx/flower.htpasswd", uid, gid, groups)
    assert read.rc != 0 and "Permission denied" in read.stderr, "the exporter's user reads the hashes"


# --- 9. smaller ones ------------------------------------------------------------


def test_a_name_is_not_told_by_its_tier_without_the_password(front_door: FrontDoor, not_banned: str) -> None:
    """A write with a wrong password gets 401 for an admin's name, a viewer's name and an unknown name alike.
    (Not banned meanwhile: with the earlier tests' failures in the jail's window, these three banned this machine,
    and the next test's TLS handshakes waited out the ban.)"""
    task = str(uuid.uuid4())
    answers = {
        name: front_door.request("POST", f"/api/task/revoke/{task}", name, password="wrong", headers=WRITE)[0]
        for name in (LOGINS["admin"]["name"], LOGINS["viewer"]["name"], "nobody-here")
    }
    assert set(answers.values()) == {401}, answers


def test_one_password_hashes_differently_on_each_host(host: Any) -> None:
    """bcrypt salts come from each host's own secret, not from names an attacker knows."""
    first_platform_only(host)
    other = testinfra.get_host(f"docker://{OTHER_INSTANCE}")
    hashes = [
        dict(line.split(":", 1) for line in h.file("/etc/nginx/flower.htpasswd").content_string.split())
        for h in (host, other)
    ]
    admin = LOGINS["admin"]["name"]
    assert hashes[0][admin] != hashes[1][admin], "the same salt on both hosts"
    # An attacker who knows the host's and the login's names (and this project's code) cannot derive the salt.
    for h, found in zip((host, other), hashes, strict=True):
        guessed = hashlib.sha256(f"{h.backend.get_hostname()}:{admin}".encode()).hexdigest()[:21] + "e"
        assert found[admin][7:29] != guessed, "the salt is derived from public names"
    secret = host.file("/etc/nginx/flower-htpasswd.salt")
    assert (secret.user, secret.mode) == ("root", 0o600)


def test_flowers_virtualenv_is_exactly_the_lock(host: Any) -> None:
    """Nothing floats: the virtualenv holds every package of the hash-checked lock that applies to this host's
    Python (markers evaluated there), at its version, and no other."""
    first_platform_only(host)  # the same lock and install on the prefix platform
    app_root = ACCOUNT["flower_account_app_root"]
    venv = FLOWER["flower_venv"].replace("{{ flower_account_app_root }}", app_root)
    held, wanted = virtualenv_and_lock(host, f"{app_root}/requirements.lock", venv)
    assert held == wanted, f"outside the lock: {sorted(held - wanted)}; missing: {sorted(wanted - held)}"


@pytest.mark.parametrize("group", ["secp521r1", "X448"])
def test_curves_outside_mozilla_intermediate_are_refused(host: Any, group: str) -> None:
    first_platform_only(host)  # the same TLS settings on the prefix platform
    run = subprocess.run(
        ["openssl", "s_client", "-connect", f"{container_ip(host)}:443", "-servername", DOMAIN, "-groups", group],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Cipher is (NONE)" in run.stdout or run.returncode != 0, f"{group} accepted: {run.stdout[-400:]}"


def test_scripts_run_only_from_files_and_known_inline_hashes(front_door: FrontDoor) -> None:
    _, headers, _ = front_door.request("GET", "/", "admin")
    directives = (part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    policy = {name: rest[0] if rest else "" for name, *rest in directives}
    assert "'unsafe-inline'" not in policy["script-src"], policy


def test_sslyze_finds_the_front_door_mozilla_intermediate(host: Any) -> None:
    first_platform_only(host)
    out = Path("/tmp") / f"sslyze-{uuid.uuid4().hex}.json"
    run = subprocess.run(
        ["sslyze", "--mozilla_config=intermediate", f"--json_out={out}", f"{DOMAIN}:443{{{container_ip(host)}}}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    text = run.stdout
    out.unlink(missing_ok=True)
    problems = [
        line
        for line in text.split("COMPLIANCE AGAINST TLS CONFIGURATION", 1)[-1].splitlines()
        # The certificate is Pebble's (a private CA, five-year certificates): its checks are not the front door's.
        if line.strip().startswith("*") and "certificate" not in line.lower()
    ]
    assert 'Checking results against Mozilla\'s "intermediate" configuration' in text, text[-2000:]
    assert not problems, "\n".join(problems)
