"""Filter of the flower role: what is wrong with flower_users, one line per entry and rule, for preflight's message.

Each line names the entry (its position and its name, never its password) and the rule it breaks, so that an
operator with twenty logins sees which one to fix.
"""

from __future__ import annotations

import re
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9._-]+$")
# Flower answers 500 to a non-ASCII basic-auth password; nginx's htpasswd takes the same rule.
PASSWORD = re.compile(r"^[ -~]+$")
MIN_PASSWORD = 12
ROLES = ("admin", "viewer")


def _entry_problems(index: int, user: Any, auth_mode: str) -> list[str]:
    if not isinstance(user, dict):
        return [f"flower_users[{index}]: each login is a mapping {{name, password, role}}"]
    name = user.get("name")
    where = f"flower_users[{index}] ({name!r})" if name is not None else f"flower_users[{index}]"
    problems = []
    if name is None:
        problems.append(f"{where}: has no name")
    elif not NAME.match(str(name)):
        problems.append(f"{where}: a name is letters, digits, '.', '_' and '-' only")
    password = user.get("password")
    if password is None:
        problems.append(f"{where}: has no password")
    elif not PASSWORD.match(str(password)):
        problems.append(f"{where}: the password must be printable ASCII (Flower refuses other characters)")
    elif len(str(password)) < MIN_PASSWORD:
        problems.append(f"{where}: the password is shorter than {MIN_PASSWORD} characters")
    role = user.get("role")
    if role not in ROLES:
        problems.append(f"{where}: role must be admin or viewer, not {role!r}")
    elif role == "viewer" and auth_mode == "basic":
        problems.append(
            f"{where}: viewer is refused with flower_auth_mode basic: Flower's own basic auth has only admins"
            " (use flower_auth_mode proxy for read-only logins)"
        )
    return problems


def flower_user_problems(users: Any, auth_mode: str = "proxy") -> list[str]:
    """Every broken rule of flower_users, as lines naming the entry and the rule ([] when all is well)."""
    if not isinstance(users, list):
        return ["flower_users must be a list of {name, password, role}"]
    problems = [line for index, user in enumerate(users) for line in _entry_problems(index, user, auth_mode)]
    names = [str(user.get("name")) for user in users if isinstance(user, dict) and user.get("name") is not None]
    problems += [
        f"flower_users: the name {name!r} appears more than once"
        for name in sorted(set(names))
        if names.count(name) > 1
    ]
    admins = [user for user in users if isinstance(user, dict) and user.get("role") == "admin"]
    if auth_mode != "oauth" and not admins:
        problems.append("flower_users: at least one login needs role admin (the verify stage logs in as it)")
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"flower_user_problems": flower_user_problems}
