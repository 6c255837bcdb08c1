"""A Debian 12 host's Flower database on this Debian 13 host: nothing of the history is lost.

Debian 12's Flower (Python 3.11, python3-gdbm, which the flower role installs) saves its state as a gdbm file;
Python 3.13 (Debian 13) creates new shelves with dbm.sqlite3. A host upgraded in place from 12 to 13, or a Debian 12
backup restored here, hands Flower a gdbm file: without the gdbm module Flower 2.2 renames it `*.corrupt` and starts
empty. This scenario's hosts run Debian 13 (molecule.yml), so this proves, on the real Flower and tools:

- Flower's own first save here is dbm.sqlite3 (measured, not assumed);
- Flower starts on a gdbm database with every task in it, and its next save moves it to dbm.sqlite3, still every task;
- the host's backup of the gdbm database verifies, and playbooks/restore.yml brings every task back from it.

The gdbm file is written here, by Flower's Python through dbm.gnu, from the entries of Flower's own save (the
pickles are the same on both releases; the dbm file around them is what differs). The archive is signed with this
host's key, as an upgraded host's own archives are (its key stays). The checklist's item 7 (test_split.py) reads
whichever format the database is in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import ADMIN, FLOWER, GROUP_VARS, PROJECT_DIR, get, run_playbook, send_task, served_ca, wait_for
from testlib import role_settings

ACCOUNT = role_settings(PROJECT_DIR, "flower_account", GROUP_VARS)
BACKUP = role_settings(PROJECT_DIR, "flower_backup", GROUP_VARS)
DB = f"{ACCOUNT['flower_account_data_dir']}/flower.db"
PYTHON = f"{ACCOUNT['flower_account_app_root']}/venv/bin/python"
USER = ACCOUNT["flower_account_user"]
BACKUP_DIR = BACKUP["flower_backup_dir"]
assert GROUP_VARS.get("flower_db", DB) == DB

# Rewrite Flower's save (any backend) as a gdbm file, entry by entry, raw: what Debian 12's Flower writes.
TO_GDBM = """import dbm, dbm.gnu, os, sys
path = sys.argv[1]
with dbm.open(path, "r") as saved:
    entries = {key: saved[key] for key in saved.keys()}
with dbm.gnu.open(path + ".gdbm", "n", 0o600) as db:
    for key, value in entries.items():
        db[key] = value
os.replace(path + ".gdbm", path)
print(dbm.whichdb(path))
"""


def whichdb(flower: Any) -> str:
    probe = "import dbm, sys; print(dbm.whichdb(sys.argv[1]))"
    run = flower.run("runuser -u %s -- %s -c %s %s", USER, PYTHON, probe, DB)
    assert run.rc == 0, run.stderr
    return run.stdout.strip()


def task_ids(ca: Path) -> set[str] | None:
    """The tasks Flower holds, or None while it does not answer."""
    try:
        status, body = get("/api/tasks?limit=100000", ca, (ADMIN["name"], ADMIN["password"]))
    except OSError:
        return None
    return set(json.loads(body)) if status == 200 else None


def holds(ca: Path, expected: set[str]) -> bool:
    return expected <= (task_ids(ca) or set())


def restart(flower: Any, ca: Path, expected: set[str]) -> None:
    """Flower saves on a clean stop and loads its save on start."""
    assert flower.run("systemctl restart flower").rc == 0
    assert wait_for(lambda: holds(ca, expected), timeout=60), f"missing: {sorted(expected - (task_ids(ca) or set()))}"


def test_a_debian_12_gdbm_database_loads_moves_to_sqlite_and_restores_with_every_task(
    flower: Any, tmp_path: Path
) -> None:
    ca = served_ca(tmp_path)
    ids = {send_task(f"[{n}, 12]") for n in range(6)}
    assert wait_for(lambda: holds(ca, ids), timeout=60), "the tasks did not reach Flower"
    restart(flower, ca, ids)
    # Python 3.13 (Debian 13) saves with dbm.sqlite3; Debian 12's Python with gdbm (FLOWEROPS_DEBIAN_RELEASE=12).
    version = flower.run("%s -c %s", PYTHON, "import sys; print(sys.version_info >= (3, 13))").stdout.strip()
    native = "dbm.sqlite3" if version == "True" else "dbm.gnu"
    assert whichdb(flower) == native, f"Flower's own save is not {native}: the premise changed"

    # The host as a 12 -> 13 upgrade leaves it: Flower stopped, its database gdbm.
    assert flower.run("systemctl stop flower").rc == 0
    converted = flower.run("runuser -u %s -- %s -c %s %s", USER, PYTHON, TO_GDBM, DB)
    assert converted.rc == 0 and converted.stdout.strip() == "dbm.gnu", converted.stdout + converted.stderr
    backup = flower.run("systemctl start flower-backup.service")
    assert backup.rc == 0, flower.run("journalctl -u flower-backup --no-pager -n 20").stdout
    status = json.loads(flower.file(f"{BACKUP_DIR}/status.json").content_string)
    assert status["ok"] and status["verified"] and status["tasks"] >= len(ids), status
    archive = status["archive"]

    # Flower starts on it with every task; its next save is SQLite, with every task still.
    assert flower.run("systemctl start flower").rc == 0
    assert wait_for(lambda: holds(ca, ids), timeout=60), "Flower lost the gdbm database's tasks"
    assert not flower.file(f"{DB}.corrupt").exists, "Flower set the gdbm database aside as corrupt"
    restart(flower, ca, ids)
    assert whichdb(flower) == native

    # The Debian 12 archive, restored here over an emptied database.
    assert flower.run("systemctl stop flower && rm -f %s && systemctl start flower", DB).rc == 0
    emptied = wait_for(lambda: (held := task_ids(ca)) is not None and not ids & held, timeout=60)
    assert emptied, "Flower did not come back empty"
    restored = run_playbook(
        "playbooks/restore.yml", "--limit", FLOWER, "-e", f"flower_backup_restore_archive={archive}"
    )
    assert restored.returncode == 0, (restored.stdout + restored.stderr)[-3000:]
    assert holds(ca, ids), "the restore did not bring every task back"
    for secret in (ADMIN["password"], GROUP_VARS["demo_broker_password"]):
        assert secret not in restored.stdout + restored.stderr
