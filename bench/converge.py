#!/usr/bin/env python3
"""How long site.yml takes on a fresh host, and what a run that changes nothing costs.

Starts a fresh systemd container from the project's image (as `make demo` does, under a name of its own),
gives it OpenSSH's server as a real host has, and runs, each timed:

  1. playbooks/fixtures.yml (the demo's broker and worker; not counted),
  2. site.yml on the fresh host over SSH (pipelining and ControlPersist on: ansible.cfg): cold_s,
  3. site.yml again, nothing to change, over SSH, with ansible.posix.profile_tasks: rerun_s, tasks, slowest,
  4. the same re-run over the docker connection the tests use: rerun_docker_s.

Prints the figures and writes bench/results/converge.json. The container is removed at the end.

    .venv/bin/python bench/converge.py [--keep]

Needs the engine and image (scripts/prepare-engine.sh) and ssh on this machine. Bounded: each run stops after
--timeout seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NAME = "flowerops-bench-converge"
IMAGE = os.environ.get("FLOWEROPS_IMAGE", "flowerops/debian12-systemd:latest")
RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)", re.M)
PROFILE = re.compile(r"^(.+?) -{2,} (\d+\.\d+)s$", re.M)


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=300)


def start_container() -> str:
    """A fresh container booting systemd, with sshd; returns its address."""
    docker("rm", "-f", NAME, check=False)
    platform = yaml.safe_load((ROOT / "molecule" / "default" / "molecule.yml").read_text())["platforms"][0]
    docker(
        "run", "-d", "--name", NAME, "--hostname", NAME, "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--stop-signal", "SIGRTMIN+3", "--env", "container=docker",
        *[f"--cap-add={cap}" for cap in platform["capabilities"]],
        IMAGE, "/sbin/init",
    )  # fmt: skip
    for _ in range(60):
        state = docker("exec", NAME, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    else:
        sys.exit(f"systemd in {NAME} did not finish booting")
    install = docker("exec", NAME, "sh", "-c", "apt-get install -y -qq openssh-server >/dev/null", check=False)
    if install.returncode != 0:
        sys.exit(f"could not install openssh-server in {NAME}: {install.stderr[-2000:]}")
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    return docker("inspect", "-f", template, NAME).stdout.split()[0]


def inventory(work: Path, address: str, key: Path) -> tuple[Path, Path]:
    """The demo's inventory for this container: over SSH, and over docker."""
    groups = ("flower", "flower_monitoring", "demo_broker", "demo_worker")
    paths = []
    for connection, host_vars in (
        ("ssh", {"ansible_host": address, "ansible_user": "root", "ansible_ssh_private_key_file": str(key)}),
        ("docker", {"ansible_connection": "community.docker.docker"}),
    ):
        directory = work / f"inventory-{connection}"
        directory.mkdir()
        shutil.copytree(ROOT / "inventories" / "demo" / "group_vars", directory / "group_vars")
        hosts = {"all": {"hosts": {NAME: host_vars}, "children": {g: {"hosts": {NAME: None}} for g in groups}}}
        if connection == "ssh":
            hosts["all"]["vars"] = {
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
            }
        (directory / "hosts.yml").write_text(yaml.safe_dump(hosts))
        paths.append(directory)
    return paths[0], paths[1]


def run(playbook: str, inventory_dir: Path, work: Path, timeout: int) -> tuple[float, str]:
    env = {
        **os.environ,
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "10",
        "PROFILE_TASKS_SORT_ORDER": "descending",
    }
    for name, sub in (("ROLES_PATH", "roles"), ("LIBRARY", "library"), ("MODULE_UTILS", "module_utils")):
        env.setdefault(f"ANSIBLE_{name}", str(ROOT / sub))
    command = ["ansible-playbook", "-i", str(inventory_dir), playbook, "-e", f"demo_secrets_dir={work / 'secrets'}"]
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"{playbook} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return elapsed, done.stdout


def recap(output: str) -> dict[str, int]:
    found = RECAP.findall(output)
    if not found:
        sys.exit(f"no recap in:\n{output[-2000:]}")
    ok, changed, _, _, skipped = (int(x) for x in found[-1])
    return {"ok": ok, "changed": changed, "skipped": skipped}


def versions() -> dict[str, str]:
    ansible = subprocess.run(["ansible", "--version"], capture_output=True, text=True, check=True).stdout
    nginx = docker("exec", NAME, "nginx", "-v", check=False).stderr
    flower = yaml.safe_load((ROOT / "roles" / "flower" / "defaults" / "main.yml").read_text())["flower_version"]
    return {
        "ansible_core": re.search(r"core ([\d.]+)", ansible)[1],
        "flower": flower,
        "nginx": re.search(r"nginx/([\d.]+)", nginx)[1] if "nginx/" in nginx else "",
        "debian": docker("exec", NAME, "cat", "/etc/debian_version").stdout.strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=int, default=1800, help="seconds each run may take at most")
    parser.add_argument("--keep", action="store_true", help="leave the container running")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flowerops-bench-converge."))
    try:
        address = start_container()
        key = work / "ssh_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public = (work / "ssh_key.pub").read_text().strip()
        authorize = f"install -d -m 0700 /root/.ssh && echo '{public}' > /root/.ssh/authorized_keys"
        docker("exec", NAME, "sh", "-c", authorize)
        over_ssh, over_docker = inventory(work, address, key)
        run("playbooks/fixtures.yml", over_ssh, work, args.timeout)
        cold_s, _ = run("site.yml", over_ssh, work, args.timeout)
        print(f"cold site.yml over SSH: {cold_s:.1f} s", flush=True)
        rerun_s, output = run("site.yml", over_ssh, work, args.timeout)
        counts = recap(output)
        if counts["changed"]:
            sys.exit(f"the re-run changed {counts['changed']} tasks: not idempotent\n{output[-3000:]}")
        tasks = counts["ok"] + counts["skipped"]
        slowest = [{"task": name.strip(), "s": float(s)} for name, s in PROFILE.findall(output)][:10]
        rerun_docker_s, _ = run("site.yml", over_docker, work, args.timeout)
        result = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
            **versions(),
            "cores": os.cpu_count(),
            "connection": "ssh (pipelining, ControlPersist)",
            "cold_s": round(cold_s, 1),
            "rerun_s": round(rerun_s, 1),
            "rerun_ratio": round(rerun_s / cold_s, 3),
            "tasks": tasks,
            "rerun_s_per_task": round(rerun_s / tasks, 3),
            "slowest": slowest,
            "rerun_docker_s": round(rerun_docker_s, 1),
        }
    finally:
        if not args.keep:
            docker("rm", "-f", NAME, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"re-run over SSH: {result['rerun_s']} s for {tasks} tasks ({result['rerun_s_per_task']} s each), "
        f"{result['rerun_ratio']:.0%} of the cold run; over docker: {result['rerun_docker_s']} s"
    )
    print("slowest tasks of the re-run:")
    for task in slowest:
        print(f"  {task['s']:6.2f} s  {task['task']}")
    out = ROOT / "bench" / "results" / "converge.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
