"""module_utils/flower_probe.py called directly, with its explicit arguments, against servers on 127.0.0.1.

conftest.py makes module_utils/ importable as ansible.module_utils, as Ansible does for a module.
"""

from __future__ import annotations

import ast
import calendar
import datetime
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import ansible
import pytest
from ansible.module_utils.flower_probe import FetchError, FlowerClient, Reply, cert_not_after, tls_days_left
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fakeflower import Behaviour, FakeFlowerServer
from flower_stack import (
    FLOWER_PASSWORD,
    FLOWER_USER,
    MODULE,
    MODULE_UTILS,
    RUNNER,
    Cert,
    RealFlower,
    free_port,
    module_env,
    tls_server,
)
from module_runner import load_file


def test_get_with_credentials_from_a_real_flower(real_flower: RealFlower) -> None:
    client = FlowerClient(
        real_flower.url, username=FLOWER_USER, password=FLOWER_PASSWORD, timeout=10, ca_path=str(real_flower.ca)
    )

    reply = client.get("/api/workers")
    anonymous = client.get("/api/workers", authenticated=False)

    assert reply.status == 200, reply.describe()
    assert "w1@flowerops-test" in reply.json()  # type: ignore[operator]
    assert abs(reply.server_time() - time.time()) < 5  # Flower's Date header
    assert anonymous.status == 401  # an HTTP answer, not an error


def test_wrong_password_is_an_answer_not_an_error() -> None:
    with FakeFlowerServer(Behaviour()) as server:
        client = FlowerClient(server.url, username="admin", password="wrong", timeout=5)
        assert client.get("/api/workers").status == 401
        assert client.get("/healthcheck", authenticated=False).text() == "OK"


def test_a_rate_limited_request_is_tried_again_while_the_allowance_refills() -> None:
    """Another client of the same limit key (another Flower's audit on the machine) spent the proxy's allowance: a
    patient client tries again once a second, for a bounded time; an impatient one (the checklist's burst, which
    looks for the 429) takes the 429 as the answer."""
    behaviour = Behaviour(rate_limited=2)
    with FakeFlowerServer(behaviour) as server:
        assert FlowerClient(server.url, timeout=5).get("/healthcheck", authenticated=False).status == 429
        patient = FlowerClient(server.url, timeout=5, wait_when_limited=5)
        assert patient.get("/healthcheck", authenticated=False).status == 200
        assert behaviour.rate_limited == 0
    with FakeFlowerServer(Behaviour(rate_limited=100)) as server:
        bounded = FlowerClient(server.url, timeout=5, wait_when_limited=2)
        assert bounded.get("/healthcheck", authenticated=False).status == 429


def test_get_over_a_unix_socket(real_flower: RealFlower) -> None:
    client = FlowerClient("http://localhost", unix_socket=real_flower.socket, timeout=5)

    reply = client.get("/healthcheck", authenticated=False)

    assert (reply.status, reply.text()) == (200, "OK")


def test_untrusted_certificate_unless_validation_is_off(real_flower: RealFlower) -> None:
    with pytest.raises(FetchError, match="TLS certificate verification failed: self-signed certificate"):
        FlowerClient(real_flower.url, timeout=5).get("/healthcheck", authenticated=False)

    reply = FlowerClient(real_flower.url, timeout=5, validate_certs=False).get("/healthcheck", authenticated=False)

    assert reply.text() == "OK"


def test_connection_refused_is_a_fetch_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more

    with pytest.raises(FetchError) as raised:
        FlowerClient(url, timeout=2).get("/healthcheck")

    assert str(raised.value) == f"GET {url}/healthcheck: connection refused"


def test_tls_days_left_of_a_real_flower(real_flower: RealFlower) -> None:
    assert tls_days_left(real_flower.url, timeout=5) in (88, 89)  # made valid for 90 days


@pytest.mark.parametrize(("days", "expected"), [(30.5, 30), (-2.5, -3)])
def test_tls_days_left(make_cert: Callable[..., Cert], days: float, expected: int) -> None:
    with tls_server(make_cert(f"days{days}", days=days)) as server:
        assert tls_days_left(server.url, timeout=5) == expected


def test_tls_days_left_of_plain_http_is_a_fetch_error() -> None:
    with FakeFlowerServer(Behaviour()) as server:
        url = server.url.replace("http://", "https://")
        with pytest.raises(FetchError, match=r"^TLS handshake with 127\.0\.0\.1:\d+: "):
            tls_days_left(url, timeout=5)


# RFC 5280 writes notAfter as UTCTime up to 2049 (two-digit years, 50-99 meaning 19xx) and as GeneralizedTime from
# 2050 on: each must come out as the same instant.
NOT_AFTER = [
    datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),
    datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),
    datetime.datetime(2050, 1, 1, 0, 0, 0, tzinfo=datetime.UTC),
    datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),  # RFC 5280's "no expiry"
]
DEBIAN_PYTHON = Path("/usr/bin/python3")  # the hosts' Python, with Debian 12's python3-cryptography (38)


def der_expiring_at(not_after: datetime.datetime) -> bytes:
    """A self-signed certificate (DER) whose notAfter is exactly `not_after`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expiry.test")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(1990, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.DER)


@pytest.mark.parametrize("not_after", NOT_AFTER, ids=lambda moment: moment.date().isoformat())
def test_cert_not_after(not_after: datetime.datetime) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not the not_valid_after that cryptography 42 deprecated, where it has _utc
        seconds = cert_not_after(der_expiring_at(not_after))

    assert seconds == calendar.timegm(not_after.utctimetuple())


def test_cert_not_after_with_debians_cryptography(tmp_path: Path) -> None:
    """The hosts' python3-cryptography (38 on Debian 12) has no not_valid_after_utc: the naive UTC one is used."""
    if not DEBIAN_PYTHON.exists():
        pytest.skip(f"no {DEBIAN_PYTHON} here")
    certificates = tmp_path / "certificates.json"
    certificates.write_text(json.dumps([der_expiring_at(moment).hex() for moment in NOT_AFTER]))
    shim = tmp_path / "shim"  # ansible's module_utils, as Ansible ships them to a host, and nothing else of the venv
    shim.mkdir()
    (shim / "ansible").symlink_to(Path(ansible.__file__).parent)
    code = f"""
import json, sys
sys.path.insert(0, {str(shim)!r})
import ansible.module_utils
ansible.module_utils.__path__.append({str(MODULE_UTILS)!r})
import cryptography
from cryptography import x509
from ansible.module_utils.flower_probe import cert_not_after
ders = [bytes.fromhex(item) for item in json.load(open({str(certificates)!r}))]
print(json.dumps({{
    "version": cryptography.__version__,
    "from": cryptography.__file__,
    "has_utc": hasattr(x509.Certificate, "not_valid_after_utc"),
    "not_after": [cert_not_after(der) for der in ders],
}}))
"""
    # A local time zone far from UTC, so that a naive datetime taken for local time would be hours off.
    env = {"PATH": "/usr/bin:/bin", "TZ": "FLO-05:45"}
    result = subprocess.run([str(DEBIAN_PYTHON), "-I", "-c", code], capture_output=True, text=True, timeout=60, env=env)
    if "No module named 'cryptography'" in result.stderr:
        pytest.skip(f"{DEBIAN_PYTHON} has no cryptography (Debian: python3-cryptography)")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)

    assert not answer["from"].startswith(str(Path(sys.prefix)))  # the system's, not the venv's
    assert answer["not_after"] == [calendar.timegm(moment.utctimetuple()) for moment in NOT_AFTER], answer
    if answer["version"].startswith("38."):  # Debian 12's
        assert answer["has_utc"] is False  # the fallback is the branch that ran


def test_cert_not_after_of_what_is_not_a_certificate() -> None:
    der = der_expiring_at(NOT_AFTER[1])

    for broken in (b"", b"not DER", der[: len(der) // 2]):
        with pytest.raises(ValueError):
            cert_not_after(broken)


def test_cryptography_is_the_only_optional_import_and_is_guarded() -> None:
    """Beyond the standard library and ansible.module_utils, only cryptography, imported under try/except ImportError
    (ansible-test's import sanity test, and hosts without it)."""
    tree = ast.parse((MODULE_UTILS / "flower_probe.py").read_text())
    guarded = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.Try)
        and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in block.handlers
        )
        for statement in block.body
        for node in ast.walk(statement)
    }
    optional = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                top = (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
                if top not in {*sys.stdlib_module_names, "ansible"}:
                    optional[top] = id(node) in guarded

    assert optional == {"cryptography": True}


@pytest.fixture
def probe_without_cryptography(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh copy of module_utils/flower_probe.py imported where `import cryptography` fails."""
    monkeypatch.setitem(sys.modules, "cryptography", None)  # None in sys.modules: ImportError, as if not installed
    return load_file("flower_probe_without_cryptography", MODULE_UTILS / "flower_probe.py")


def test_without_cryptography_tls_days_left_names_what_is_missing(probe_without_cryptography: ModuleType) -> None:
    probe = probe_without_cryptography
    url = f"https://127.0.0.1:{free_port()}"  # nothing listens: the error must come before any connection

    with pytest.raises(probe.FetchError) as raised:
        probe.tls_days_left(url, timeout=2)
    with pytest.raises(probe.FetchError):
        probe.cert_not_after(der_expiring_at(NOT_AFTER[1]))

    assert probe.HAS_CRYPTOGRAPHY is False
    message = str(raised.value)
    assert message.startswith("Failed to import the required Python library (cryptography) on ")
    assert "This is required to read the server certificate's expiry date." in message
    assert message.endswith("(import of cryptography halted; None in sys.modules)")
    assert "refused" not in message


def test_without_cryptography_the_module_fails_only_its_tls_check(
    make_cert: Callable[..., Cert], tmp_path: Path
) -> None:
    """flower_health on a host without cryptography: its HTTP checks pass, its tls check says what to install."""
    cert = make_cert("no-cryptography", days=60)
    args_file = tmp_path / "args.json"
    # The runner (module_runner.py) run as __main__ by a Python in which `import cryptography` fails.
    block = (
        "import runpy, sys; sys.modules['cryptography'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    with tls_server(cert) as server:
        args = {"url": server.url, "username": "admin", "password": "s3cret", "ca_path": str(cert.cert)}
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        proc = subprocess.run(
            [sys.executable, "-c", block, str(RUNNER), str(MODULE), str(args_file)],
            capture_output=True,
            text=True,
            timeout=90,
            env=module_env(),
        )
    result = json.loads(proc.stdout)
    checks = {check["name"]: check for check in result["checks"]}

    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert (proc.returncode, result["healthy"]) == (1, False)
    assert [name for name, check in checks.items() if not check["ok"]] == ["tls"]
    assert "Failed to import the required Python library (cryptography)" in checks["tls"]["detail"]
    assert "tls" in result["msg"]
    assert result["tls_days_left"] is None


def test_a_long_error_body_is_cut_between_words_for_the_evidence() -> None:
    """Checklist items 1, 9 and 16 quote Reply.describe(): a long body is shortened at a space, never mid-word."""
    words = [f"word{n:03d}" for n in range(60)]
    described = Reply(500, " ".join(words).encode(), None, 1.0, 0.0).describe()
    assert described.startswith("HTTP 500: word000 ")
    quoted = described.removeprefix("HTTP 500: ").removesuffix(" \u2026").split()
    assert quoted and set(quoted) <= set(words), described
    assert described.endswith("\u2026") and len(described) < 140
