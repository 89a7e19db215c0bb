"""The governor client checks an ``https://`` governor's certificate as httpx does by
default, and a client of an ``http://`` governor, which skips loading the CA bundle,
holds a TLS context that would refuse any peer (proctor.client._tls_for).

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

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proctor.client import AsyncGovernorClient, GovernorClient, GovernorError


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


def test_a_plain_http_client_holds_a_context_that_trusts_no_one(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    with GovernorClient(url.replace("https://", "http://"), None, timeout=5) as client:
        context: ssl.SSLContext = client._http._transport._pool._ssl_context  # type: ignore[attr-defined]
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
    async_client = AsyncGovernorClient("HTTP://127.0.0.1:9", None)
    assert async_client._http._transport._pool._ssl_context.get_ca_certs() == []  # type: ignore[attr-defined]
    asyncio.run(async_client.aclose())
    secure = GovernorClient("HTTPS://example.invalid", None)
    assert secure._http._transport._pool._ssl_context.get_ca_certs()  # type: ignore[attr-defined]
    secure.close()
