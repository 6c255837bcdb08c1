"""No secret is visible in ps, in the unit, or to anyone but root and the service group."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ACCOUNT, SECRETS

# The first platform only: a URL prefix changes nothing this module checks (conftest.platform_skip).


@pytest.mark.parametrize("command", ["ps auxww", "ps -eo args"])
def test_no_secret_in_process_list(host: Any, command: str) -> None:
    listing = host.run(command).stdout
    assert "flower" in listing
    leaked = [s for s in SECRETS if s in listing]
    assert not leaked, f"{len(leaked)} secret(s) visible in {command}"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/systemd/system/flower.service",
        "/etc/systemd/system/demo-worker.service",
        f"{ACCOUNT['flower_account_config_dir']}/flowerconfig.py",
        "/etc/redis/redis.conf",
        "/etc/redis/flowerops.conf",
        "/etc/redis/users.acl",
    ],
)
def test_no_secret_in_unit_and_config_files(host: Any, path: str) -> None:
    content = host.file(path).content_string
    assert content
    assert not [s for s in SECRETS if s in content], f"a secret is written in {path}"


def test_secrets_file_is_root_owned_and_group_readable(host: Any) -> None:
    secrets = host.file(f"{ACCOUNT['flower_account_config_dir']}/secrets.json")
    assert (secrets.user, secrets.group, secrets.mode) == ("root", ACCOUNT["flower_account_group"], 0o640)


def test_redis_refuses_clients_without_the_password(host: Any) -> None:
    result = host.run("redis-cli -h 127.0.0.1 ping")
    assert "NOAUTH" in result.stdout + result.stderr
