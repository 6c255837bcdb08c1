"""roles/flower_queue_exporter/files/flower_queue_exporter.py run as its unit runs it (a virtualenv's Python with
prometheus_client, -I), scraped over its Unix socket, asking real Flowers (conftest.py's `real_flower`) and small
stdlib servers. Its answers are read with prometheus_client's own parsers, as Prometheus would read them."""

from __future__ import annotations

import grp
import gzip
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from flower_stack import FLOWER_PASSWORD, FLOWER_USER, PROJECT, RealFlower, fetch_json, module_env, wait_for
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

EXPORTER = PROJECT / "roles" / "flower_queue_exporter" / "files" / "flower_queue_exporter.py"
# The unit runs the exporter with the Python of Flower's virtualenv, for its prometheus_client; this venv has Flower
# too, and the same prometheus_client.
PYTHON = sys.executable
# What Prometheus 3 sends: OpenMetrics first, the text format as a fallback.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
# A queue no worker consumes: the idle Flower watches Redis database 1, where no worker answers its inspection,
# so it reports its default queue (celery), which nobody empties there.
IDLE_DB = 1
WORKER = "w1@flowerops-test"  # flower_stack's live worker, which sends a heartbeat every 2 s
AGE = "flowerops_worker_heartbeat_age_seconds"
Key = tuple[str, tuple[tuple[str, str], ...]]


def key(name: str, **labels: str) -> Key:
    """A sample's name and labels, as a key of Scrape.samples."""
    return name, tuple(sorted(labels.items()))


@dataclass
class Scrape:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def families(self) -> dict[str, Metric]:
        """The metric families, as prometheus_client's parser for the answer's format reads them."""
        parse = parse_openmetrics if self.content_type.startswith("application/openmetrics-text") else parse_text
        return {family.name: family for family in parse(self.body)}

    @property
    def samples(self) -> dict[Key, float]:
        """{key(name, **labels): value} of every sample."""
        return {key(s.name, **s.labels): s.value for family in self.families.values() for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.samples[key(name, **labels)]

    def has(self, name: str) -> bool:
        """Whether any sample of `name` is there, whatever its labels."""
        return any(sample_name == name for sample_name, _ in self.samples)


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def scrape(sock: str, path: str = "/metrics", headers: dict[str, str] | None = None) -> Scrape:
    """GET `path` from the exporter, as nginx does, over its Unix socket (a gzip answer unzipped)."""
    connection = UnixConnection(sock)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return Scrape(response.status, dict(response.getheaders()), body.decode())
    finally:
        connection.close()


@dataclass
class Exporter:
    socket: str
    process: subprocess.Popen
    log: Path

    def scrape(self, path: str = "/metrics", headers: dict[str, str] | None = None) -> Scrape:
        return scrape(self.socket, path, headers)

    def errors(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith("<3>")]


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Callable[..., Exporter]]:
    """exporter(*options, env=None): the exporter started on a socket of its own, stopped (SIGTERM) afterwards."""
    started: list[Exporter] = []

    def start(*options: str, env: dict[str, str] | None = None) -> Exporter:
        sock = str(tmp_path / f"metrics-{len(started)}.sock")
        log = tmp_path / f"exporter-{len(started)}.log"
        process = subprocess.Popen(
            [PYTHON, "-I", str(EXPORTER), "--listen", sock, *options],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            env={**module_env(), **(env or {})},
        )
        started.append(Exporter(sock, process, log))
        wait_for("the exporter's socket", lambda: Path(sock).exists() or process.poll() is not None, timeout=10)
        assert process.poll() is None, log.read_text()
        return started[-1]

    yield start
    for item in started:
        item.process.terminate()
        item.process.wait(timeout=5)
        assert "Traceback" not in item.log.read_text(), item.log.read_text()
        assert not Path(item.socket).exists(), "the exporter leaves its socket behind"


@pytest.fixture(scope="module")
def idle_flower(real_flower: RealFlower) -> Iterator[tuple[str, redis.Redis]]:
    """A Flower on a Unix socket whose queues nobody consumes, and a client for its Redis database."""
    stack = real_flower.stack
    sock = str(stack.directory / "flower-idle.sock")
    broker = f"redis://127.0.0.1:{stack.redis_port}/{IDLE_DB}"
    stack.start_flower(
        "flower-idle", [f"--unix_socket={sock}"], {"FLOWER_UNAUTHENTICATED_API": "true", "BROKER": broker}
    )
    wait_for("the idle Flower's queue lengths", lambda: answers_queues(sock), logs=stack.directory)
    client = redis.Redis.from_url(broker)
    try:
        yield sock, client
    finally:
        client.flushdb()
        client.close()
        stack.stop("flower-idle")


def answers_queues(sock: str) -> bool:
    try:
        return "active_queues" in fetch_json("/api/queues/length", unix=sock)  # type: ignore[operator]
    except (OSError, ValueError):
        return False


@contextmanager
def fake_flower(status: int, body: str, routes: dict[str, tuple[int, str]] | None = None) -> Iterator[str]:
    """A server answering GET of a path in `routes` with its (status, body), any other with `status` and `body`
    (and a Date header, as Flower does); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, text = (routes or {}).get(self.path, (status, body))
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_queue_lengths_from_flower_on_its_socket(real_flower: RealFlower, exporter: Callable[..., Exporter]) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    running = exporter("--flower-unix-socket", real_flower.socket, "--socket-group", group)

    metrics = running.scrape()
    other = running.scrape("/")

    assert metrics.status == 200
    assert metrics.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert metrics.headers["Cache-Control"] == "no-store"
    assert metrics.headers["Server"] == "flower-queue-exporter"  # not wsgiref's name and Python's version
    families = metrics.families
    assert sorted(families) == [
        "flowerops_queue_length",
        "flowerops_queue_scrape_duration_seconds",
        "flowerops_queue_up",
        AGE,
    ]
    assert {family.type for family in families.values()} == {"gauge"}
    assert families["flowerops_queue_up"].documentation == (
        "Whether Flower answered its queue lengths on this scrape (1) or not (0)."
    )
    assert metrics.value("flowerops_queue_up") == 1, running.log.read_text()
    # The worker's queue is listed (the live worker empties it; test_length_follows_the_messages_waiting counts).
    assert key("flowerops_queue_length", queue="celery") in metrics.samples
    assert 0 < metrics.value("flowerops_queue_scrape_duration_seconds") < 5
    assert 0 <= metrics.value(AGE, worker=WORKER) < 10  # 2 s heartbeats, a Date header of 1 s
    assert other.status == 404
    assert other.body == "Not found: the metrics are at /metrics\n"
    mode = Path(running.socket).stat()
    assert (stat.S_IMODE(mode.st_mode), mode.st_gid) == (0o660, os.getgid())  # for the proxy's group only
    assert running.errors() == []


def test_length_follows_the_messages_waiting(
    idle_flower: tuple[str, redis.Redis], exporter: Callable[..., Exporter]
) -> None:
    sock, broker = idle_flower
    running = exporter("--flower-unix-socket", sock)
    before = running.scrape().value("flowerops_queue_length", queue="celery")

    broker.lpush("celery", *[json.dumps({"n": n}) for n in range(3)])
    broker.lpush("celery\x06\x163", "priority 3")  # Flower adds up the priority lists of a Redis queue
    after = running.scrape().value("flowerops_queue_length", queue="celery")
    broker.delete("celery", "celery\x06\x163")
    emptied = running.scrape().value("flowerops_queue_length", queue="celery")

    assert (before, after, emptied) == (0, 4, 0)
    assert AGE not in running.scrape().body  # no worker on this database: no heartbeat to age, nor its HELP
    assert running.errors() == []


def test_basic_auth_from_a_credentials_file(
    real_flower: RealFlower, exporter: Callable[..., Exporter], tmp_path: Path
) -> None:
    base, prefix = real_flower.url.rsplit("/", 1)  # https://127.0.0.1:PORT, flower
    good, wrong = tmp_path / "good", tmp_path / "wrong"
    good.write_text(f"{FLOWER_USER}:{FLOWER_PASSWORD}\n")
    wrong.write_text(f"{FLOWER_USER}:not-the-password\n")
    env = {"SSL_CERT_FILE": str(real_flower.ca)}  # the test Flower's own certificate
    options = ["--flower-url", base, "--url-prefix", "/" + prefix]

    with_auth = exporter(*options, "--auth-file", str(good), env=env)
    wrong_auth = exporter(*options, "--auth-file", str(wrong), env=env)
    without = exporter(*options, env=env)

    assert with_auth.scrape().value("flowerops_queue_up") == 1, with_auth.log.read_text()
    assert key("flowerops_queue_length", queue="celery") in with_auth.scrape().samples
    assert key(AGE, worker=WORKER) in with_auth.scrape().samples  # the UI's /workers takes the same auth
    for refused in (wrong_auth, without):
        answer = refused.scrape()
        assert (answer.status, answer.value("flowerops_queue_up")) == (200, 0)
        assert "flowerops_queue_length" not in answer.body
        assert AGE not in answer.body
        assert refused.errors() == [
            f"<3>Flower answered HTTP 401 Unauthorized at {real_flower.url}/api/queues/length",
            f"<3>Flower answered HTTP 401 Unauthorized at {real_flower.url}/workers?json=1",
        ]
    assert all(FLOWER_PASSWORD not in item.log.read_text() for item in (with_auth, wrong_auth, without))


def test_flower_unreachable_is_up_0_with_http_200(exporter: Callable[..., Exporter], tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    silent = socket.socket()  # accepts connections (its backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        no_socket = exporter("--flower-unix-socket", str(tmp_path / "absent.sock"))
        refused = exporter("--flower-url", f"http://127.0.0.1:{closed.getsockname()[1]}")
        hanging = exporter("--flower-url", f"http://127.0.0.1:{silent.getsockname()[1]}", "--timeout", "0.5")

        answers = [item.scrape() for item in (no_socket, refused, hanging)]
    finally:
        closed.close()
        silent.close()

    for answer in answers:
        assert answer.status == 200
        assert answer.value("flowerops_queue_up") == 0
        assert sorted(answer.families) == ["flowerops_queue_scrape_duration_seconds", "flowerops_queue_up"]
        assert "flowerops_queue_length" not in answer.body
        assert AGE not in answer.body
    assert 0.5 <= answers[2].value("flowerops_queue_scrape_duration_seconds") < 2
    assert len(no_socket.errors()) == 1  # not asked again for its workers
    assert re.fullmatch(
        r"<3>Flower did not answer at unix:\S+/absent.sock:/api/queues/length: .+", no_socket.errors()[0]
    )
    assert "Connection refused" in refused.errors()[0]
    assert hanging.errors()[0].endswith(": timed out")


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, "<html>not JSON</html>"), (200, '{"queues": []}'), (404, "{}"), (500, '{"active_queues": []}')],
)
def test_answers_other_than_the_queue_lengths_are_up_0(
    exporter: Callable[..., Exporter], status: int, body: str
) -> None:
    with fake_flower(status, body) as url:
        running = exporter("--flower-url", url)
        answer = running.scrape()

    assert (answer.status, answer.value("flowerops_queue_up")) == (200, 0)
    assert AGE not in answer.body
    errors = running.errors()  # one line for each request: the workers are still asked
    assert len(errors) == 2
    assert (f"at {url}/api/queues/length" in errors[0], f"at {url}/workers?json=1" in errors[1]) == (True, True)


def test_heartbeat_ages_by_flowers_clock(exporter: Callable[..., Exporter]) -> None:
    now = time.time()
    workers = [
        {"hostname": "celery@old", "heartbeats": [now - 100, now - 30]},
        {"hostname": 'odd "name"\\', "heartbeats": [now - 5]},
        {"hostname": "celery@never", "heartbeats": []},  # none yet, or cleared by worker-offline: left out
        {"hostname": "celery@ahead", "heartbeats": [now + 50]},  # a worker clock ahead of Flower's: age 0
    ]
    routes = {
        "/flower/api/queues/length": (200, json.dumps({"active_queues": [{"name": "celery", "messages": 3}]})),
        "/flower/workers?json=1": (200, json.dumps({"data": workers})),
    }
    with fake_flower(404, "{}", routes) as url:
        running = exporter("--flower-url", url, "--url-prefix", "/flower")
        answer = running.scrape()

    assert answer.value("flowerops_queue_up") == 1
    assert answer.value(AGE, worker="celery@old") == pytest.approx(30, abs=2)  # Date has a 1 s resolution
    assert answer.value(AGE, worker='odd "name"\\') == pytest.approx(5, abs=2)
    assert answer.value(AGE, worker="celery@ahead") == 0
    assert "celery@never" not in answer.body
    assert [dict(labels)["worker"] for name, labels in answer.samples if name == AGE] == [
        "celery@ahead",
        "celery@old",
        'odd "name"\\',
    ]  # sorted, as before
    assert running.errors() == []


@pytest.mark.parametrize(("status", "body"), [(500, "{}"), (200, '{"data": {}}'), (200, '{"data": [{"x": 1}]}')])
def test_workers_failing_leaves_only_the_ages_out(exporter: Callable[..., Exporter], status: int, body: str) -> None:
    queues = json.dumps({"active_queues": [{"name": "celery", "messages": 0}]})
    routes = {"/api/queues/length": (200, queues), "/workers?json=1": (status, body)}
    with fake_flower(404, "{}", routes) as url:
        running = exporter("--flower-url", url)
        answer = running.scrape()

    assert answer.value("flowerops_queue_up") == 1  # the queue lengths' own verdict
    assert answer.value("flowerops_queue_length", queue="celery") == 0
    assert not answer.has(AGE)
    assert AGE not in answer.body
    assert len(running.errors()) == 1
    assert f"at {url}/workers?json=1" in running.errors()[0]


ODD_QUEUE = 'say "hi"\\now\nplease'  # a double quote, a backslash and a newline: all three need escaping


def test_queue_names_are_escaped_label_values(exporter: Callable[..., Exporter]) -> None:
    queues = [
        {"name": ODD_QUEUE, "messages": 7},
        {"name": "video", "messages": 0},
        {"name": "ünïcode ✓", "messages": 2},
    ]
    with fake_flower(200, json.dumps({"active_queues": queues})) as url:
        answer = exporter("--flower-url", url).scrape()

    assert answer.samples == {
        key("flowerops_queue_up"): 1,
        key("flowerops_queue_length", queue=ODD_QUEUE): 7,
        key("flowerops_queue_length", queue="video"): 0,
        key("flowerops_queue_length", queue="ünïcode ✓"): 2,
        key("flowerops_queue_scrape_duration_seconds"): pytest.approx(0, abs=1),
    }
    assert 'flowerops_queue_length{queue="say \\"hi\\"\\\\now\\nplease"} 7.0\n' in answer.body  # one line


def test_openmetrics_and_gzip_when_the_scraper_asks(exporter: Callable[..., Exporter]) -> None:
    """Prometheus asks for OpenMetrics first and accepts gzip: prometheus_client negotiates both."""
    now = time.time()
    routes = {
        "/api/queues/length": (200, json.dumps({"active_queues": [{"name": ODD_QUEUE, "messages": 7}]})),
        "/workers?json=1": (200, json.dumps({"data": [{"hostname": "celery@a", "heartbeats": [now - 10]}]})),
    }
    with fake_flower(404, "{}", routes) as url:
        running = exporter("--flower-url", url)
        text = running.scrape()
        negotiated = running.scrape(headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        compressed = scrape(running.socket, headers={"Accept-Encoding": "gzip"})

    assert negotiated.status == 200
    assert negotiated.content_type.startswith("application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert negotiated.headers["Content-Encoding"] == "gzip"
    assert negotiated.body.endswith("# EOF\n")
    assert "# UNIT flowerops_worker_heartbeat_age_seconds seconds" in negotiated.body
    assert set(negotiated.samples) == set(text.samples)  # the same series, whichever format
    assert negotiated.value("flowerops_queue_length", queue=ODD_QUEUE) == 7
    assert negotiated.value(AGE, worker="celery@a") == pytest.approx(10, abs=2)
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert compressed.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert running.errors() == []


def test_other_methods_and_paths(exporter: Callable[..., Exporter]) -> None:
    routes = {"/api/queues/length": (200, '{"active_queues": []}'), "/workers?json=1": (200, '{"data": []}')}
    with fake_flower(404, "{}", routes) as url:
        running = exporter("--flower-url", url)
        connection = UnixConnection(running.socket)
        try:
            connection.request("POST", "/metrics", body=b"")
            response = connection.getresponse()
            post = response.status, response.getheader("Allow")
        finally:
            connection.close()
        favicon = running.scrape("/favicon.ico")
        query = running.scrape("/metrics?name[]=flowerops_queue_up")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:  # a request line too long to read
            raw.settimeout(10)
            raw.connect(running.socket)
            raw.sendall(b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\n\r\n")
            garbage = raw.makefile("rb").read().decode("latin-1")

    assert post == (405, "OPTIONS,GET")
    assert garbage.startswith("HTTP/1.0 414 ")  # wsgiref's own answer, before any application
    assert "\r\nServer: flower-queue-exporter\r\n" in garbage  # not wsgiref's name and Python's version
    assert favicon.status == 404  # only /metrics, where prometheus_client would serve any path
    assert sorted(query.families) == ["flowerops_queue_up"]  # prometheus_client's filter, by the families' names
    assert query.value("flowerops_queue_up") == 1
    assert running.errors() == []


def test_a_python_without_prometheus_client_says_so(tmp_path: Path) -> None:
    """-S leaves site-packages out: a Python without prometheus_client, as Debian's /usr/bin/python3 is."""
    result = subprocess.run(
        [PYTHON, "-I", "-S", str(EXPORTER), "--listen", str(tmp_path / "m.sock")],
        capture_output=True,
        text=True,
        timeout=10,
    )

    assert result.returncode == 1
    assert result.stderr == (
        f"<3>cannot start: No module named 'prometheus_client': run me with the Python of Flower's virtualenv "
        f"({PYTHON} lacks it)\n"
    )
    assert not (tmp_path / "m.sock").exists()


def test_refuses_to_start_on_a_bad_credentials_file(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text("only-a-password\n")

    started = time.monotonic()
    result = subprocess.run(
        [PYTHON, "-I", str(EXPORTER), "--listen", str(tmp_path / "m.sock"), "--auth-file", str(auth)],
        capture_output=True,
        text=True,
        timeout=10,
    )

    assert result.returncode == 1
    assert result.stderr == f'<3>cannot start: {auth} does not hold one line "user:password" in ASCII\n'
    assert "only-a-password" not in result.stderr
    assert time.monotonic() - started < 5
