"""The service account is locked down and Flower's directories are private."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ACCOUNT

# The first platform only: a URL prefix changes nothing this module checks (conftest.platform_skip).

USER = ACCOUNT["flower_account_user"]
GROUP = ACCOUNT["flower_account_group"]


def test_service_user_cannot_log_in(host: Any) -> None:
    user = host.user(USER)
    assert user.exists
    assert user.group == GROUP
    assert user.shell == ACCOUNT["flower_account_shell"] == "/usr/sbin/nologin"
    assert user.uid < 1000, "a system account"
    assert user.password in ("!", "*", "!*"), "no usable password"


@pytest.mark.parametrize(
    ("key", "owner", "group", "mode"),
    [
        ("flower_account_data_dir", USER, GROUP, 0o750),
        ("flower_account_log_dir", USER, GROUP, 0o750),
        ("flower_account_config_dir", "root", GROUP, 0o750),
        ("flower_account_app_root", "root", "root", 0o755),
    ],
)
def test_directory_owner_and_mode(host: Any, key: str, owner: str, group: str, mode: int) -> None:
    directory = host.file(ACCOUNT[key])
    assert directory.is_directory
    assert (directory.user, directory.group, directory.mode) == (owner, group, mode)


def test_service_user_cannot_write_the_venv_or_config(host: Any) -> None:
    for path in (ACCOUNT["flower_account_app_root"], ACCOUNT["flower_account_config_dir"]):
        probe = host.run("runuser -u %s -- touch %s/probe", USER, path)
        assert probe.rc != 0, f"{USER} could write into {path}"
