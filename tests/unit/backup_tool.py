"""The backup tool (roles/flower_backup/files/flower_backup.py) run as its unit runs it, on a real Flower state.

Shared by test_flower_backup.py and test_flower_checklist.py: the checklist's item 11 reads the status file this
tool writes, so its tests read one the real tool wrote."""

from __future__ import annotations

import json
import shelve
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flower_stack import PROJECT

TOOL = PROJECT / "roles" / "flower_backup" / "files" / "flower_backup.py"
KEY = b"k" * 64
SOURCE_NAME = "flower.db"


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


def write_config(tmp_path: Path, source: Path, **overrides: Any) -> Path:
    """The settings file the role renders (templates/config.json.j2), with the status file beside the archives."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700, exist_ok=True)
    config = tmp_path / "config.json"
    settings = {"source": str(source), "backup_dir": str(backup_dir), "keep_count": 5, "keep_days": 0,
                "min_free_mb": 0, "retries": 1, "retry_delay": 0, "hook": "",
                "status_file": str(backup_dir / "status.json"), **overrides}  # fmt: skip
    config.write_text(json.dumps(settings))
    return config


def run_tool(config: Path, *args: str, key: bytes | None = KEY) -> subprocess.CompletedProcess[str]:
    """The tool as the unit runs it, with the key on its standard input (none: nothing there)."""
    argv = [sys.executable, str(TOOL), "--config", str(config), *args]
    stdin = (key or b"").decode()
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def status_of(config: Path) -> dict[str, Any]:
    """The status file the settings name, as the tool left it."""
    return json.loads(Path(json.loads(config.read_text())["status_file"]).read_text())


def live_source(tmp_path: Path, tasks: int) -> Path:
    """Flower's database with `tasks` tasks, saved as Flower saves it."""
    source = tmp_path / "live" / SOURCE_NAME
    source.parent.mkdir(exist_ok=True)
    save_as_flower(flower_state(tasks=tasks), source)
    return source
