"""A bench target: a fresh systemd container from the project's image, deployed as the demo is.

Shared by the scripts in bench/ (converge.py, proxy.py, capacity.py, backup.py): the container is
started as `make demo` starts its own (the capability list read from the Molecule scenario), under a
`flowerops-bench-<something>` name of its own; the demo's inventory is copied for it (its group_vars,
one host in every group), and `playbooks/fixtures.yml` then `site.yml` deploy it, from a copy of a
commit of /work/main (`--source`, default HEAD; `git archive`), never from its working tree, where
work in progress may be half done. Each container's copy, inventory and generated secrets (the demo's
`.demo/` files: the admin's password, the CA) live in a work directory of its own in the temporary
directory, kept with the container, so `--reuse` can run a script again without a deploy (and redeploys
only when a script needs other inventory settings). Every subprocess has a timeout.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
IMAGE = os.environ.get("FLOWEROPS_IMAGE", "flowerops/debian12-systemd:latest")
PREFIX = "flowerops-bench-"
GROUPS = ("flower", "flower_monitoring", "demo_broker", "demo_worker")
RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)", re.M)


def docker(
    *args: str, check: bool = True, timeout: float = 300, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout, input=stdin)


def in_target(name: str, *command: str, timeout: float = 300, check: bool = True, stdin: str | None = None) -> str:
    """Run a command as root in the container; its standard output."""
    done = docker("exec", "-i", name, *command, check=False, timeout=timeout, stdin=stdin)
    if check and done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {name} ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def copy_in(name: str, source: Path, dest: str) -> None:
    docker("cp", str(source), f"{name}:{dest}", timeout=60)


def work_dir(name: str) -> Path:
    """Where a bench container's inventory and secrets live while it exists."""
    return Path(tempfile.gettempdir()) / name


def start_container(name: str) -> str:
    """A fresh container booting systemd; returns its address."""
    if not name.startswith(PREFIX):
        sys.exit(f"bench containers are named {PREFIX}*, not {name}")
    docker("rm", "-f", name, check=False)
    platform = yaml.safe_load((ROOT / "molecule" / "default" / "molecule.yml").read_text())["platforms"][0]
    docker(
        "run", "-d", "--name", name, "--hostname", name, "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--stop-signal", "SIGRTMIN+3", "--env", "container=docker",
        *[f"--cap-add={cap}" for cap in platform["capabilities"]],
        IMAGE, "/sbin/init",
    )  # fmt: skip
    for _ in range(60):
        state = docker("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    else:
        sys.exit(f"systemd in {name} did not finish booting")
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    return docker("inspect", "-f", template, name).stdout.split()[0]


def remove_container(name: str) -> None:
    docker("rm", "-f", name, check=False)
    shutil.rmtree(work_dir(name), ignore_errors=True)


def write_inventory(
    directory: Path,
    name: str,
    host_vars: dict[str, Any],
    all_vars: dict[str, Any] | None = None,
    source: Path = ROOT,
) -> Path:
    """The demo's inventory (from the source tree deployed) with this one container in every group."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(directory / "group_vars", ignore_errors=True)
    shutil.copytree(source / "inventories" / "demo" / "group_vars", directory / "group_vars")
    hosts: dict[str, Any] = {
        "all": {"hosts": {name: host_vars}, "children": {g: {"hosts": {name: None}} for g in GROUPS}}
    }
    if all_vars:
        hosts["all"]["vars"] = all_vars
    (directory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return directory


def tool(name: str) -> str:
    """Ansible's command beside the Python running the bench (`.venv/bin/python bench/...` needs no PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def run_playbook(
    playbook: str,
    inventory_dir: Path,
    secrets: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    source: Path = ROOT,
) -> tuple[float, str]:
    """Run a playbook of the source tree to the end (exit on failure): seconds taken, and its output."""
    full_env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env or {})}
    for var, sub in (("ROLES_PATH", "roles"), ("LIBRARY", "library"), ("MODULE_UTILS", "module_utils")):
        full_env[f"ANSIBLE_{var}"] = str(source / sub)
    command = [tool("ansible-playbook"), "-i", str(inventory_dir), playbook, "-e", f"demo_secrets_dir={secrets}"]
    start = time.monotonic()
    done = subprocess.run(
        command, cwd=source, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
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


def versions(name: str) -> dict[str, str]:
    ansible = subprocess.run(
        [tool("ansible"), "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    nginx = docker("exec", name, "nginx", "-v", check=False).stderr
    flower = yaml.safe_load((ROOT / "roles" / "flower" / "defaults" / "main.yml").read_text())["flower_version"]
    return {
        "ansible_core": re.search(r"core ([\d.]+)", ansible)[1],
        "flower": flower,
        "nginx": re.search(r"nginx/([\d.]+)", nginx)[1] if "nginx/" in nginx else "",
        "debian": docker("exec", name, "cat", "/etc/debian_version").stdout.strip(),
    }


def commit(ref: str = "HEAD") -> str:
    return subprocess.run(
        ["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


def snapshot(name: str, ref: str = "HEAD") -> Path:
    """The tree a bench container is deployed from: `ref` of /work/main as committed (git archive), taken
    once per container, so that work in progress in the working tree is never deployed and every
    redeploy of the container uses the same code."""
    source = work_dir(name) / "src"
    if not source.exists():
        sha = commit(ref)
        source.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True, timeout=120)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True, timeout=120)
        (work_dir(name) / "source.json").write_text(json.dumps({"commit": sha}))
    return source


def source_commit(name: str) -> str:
    """The commit a bench container was deployed from."""
    return json.loads((work_dir(name) / "source.json").read_text())["commit"]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def header(name: str, loadavg_start: tuple[float, float, float]) -> dict[str, Any]:
    """What every result file starts with: when, which code, which versions, on how much machine."""
    return {
        "date": now(),
        "commit": source_commit(name),
        **versions(name),
        "cores": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in loadavg_start],
    }


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--name", default=name, help=f"the bench container (default {name})")
    parser.add_argument("--keep", action="store_true", help="leave the container running for --reuse")
    parser.add_argument("--reuse", action="store_true", help="use the already-deployed container --name")
    parser.add_argument("--deploy-timeout", type=int, default=1800, help="seconds each playbook run may take")
    parser.add_argument("--source", default="HEAD", help="commit of /work/main a fresh container is deployed from")


def deploy(name: str, host_vars: dict[str, Any], timeout: float, fixtures: bool = True) -> float:
    """Run the fixtures (once) and site.yml over the docker connection; seconds site.yml took. The host
    variables are recorded as deployed only once site.yml has passed."""
    work = work_dir(name)
    (work / "deployed.json").unlink(missing_ok=True)
    connection = {"ansible_connection": "community.docker.docker", **host_vars}
    write_inventory(work / "inventory", name, connection, source=snapshot(name))
    if fixtures:
        playbook(name, "playbooks/fixtures.yml", timeout)
    elapsed, _ = playbook(name, "site.yml", timeout)
    (work / "deployed.json").write_text(json.dumps(host_vars))
    return elapsed


def playbook(name: str, path: str, timeout: float, env: dict[str, str] | None = None) -> tuple[float, str]:
    """A playbook of the container's source tree, with its inventory and secrets (the demo's .demo/)."""
    work = work_dir(name)
    secrets = work / "secrets"
    secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    return run_playbook(path, work / "inventory", secrets, timeout, env, source=snapshot(name))


def deployed_host_vars(name: str) -> dict[str, Any] | None:
    """The host variables the container was last deployed with; None when no deploy has passed."""
    record = work_dir(name) / "deployed.json"
    return json.loads(record.read_text()) if record.exists() else None


def forget_flower_state(name: str) -> None:
    """Stop Flower and delete its saved state. Before a redeploy that lowers flower_max_tasks: Flower
    loads its whole saved state before trimming it to max_tasks, so a state saved under a larger
    max_tasks does not fit the smaller MemoryMax and Flower is OOM-killed at every start."""
    db = fact(name, "flower")["db"]
    in_target(name, "systemctl", "stop", "flower", timeout=120)
    in_target(name, "sh", "-c", f'rm -f "{db}" "{db}".*')


def redeploy(args: argparse.Namespace, host_vars: dict[str, Any]) -> None:
    """site.yml again with other host variables (an inventory change), unless already deployed so."""
    deployed = deployed_host_vars(args.name)
    if deployed == host_vars:
        return
    default_max_tasks = yaml.safe_load((ROOT / "roles" / "flower" / "defaults" / "main.yml").read_text())[
        "flower_max_tasks"
    ]
    lower = host_vars.get("flower_max_tasks", default_max_tasks)
    if deployed is None or lower < deployed.get("flower_max_tasks", default_max_tasks):
        print(f"stopping Flower and deleting its saved state first (flower_max_tasks down to {lower})", flush=True)
        forget_flower_state(args.name)
    print(f"redeploying {args.name} with {host_vars or 'the defaults'}", flush=True)
    elapsed = deploy(args.name, host_vars, args.deploy_timeout, fixtures=False)
    print(f"redeployed in {elapsed:.0f} s", flush=True)


def prepare(args: argparse.Namespace, host_vars: dict[str, Any] | None = None) -> None:
    """A deployed container under args.name: a fresh one, or (--reuse) the running one, redeployed
    only when it was deployed with other host variables."""
    if args.reuse:
        running = docker("inspect", "-f", "{{.State.Running}}", args.name, check=False).stdout.strip()
        if running != "true" or not (work_dir(args.name) / "secrets").exists():
            sys.exit(f"--reuse: no deployed {args.name} (run once with --keep)")
        redeploy(args, host_vars or {})
        return
    shutil.rmtree(work_dir(args.name), ignore_errors=True)
    snapshot(args.name, args.source)
    print(f"starting and deploying {args.name} from {source_commit(args.name)[:10]} (fixtures, site.yml)", flush=True)
    start_container(args.name)
    elapsed = deploy(args.name, host_vars or {}, args.deploy_timeout)
    print(f"deployed in {elapsed:.0f} s", flush=True)


def finish(args: argparse.Namespace) -> None:
    if args.keep:
        print(f"kept {args.name} (rerun with --reuse; remove with docker rm -f {args.name})")
    else:
        remove_container(args.name)


def secret(name: str, file: str) -> str:
    return (work_dir(name) / "secrets" / file).read_text().strip()


def write_result(file: str, result: dict[str, Any]) -> None:
    out = RESULTS / file
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p99 in ms of latencies in seconds."""
    ordered = sorted(values)
    if not ordered:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "n": 0}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return {"p50_ms": round(pick(0.5), 2), "p99_ms": round(pick(0.99), 2), "n": len(ordered)}


def fact(name: str, role: str) -> dict[str, Any]:
    """What a role recorded on the target (/etc/ansible/facts.d/<role>.fact)."""
    return json.loads(in_target(name, "cat", f"/etc/ansible/facts.d/{role}.fact"))


def feed_tasks(name: str, tasks: int, payload: int = 0, timeout: float = 1200) -> dict[str, Any]:
    """`tasks` tasks' real Celery events through the target's broker (bench/agent_events.py, run with
    Flower's own Python), until Flower has counted them all; what the sender saw."""
    flower = fact(name, "flower")
    agent = "/root/bench-agent-events.py"
    copy_in(name, Path(__file__).with_name("agent_events.py"), agent)
    plan = {
        "mode": "feed",
        "tasks": tasks,
        "payload": payload,
        "timeout": timeout,
        "broker": f"redis://:{secret(name, 'redis-password')}@127.0.0.1:6379/0",
        "flower_socket": flower["unix_socket"],
    }
    python = f"{flower['venv']}/bin/python"
    return json.loads(in_target(name, python, agent, stdin=json.dumps(plan), timeout=timeout + 60))
