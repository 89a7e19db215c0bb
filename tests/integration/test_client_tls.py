"""The governor client checks an ``https://`` governor's certificate as httpx does by
default, and a client of an ``http://`` governor, which skips loading the CA bundle,
holds a TLS context that would refuse any peer, or makes no TLS connection at all
(proctor.transport.tls_for, plain_http).

Against a real TLS server on loopback with a self-signed certificate.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proctor.client import AsyncGovernorClient, GovernorClient, GovernorError, plain_http


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


class Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_governor_with_an_unknown_certificate_is_refused(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with GovernorClient(url, None, timeout=5) as client, pytest.raises(GovernorError) as refused:
        client.call("GET", "/healthz", signed=False)
    assert refused.value.status == 0
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)


def test_an_https_governor_trusted_through_ssl_cert_file_is_answered(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # httpx's default verification honours it
    with GovernorClient(url, None, timeout=5) as client:
        assert client.json("GET", "/healthz", signed=False) == {"status": "ok"}


def test_a_plain_http_client_makes_no_tls_connection_or_holds_a_context_that_trusts_no_one(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = tls_server
    plain = url.replace("https://", "http://")
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with GovernorClient(plain, None, timeout=5) as client:
        # Its own transport: http.client.HTTPConnection, which makes no TLS connection.
        assert type(client._transport).__name__ == "_Plain"
        with pytest.raises(GovernorError) as refused:  # a TLS server does not speak plain HTTP
            client.call("GET", "/healthz", signed=False)
        assert refused.value.status == 0
    # Behind a proxy, or asynchronous, the client is httpx's, with a context that would
    # refuse any TLS peer.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    proxied = GovernorClient(plain, None, timeout=5)
    async_client = AsyncGovernorClient("HTTP://127.0.0.1:9", None)
    try:
        assert type(proxied._transport).__name__ == "_Httpx"
        for context in (_context_of(proxied._transport.http), _context_of(async_client._http)):  # type: ignore[union-attr]
            assert context.verify_mode == ssl.CERT_REQUIRED
            assert context.check_hostname
            assert context.get_ca_certs() == []
            # Were it ever used, the handshake would fail: the self-signed peer is refused.
            host, port = "localhost", int(url.rsplit(":", 1)[1])
            with (
                socket.create_connection((host, port), timeout=5) as raw,
                pytest.raises(ssl.SSLCertVerificationError),
            ):
                context.wrap_socket(raw, server_hostname=host)
    finally:
        proxied.close()
        asyncio.run(async_client.aclose())
    secure = GovernorClient("HTTPS://example.invalid", None)
    assert type(secure._transport).__name__ == "_Httpx"
    assert _context_of(secure._transport.http).get_ca_certs()  # type: ignore[union-attr]
    secure.close()


def test_which_governors_the_client_talks_to_itself() -> None:
    """http:// without a proxy for its host; https://, or a proxy that applies, keep httpx."""
    assert plain_http("http://127.0.0.1:8700", {})
    assert plain_http("HTTP://gov.example:8700/", {"HTTPS_PROXY": "http://proxy:3128"})
    assert not plain_http("https://gov.example", {})
    assert not plain_http("http://gov.example", {"HTTP_PROXY": "http://proxy:3128"})
    assert not plain_http("http://gov.example", {"all_proxy": "socks5://proxy:1080"})
    assert plain_http("http://gov.example", {"http_proxy": "http://proxy:3128", "NO_PROXY": ".example"})
    assert not plain_http("http://gov.example", {"http_proxy": "http://proxy:3128", "no_proxy": "other.org"})
    assert plain_http("http://10.0.0.5:8700", {"HTTP_PROXY": "http://p:1", "NO_PROXY": "*"})


def _context_of(client: Any) -> ssl.SSLContext:
    context: ssl.SSLContext = client._transport._pool._ssl_context
    return context
