#!/usr/bin/python3
"""Back up, verify and restore Flower's state database (a Python shelve).

Run with the Python of Flower's own virtualenv: the copy is proved by opening it
with the same dbm backend Flower uses and unpickling Flower's state, which needs
Flower and Celery importable. Every pickle is loaded by StateUnpickler, which
admits only the classes Flower's saved state holds: an archive cannot run code.

  flower_backup.py --config FILE backup
  flower_backup.py --config FILE verify [--archive NAME]
  flower_backup.py --config FILE restore [--archive NAME] [--target PATH]

Archives are `flower-<UTC timestamp>.tar.gz` with a `.json` manifest beside
them (sha256, task count, files), signed with an HMAC-SHA256 under a key only
root can read, which reaches the tool on its standard input (the unit's
StandardInput=file:, or `flower-backup`'s pipe into its sandbox): verify and
restore refuse a manifest this host's key did not sign. Errors go to stderr
with the journal's `<3>` prefix and make the exit status non-zero; nothing is
deleted on a failure.

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


def copy_once(config: Config, staging: Path) -> tuple[list[Path], int]:
    """Copy the database's files and prove the copy opens; returns (copies, task count)."""
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
    return copies, count_tasks(staging / config.source.name)


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
                copies, tasks = copy_once(config, staging)
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
            }
            write_manifest(archive, sign_manifest(manifest, key))
            fsync_path(config.backup_dir)
            # verify_archive reopened the archive and found the copy's tasks: it is verified.
            run.update(archive=archive.name, sha256=manifest["sha256"], tasks=tasks, verified=True,
                       files=[str(config.source.parent / copy.name) for copy in copies])  # fmt: skip
        removed = prune(config, keep=archive)
        log(6, f"backup ok: {archive} holds {tasks} tasks; retention removed {len(removed)} old archive(s)")
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


def verify(config: Config, name: str, key: bytes) -> int:
    archive = find_archive(config, name, key)
    try:
        with tempfile.TemporaryDirectory(prefix=".verify-", dir=config.backup_dir) as tmp:
            manifest = checked(archive, Path(tmp) / "db", key)
    except BackupError as error:
        record_verify(config, archive, None, str(error))
        raise
    record_verify(config, archive, manifest["tasks"], "")
    print(json.dumps({"archive": manifest["path"], "tasks": manifest["tasks"], "sha256": manifest["sha256"]}))
    return 0


def restore(config: Config, name: str, target: Path, key: bytes) -> int:
    """Check the archive, then swap it in next to the current database, kept aside."""
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
    print(json.dumps({"archive": manifest["path"], "tasks": manifest["tasks"], "kept_aside": kept}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backup", help="copy, prove, archive, prune, run the hook")
    for command in ("verify", "restore"):
        sub = commands.add_parser(command)
        sub.add_argument("--archive", default="", help="archive file name; the newest when empty")
    commands.choices["restore"].add_argument("--target", type=Path, help="database to replace (default: source)")
    args = parser.parse_args()
    os.umask(0o077)
    try:
        config = Config.load(args.config)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log(3, f"flower-backup {args.command} FAILED: settings {args.config} unusable: {type(error).__name__}: {error}")
        return 1
    try:
        with locked(config.backup_dir):
            if args.command == "backup":
                return run_backup(config)
            key = manifest_key()
            if args.command == "verify":
                return verify(config, args.archive, key)
            return restore(config, args.archive, args.target or config.source, key)
    except (BackupError, Stopped) as error:
        log(3, f"flower-backup {args.command} FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
