"""roles/flower_backup/files/flower_backup.py: a copy or an archive is proved without running code from it.

Flower's state is a shelve of pickles. The tool loads every entry with a restricted unpickler that admits only the
classes Flower 2.2's saved state holds, and verify/restore refuse a manifest not signed with the host's key (passed
on the tool's standard input, as the unit and `flower-backup` hand it over). The real state is built with
Flower's own EventsState, fed the events a worker sends, and saved as Flower saves it.

The sandbox (systemd-run) and the root-only key file are proven on a real host in Molecule
(molecule/default/tests/test_backup.py)."""

from __future__ import annotations

import dbm
import hashlib
import importlib.util
import io
import json
import pickle
import shelve
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flower_stack import PROJECT

TOOL = PROJECT / "roles" / "flower_backup" / "files" / "flower_backup.py"
KEY = b"k" * 64
SOURCE_NAME = "flower.db"


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


def flower_state(tasks: int) -> Any:
    """Flower's EventsState after a worker came online, ran `tasks` tasks (one failed, one retried) and went away."""
    from flower.events import EventsState

    state = EventsState(max_tasks_in_memory=1000)
    now = time.time()

    def event(kind: str, **fields: Any) -> None:
        state.event(
            {"type": kind, "hostname": "w1@host", "timestamp": now, "local_received": now, "clock": 1, **fields}
        )

    worker = {"freq": 2.0, "sw_ident": "py-celery", "sw_ver": "5.7.0", "sw_sys": "Linux", "pid": 12}
    event("worker-online", loadavg=[0.1, 0.2, 0.3], **worker)
    event("worker-heartbeat", active=1, processed=tasks, loadavg=[0.1, 0.2, 0.3], **worker)
    for n in range(tasks):
        uuid = f"task-{n}"
        event("task-received", uuid=uuid, name="demo.add", args="(1, 2)", kwargs="{}", root_id="task-0",
              parent_id="task-0" if n else None, retries=0, eta=None, expires=None)  # fmt: skip
        event("task-started", uuid=uuid, pid=12)
        if n == 1:
            event("task-failed", uuid=uuid, exception="ValueError('x')", traceback="Traceback ...")
        elif n == 2:
            event("task-retried", uuid=uuid, exception="Retry", traceback="Traceback ...")
        else:
            event("task-succeeded", uuid=uuid, result="3", runtime=0.01)
    event("worker-offline")
    return state


def save_as_flower(state: Any, base: Path) -> None:
    """What flower.events.Events.save_state writes."""
    with shelve.open(str(base), flag="n") as db:
        db["events"] = state
        db["counter"] = dict(state.counter)


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


def test_a_state_that_is_not_flowers_is_refused(tool: ModuleType, tmp_path: Path) -> None:
    base = tmp_path / SOURCE_NAME
    with shelve.open(str(base), flag="n") as db:
        db["events"] = {"tasks": []}
    with pytest.raises(tool.BackupError, match=r"its events entry is a builtins\.dict"):
        tool.count_tasks(base)


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file of a directory with its content (one dbm file or several, whatever the backend)."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def write_config(tmp_path: Path, source: Path) -> Path:
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    config = tmp_path / "config.json"
    settings = {"source": str(source), "backup_dir": str(backup_dir), "keep_count": 5, "keep_days": 0,
                "min_free_mb": 0, "retries": 1, "retry_delay": 0, "hook": ""}  # fmt: skip
    config.write_text(json.dumps(settings))
    return config


def run_tool(tmp_path: Path, config: Path, *args: str, key: bytes | None = KEY) -> subprocess.CompletedProcess[str]:
    """The tool as the unit runs it, with the key on its standard input (none: nothing there)."""
    argv = [sys.executable, str(TOOL), "--config", str(config), *args]
    stdin = (key or b"").decode()
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def plant_archive(tool: ModuleType, backup_dir: Path, db: Path, tasks: int, key: bytes) -> str:
    """An archive of `db` with a manifest whose sha256 matches, signed with `key` (an attacker's, or a leaked one)."""
    name = "flower-29990101T000000Z.tar.gz"
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
    (backup_dir / "flower-29990101T000000Z.json").write_text(json.dumps(tool.sign_manifest(manifest, key)))
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
        result = run_tool(tmp_path, config, *command)
        assert result.returncode == 1, result.stdout + result.stderr
        assert refusal in result.stderr and "FAILED" in result.stderr
    assert not marker.exists()
    assert files_of(source.parent) == before, "a refused restore changed the database's directory"


def test_backup_signs_and_verify_and_restore_accept_its_archive(tmp_path: Path) -> None:
    source = tmp_path / "live" / SOURCE_NAME
    source.parent.mkdir()
    save_as_flower(flower_state(tasks=6), source)
    config = write_config(tmp_path, source)
    backed = run_tool(tmp_path, config, "backup")
    assert backed.returncode == 0, backed.stderr
    verified = run_tool(tmp_path, config, "verify")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["tasks"] == 6
    restored = run_tool(tmp_path, config, "restore")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["kept_aside"]


def test_an_altered_manifest_or_a_missing_key_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "live" / SOURCE_NAME
    source.parent.mkdir()
    save_as_flower(flower_state(tasks=2), source)
    config = write_config(tmp_path, source)
    assert run_tool(tmp_path, config, "backup").returncode == 0
    no_key = run_tool(tmp_path, config, "verify", key=None)
    assert no_key.returncode == 1 and "no manifest key" in no_key.stderr
    manifest_file = next((tmp_path / "backups").glob("flower-*.json"))
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "tasks": 3}))
    altered = run_tool(tmp_path, config, "verify")
    assert altered.returncode == 1 and "not signed with this host's manifest key" in altered.stderr


def test_the_newest_archive_is_the_newest_this_host_signed(tool: ModuleType, tmp_path: Path) -> None:
    """A planted archive dated in the future does not become what `verify`/`restore` without a name pick."""
    source = tmp_path / "live" / SOURCE_NAME
    source.parent.mkdir()
    save_as_flower(flower_state(tasks=3), source)
    config = write_config(tmp_path, source)
    assert run_tool(tmp_path, config, "backup").returncode == 0
    poisoned, marker = tmp_path / "poisoned" / SOURCE_NAME, tmp_path / "marker"
    poisoned.parent.mkdir()
    save_as_flower(flower_state(tasks=3), poisoned)
    poison(poisoned, marker, "events")
    planted = plant_archive(tool, tmp_path / "backups", poisoned, tasks=3, key=b"a" * 64)
    verified = run_tool(tmp_path, config, "verify")
    assert verified.returncode == 0, verified.stderr
    assert Path(json.loads(verified.stdout)["archive"]).name != planted
    assert f"skipping {planted}" in verified.stderr
    assert not marker.exists()
