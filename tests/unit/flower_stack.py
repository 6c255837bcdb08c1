"""Helpers for the flower_health tests: the module run as Ansible runs it, test certificates, and real
Redis + Celery worker + Flower processes. Everything listens on 127.0.0.1 or on a Unix socket in a temporary
directory. (Named uniquely rather than living in conftest.py, so that `import` finds it whatever other conftest
files a pytest session loads.)"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fakeflower import Behaviour, FakeFlowerServer

PROJECT = Path(__file__).resolve().parents[2]
MODULE = PROJECT / "library" / "flower_health.py"
MODULE_UTILS = PROJECT / "module_utils"
RUNNER = Path(__file__).resolve().parent / "module_runner.py"
VENV_BIN = Path(sys.executable).parent
FLOWER_USER, FLOWER_PASSWORD = "admin", "s3cret-Pw"
STARTUP_TIMEOUT = 40.0

TASKS_APP = """
import os
from celery import Celery

app = Celery("tasksapp", broker=os.environ["BROKER"])


@app.task
def add(x, y):
    return x + y
"""


# --- running the module --------------------------------------------------------------------------------------


@dataclass
class ModuleRun:
    rc: int
    result: dict
    stdout: str
    stderr: str
    seconds: float

    @property
    def checks(self) -> dict[str, dict]:
        return {check["name"]: check for check in self.result["checks"]}


def module_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "*"  # traffic stays on 127.0.0.1 even where a proxy is configured
    return env


def run_module(directory: Path, args: dict[str, object], module: Path = MODULE) -> ModuleRun:
    """Run a module of library/ (flower_health.py unless told) the way Ansible does: a child Python reading
    ANSIBLE_MODULE_ARGS from a file, importing the project's module_utils/ as ansible.module_utils (see
    module_runner.py)."""
    args_file = directory / f"args-{time.monotonic_ns()}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(module), str(args_file)],
        capture_output=True,
        text=True,
        timeout=90,
        env=module_env(),
    )
    seconds = time.monotonic() - started
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)  # a module always answers JSON, failed or not
    return ModuleRun(proc.returncode, result, proc.stdout, proc.stderr, seconds)


# --- certificates --------------------------------------------------------------------------------------------


@dataclass
class Cert:
    cert: Path
    key: Path


def make_self_signed(directory: Path, name: str, days: float, names: tuple[str, ...]) -> Cert:
    """A self-signed certificate for `names` that is valid for `days` more days (negative: expired)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt_names: list[x509.GeneralName] = []
    for item in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            alt_names.append(x509.DNSName(item))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = Cert(directory / f"{name}.crt", directory / f"{name}.key")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    paths.key.write_bytes(key_pem)
    return paths


def tls_server(cert: Cert, behaviour: Behaviour | None = None) -> FakeFlowerServer:
    """A fake Flower over TLS with this certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert.cert), str(cert.key))
    return FakeFlowerServer(behaviour or Behaviour(), tls=context)


# --- real Redis + Celery worker + Flower -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, ready: Callable[[], bool], timeout: float = STARTUP_TIMEOUT, logs: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = ""
    if logs is not None:
        tail = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(logs.glob("*.log")))
    pytest.fail(f"{what} not ready after {timeout:.0f} s\n{tail}")


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Stack:
    """A Redis broker, one Celery worker and the Flowers watching them, run from one directory."""

    directory: Path
    redis_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def broker(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            argv,
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**module_env(), "BROKER": self.broker, **(env or {})},
            start_new_session=True,
        )

    def start_redis(self) -> None:
        redis = shutil.which("redis-server")
        if redis is None:
            pytest.fail("redis-server is needed for the real-Flower tests: apt-get install redis-server")
        self.start(
            "redis",
            [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        )
        wait_for("redis", lambda: redis_answers(self.redis_port), logs=self.directory)

    def start_worker(self, name: str = "w1@flowerops-test") -> None:
        (self.directory / "tasksapp.py").write_text(TASKS_APP)
        argv = [str(VENV_BIN / "celery"), "-A", "tasksapp", "worker", "--pool", "solo", "-n", name]
        self.start("worker", [*argv, "--without-mingle", "--without-gossip", "-l", "warning"])

    def start_flower(self, name: str, options: list[str], env: dict[str, str] | None = None) -> None:
        if not (VENV_BIN / "celery").exists():
            pytest.fail("flower and celery[redis] are needed in the venv for the real-Flower tests")
        argv = [str(VENV_BIN / "celery"), "-A", "tasksapp", "flower", f"--db={self.directory / name}.db"]
        self.start(name, [*argv, *options], env)

    def stop(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)  # a worker whose broker is gone takes long over a warm shutdown
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)


def fetch_json(url: str, auth: tuple[str, str] | None = None, context: object = None, unix: str = "") -> object:
    """GET a Flower route from the test itself (readiness checks), over TCP or a Unix socket."""
    if unix:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(unix)
            sock.sendall(f"GET {url} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return json.loads(data.split(b"\r\n\r\n", 1)[1])
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=context),  # type: ignore[arg-type]
    )
    with opener.open(request, timeout=5) as response:
        return json.loads(response.read())


def flower_sees_live_worker(get: Callable[[], object]) -> bool:
    try:
        data = get()
    except (OSError, ValueError, urllib.error.URLError):
        return False
    rows = data.get("data", []) if isinstance(data, dict) else []
    return any(row.get("status") and row.get("heartbeats") for row in rows)


@dataclass
class RealFlower:
    stack: Stack
    url: str  # https, basic auth, url_prefix /flower
    ca: Path
    socket: str  # a second Flower on a Unix socket, no auth, unauthenticated API allowed
