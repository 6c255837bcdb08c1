"""Flower's and nginx's logs rotate: a forced rotation leaves each writer writing to the
fresh file, and the next rotation compresses the previous one."""

from __future__ import annotations

import uuid
from typing import Any

from conftest import ACCOUNT, USER, fetch, role_defaults, wait_for, wait_until_healthy

# The first platform only: a URL prefix changes nothing this module checks (conftest.platform_skip).

LOG = f"{ACCOUNT['flower_account_log_dir']}/flower.log"
CONFIG = "/etc/logrotate.d/flower"
PROXY = role_defaults("flower_proxy")


def rotate(host: Any) -> None:
    run = host.run("logrotate --force %s", CONFIG)
    assert run.rc == 0, run.stderr


def make_flower_log(host: Any) -> str:
    """Flower logs a lookup of an unknown task (404, a warning) with its id: a marker of our own.
    (It does not log the 401s of requests without credentials.)"""
    marker = f"logrotate-check-{uuid.uuid4().hex[:12]}"
    status, _ = fetch(host, f"/api/task/info/{marker}")
    assert status == 404
    assert wait_for(lambda: marker in host.file(LOG).content_string, timeout=20), f"{marker} not in {LOG}"
    return marker


def test_rotation_config_is_valid(host: Any) -> None:
    debug = host.run("logrotate --debug %s", CONFIG)
    assert debug.rc == 0, debug.stderr
    log = host.file(LOG)
    assert (log.user, log.group) == (ACCOUNT["flower_account_user"], ACCOUNT["flower_account_group"])


def test_flower_keeps_logging_into_the_fresh_file_and_old_ones_get_compressed(host: Any) -> None:
    wait_until_healthy(host)
    host.run("rm -f %s.*", LOG)
    before = make_flower_log(host)
    rotate(host)
    assert before in host.file(f"{LOG}.1").content_string, "the rotated copy lacks the lines written before"
    after = make_flower_log(host)
    assert before not in host.file(LOG).content_string, "the log was copied but not truncated"
    assert after in host.file(LOG).content_string
    rotate(host)
    assert host.file(f"{LOG}.2.gz").exists, "the previous rotation was not compressed"
    assert after in host.file(f"{LOG}.1").content_string
    assert after not in host.run("zcat %s.2.gz", LOG).stdout
    assert before in host.run("zcat %s.2.gz", LOG).stdout


NGINX_LOG = f"{PROXY['flower_proxy_log_dir']}/access.log"
NGINX_CONFIG = "/etc/logrotate.d/flower-nginx"


def make_nginx_log(host: Any) -> str:
    marker = f"logrotate-check-{uuid.uuid4().hex[:12]}"
    assert fetch(host, f"/healthcheck?{marker}", auth=False)[0] == 200
    assert wait_for(lambda: marker in host.file(NGINX_LOG).content_string, timeout=20), f"{marker} not in {NGINX_LOG}"
    return marker


def test_nginx_rotation_config_is_valid_and_leaves_debians_alone(host: Any) -> None:
    debug = host.run("logrotate --debug %s", NGINX_CONFIG)
    assert debug.rc == 0, debug.stderr
    # Debian's /etc/logrotate.d/nginx matches /var/log/nginx/*.log only: no file is rotated twice.
    everything = host.run("logrotate --debug /etc/logrotate.conf")
    assert "duplicate log entry" not in everything.stderr, everything.stderr[-2000:]


def test_nginx_reopens_its_log_and_old_ones_get_compressed(host: Any) -> None:
    host.run("rm -f %s.*", NGINX_LOG)
    before = make_nginx_log(host)
    assert host.run("logrotate --force %s", NGINX_CONFIG).rc == 0
    assert before in host.file(f"{NGINX_LOG}.1").content_string
    after = make_nginx_log(host)  # nginx reopened the file (USR1): the new line is in the fresh one
    assert before not in host.file(NGINX_LOG).content_string
    log = host.file(NGINX_LOG)
    assert (log.user, log.group, log.mode) == ("www-data", "adm", 0o640)
    assert host.run("logrotate --force %s", NGINX_CONFIG).rc == 0
    assert host.file(f"{NGINX_LOG}.2.gz").exists, "the previous rotation was not compressed"
    assert before in host.run("zcat %s.2.gz", NGINX_LOG).stdout
    assert after in host.file(f"{NGINX_LOG}.1").content_string


def test_the_access_log_says_who_did_what_and_the_error_log_each_failed_login(host: Any) -> None:
    """The on-call procedures (docs/on-call.md, "Logs"), as written: nginx's access log names the login of each
    request (Flower's own log sees only its socket), and its error log each failed login."""
    marker = f"who-did-it-{uuid.uuid4().hex[:12]}"
    assert fetch(host, f"/api/task/info/{marker}")[0] == 404
    who = host.run("awk -v who=%s '$3 == who' %s", USER, NGINX_LOG)
    assert marker in who.stdout, f"{marker} is not under login {USER} in {NGINX_LOG}"
    stranger = f"nobody-{uuid.uuid4().hex[:8]}"
    assert fetch(host, "/", login=(stranger, "wrong-password-123"))[0] == 401
    failed = host.run("grep -E 'password mismatch|was not found in' %s/error.log", PROXY["flower_proxy_log_dir"])
    assert f'user "{stranger}"' in failed.stdout, failed.stdout[-1000:]
