#!/usr/bin/python3
"""Back up, verify and restore Flower's state database (a Python shelve).

Run with the Python of Flower's own virtualenv: the copy is proved by opening it
with the same dbm backend Flower uses and unpickling Flower's state, which needs
Flower and Celery importable. Every pickle is loaded by StateUnpickler, which
admits only the classes Flower's saved state holds: an archive cannot run code.

  flower_backup.py --config FILE backup
  flower_backup.py --config FILE list
  flower_backup.py --config FILE verify [--archive NAME] [--live]
  flower_backup.py --config FILE restore [--archive NAME] [--target PATH] [--keep-before N]

Archives are `flower-<UTC timestamp>.tar.gz` with a `.json` manifest beside
them (sha256, task count, files), signed with an HMAC-SHA256 under a key only
root can read, which reaches the tool on its standard input (the unit's
StandardInput=file:, or `flower-backup`'s pipe into its sandbox): verify and
restore refuse a manifest this host's key did not sign. Errors go to stderr
with the journal's `<3>` prefix and make the exit status non-zero; nothing is
deleted on a failure.

A backup copies Flower's last save, not what Flower holds in memory: Flower
saves every `state_save_interval` (the settings' `flower_save_interval`,
seconds) and on stop. Each backup says how old the save it copied is, and the
manifest records when it was made (`saved`).

Every backup run, good or failed, ends by replacing the status file (the
settings' `status_file`, beside the archives: the one directory the unit may
write) atomically with what it did: see STATUS_SCHEMA. It is how the backup
reports itself, so that nothing else (the production checklist's item 11) needs
to know this tool's command line, settings or archive names. A verify run of
the archive the status names adds its result as `last_verify`.
"""

from __future__ import annotations

import argparse
import contextlib
import dbm
import fcntl
import hashlib
import hmac
import io
import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

STAMP = "%Y%m%dT%H%M%SZ"
PREFIX = "flower-"
SUFFIX = ".tar.gz"
# File names the dbm backends give a shelve opened as PATH (gdbm: PATH itself;
# Berkeley DB: PATH.db; dumb: .dat/.dir/.bak; ndbm: .pag/.dir). Flower's own
# temporary file (PATH.tmp) and set-aside files (PATH.corrupt) are not part of it.
# The one list of them in the project: only this tool copies the files (the
# checklist asks Flower's own dbm module whether the database opens), and each
# run's status file names the files it copied.
DBM_SUFFIXES = ("", ".db", ".dat", ".dir", ".bak", ".pag")
MIN_KEY_BYTES = 32
# The status file a backup run leaves (STATUS_SCHEMA, the version of its layout):
#   schema      1
#   ok          the run finished without error (archive written, verified, retention and hook done)
#   started, finished   UTC, ISO 8601 with +00:00
#   archive     file name of the archive this run wrote, or null (it may be set with ok false: the hook failed)
#   sha256      the archive's sha256, or null
#   tasks       tasks in the archive, or null
#   verified    the archive was reopened after it was written (extracted, every entry loaded by StateUnpickler)
#               and held the copy's task count
#   source      the database's path; files - the database files copied (full paths, what DBM_SUFFIXES found)
#   error       why the run failed; "" when ok
#   last_good   {archive, finished, tasks} of the newest good run (this one when ok), carried through failures;
#               null before any
#   last_verify {archive, finished, ok, tasks, error} of the newest `verify` run of this status's archive, when
#               there was one (a verify of another archive leaves the status alone)
STATUS_SCHEMA = 1
# Every global a pickle of Flower 2.2's saved state names (EventsState.__reduce__
# and those of its workers and tasks, listed with pickletools from a real
# state), plus the value types kombu's JSON decoder can put in an event's fields
# and so in a task's. Nothing else is loaded: no callable that runs code.
ALLOWED_GLOBALS = frozenset(
    {
        ("flower.events", "EventsState"),
        ("celery.events.state", "Task"),
        ("celery.events.state", "Worker"),
        ("celery.events.state", "_depickle_task"),
        ("kombu.utils.functional", "LRUCache"),
        ("collections", "OrderedDict"),
        ("collections", "Counter"),
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
        ("uuid", "UUID"),
    }
)


class BackupError(Exception):
    """A failure that must be loud: logged at error priority, non-zero exit."""


class Stopped(Exception):
    """SIGTERM (the unit's TimeoutStartSec, or systemctl stop): not retried, recorded in the status file."""


class StateUnpickler(pickle.Unpickler):
    """Unpickles Flower's state and nothing else: any other global is refused before it is imported."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: not a class of Flower's state")
        return super().find_class(module, name)


@dataclass(frozen=True)
class Config:
    source: Path
    backup_dir: Path
    keep_count: int
    keep_days: int
    min_free_mb: int
    retries: int
    retry_delay: float
    hook: str
    status_file: Path
    # Flower's state_save_interval in seconds (0: not known); only reported, so older settings lack it.
    flower_save_interval: float = 0

    @classmethod
    def load(cls, path: Path) -> Config:
        data = json.loads(path.read_text())
        return cls(
            source=Path(data["source"]),
            backup_dir=Path(data["backup_dir"]),
            keep_count=int(data["keep_count"]),
            keep_days=int(data["keep_days"]),
            min_free_mb=int(data["min_free_mb"]),
            retries=max(1, int(data["retries"])),
            retry_delay=float(data["retry_delay"]),
            hook=str(data.get("hook", "")),
            status_file=Path(data["status_file"]),
            flower_save_interval=float(data.get("flower_save_interval", 0)),
        )


def log(level: int, message: str) -> None:
    """One line for the journal; the <N> prefix sets its syslog priority."""
    print(f"<{level}>{message}", file=sys.stderr if level <= 4 else sys.stdout, flush=True)


def dbm_files(base: Path) -> list[Path]:
    """The files that make up the shelve opened as `base`, whatever the backend."""
    return [Path(f"{base}{suffix}") for suffix in DBM_SUFFIXES if Path(f"{base}{suffix}").is_file()]


def load_shelve(base: Path) -> dict[str, Any]:
    """Every entry of the shelve opened as `base`, each loaded by StateUnpickler.

    Flower unpickles `events` and `counter` when it starts: all entries are checked,
    and shelve.open is not used because it would unpickle with the unrestricted pickle.
    """
    with dbm.open(str(base), "r") as db:
        # keys(): gdbm objects are not iterable.
        return {key.decode(): StateUnpickler(io.BytesIO(db[key])).load() for key in db.keys()}  # noqa: SIM118


def count_tasks(base: Path) -> int:
    """Open a shelve read-only and count the tasks in Flower's state."""
    try:
        entries = load_shelve(base)
        # A Flower that has not saved yet (a fresh host: it saves every flower_state_save_interval and on
        # stop) has created its database empty: a real, empty state, which Flower itself loads as such.
        if not entries:
            return 0
        state = entries["events"]
    except Exception as error:  # any failure to open or unpickle means "not a good copy"
        raise BackupError(f"{base} does not open as Flower's state: {type(error).__name__}: {error}") from error
    kind = f"{type(state).__module__}.{type(state).__qualname__}"
    if kind != "flower.events.EventsState":
        raise BackupError(f"{base} does not hold Flower's state: its events entry is a {kind}")
    return len(state.tasks)


def manifest_key() -> bytes:
    """The manifest key, on standard input: the unit has systemd open the root-only key file for it
    (StandardInput=file:), and `flower-backup` pipes it into the sandbox. The tool never opens the file."""
    stdin = sys.stdin.buffer if sys.stdin is not None and not sys.stdin.isatty() else None
    key = stdin.read(4096).strip() if stdin is not None else b""
    if not key:
        raise BackupError(
            "no manifest key: run `flower-backup` as root (it runs this tool in the backup unit's sandbox, "
            "with the key on its standard input) or start flower-backup.service"
        )
    if len(key) < MIN_KEY_BYTES:
        raise BackupError(f"the manifest key is shorter than {MIN_KEY_BYTES} bytes")
    return key


def manifest_mac(manifest: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 over the manifest's content (all but its own `hmac`), in a canonical JSON form."""
    body = json.dumps({k: v for k, v in manifest.items() if k != "hmac"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def sign_manifest(manifest: dict[str, Any], key: bytes) -> dict[str, Any]:
    return {**manifest, "hmac": manifest_mac(manifest, key)}


def authenticated_manifest(archive: Path, key: bytes) -> dict[str, Any]:
    """The archive's manifest, once its HMAC proves this host's key signed it for this archive."""
    path = manifest_path(archive)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BackupError(f"{path.name} is not a readable manifest: {error}") from error
    if not isinstance(manifest, dict):
        raise BackupError(f"{path.name} is not a manifest")
    given = str(manifest.get("hmac", "")).encode("utf-8", "replace")
    if not hmac.compare_digest(given, manifest_mac(manifest, key).encode()):
        raise BackupError(
            f"{archive.name}: its manifest is not signed with this host's manifest key (forged, altered, "
            "or made before manifests were signed); the archive is not opened"
        )
    if manifest.get("archive") != archive.name:
        raise BackupError(f"{archive.name}: its manifest was signed for {manifest.get('archive')!r}, not this archive")
    return manifest


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identity(files: list[Path]) -> list[tuple[int, int, int]]:
    """Inode, size and mtime of each file: Flower replaces the files on every save."""
    return [(s.st_ino, s.st_size, s.st_mtime_ns) for s in (f.stat() for f in files)]


@contextlib.contextmanager
def locked(backup_dir: Path) -> Iterator[None]:
    """One backup, verify or restore at a time (the timer and a manual run may meet)."""
    with (backup_dir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def check_free_space(config: Config) -> None:
    usage = shutil.disk_usage(config.backup_dir)
    source_size = sum(f.stat().st_size for f in dbm_files(config.source))
    free_mb = usage.free // (1024 * 1024)
    # The copy and the archive may both need the database's size before the copy is removed.
    needed_mb = config.min_free_mb + (2 * source_size) // (1024 * 1024)
    if free_mb < needed_mb:
        raise BackupError(
            f"refusing to back up: {free_mb} MiB free on the volume of {config.backup_dir}, "
            f"need {needed_mb} MiB (min_free_mb={config.min_free_mb} plus twice the database's size); "
            "nothing was written or deleted"
        )


def copy_once(config: Config, staging: Path) -> tuple[list[Path], int, datetime]:
    """Copy the database's files and prove the copy opens; returns (copies, task count, when Flower saved them)."""
    files = dbm_files(config.source)
    if not files:
        raise BackupError(f"no database at {config.source} (no file of any dbm backend)")
    before = identity(files)
    copies = []
    for file in files:
        copy = staging / file.name
        shutil.copyfile(file, copy)
        copies.append(copy)
    if identity(files) != before:
        raise BackupError(f"{config.source} was replaced while it was copied (Flower saved meanwhile)")
    saved = datetime.fromtimestamp(max(mtime_ns for _, _, mtime_ns in before) / 1e9, UTC)
    return copies, count_tasks(staging / config.source.name), saved


def save_age(config: Config, saved: datetime) -> str:
    """How old the copied save is, and why: a backup holds no task newer than Flower's last save."""
    age = max(0, round((datetime.now(UTC) - saved).total_seconds()))
    every = f"every {config.flower_save_interval:g} s and " if config.flower_save_interval > 0 else ""
    return (
        f"copied Flower's last save, {age} s old (saved {saved.isoformat(timespec='seconds')}); "
        f"Flower saves {every}when it stops: tasks since that save are not in this backup"
    )


def build_archive(copies: list[Path], archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for copy in copies:
            tar.add(copy, arcname=copy.name, recursive=False)
    fsync_path(archive)


def archive_paths(config: Config) -> list[tuple[datetime, Path]]:
    """Archives that have a manifest, oldest first, with the time in their name."""
    found = []
    for path in config.backup_dir.glob(f"{PREFIX}*{SUFFIX}"):
        stamp = path.name[len(PREFIX) : -len(SUFFIX)]
        try:
            when = datetime.strptime(stamp, STAMP).replace(tzinfo=UTC)
        except ValueError:
            continue
        if manifest_path(path).is_file():
            found.append((when, path))
    return sorted(found)


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name[: -len(SUFFIX)] + ".json")


def write_json(final: Path, data: dict[str, Any]) -> None:
    """Atomically: a private temporary file beside it, fsynced, renamed over it, the directory fsynced."""
    partial = final.with_name(final.name + ".part")
    partial.unlink(missing_ok=True)
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.chmod(0o600)
    fsync_path(partial)
    partial.replace(final)
    fsync_path(final.parent)


def write_manifest(archive: Path, manifest: dict[str, Any]) -> None:
    write_json(manifest_path(archive), manifest)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_status(config: Config) -> dict[str, Any]:
    """The status file's content; {} when there is none or it is not a status (it is then written anew)."""
    try:
        status = json.loads(config.status_file.read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) and status.get("schema") == STATUS_SCHEMA else {}


def record_backup(config: Config, started: str, run: dict[str, Any], error: str) -> None:
    """Replace the status file with this backup run's outcome (`run`: what backup() got done)."""
    previous = read_status(config)
    status: dict[str, Any] = {
        "schema": STATUS_SCHEMA,
        "ok": not error,
        "started": started,
        "finished": now_iso(),
        "archive": run.get("archive"),
        "sha256": run.get("sha256"),
        "tasks": run.get("tasks"),
        "verified": bool(run.get("verified")),
        "source": str(config.source),
        "files": run.get("files", []),
        "error": error,
    }
    if error:
        status["last_good"] = previous.get("last_good")
    else:
        status["last_good"] = {k: status[k] for k in ("archive", "finished", "tasks")}
    try:
        write_json(config.status_file, status)
    except OSError as failure:
        raise BackupError(f"could not write the status file {config.status_file}: {failure}") from failure


def record_verify(config: Config, archive: Path, tasks: int | None, error: str) -> None:
    """Add a verify run's outcome to the status file, when it checked the archive the status names."""
    status = read_status(config)
    if not status or status.get("archive") != archive.name:
        return
    status["last_verify"] = {"archive": archive.name, "finished": now_iso(), "ok": not error, "tasks": tasks,
                             "error": error}  # fmt: skip
    try:
        write_json(config.status_file, status)
    except OSError as failure:
        log(4, f"could not record the verify run in {config.status_file}: {failure}")


def prune(config: Config, keep: Path) -> list[Path]:
    """Drop archives beyond keep_count (newest kept) or older than keep_days; never `keep`."""
    archives = archive_paths(config)
    cutoff = datetime.now(UTC) - timedelta(days=config.keep_days) if config.keep_days > 0 else None
    newest = {path for _, path in archives[-config.keep_count :]}
    removed = []
    for when, path in archives:
        if path == keep or (path in newest and (cutoff is None or when >= cutoff)):
            continue
        manifest_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def run_hook(config: Config, archive: Path) -> None:
    if not config.hook:
        return
    argv = [*shlex.split(config.hook), str(archive)]
    env = {**os.environ, "FLOWER_BACKUP_ARCHIVE": str(archive), "FLOWER_BACKUP_MANIFEST": str(manifest_path(archive))}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    for line in (result.stdout + result.stderr).splitlines():
        log(6, f"hook: {line}")
    if result.returncode != 0:
        raise BackupError(f"the off-host hook {argv[0]} exited {result.returncode} for {archive} (the archive is kept)")


def remove_stale_staging(config: Config) -> None:
    """Working directories a killed run (timeout, OOM) left behind; safe under the lock."""
    for pattern in (".staging-*", ".verify-*"):
        for stale in config.backup_dir.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def backup(config: Config, key: bytes, run: dict[str, Any]) -> None:
    """Copy, prove, archive, prune, run the hook; fills `run` (the status file's fields) as it gets them done."""
    check_free_space(config)
    remove_stale_staging(config)
    last_error: BackupError | None = None
    for attempt in range(1, config.retries + 1):
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=config.backup_dir) as tmp:
            staging = Path(tmp)
            try:
                copies, tasks, saved = copy_once(config, staging)
                name = f"{PREFIX}{datetime.now(UTC).strftime(STAMP)}{SUFFIX}"
                partial = staging / name
                build_archive(copies, partial)
                archive_tasks = verify_archive(partial, staging / "check", config.source.name)
                if archive_tasks != tasks:
                    raise BackupError(f"the archive holds {archive_tasks} tasks, the copy {tasks}")
            except BackupError as error:  # Stopped is not one: a stopped run is not retried
                last_error = error
                log(4, f"attempt {attempt}/{config.retries} failed: {error}")
                if attempt < config.retries:
                    time.sleep(config.retry_delay)
                continue
            archive = config.backup_dir / name
            partial.chmod(0o600)
            partial.replace(archive)
            manifest = {
                "archive": archive.name,
                "sha256": sha256(archive),
                "tasks": tasks,
                "source": str(config.source),
                "files": [copy.name for copy in copies],
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "saved": saved.isoformat(timespec="seconds"),
            }
            write_manifest(archive, sign_manifest(manifest, key))
            fsync_path(config.backup_dir)
            # verify_archive reopened the archive and found the copy's tasks: it is verified.
            run.update(archive=archive.name, sha256=manifest["sha256"], tasks=tasks, verified=True,
                       files=[str(config.source.parent / copy.name) for copy in copies])  # fmt: skip
        removed = prune(config, keep=archive)
        log(6, f"backup ok: {archive} holds {tasks} tasks; retention removed {len(removed)} old archive(s)")
        log(6, save_age(config, saved))
        run_hook(config, archive)
        return
    raise BackupError(f"no good copy of {config.source} after {config.retries} attempts: {last_error}")


def safe_members(tar: tarfile.TarFile, source_name: str) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for member in members:
        if not member.isfile() or "/" in member.name or not member.name.startswith(source_name):
            raise BackupError(f"unexpected member {member.name!r} in the archive")
    return members


def verify_archive(archive: Path, workdir: Path, source_name: str) -> int:
    """Extract into workdir (created, left for the caller to clean) and count the tasks."""
    workdir.mkdir(mode=0o700)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = safe_members(tar, source_name)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(workdir, members=members, filter="data")
            else:  # Pythons without extraction filters: safe_members already refused links and paths
                tar.extractall(workdir, members=members)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BackupError(f"{archive.name} is not a readable archive: {error}") from error
    return count_tasks(workdir / source_name)


def find_archive(config: Config, name: str, key: bytes) -> Path:
    """The named archive, or the newest whose manifest this host signed (a planted one is skipped, loudly)."""
    archives = [path for _, path in archive_paths(config)]
    if not name:
        for archive in reversed(archives):
            try:
                authenticated_manifest(archive, key)
            except BackupError as error:
                log(4, f"skipping {archive.name}: {error}")
                continue
            return archive
        raise BackupError(f"no archive with a signed manifest in {config.backup_dir}")
    archive = config.backup_dir / Path(name).name
    if not archive.is_file() or not manifest_path(archive).is_file():
        known = ", ".join(path.name for path in archives[-5:]) or "none"
        raise BackupError(f"no archive {name} with a manifest in {config.backup_dir} (newest: {known})")
    return archive


def checked(archive: Path, workdir: Path, key: bytes) -> dict[str, Any]:
    """Signature, checksum, then open: returns the manifest when the archive is sound."""
    manifest = authenticated_manifest(archive, key)
    actual = sha256(archive)
    if actual != manifest["sha256"]:
        raise BackupError(f"{archive.name}: sha256 {actual} does not match the manifest's {manifest['sha256']}")
    source_name = Path(manifest["source"]).name
    tasks = verify_archive(archive, workdir, source_name)
    if tasks != manifest["tasks"]:
        raise BackupError(f"{archive.name} holds {tasks} tasks, its manifest says {manifest['tasks']}")
    return {**manifest, "path": str(archive), "source_name": source_name}


def run_backup(config: Config) -> int:
    """A backup run, its outcome recorded in the status file whatever it is (a failure replaces an old success)."""
    started = now_iso()
    run: dict[str, Any] = {}

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(f"stopped by {signal.Signals(signum).name} (the unit's TimeoutStartSec, or systemctl stop)")

    signal.signal(signal.SIGTERM, stop)
    try:
        backup(config, manifest_key(), run)
    except Exception as error:
        reason = str(error) if isinstance(error, BackupError | Stopped) else f"{type(error).__name__}: {error}"
        try:
            record_backup(config, started, run, error=reason)
        except BackupError as failure:
            log(3, str(failure))
        raise
    record_backup(config, started, run, error="")
    return 0


def live_count(config: Config, workdir: Path) -> dict[str, Any]:
    """The tasks in Flower's database as it is on disk now (its last save), for the restore to compare.

    Counted on a copy in `workdir` (created; never Flower's own file, which Flower may be replacing). Never fatal:
    a database that is missing or does not open (why one restores) gives tasks null and the reason."""
    files = dbm_files(config.source)
    if not files:
        return {"tasks": None, "saved": None, "error": f"no database at {config.source}"}
    workdir.mkdir(mode=0o700)
    try:
        saved = datetime.fromtimestamp(max(f.stat().st_mtime for f in files), UTC).isoformat(timespec="seconds")
        for file in files:
            shutil.copyfile(file, workdir / file.name)
        return {"tasks": count_tasks(workdir / config.source.name), "saved": saved, "error": ""}
    except (BackupError, OSError) as error:
        return {"tasks": None, "saved": None, "error": str(error)}


def verify(config: Config, name: str, key: bytes, live: bool = False) -> int:
    archive = find_archive(config, name, key)
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=config.backup_dir) as tmp:
        try:
            manifest = checked(archive, Path(tmp) / "db", key)
        except BackupError as error:
            record_verify(config, archive, None, str(error))
            raise
        record_verify(config, archive, manifest["tasks"], "")
        result = {"archive": manifest["path"], "tasks": manifest["tasks"], "sha256": manifest["sha256"]}
        if live:
            result["live"] = live_count(config, Path(tmp) / "live")
    print(json.dumps(result))
    return 0


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{scaled:.1f} {unit}"


def archive_row(when: datetime, archive: Path, key: bytes, failed_verify: str) -> list[str] | None:
    """One line of `list`: time, tasks, size, verified, name; None for an archive pruned meanwhile."""
    try:
        size = human_size(archive.stat().st_size)
        manifest = authenticated_manifest(archive, key)
        tasks = str(manifest["tasks"])
        verified = "yes" if sha256(archive) == manifest["sha256"] else "NO: sha256 differs from its manifest"
    except FileNotFoundError:
        return None
    except (BackupError, OSError, KeyError):
        tasks, verified = "?", "NO: manifest not signed by this host's key"
    if archive.name == failed_verify and verified == "yes":
        verified = "NO: its last verify failed"
    return [when.strftime("%Y-%m-%d %H:%M:%S"), tasks, size, verified, archive.name]


def list_archives(config: Config, key: bytes) -> int:
    """The archives, newest first, as an aligned table. Reads manifests and checksums; opens no archive."""
    last_verify = read_status(config).get("last_verify") or {}
    failed_verify = str(last_verify.get("archive")) if last_verify.get("ok") is False else ""
    rows = [["TIME (UTC)", "TASKS", "SIZE", "VERIFIED", "ARCHIVE"]]
    for when, archive in reversed(archive_paths(config)):
        row = archive_row(when, archive, key, failed_verify)
        if row is not None:
            rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    right = {1, 2}  # numbers align on the right
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
    # Each archive was opened and its tasks counted before its manifest was written.
    print(
        f"{len(rows) - 1} archive(s) in {config.backup_dir}; verified: manifest signed by this host's key, "
        "sha256 unchanged since (`flower-backup verify --archive NAME` opens one again)"
    )
    return 0


def prune_kept_aside(target: Path, keep: int) -> list[str]:
    """Remove the databases earlier restores kept aside (`<db>.before-restore-<time>`), all but the newest `keep`."""
    by_stamp: dict[datetime, list[Path]] = {}
    for path in target.parent.glob(f"{target.name}*.before-restore-*"):
        try:
            when = datetime.strptime(path.name.rsplit(".before-restore-", 1)[1], STAMP)
        except ValueError:
            continue
        by_stamp.setdefault(when, []).append(path)
    removed = []
    for when in sorted(by_stamp)[:-keep] if keep > 0 else []:
        for path in by_stamp[when]:
            path.unlink(missing_ok=True)
            removed.append(str(path))
    return removed


def restore(config: Config, name: str, target: Path, key: bytes, keep_before: int = 0) -> int:
    """Check the archive, then swap it in next to the current database, kept aside (the newest keep_before kept)."""
    archive = find_archive(config, name, key)
    stamp = datetime.now(UTC).strftime(STAMP)
    # Staged in the target's directory, so the final renames stay on one filesystem.
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=target.parent) as tmp:
        staged = Path(tmp) / "db"
        manifest = checked(archive, staged, key)
        kept = []
        for current in dbm_files(target):
            aside = current.with_name(f"{current.name}.before-restore-{stamp}")
            current.replace(aside)
            kept.append(str(aside))
        for file in sorted(staged.iterdir()):
            final = Path(f"{target}{file.name[len(manifest['source_name']) :]}")
            file.chmod(0o600)
            fsync_path(file)
            file.replace(final)
        fsync_path(target.parent)
    removed = prune_kept_aside(target, keep_before)
    result = {"archive": manifest["path"], "tasks": manifest["tasks"], "kept_aside": kept, "removed_aside": removed}
    print(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backup", help="copy, prove, archive, prune, run the hook")
    commands.add_parser("list", help="the archives, newest first: time, tasks, size, verified")
    for command in ("verify", "restore"):
        sub = commands.add_parser(command)
        sub.add_argument("--archive", default="", help="archive file name; the newest when empty")
    commands.choices["verify"].add_argument(
        "--live", action="store_true", help="also count the tasks in the database as it is now (its last save)"
    )
    commands.choices["restore"].add_argument("--target", type=Path, help="database to replace (default: source)")
    commands.choices["restore"].add_argument(
        "--keep-before", type=int, default=0, help="databases kept aside by restores to keep, newest first (0: all)"
    )
    args = parser.parse_args()
    os.umask(0o077)
    try:
        config = Config.load(args.config)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log(3, f"flower-backup {args.command} FAILED: settings {args.config} unusable: {type(error).__name__}: {error}")
        return 1
    try:
        if args.command == "list":  # reads only manifests written atomically: it does not wait for a backup
            return list_archives(config, manifest_key())
        with locked(config.backup_dir):
            if args.command == "backup":
                return run_backup(config)
            key = manifest_key()
            if args.command == "verify":
                return verify(config, args.archive, key, live=args.live)
            return restore(config, args.archive, args.target or config.source, key, args.keep_before)
    except (BackupError, Stopped) as error:
        log(3, f"flower-backup {args.command} FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
