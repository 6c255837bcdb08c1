"""roles/flower_backup/files/flower_backup.py: a copy or an archive is proved without running code from it.

Flower's state is a shelve of pickles. The tool loads every entry with a restricted unpickler that admits only the
classes Flower 2.2's saved state holds, and verify/restore refuse a manifest not signed with the host's key (passed
on the tool's standard input, as the unit and `flower-backup` hand it over). The real state is built with
Flower's own EventsState, fed the events a worker sends, and saved as Flower saves it.

Every backup run, good or failed, leaves a status file (the checklist's item 11 reads it): shown here after a good
run, a failed copy, a failed hook, a run systemd stopped, and a verify that found the archive altered.

The sandbox (systemd-run) and the root-only key file are proven on a real host in Molecule
(molecule/default/tests/test_backup.py)."""

from __future__ import annotations

import dbm
import hashlib
import importlib.util
import io
import json
import os
import pickle
import re
import shelve
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from backup_tool import (
    KEY,
    SOURCE_NAME,
    TOOL,
    flower_state,
    live_source,
    run_tool,
    save_as_flower,
    status_of,
    write_config,
)


@pytest.fixture(scope="module")
def tool() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("flower_backup", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered while it loads and is used: its dataclass resolves annotations through sys.modules.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


class Poison:
    """Unpickled by the plain pickle, this writes the marker: the code an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (f"__import__('pathlib').Path({str(self.marker)!r}).write_text('pwned')",)


def poison(base: Path, marker: Path, entry: str) -> None:
    """Replace one entry of a saved state with a pickle that creates the marker when loaded."""
    with dbm.open(str(base), "w") as db:
        db[entry.encode()] = pickle.dumps(Poison(marker))


def test_every_global_of_a_real_state_is_allowed_and_nothing_more(tool: ModuleType, tmp_path: Path) -> None:
    """The allow-list is what Flower's pickles need, plus only inert value types."""
    base = tmp_path / SOURCE_NAME
    save_as_flower(flower_state(tasks=5), base)
    needed: set[tuple[str, str]] = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            needed.add((module, name))
            return super().find_class(module, name)

    with dbm.open(str(base), "r") as db:
        for key in db.keys():  # noqa: SIM118 (gdbm objects are not iterable)
            Recording(io.BytesIO(db[key])).load()
    assert needed <= tool.ALLOWED_GLOBALS
    inert = {(m, n) for m, n in tool.ALLOWED_GLOBALS - needed if m in {"datetime", "decimal", "uuid"}}
    assert tool.ALLOWED_GLOBALS - needed == inert, "the allow-list admits more than Flower's state and value types"


def test_a_real_flower_state_loads_and_its_tasks_are_counted(tool: ModuleType, tmp_path: Path) -> None:
    base = tmp_path / SOURCE_NAME
    save_as_flower(flower_state(tasks=7), base)
    assert tool.count_tasks(base) == 7
    entries = tool.load_shelve(base)
    assert set(entries) == {"events", "counter"}
    assert entries["counter"]["w1@host"]["task-succeeded"] == 5
    assert [worker.hostname for worker in entries["events"].workers.values()] == ["w1@host"]


@pytest.mark.parametrize("entry", ["events", "counter"])
def test_a_poisoned_state_is_refused_and_runs_nothing(tool: ModuleType, tmp_path: Path, entry: str) -> None:
    """Either entry: Flower unpickles both when it starts on a restored database."""
    base, marker = tmp_path / SOURCE_NAME, tmp_path / "marker"
    save_as_flower(flower_state(tasks=3), base)
    poison(base, marker, entry)
    with pytest.raises(pickle.UnpicklingError, match=r"refused global builtins\.exec"):
        tool.load_shelve(base)
    with pytest.raises(tool.BackupError, match=r"does not open as Flower's state: .*refused global builtins\.exec"):
        tool.count_tasks(base)
    assert not marker.exists()
    # The same file, unpickled by shelve as Flower would: the payload is real.
    with shelve.open(str(base), flag="r") as db:
        db[entry]
    assert marker.read_text() == "pwned"


def test_a_flower_that_has_not_saved_yet_is_an_empty_state(tool: ModuleType, tmp_path: Path) -> None:
    """A fresh Flower creates its database empty and fills it at its first save: 0 tasks, not a bad copy
    (the role takes the first backup at deploy, before that save). Anything else without events is refused."""
    base = tmp_path / SOURCE_NAME
    with shelve.open(str(base), flag="n"):
        pass
    assert tool.count_tasks(base) == 0
    with shelve.open(str(base), flag="w") as db:
        db["counter"] = {}
    with pytest.raises(tool.BackupError, match=r"does not open as Flower's state: KeyError"):
        tool.count_tasks(base)


def test_a_state_that_is_not_flowers_is_refused(tool: ModuleType, tmp_path: Path) -> None:
    base = tmp_path / SOURCE_NAME
    with shelve.open(str(base), flag="n") as db:
        db["events"] = {"tasks": []}
    with pytest.raises(tool.BackupError, match=r"its events entry is a builtins\.dict"):
        tool.count_tasks(base)


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file of a directory with its content (one dbm file or several, whatever the backend)."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def plant_archive(
    tool: ModuleType, backup_dir: Path, db: Path, tasks: int, key: bytes, name: str = "flower-29990101T000000Z.tar.gz"
) -> str:
    """An archive of `db` with a manifest whose sha256 matches, signed with `key` (an attacker's, or a leaked one)."""
    archive = backup_dir / name
    files = tool.dbm_files(db)
    with tarfile.open(archive, "w:gz") as tar:
        for file in files:
            tar.add(file, arcname=file.name)
    manifest = {
        "archive": name,
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "tasks": tasks,
        "source": f"/var/lib/flower/{SOURCE_NAME}",
        "files": [file.name for file in files],
        "created": "2999-01-01T00:00:00",
    }
    (backup_dir / name.replace(".tar.gz", ".json")).write_text(json.dumps(tool.sign_manifest(manifest, key)))
    return name


@pytest.mark.parametrize(
    ("signing_key", "refusal"),
    [
        (b"a" * 64, "not signed with this host's manifest key"),
        (KEY, r"refused global builtins.exec"),
    ],
    ids=["manifest recomputed without the key", "manifest signed with a leaked key"],
)
def test_verify_and_restore_refuse_a_poisoned_archive(
    tool: ModuleType, tmp_path: Path, signing_key: bytes, refusal: str
) -> None:
    source = tmp_path / "live" / SOURCE_NAME
    source.parent.mkdir()
    save_as_flower(flower_state(tasks=4), source)
    before = files_of(source.parent)
    config = write_config(tmp_path, source)
    poisoned, marker = tmp_path / "poisoned" / SOURCE_NAME, tmp_path / "marker"
    poisoned.parent.mkdir()
    save_as_flower(flower_state(tasks=4), poisoned)
    poison(poisoned, marker, "counter")
    name = plant_archive(tool, tmp_path / "backups", poisoned, tasks=4, key=signing_key)
    for command in (["verify", "--archive", name], ["restore", "--archive", name]):
        result = run_tool(config, *command)
        assert result.returncode == 1, result.stdout + result.stderr
        assert refusal in result.stderr and "FAILED" in result.stderr
    assert not marker.exists()
    assert files_of(source.parent) == before, "a refused restore changed the database's directory"


def test_backup_signs_and_verify_and_restore_accept_its_archive(tmp_path: Path) -> None:
    source = tmp_path / "live" / SOURCE_NAME
    source.parent.mkdir()
    save_as_flower(flower_state(tasks=6), source)
    config = write_config(tmp_path, source)
    backed = run_tool(config, "backup")
    assert backed.returncode == 0, backed.stderr
    verified = run_tool(config, "verify")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["tasks"] == 6
    restored = run_tool(config, "restore")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["kept_aside"]


def test_an_altered_manifest_or_a_missing_key_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "live" / SOURCE_NAME
    source.parent.mkdir()
    save_as_flower(flower_state(tasks=2), source)
    config = write_config(tmp_path, source)
    assert run_tool(config, "backup").returncode == 0
    no_key = run_tool(config, "verify", key=None)
    assert no_key.returncode == 1 and "no manifest key" in no_key.stderr
    manifest_file = next((tmp_path / "backups").glob("flower-*.json"))
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "tasks": 3}))
    altered = run_tool(config, "verify")
    assert altered.returncode == 1 and "not signed with this host's manifest key" in altered.stderr


def test_the_newest_archive_is_the_newest_this_host_signed(tool: ModuleType, tmp_path: Path) -> None:
    """A planted archive dated in the future does not become what `verify`/`restore` without a name pick."""
    source = tmp_path / "live" / SOURCE_NAME
    source.parent.mkdir()
    save_as_flower(flower_state(tasks=3), source)
    config = write_config(tmp_path, source)
    assert run_tool(config, "backup").returncode == 0
    poisoned, marker = tmp_path / "poisoned" / SOURCE_NAME, tmp_path / "marker"
    poisoned.parent.mkdir()
    save_as_flower(flower_state(tasks=3), poisoned)
    poison(poisoned, marker, "events")
    planted = plant_archive(tool, tmp_path / "backups", poisoned, tasks=3, key=b"a" * 64)
    verified = run_tool(config, "verify")
    assert verified.returncode == 0, verified.stderr
    assert Path(json.loads(verified.stdout)["archive"]).name != planted
    assert f"skipping {planted}" in verified.stderr
    assert not marker.exists()


# --- the status file each run leaves -------------------------------------------------------------------------------


def archive_names(config: Path) -> list[str]:
    backup_dir = Path(json.loads(config.read_text())["backup_dir"])
    return sorted(path.name for path in backup_dir.glob("flower-*.tar.gz"))


def finished_recently(stamp: str) -> bool:
    when = datetime.fromisoformat(stamp)
    return when.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - when) < timedelta(minutes=2)


def test_a_good_backup_writes_its_status(tmp_path: Path) -> None:
    source = live_source(tmp_path, tasks=6)
    config = write_config(tmp_path, source)
    backed = run_tool(config, "backup")
    assert backed.returncode == 0, backed.stderr
    [archive] = archive_names(config)
    status_file = tmp_path / "backups" / "status.json"
    status = status_of(config)
    assert status == {
        "schema": 1,
        "ok": True,
        "started": status["started"],
        "finished": status["finished"],
        "archive": archive,
        "sha256": hashlib.sha256((tmp_path / "backups" / archive).read_bytes()).hexdigest(),
        "tasks": 6,
        "verified": True,
        "source": str(source),
        "files": status["files"],
        "error": "",
        "last_good": {"archive": archive, "finished": status["finished"], "tasks": 6},
    }
    # Every file of the database, whatever the dbm backend (gdbm: flower.db; dumb: .dat, .dir, .bak).
    assert sorted(status["files"]) == sorted(str(path) for path in source.parent.iterdir())
    assert finished_recently(status["finished"]) and status["started"] <= status["finished"]
    assert status_file.stat().st_mode & 0o777 == 0o600  # root reads it; nobody but the backup user otherwise
    assert not list((tmp_path / "backups").glob("*.part")), "the temporary file of the atomic write was left"
    # The manifest names the same archive and checksum: the status is the run's, not a guess.
    manifest = json.loads((tmp_path / "backups" / archive.replace(".tar.gz", ".json")).read_text())
    assert (manifest["sha256"], manifest["tasks"]) == (status["sha256"], status["tasks"])


def test_a_failed_backup_replaces_the_success_with_its_failure(tmp_path: Path) -> None:
    source = live_source(tmp_path, tasks=3)
    config = write_config(tmp_path, source)
    assert run_tool(config, "backup").returncode == 0
    good = status_of(config)
    for file in source.parent.iterdir():
        file.unlink()  # Flower's database is gone: there is nothing to copy
    failed = run_tool(config, "backup")
    assert failed.returncode == 1 and "FAILED" in failed.stderr
    status = status_of(config)
    assert status["ok"] is False and status["verified"] is False
    assert f"no database at {source}" in status["error"]
    assert (status["archive"], status["sha256"], status["tasks"], status["files"]) == (None, None, None, [])
    assert status["last_good"] == good["last_good"], "the failure lost track of the last good archive"
    assert status["finished"] >= good["finished"]
    assert archive_names(config) == [good["archive"]], "a failed run must delete nothing"


def test_a_failed_hook_is_a_failed_run_that_names_its_verified_archive(tmp_path: Path) -> None:
    source = live_source(tmp_path, tasks=2)
    config = write_config(tmp_path, source, hook="/bin/false")
    failed = run_tool(config, "backup")
    assert failed.returncode == 1 and "off-host hook /bin/false exited 1" in failed.stderr
    status = status_of(config)
    [archive] = archive_names(config)
    assert status["ok"] is False and "off-host hook /bin/false exited 1" in status["error"]
    assert (status["archive"], status["tasks"], status["verified"]) == (archive, 2, True)
    assert status["last_good"] is None


def test_a_run_systemd_stops_says_so_in_its_status(tmp_path: Path) -> None:
    """SIGTERM (TimeoutStartSec) during the hook: the run records that it was stopped, and is not retried."""
    started = tmp_path / "hook-started"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 60\n")
    hook.chmod(0o755)
    config = write_config(tmp_path, live_source(tmp_path, tasks=2), hook=str(hook), retries=3)
    argv = [sys.executable, str(TOOL), "--config", str(config), "backup"]
    key, log = tmp_path / "key", tmp_path / "stderr"
    key.write_bytes(KEY)
    with key.open("rb") as stdin, log.open("wb") as stderr:
        run = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 60
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert started.exists(), "the hook did not start"
            run.send_signal(signal.SIGTERM)
            assert run.wait(timeout=30) == 1
        finally:
            run.kill()
            run.wait()
    assert "stopped by SIGTERM" in log.read_text()
    status = status_of(config)
    assert status["ok"] is False and status["error"].startswith("stopped by SIGTERM")
    assert status["archive"] == archive_names(config)[0] and status["verified"] is True


def test_verify_records_its_result_beside_the_backups(tool: ModuleType, tmp_path: Path) -> None:
    source = live_source(tmp_path, tasks=4)
    config = write_config(tmp_path, source)
    assert run_tool(config, "backup").returncode == 0
    backed = status_of(config)
    assert run_tool(config, "verify").returncode == 0
    status = status_of(config)
    assert status["last_verify"] == {
        "archive": backed["archive"],
        "finished": status["last_verify"]["finished"],
        "ok": True,
        "tasks": 4,
        "error": "",
    }
    assert {k: v for k, v in status.items() if k != "last_verify"} == backed, "verify changed the backup's fields"
    # The archive altered on disk after it was written: verify fails, and the status says so.
    archive = tmp_path / "backups" / backed["archive"]
    archive.write_bytes(archive.read_bytes() + b"\0")
    altered = run_tool(config, "verify")
    assert altered.returncode == 1
    checked = status_of(config)["last_verify"]
    assert checked["ok"] is False and checked["archive"] == backed["archive"]
    assert "does not match the manifest's" in checked["error"]
    # A good verify of another archive leaves the status alone: the failure of the newest stays on record.
    other = plant_archive(tool, tmp_path / "backups", source, tasks=4, key=KEY)
    assert run_tool(config, "verify", "--archive", other).returncode == 0
    assert status_of(config)["last_verify"] == checked


def test_a_status_file_that_cannot_be_written_fails_the_run(tmp_path: Path) -> None:
    config = write_config(tmp_path, live_source(tmp_path, tasks=1), status_file=str(tmp_path / "none" / "s.json"))
    result = run_tool(config, "backup")
    assert result.returncode == 1 and "could not write the status file" in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_without_a_status_file_are_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, live_source(tmp_path, tasks=1))
    settings = json.loads(config.read_text())
    del settings["status_file"]
    config.write_text(json.dumps(settings))
    result = run_tool(config, "backup")
    assert result.returncode == 1 and "unusable: KeyError: 'status_file'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not archive_names(config)


# --- what an operator on call reads: the copy's age, the list of backups, the restore's leftovers ------------------


def test_a_backup_says_how_old_the_save_it_copied_is(tmp_path: Path) -> None:
    """A backup copies Flower's last save, not its memory: it says how old that save is and how often Flower saves."""
    source = live_source(tmp_path, tasks=3)
    saved = time.time() - 90
    for file in source.parent.iterdir():
        os.utime(file, (saved, saved))
    config = write_config(tmp_path, source, flower_save_interval=60)
    backed = run_tool(config, "backup")
    assert backed.returncode == 0, backed.stderr
    age = re.search(r"copied Flower's last save, (\d+) s old \(saved ([^)]+)\); Flower saves every 60 s", backed.stdout)
    assert age, backed.stdout
    assert 90 <= int(age[1]) <= 100
    assert datetime.fromisoformat(age[2]) == datetime.fromtimestamp(int(saved), UTC)
    manifest = json.loads(next((tmp_path / "backups").glob("flower-*.json")).read_text())
    assert manifest["saved"] == age[2], "the manifest does not record which save the archive holds"


def list_rows(stdout: str) -> list[list[str]]:
    """The table `list` prints, split into columns on runs of two spaces (the header first)."""
    lines = stdout.splitlines()
    assert lines[-1].split(" archive(s) in ")[0].isdigit(), stdout
    return [re.split(r"\s{2,}", line.strip()) for line in lines[:-1]]


def size_of(path: Path) -> str:
    size = path.stat().st_size
    return f"{size} B" if size < 1024 else f"{size / 1024:.1f} KiB"


def test_list_shows_every_archive_newest_first_with_its_tasks_size_and_verification(
    tool: ModuleType, tmp_path: Path
) -> None:
    source = live_source(tmp_path, tasks=6)
    config = write_config(tmp_path, source)
    backups = tmp_path / "backups"
    assert run_tool(config, "backup").returncode == 0
    [newest] = archive_names(config)
    small = tmp_path / "small" / SOURCE_NAME
    small.parent.mkdir()
    save_as_flower(flower_state(tasks=2), small)
    signed = plant_archive(tool, backups, small, tasks=2, key=KEY, name="flower-20200102T030405Z.tar.gz")
    altered = plant_archive(tool, backups, small, tasks=2, key=KEY, name="flower-20200101T000000Z.tar.gz")
    (backups / altered).write_bytes((backups / altered).read_bytes() + b"\0")
    foreign = plant_archive(tool, backups, small, tasks=2, key=b"a" * 64, name="flower-20190101T000000Z.tar.gz")
    listed = run_tool(config, "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = list_rows(listed.stdout)
    assert header == ["TIME (UTC)", "TASKS", "SIZE", "VERIFIED", "ARCHIVE"]
    stamp = datetime.strptime(newest[len("flower-") : -len(".tar.gz")], "%Y%m%dT%H%M%SZ")
    assert rows == [
        [stamp.strftime("%Y-%m-%d %H:%M:%S"), "6", size_of(backups / newest), "yes", newest],
        ["2020-01-02 03:04:05", "2", size_of(backups / signed), "yes", signed],
        ["2020-01-01 00:00:00", "2", size_of(backups / altered), "NO: sha256 differs from its manifest", altered],
        ["2019-01-01 00:00:00", "?", size_of(backups / foreign), "NO: manifest not signed by this host's key", foreign],
    ]
    # Aligned: every column starts at the same place on every line.
    lines = listed.stdout.splitlines()[:-1]
    assert (
        len({line.index(name) for line, name in zip(lines[1:], [newest, signed, altered, foreign], strict=True)}) == 1
    )
    assert listed.stdout.splitlines()[-1].startswith(f"4 archive(s) in {backups}")


def test_list_says_no_when_the_last_verify_of_an_archive_failed(tmp_path: Path) -> None:
    config = write_config(tmp_path, live_source(tmp_path, tasks=1))
    assert run_tool(config, "backup").returncode == 0
    [archive] = archive_names(config)
    manifest = tmp_path / "backups" / archive.replace(".tar.gz", ".json")
    status = status_of(config)
    status["last_verify"] = {"archive": archive, "finished": status["finished"], "ok": False, "tasks": None,
                             "error": "a disk error"}  # fmt: skip
    (tmp_path / "backups" / "status.json").write_text(json.dumps(status))
    assert manifest.exists()
    [_, row] = list_rows(run_tool(config, "list").stdout)
    assert row[3] == "NO: its last verify failed"


def test_list_of_no_archives_is_an_empty_table(tmp_path: Path) -> None:
    config = write_config(tmp_path, live_source(tmp_path, tasks=1))
    listed = run_tool(config, "list")
    assert listed.returncode == 0, listed.stderr
    assert list_rows(listed.stdout) == [["TIME (UTC)", "TASKS", "SIZE", "VERIFIED", "ARCHIVE"]]


def test_verify_live_counts_the_database_as_it_is_now(tmp_path: Path) -> None:
    """What the restore compares the archive with when Flower's API does not answer."""
    source = live_source(tmp_path, tasks=4)
    config = write_config(tmp_path, source)
    assert run_tool(config, "backup").returncode == 0
    save_as_flower(flower_state(tasks=9), source)
    verified = run_tool(config, "verify", "--live")
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout)
    assert (result["tasks"], result["live"]["tasks"], result["live"]["error"]) == (4, 9, "")
    for file in source.parent.iterdir():
        file.unlink()
    gone = json.loads(run_tool(config, "verify", "--live").stdout)["live"]
    assert gone == {"tasks": None, "saved": None, "error": f"no database at {source}"}


def test_restore_keeps_only_the_newest_databases_set_aside(tmp_path: Path) -> None:
    """`<db>.before-restore-<time>` copies do not pile up: the newest --keep-before stay, this restore's among them."""
    source = live_source(tmp_path, tasks=2)
    config = write_config(tmp_path, source)
    assert run_tool(config, "backup").returncode == 0
    old = [f"{SOURCE_NAME}.before-restore-2020010{n}T000000Z" for n in range(1, 5)]
    for name in old:
        (source.parent / name).write_bytes(b"an earlier database")
    restored = run_tool(config, "restore", "--keep-before", "2")
    assert restored.returncode == 0, restored.stderr
    result = json.loads(restored.stdout)
    kept = [Path(path).name for path in result["kept_aside"]]  # one file or several, whatever the dbm backend
    assert kept and all(".before-restore-" in name for name in kept)
    assert sorted(result["removed_aside"]) == sorted(str(source.parent / name) for name in old[:3])
    left = sorted(path.name for path in source.parent.glob("*.before-restore-*"))
    assert left == sorted([old[3], *kept])
