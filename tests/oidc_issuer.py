"""A local stand-in for Google's ID-token issuer: a signing key and its certificate endpoint.

Google signs the OIDC tokens Pub/Sub push, Eventarc and Cloud Tasks attach with keys whose
X.509 certificates it publishes at https://www.googleapis.com/oauth2/v1/certs as
``{"<key id>": "<PEM certificate>"}``. This issuer makes an RSA key with ``cryptography``,
serves its self-signed certificate in that format from 127.0.0.1 (with Google's kind of
``Cache-Control: max-age``, counting fetches), and mints tokens with google-auth's own
``RSASigner`` and ``jwt.encode``. The app verifies them for real (``OIDC_CERTS_URL`` points
here): nothing is mocked.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from tests.localhttp import JSONHandler, LocalHTTPServer

GOOGLE_ISSUER = "https://accounts.google.com"


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate_pem(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-oidc-issuer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class OidcIssuer:
    """Mints Google-style ID tokens and serves the certificate that verifies them."""

    def __init__(self) -> None:
        self.key_id = "test-key-1"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificates = {self.key_id: _certificate_pem(self._key)}
        self.fetches = 0
        self._lock = threading.Lock()
        self._server = LocalHTTPServer(_handler_for(self))

    @property
    def certs_url(self) -> str:
        return f"{self._server.url}/oauth2/v1/certs"

    def token(
        self,
        *,
        audience: str,
        email: str,
        expires_in: int = 3600,
        issued_ago: int = 0,
        email_verified: bool = True,
        issuer: str = GOOGLE_ISSUER,
        forged: bool = False,
    ) -> str:
        """An ID token as Google mints for a service account; ``forged``: signed by another key
        that claims this issuer's key id."""
        now = int(time.time()) - issued_ago
        payload: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "azp": "1234567890",
            "sub": "1234567890",
            "email": email,
            "email_verified": email_verified,
            "iat": now,
            "exp": now + expires_in,
        }
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if forged else None
        signer = crypt.RSASigner.from_string(_private_pem(key or self._key), key_id=self.key_id)
        token: bytes = jwt.encode(signer, payload)
        return token.decode()

    def start(self) -> OidcIssuer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def count_fetch(self) -> None:
        with self._lock:
            self.fetches += 1


def _handler_for(issuer: OidcIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(JSONHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path != "/oauth2/v1/certs":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            issuer.count_fetch()
            self.send_json(
                200,
                issuer.certificates,
                {"Cache-Control": "public, max-age=21600, must-revalidate"},
            )

    return Handler


@pytest.fixture
def oidc_issuer() -> Iterator[OidcIssuer]:
    """A fresh issuer (new key) serving its certificates on a free 127.0.0.1 port."""
    issuer = OidcIssuer().start()
    try:
        yield issuer
    finally:
        issuer.stop()
