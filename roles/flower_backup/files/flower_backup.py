#!/usr/bin/python3
"""Back up, verify and restore Flower's state database (a Python shelve).

Run with the Python of Flower's own virtualenv: the copy is proved by opening it
with the same dbm backend Flower uses and unpickling Flower's state, which needs
Flower and Celery importable.

  flower_backup.py --config FILE backup
  flower_backup.py --config FILE verify [--archive NAME]
  flower_backup.py --config FILE restore [--archive NAME] [--target PATH]

Archives are `flower-<UTC timestamp>.tar.gz` with a `.json` manifest beside
them (sha256, task count, files). Errors go to stderr with the journal's `<3>`
prefix and make the exit status non-zero; nothing is deleted on a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shelve
import shlex
import shutil
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
DBM_SUFFIXES = ("", ".db", ".dat", ".dir", ".bak", ".pag")


class BackupError(Exception):
    """A failure that must be loud: logged at error priority, non-zero exit."""


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
        )


def log(level: int, message: str) -> None:
    """One line for the journal; the <N> prefix sets its syslog priority."""
    print(f"<{level}>{message}", file=sys.stderr if level <= 4 else sys.stdout, flush=True)


def dbm_files(base: Path) -> list[Path]:
    """The files that make up the shelve opened as `base`, whatever the backend."""
    return [Path(f"{base}{suffix}") for suffix in DBM_SUFFIXES if Path(f"{base}{suffix}").is_file()]


def count_tasks(base: Path) -> int:
    """Open a shelve read-only and count the tasks in Flower's state."""
    try:
        with shelve.open(str(base), flag="r") as db:
            state = db["events"]
            return len(state.tasks)
    except Exception as error:  # any failure to open or unpickle means "not a good copy"
        raise BackupError(f"{base} does not open as Flower's state: {type(error).__name__}: {error}") from error


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


def write_manifest(archive: Path, manifest: dict[str, Any]) -> None:
    final = manifest_path(archive)
    partial = final.with_name(final.name + ".part")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    partial.chmod(0o600)
    fsync_path(partial)
    partial.replace(final)


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


def backup(config: Config) -> int:
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
            except BackupError as error:
                last_error = error
                log(4, f"attempt {attempt}/{config.retries} failed: {error}")
                if attempt < config.retries:
                    time.sleep(config.retry_delay)
                continue
            archive = config.backup_dir / name
            partial.chmod(0o600)
            partial.replace(archive)
            write_manifest(
                archive,
                {
                    "archive": archive.name,
                    "sha256": sha256(archive),
                    "tasks": tasks,
                    "source": str(config.source),
                    "files": [copy.name for copy in copies],
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
            fsync_path(config.backup_dir)
        removed = prune(config, keep=archive)
        log(6, f"backup ok: {archive} holds {tasks} tasks; retention removed {len(removed)} old archive(s)")
        run_hook(config, archive)
        return 0
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


def find_archive(config: Config, name: str) -> Path:
    archives = [path for _, path in archive_paths(config)]
    if not name:
        if not archives:
            raise BackupError(f"no archive with a manifest in {config.backup_dir}")
        return archives[-1]
    archive = config.backup_dir / Path(name).name
    if not archive.is_file() or not manifest_path(archive).is_file():
        known = ", ".join(path.name for path in archives[-5:]) or "none"
        raise BackupError(f"no archive {name} with a manifest in {config.backup_dir} (newest: {known})")
    return archive


def checked(config: Config, archive: Path, workdir: Path) -> dict[str, Any]:
    """Checksum, then open: returns the manifest when the archive is sound."""
    manifest = json.loads(manifest_path(archive).read_text())
    actual = sha256(archive)
    if actual != manifest["sha256"]:
        raise BackupError(f"{archive.name}: sha256 {actual} does not match the manifest's {manifest['sha256']}")
    source_name = Path(manifest["source"]).name
    tasks = verify_archive(archive, workdir, source_name)
    if tasks != manifest["tasks"]:
        raise BackupError(f"{archive.name} holds {tasks} tasks, its manifest says {manifest['tasks']}")
    return {**manifest, "path": str(archive), "source_name": source_name}


def verify(config: Config, name: str) -> int:
    archive = find_archive(config, name)
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=config.backup_dir) as tmp:
        manifest = checked(config, archive, Path(tmp) / "db")
    print(json.dumps({"archive": manifest["path"], "tasks": manifest["tasks"], "sha256": manifest["sha256"]}))
    return 0


def restore(config: Config, name: str, target: Path) -> int:
    """Check the archive, then swap it in next to the current database, kept aside."""
    archive = find_archive(config, name)
    stamp = datetime.now(UTC).strftime(STAMP)
    # Staged in the target's directory, so the final renames stay on one filesystem.
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=target.parent) as tmp:
        staged = Path(tmp) / "db"
        manifest = checked(config, archive, staged)
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
    config = Config.load(args.config)
    try:
        with locked(config.backup_dir):
            if args.command == "backup":
                return backup(config)
            if args.command == "verify":
                return verify(config, args.archive)
            return restore(config, args.archive, args.target or config.source)
    except BackupError as error:
        log(3, f"flower-backup {args.command} FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
