"""module_utils/flower_probe.py called directly, with its explicit arguments, against servers on 127.0.0.1.

conftest.py makes module_utils/ importable as ansible.module_utils, as Ansible does for a module.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from ansible.module_utils.flower_probe import FetchError, FlowerClient, cert_not_after, tls_days_left
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fakeflower import Behaviour, FakeFlowerServer
from flower_stack import FLOWER_PASSWORD, FLOWER_USER, Cert, RealFlower, free_port, tls_server


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


# 400 days ahead is written as UTCTime, 10000 days (past 2049) as GeneralizedTime (RFC 5280).
@pytest.mark.parametrize("days", [400, 10000])
def test_cert_not_after_agrees_with_cryptography(make_cert: Callable[..., Cert], days: int) -> None:
    cert = x509.load_pem_x509_certificate(make_cert(f"der{days}", days=days).cert.read_bytes())

    assert cert_not_after(cert.public_bytes(Encoding.DER)) == cert.not_valid_after_utc.timestamp()
