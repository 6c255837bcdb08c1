"""Backups of Flower's database: a backup holds the tasks Flower showed, a
restore brings them back, a damaged or poisoned archive is refused without
touching the host or running its code, retention works (the free-space guard: the
disk-full drill in test_monitoring.py),
and the timer is armed.

Playbooks run from the controller against the target, as in test_ansible_runs.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import (
    GROUP_VARS,
    PROJECT_DIR,
    fetch_json,
    role_defaults,
    run_playbook,
    wait_for,
    wait_until_healthy,
)

# The first platform only: a URL prefix changes nothing this module checks (conftest.platform_skip).

BACKUP = role_defaults("flower_backup")
DIR = BACKUP["flower_backup_dir"]
DB = BACKUP["flower_backup_source"]
ROLE = PROJECT_DIR / "roles" / "flower_backup"
# The role's internal names, as this scenario's first Flower has them.
INTERNAL = role_defaults("flower_backup", "vars")
KEY_FILE = INTERNAL["_flower_backup_key_file"]
OWNER = f"{BACKUP['flower_backup_user']}:{BACKUP['flower_backup_group']}"
# Where the poisoned pickle would leave its marker if anything loaded it: the
# backup directory (writable in the backup sandbox) and Flower's (writable by Flower).
MARKERS = [f"{DIR}/poison-marker", f"{Path(DB).parent}/poison-marker"]
STAMP = "%Y%m%dT%H%M%SZ"
# What a refused restore must leave alone: the database and the running Flower.
WRITE = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
FINGERPRINT = f"sha256sum {DB}; ls {Path(DB).parent}; systemctl show -p MainPID,ActiveEnterTimestamp flower"


def run(host: Any, tmp_path: Path, playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A playbook against this platform alone."""
    return run_playbook(tmp_path, GROUP_VARS, playbook, *args, hosts=[host.backend.get_hostname()])


def backup_tool() -> ModuleType:
    """The role's flower_backup.py, for its manifest signing (the tests sign as a holder of the key would)."""
    spec = importlib.util.spec_from_file_location("flower_backup", ROLE / "files" / "flower_backup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def sign_with_host_key(host: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest signed with the host's root-only key: a legitimate signer, or an attacker who stole the key."""
    key = host.file(KEY_FILE).content.strip()
    return backup_tool().sign_manifest(manifest, key)


def write_manifest(host: Any, path: str, manifest: dict[str, Any]) -> None:
    write = host.run("python3 -c %s %s %s", WRITE, path, json.dumps(manifest))
    assert write.rc == 0, write.stderr
    assert host.run("chown %s %s", OWNER, path).rc == 0


def archives(host: Any) -> list[str]:
    """Archive names, oldest first (their names sort by time)."""
    listing = host.run("find %s -maxdepth 1 -name 'flower-*.tar.gz' -printf '%%f\\n'", DIR)
    return sorted(listing.stdout.split())


def start_backup(host: Any) -> Any:
    return host.run("systemctl start flower-backup.service")


def api_task_ids(host: Any) -> set[str]:
    return set(fetch_json(host, "/api/tasks?limit=100000"))


@pytest.fixture(scope="module")
def backed_up(healthy_flower: Any) -> dict[str, Any]:
    """A batch of finished tasks, saved by Flower and backed up."""
    host = healthy_flower
    ids = []
    for n in range(8):
        call = host.run("demo-worker-call add %s", f"[{n}, 1]")
        assert call.rc == 0, call.stderr
        ids.append(call.stdout.strip().splitlines()[-1])
    done = wait_for(lambda: set(ids) <= set(fetch_json(host, "/api/tasks?limit=100000&state=SUCCESS")), timeout=60)
    assert done, "the batch of tasks did not all reach SUCCESS in Flower"
    # Flower writes its database on SIGTERM (and every flower_state_save_interval): save now.
    assert host.run("systemctl restart flower").rc == 0
    wait_until_healthy(host)
    result = start_backup(host)
    assert result.rc == 0, host.run("journalctl -u flower-backup --no-pager -n 30").stdout
    return {"ids": set(ids), "archive": archives(host)[-1]}


def test_backup_is_private_and_checksummed(host: Any, backed_up: dict[str, Any]) -> None:
    archive = f"{DIR}/{backed_up['archive']}"
    manifest_file = archive.removesuffix(".tar.gz") + ".json"
    for path, mode in ((DIR, 0o700), (archive, 0o600), (manifest_file, 0o600)):
        entry = host.file(path)
        assert (entry.mode, entry.user) == (mode, BACKUP["flower_backup_user"]), path
    manifest = json.loads(host.file(manifest_file).content_string)
    assert manifest["sha256"] == host.run("sha256sum %s", archive).stdout.split()[0]
    assert manifest["hmac"] == sign_with_host_key(host, manifest)["hmac"], "the manifest is not signed"
    assert manifest["tasks"] >= len(backed_up["ids"])
    verified = host.run("flower-backup verify --archive %s", backed_up["archive"])
    assert verified.rc == 0, verified.stderr
    assert json.loads(verified.stdout)["tasks"] == manifest["tasks"]


def test_the_manifest_key_is_roots_alone(host: Any, backed_up: dict[str, Any]) -> None:
    """The backup user signs with the key systemd hands its unit on stdin, and cannot read the key file itself."""
    key = host.file(KEY_FILE)
    assert (key.user, key.group, key.mode, key.is_symlink) == ("root", "root", 0o600, False)
    assert len(key.content.strip()) >= 32
    read = host.run("runuser -u %s -- cat %s", BACKUP["flower_backup_user"], KEY_FILE)
    assert read.rc != 0 and not read.stdout, "the backup user can read the manifest key"
    # Without the key on its standard input the tool refuses before opening anything.
    direct = host.run(
        "runuser -u %s -- %s %s --config %s verify --archive %s",
        BACKUP["flower_backup_user"],
        BACKUP["flower_backup_python"],
        INTERNAL["_flower_backup_script"],
        INTERNAL["_flower_backup_config"],
        backed_up["archive"],
    )
    assert direct.rc != 0 and "no manifest key" in direct.stderr, direct.stderr


def test_timer_is_armed(host: Any) -> None:
    timer = host.service("flower-backup.timer")
    assert timer.is_running and timer.is_enabled
    assert host.run("systemctl show -p NextElapseUSecRealtime --value flower-backup.timer").stdout.strip()
    assert host.run("systemctl show -p Persistent --value flower-backup.timer").stdout.strip() == "yes"


def test_restore_brings_the_tasks_back(host: Any, tmp_path: Path, backed_up: dict[str, Any]) -> None:
    assert host.run("systemctl stop flower && rm -f %s && systemctl start flower", DB).rc == 0
    wait_until_healthy(host)
    assert not backed_up["ids"] & api_task_ids(host), "the database was not wiped"
    result = run(host, tmp_path, "playbooks/restore.yml", "-e", f"flower_backup_restore_archive={backed_up['archive']}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert backed_up["ids"] <= api_task_ids(host)
    db = host.file(DB)
    assert (db.user, db.group, db.mode) == (BACKUP["flower_backup_user"], BACKUP["flower_backup_group"], 0o600)
    assert host.run("ls %s.before-restore-*", DB).rc == 0, "the replaced database was not kept aside"


# Run as the backup user with Flower's Python (so the dbm backend is Flower's): an
# archive of an empty state (0 tasks; a Flower that has not saved yet) with the
# real archive's manifest, adjusted; the test signs it with the host's key.
_EMPTY = """
import dbm, hashlib, json, pathlib, sys, tarfile, tempfile
src, dst, source_name = sys.argv[1:4]
with tempfile.TemporaryDirectory(dir=pathlib.Path(dst).parent) as tmp:
    dbm.open(f"{tmp}/{source_name}", "n").close()
    files = sorted(pathlib.Path(tmp).iterdir())
    with tarfile.open(dst, "w:gz") as tar:
        for file in files:
            tar.add(file, arcname=file.name)
manifest = json.loads(pathlib.Path(src[: -len(".tar.gz")] + ".json").read_text())
manifest.update(archive=pathlib.Path(dst).name, sha256=hashlib.sha256(pathlib.Path(dst).read_bytes()).hexdigest(),
                tasks=0, files=[file.name for file in files])
pathlib.Path(dst[: -len(".tar.gz")] + ".json").write_text(json.dumps(manifest))
"""


def kept_aside(host: Any) -> list[str]:
    """The databases restores set aside, oldest first (their names end with their time)."""
    listing = host.run(
        "find %s -maxdepth 1 -name %s -printf '%%f\\n'", str(Path(DB).parent), f"{Path(DB).name}*.before-restore-*"
    )
    return sorted(listing.stdout.split(), key=lambda name: name.rsplit("-", 1)[-1])


def test_restoring_fewer_tasks_needs_the_operators_word_and_old_copies_go(
    host: Any, tmp_path: Path, backed_up: dict[str, Any]
) -> None:
    """Issue 19: an archive with fewer tasks than Flower holds is refused, both counts shown, before anything
    changes; with flower_backup_restore_allow_fewer_tasks it is restored, and only the newest
    flower_backup_restore_keep_before databases set aside stay."""
    live = api_task_ids(host)
    assert backed_up["ids"] <= live, "Flower does not hold the backed-up tasks before the test"
    name = f"flower-{(datetime.now(UTC) - timedelta(hours=5)).strftime(STAMP)}.tar.gz"
    manifest_file = f"{DIR}/{name.removesuffix('.tar.gz')}.json"
    argv = [
        BACKUP["flower_backup_python"],
        "-c",
        _EMPTY,
        f"{DIR}/{backed_up['archive']}",
        f"{DIR}/{name}",
        Path(DB).name,
    ]
    planted = host.run("runuser -u %s -- " + " ".join(["%s"] * len(argv)), BACKUP["flower_backup_user"], *argv)
    assert planted.rc == 0, planted.stderr
    write_manifest(host, manifest_file, sign_with_host_key(host, json.loads(host.file(manifest_file).content)))
    keep = BACKUP["flower_backup_restore_keep_before"]
    old = [f"{DB}.before-restore-2000010{n}T000000Z" for n in range(1, keep + 2)]
    try:
        before = host.run(FINGERPRINT).stdout
        refused = run(host, tmp_path, "playbooks/restore.yml", "-e", f"flower_backup_restore_archive={name}")
        output = " ".join((refused.stdout + refused.stderr).split())
        assert refused.returncode != 0, output[-3000:]
        counts = re.search(rf"Refusing to restore {name}: it holds 0 tasks, Flower holds (\d+) now", output)
        assert counts and int(counts[1]) >= len(live), output[-3000:]
        assert "-e flower_backup_restore_allow_fewer_tasks=true" in output, output[-3000:]
        assert "Stop Flower" not in output
        assert host.run(FINGERPRINT).stdout == before, "a refused restore changed the host"

        paths = " ".join(shlex.quote(path) for path in old)
        assert host.run(f"touch {paths} && chown {OWNER} {paths} && chmod 0600 {paths}").rc == 0
        confirmed = {"flower_backup_restore_archive": name, "flower_backup_restore_allow_fewer_tasks": True}
        result = run(host, tmp_path, "playbooks/restore.yml", "-e", json.dumps(confirmed))
        output = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 0, output[-3000:]
        assert not backed_up["ids"] & api_task_ids(host), "the archive of no tasks was not restored"
        left = kept_aside(host)
        assert len(left) == keep, f"{left}: expected the newest {keep} databases set aside"
        assert not {Path(path).name for path in old[:2]} & set(left), "the oldest databases set aside were kept"
        assert f"stay in {Path(DB).parent}" in output and left[-1] in output, output[-3000:]
    finally:
        host.run("rm -f %s %s " + " ".join(["%s"] * len(old)), f"{DIR}/{name}", manifest_file, *old)
        # Back to the backed-up tasks for the tests that follow (more tasks than Flower holds: no confirmation).
        back = run(
            host, tmp_path, "playbooks/restore.yml", "-e", f"flower_backup_restore_archive={backed_up['archive']}"
        )
        assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]
    assert backed_up["ids"] <= api_task_ids(host)


def plant_damaged(host: Any, source: str, name: str, checksum_matches: bool) -> None:
    """A truncated copy of an archive, with a signed manifest whose checksum matches it or not."""
    src, dst = f"{DIR}/{source}", f"{DIR}/{name}"
    manifest = json.loads(host.file(src.removesuffix(".tar.gz") + ".json").content_string)
    assert host.run("head -c 600 %s > %s", src, dst).rc == 0
    assert host.run("chown %s %s", OWNER, dst).rc == 0
    manifest["archive"] = name
    if checksum_matches:
        manifest["sha256"] = host.run("sha256sum %s", dst).stdout.split()[0]
    write_manifest(host, dst.removesuffix(".tar.gz") + ".json", sign_with_host_key(host, manifest))


@pytest.mark.parametrize("checksum_matches", [False, True], ids=["checksum mismatch", "truncated, checksum matches"])
def test_damaged_archive_is_refused_and_nothing_changes(
    host: Any, tmp_path: Path, backed_up: dict[str, Any], checksum_matches: bool
) -> None:
    name = f"flower-{(datetime.now(UTC) + timedelta(days=1)).strftime(STAMP)}.tar.gz"
    plant_damaged(host, backed_up["archive"], name, checksum_matches)
    try:
        before = host.run(FINGERPRINT).stdout
        result = run(host, tmp_path, "playbooks/restore.yml", "-e", f"flower_backup_restore_archive={name}")
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        expected = "not a readable archive" if checksum_matches else "does not match the manifest"
        assert expected in " ".join(output.split()), output[-3000:]
        assert "Stop Flower" not in output
        assert host.run(FINGERPRINT).stdout == before, "a refused restore changed the host"
    finally:
        host.run("rm -f %s/%s %s/%s", DIR, name, DIR, name.removesuffix(".tar.gz") + ".json")


# Run as the backup user (whose files the archives are): a copy of a real archive
# whose `counter` entry (Flower unpickles it when it starts) is a pickle that
# writes the markers when loaded, with a manifest whose sha256 is recomputed to
# match. The user cannot sign it: the manifest keeps the old archive's hmac.
_POISON = """
import dbm, hashlib, json, pathlib, pickle, sys, tarfile, tempfile
src, dst, source_name = sys.argv[1:4]
markers = json.loads(sys.argv[4])
payload = ("import pathlib\\nfor m in %r:\\n    try: pathlib.Path(m).write_text('pwned')\\n"
           "    except OSError: pass" % (markers,))
class Poison:
    def __reduce__(self):
        return exec, (payload,)
with tempfile.TemporaryDirectory(dir=pathlib.Path(dst).parent) as tmp:
    with tarfile.open(src) as tar:
        tar.extractall(tmp)
    with dbm.open(f"{tmp}/{source_name}", "w") as db:
        db[b"counter"] = pickle.dumps(Poison())
    with tarfile.open(dst, "w:gz") as tar:
        for file in sorted(pathlib.Path(tmp).iterdir()):
            tar.add(file, arcname=file.name)
manifest = json.loads(pathlib.Path(src[: -len(".tar.gz")] + ".json").read_text())
manifest.update(archive=pathlib.Path(dst).name, sha256=hashlib.sha256(pathlib.Path(dst).read_bytes()).hexdigest())
pathlib.Path(dst[: -len(".tar.gz")] + ".json").write_text(json.dumps(manifest))
"""


def plant_poisoned(host: Any, source: str, name: str) -> None:
    src, dst = f"{DIR}/{source}", f"{DIR}/{name}"
    source_name = Path(DB).name
    argv = ["python3", "-c", _POISON, src, dst, source_name, json.dumps(MARKERS)]
    planted = host.run("runuser -u %s -- " + " ".join(["%s"] * len(argv)), BACKUP["flower_backup_user"], *argv)
    assert planted.rc == 0, planted.stderr
    assert not any(host.file(marker).exists for marker in MARKERS), "crafting the archive loaded it"


@pytest.mark.parametrize(
    ("signed", "refusal"),
    [(False, "not signed with this host's manifest key"), (True, "refused global builtins.exec")],
    ids=["manifest recomputed without the key", "manifest signed with a stolen key"],
)
def test_poisoned_archive_is_refused_and_runs_nothing(
    host: Any, tmp_path: Path, backed_up: dict[str, Any], signed: bool, refusal: str
) -> None:
    """Refused by `flower-backup verify` and by the restore playbook; no marker, the host unchanged.

    Signed with the stolen key, the archive gets past the manifest check and is refused by the
    restricted unpickler, which the plain pickle (Flower's, on a restored database) would not have been.
    """
    name = f"flower-{(datetime.now(UTC) + timedelta(days=2)).strftime(STAMP)}.tar.gz"
    manifest_file = f"{DIR}/{name.removesuffix('.tar.gz')}.json"
    plant_poisoned(host, backed_up["archive"], name)
    if signed:
        write_manifest(host, manifest_file, sign_with_host_key(host, json.loads(host.file(manifest_file).content)))
    try:
        before = host.run(FINGERPRINT).stdout
        verified = host.run("flower-backup verify --archive %s", name)
        assert verified.rc != 0, verified.stdout
        assert refusal in verified.stderr, verified.stderr
        result = run(host, tmp_path, "playbooks/restore.yml", "-e", f"flower_backup_restore_archive={name}")
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        # Ansible's YAML output folds long lines and doubles single quotes.
        assert refusal in " ".join(output.split()).replace("''", "'"), output[-3000:]
        assert "Stop Flower" not in output
        assert not [marker for marker in MARKERS if host.file(marker).exists], "the archive's code ran"
        assert host.run(FINGERPRINT).stdout == before, "a refused archive changed the host"
    finally:
        host.run("rm -f %s %s %s", f"{DIR}/{name}", manifest_file, " ".join(MARKERS))


def test_retention_keeps_the_newest_by_count_and_drops_the_too_old(host: Any, backed_up: dict[str, Any]) -> None:
    keep = BACKUP["flower_backup_keep_count"]
    now = datetime.now(UTC)
    ancient = now - timedelta(days=BACKUP["flower_backup_keep_days"] + 1)
    # keep + 3 recent copies (older than the real archives), and one beyond keep_days.
    fakes = [now - timedelta(minutes=10 + n) for n in range(keep + 3)] + [ancient]
    names = [f"flower-{when.strftime(STAMP)}" for when in fakes]
    source = f"{DIR}/{backed_up['archive'].removesuffix('.tar.gz')}"
    script = "; ".join(
        f"cp -p {source}.tar.gz {DIR}/{name}.tar.gz && cp -p {source}.json {DIR}/{name}.json" for name in names
    )
    assert host.run(script).rc == 0
    result = start_backup(host)
    assert result.rc == 0, host.run("journalctl -u flower-backup --no-pager -n 20").stdout
    left = archives(host)
    assert len(left) == keep, f"{len(left)} archives left, expected {keep}"
    assert f"{names[-1]}.tar.gz" not in left, "the archive older than keep_days survived"
    assert f"{names[0]}.tar.gz" in left, "a recent archive within the count was removed"
    jsons = host.run("find %s -maxdepth 1 -name 'flower-*.json' -printf '%%f\\n'", DIR).stdout.split()
    assert sorted(n.removesuffix(".json") for n in jsons) == [a.removesuffix(".tar.gz") for a in left]
