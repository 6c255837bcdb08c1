"""Flower's log rotates: a forced rotation leaves Flower writing to the fresh
file, and the next rotation compresses the previous one."""

from __future__ import annotations

import uuid
from typing import Any

from conftest import ACCOUNT, fetch, wait_for, wait_until_healthy

LOG = f"{ACCOUNT['flower_account_log_dir']}/flower.log"
CONFIG = "/etc/logrotate.d/flower"


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
