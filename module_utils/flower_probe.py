# Copyright: (c) 2026, flowerops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Probing a Flower instance from a module: an HTTP(S) client and the server certificate's days left.

Modules import this as ansible.module_utils.flower_probe (ansible.cfg: module_utils = module_utils), so
it may use only the standard library, ansible.module_utils and cryptography (optional: see below), and must parse
on the targets' Python 3.8.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from datetime import timezone
from email.message import Message
from email.utils import mktime_tz, parsedate_tz
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import Request, make_context

MAX_SNIPPET = 120


class FetchError(Exception):
    """A request got no HTTP answer (bad URL, refused, timed out, TLS failure)."""


class Reply:
    def __init__(self, status: int, body: bytes, headers: Message | None, elapsed_ms: float, started: float) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.elapsed_ms = elapsed_ms
        self.started = started

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        return json.loads(self.text())

    def header(self, name: str) -> str | None:
        return self.headers.get(name) if self.headers is not None else None

    def server_time(self) -> float:
        """Flower's clock at the request, from the Date header (1 s resolution), else ours."""
        parsed = parsedate_tz(self.header("Date") or "")
        return float(mktime_tz(parsed)) if parsed else self.started

    def describe(self) -> str:
        if 300 <= self.status < 400:
            return f"HTTP {self.status} redirect to {self.header('Location') or '?'}"
        text = " ".join(self.text().split())
        if self.status == 404:
            return "HTTP 404 (check the url and Flower's url_prefix)"
        if not text or text.startswith("<"):  # an HTML error page says nothing useful on one line
            return f"HTTP {self.status}"
        return f"HTTP {self.status}: {snippet(text)}"


def snippet(text: str, limit: int = MAX_SNIPPET) -> str:
    """text on one line, cut between words (with an ellipsis) when longer than limit: never mid-word."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:") + " \u2026"


def describe_error(exc: BaseException, timeout: float) -> str:
    reason: object = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {reason.verify_message or reason.reason}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failure: {reason.reason or reason}"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name: {reason.strerror}"
    if isinstance(reason, FileNotFoundError):
        return "no such Unix socket"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


class FlowerClient:
    """GET requests below Flower's base URL, with the credentials or without them; redirects are not followed."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        ca_path: str | None = None,
        validate_certs: bool = True,
        unix_socket: str | None = None,
        agent: str = "flowerops",
        wait_when_limited: float = 0.0,
    ) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout
        # Seconds a request answered 429 is tried again, once a second: another client of the same limit key
        # (another audit on the machine) spent the proxy's allowance, which refills. 0: the 429 is the answer.
        self.wait_when_limited = wait_when_limited
        self.has_credentials = username is not None
        common = dict(
            timeout=timeout,
            # One context for every request: building it loads the CA bundle (~30 ms), which would skew latency.
            context=make_context(cafile=ca_path, validate_certs=validate_certs),
            unix_socket=unix_socket,
            follow_redirects="none",
            use_netrc=False,
            http_agent=agent,
            headers={"Accept": "application/json"},
        )
        # Flower's API answers 401 without a WWW-Authenticate header, so credentials are sent pre-emptively.
        self.authenticated = Request(
            url_username=username,
            url_password=password,
            force_basic_auth=self.has_credentials,
            **common,
        )
        self.anonymous = Request(**common)

    def get(self, path: str, authenticated: bool = True) -> Reply:
        """Any HTTP answer, error statuses included, as a Reply; FetchError when there is none."""
        return self.request("GET", path, authenticated)

    def request(
        self, method: str, path: str, authenticated: bool = True, headers: dict[str, str] | None = None
    ) -> Reply:
        """Like get(), with any method and extra request headers."""
        deadline = time.monotonic() + self.wait_when_limited
        while True:
            reply = self._request_once(method, path, authenticated, headers)
            if reply.status != 429 or time.monotonic() + 1.0 > deadline:
                return reply
            time.sleep(1.0)

    def _request_once(self, method: str, path: str, authenticated: bool, headers: dict[str, str] | None) -> Reply:
        url = self.base + path
        request = self.authenticated if authenticated else self.anonymous
        started = time.time()
        clock = time.monotonic()
        try:
            try:
                response = request.open(method, url, headers=headers, data=b"" if method == "POST" else None)
                status, headers_in, body = response.getcode(), response.headers, response.read()
            except HTTPError as exc:
                status, headers_in, body = exc.code, exc.headers, _read_error_body(exc)
        except (URLError, OSError, HTTPException, ValueError, UrlsConnectionError) as exc:
            raise FetchError(f"{method} {url}: {describe_error(exc, self.timeout)}") from exc
        return Reply(status, body, headers_in, (time.monotonic() - clock) * 1000.0, started)


# Answers that refuse a request without credentials: a login redirect (OAuth), 401, or 403.
REFUSED_STATUSES = (301, 302, 303, 307, 308, 401, 403)


def refused_without_credentials(client: FlowerClient, paths: tuple[str, ...]) -> tuple[bool, str]:
    """Whether every path refuses a request that carries no credentials, and what each answered."""
    problems = []
    for path in paths:
        try:
            reply = client.get(path, authenticated=False)
        except FetchError as exc:
            problems.append(str(exc))
            continue
        if 200 <= reply.status < 300:
            problems.append(f"{path} answered HTTP {reply.status} without credentials: authentication is not enforced")
        elif reply.status not in REFUSED_STATUSES:
            problems.append(f"{path} answered {reply.describe()} without credentials (expected 401)")
    if problems:
        return False, "; ".join(problems)
    return True, "requests without credentials are refused (" + ", ".join(paths) + ")"


def url_problem(url: str) -> str:
    """Why url is not an absolute http(s) URL a client can use, or "" when it is."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"url must be an absolute http:// or https:// URL, got {url!r}"
    try:
        port = parts.port
    except ValueError as exc:
        return f"url has an invalid port: {exc}"
    if port == 0:
        return "url has an invalid port: 0"
    return ""


def _read_error_body(exc: HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except (OSError, HTTPException, ValueError, AttributeError):
        return b""


# --- TLS certificate expiry, read with cryptography (works without verification) ---

# cryptography parses the certificate: ansible-core depends on it on the controller, and the flower_tls role installs
# python3-cryptography (Debian 12: 38.0) on every Flower host, where these modules run. A host the project has not
# set up yet (the health check of a half-built host) may lack it, so it is imported here without failing the
# import: only tls_days_left() needs it, and it then fails with missing_required_lib's message, which the modules
# report as the failed tls check. The HTTP checks still run.
try:
    from cryptography import x509
except ImportError as exc:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = str(exc)
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = ""


def require_cryptography() -> None:
    """FetchError with missing_required_lib's message when cryptography could not be imported."""
    if not HAS_CRYPTOGRAPHY:
        reason = "to read the server certificate's expiry date"
        raise FetchError(f"{missing_required_lib('cryptography', reason=reason)} ({CRYPTOGRAPHY_IMPORT_ERROR})")


def cert_not_after(der: bytes) -> float:
    """Epoch seconds of an X.509 certificate's notAfter, from its DER bytes.

    Raises ValueError when they are not a certificate, FetchError when cryptography is missing.
    """
    require_cryptography()
    certificate = x509.load_der_x509_certificate(der)
    try:
        expires = certificate.not_valid_after_utc  # cryptography 42 and later: an aware datetime
    except AttributeError:  # before 42 (Debian 12 ships 38): a naive datetime, in UTC
        expires = certificate.not_valid_after.replace(tzinfo=timezone.utc)
    return expires.timestamp()


def tls_days_left(url: str, timeout: float, unix_socket: str | None = None) -> int:
    """Whole days until the certificate of the server at url (or on unix_socket) expires; negative once expired.

    Raises FetchError when the certificate cannot be read.
    """
    require_cryptography()  # before connecting: without it there is nothing to read the certificate with
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # expiry is read even from an untrusted certificate
    try:
        if unix_socket:
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.settimeout(timeout)
        else:
            raw = socket.create_connection((host, port), timeout=timeout)
        with raw:
            if unix_socket:
                raw.connect(unix_socket)
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError) as exc:
        raise FetchError(f"TLS handshake with {host}:{port}: {describe_error(exc, timeout)}") from exc
    if not der:
        raise FetchError(f"{host}:{port} sent no certificate")
    try:
        not_after = cert_not_after(der)
    except ValueError as exc:
        raise FetchError(f"cannot read the certificate's expiry date: {exc}") from exc
    return int((not_after - time.time()) // 86400)
