"""Drill: the broker's password rotated the way an operator does it, in the inventory, then a re-run.

Redis (the demo broker fixture, on its host) and the sample workers (on theirs) get the new password from a run of
the fixtures (in production, the broker's own tooling), then both Flowers watching it (clusters a and b) from a run
of site.yml on their hosts, each limited to the phases the broker's settings touch (the configure and service tags:
docs/on-call.md, "Rotating the broker's password"; the health check that gates each Flower host runs under any
tags). Each Flower is restarted exactly once, with the new secret; Redis refuses the old one; a task sent
afterwards shows in Flower, with nobody touching anything; and no password, old or new, is in the run's output. Runs
after test_split.py (file order) and before test_tls_provided.py, which re-deploys with tags that leave the broker's
settings alone.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from conftest import (
    BROKER,
    FLOWER,
    FLOWER_B,
    GROUP_VARS,
    REDIS_CLI,
    WORKERS,
    broker_url,
    platform_host,
    record,
    run_playbook,
    send_task,
    served_ca,
    task_state,
    wait_for,
)


def test_a_broker_password_rotation_restarts_flower_once_and_it_watches_again(flower: Any, tmp_path: Path) -> None:
    ca = served_ca(tmp_path)
    old = GROUP_VARS["demo_broker_password"]
    new = f"split-rotated-{secrets.token_hex(8)}"
    # The inventory's broker URLs follow the password: the operator changes it alone.
    rotated = {"demo_broker_password": new}
    flowers = (flower, platform_host(FLOWER_B))
    since = flower.check_output("date +%s")
    started = time.monotonic()
    output = ""
    runs = (
        ("playbooks/fixtures.yml", ("demo_broker", "demo_worker"), [BROKER, *WORKERS]),
        ("site.yml", ("flower",), [FLOWER, FLOWER_B]),
    )
    for playbook, roles, hosts in runs:
        phases = [f"{role}_{phase}" for role in roles for phase in ("configure", "service")]
        limit = ",".join(hosts)
        # Both Flower hosts at once (one at a time, each health-gated, is test_rollout.py's subject in default).
        extra = {**rotated, "flowerops_rollout_batch": "100%"}
        result = run_playbook(playbook, "--limit", limit, "--tags", ",".join(phases), "-e", json.dumps(extra))
        output += result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
    assert "Check Flower end to end" in output, "the run did not end with the health check"
    record("broker_password_rotation_run_s", time.monotonic() - started)
    for secret in (old, new, broker_url(new), broker_url(new, FLOWER_B)):
        assert secret not in output, "a broker password is in the run's output"

    for host in flowers:
        starts = host.run("journalctl -u flower --no-pager -o cat --since @%s", since).stdout
        assert starts.count("Started flower.service") == 1, starts[-2000:]
    broker = platform_host(BROKER)
    taken = [broker.run(f"{REDIS_CLI} -a %s ping", password).stdout.strip() for password in (old, new)]
    assert taken[1] == "PONG" and "PONG" not in taken[0], f"old password: {taken[0]!r}; new: {taken[1]!r}"

    task_id = send_task("[40, 2]")
    assert wait_for(lambda: task_state(task_id, ca) == "SUCCESS", timeout=60), task_state(task_id, ca)
