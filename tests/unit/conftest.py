"""Fixtures for the flower_health tests; the helpers behind them are in flower_stack.py."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flower_stack import (
    FLOWER_PASSWORD,
    FLOWER_USER,
    Cert,
    ModuleRun,
    RealFlower,
    Stack,
    fetch_json,
    flower_sees_live_worker,
    free_port,
    make_self_signed,
    wait_for,
)
from flower_stack import (
    run_module as run_module_in,
)
from module_runner import add_project_module_utils

# Before any test module is imported: test_flower_probe.py imports ansible.module_utils.flower_probe as the
# module does.
add_project_module_utils()


@pytest.fixture
def run_module(tmp_path: Path) -> Callable[..., ModuleRun]:
    """run_module(**module_args): the module's exit code and JSON answer."""
    return lambda **args: run_module_in(tmp_path, args)


@pytest.fixture(scope="session")
def make_cert(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Cert]:
    """make_cert(name, days, names=("127.0.0.1", "localhost")): a self-signed certificate and its key."""
    directory = tmp_path_factory.mktemp("certs")

    def make(name: str, days: float, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Cert:
        return make_self_signed(directory, name, days, names)

    return make


@pytest.fixture(scope="session")
def real_flower(tmp_path_factory: pytest.TempPathFactory, make_cert: Callable[..., Cert]) -> Iterator[RealFlower]:
    """Flower 2.2 over TLS with basic auth under /flower, plus one on a Unix socket, watching a live worker."""
    stack = Stack(tmp_path_factory.mktemp("flower"))
    cert = make_cert("flower", days=90)
    port = free_port()
    sock = str(stack.directory / "flower.sock")
    try:
        stack.start_redis()
        stack.start_worker()
        tls_options = [f"--certfile={cert.cert}", f"--keyfile={cert.key}"]
        stack.start_flower(
            "flower",
            ["--address=127.0.0.1", f"--port={port}", f"--basic_auth={FLOWER_USER}:{FLOWER_PASSWORD}",
             "--url_prefix=flower", *tls_options],
        )  # fmt: skip
        stack.start_flower("flower-socket", [f"--unix_socket={sock}"], {"FLOWER_UNAUTHENTICATED_API": "true"})
        url = f"https://127.0.0.1:{port}/flower"
        context = ssl.create_default_context(cafile=str(cert.cert))
        auth = (FLOWER_USER, FLOWER_PASSWORD)
        wait_for(
            "Flower over TLS seeing the worker's heartbeats",
            lambda: flower_sees_live_worker(lambda: fetch_json(url + "/workers?json=1", auth, context)),
            logs=stack.directory,
        )
        wait_for(
            "Flower on the Unix socket seeing the worker's heartbeats",
            lambda: flower_sees_live_worker(lambda: fetch_json("/workers?json=1", unix=sock)),
            logs=stack.directory,
        )
        yield RealFlower(stack, url, cert.cert, sock)
    finally:
        stack.stop_all()


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for a test that breaks it (plain HTTP, basic auth)."""
    stack = Stack(tmp_path / "stack")
    stack.directory.mkdir()
    try:
        yield stack
    finally:
        stack.stop_all()
