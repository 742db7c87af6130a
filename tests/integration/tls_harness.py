"""Helpers for the server tests: a tiny ASGI app, a server in a thread, certificates, clients.

Not a test module. The app factory ``create_app`` is also what the multi-worker test's spawned
workers import (``tls_harness:create_app``), so this module must import cleanly on its own.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

READ_TIMEOUT_S = 10.0
"""Upper bound on any wait for the server; tests finish far sooner when it behaves."""


# --- the app --------------------------------------------------------------------------------------


@dataclass
class EchoApp:
    """Answers every request with JSON describing its scope; records the scopes it saw."""

    started: threading.Event = field(default_factory=threading.Event)
    scopes: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.started.set()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.scopes.append(scope)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if self.delay_s:
            import asyncio

            await asyncio.sleep(self.delay_s)  # the scenario: an app slower than the deadline
        payload = json.dumps(
            {
                "scheme": scope["scheme"],
                "tls": scope.get("extensions", {}).get("tls"),
                "body": body.decode(),
                "pid": os.getpid(),
                "env_home": os.environ.get("STRONGROOM_HOME"),
                "env_port": os.environ.get("STRONGROOM_PORT"),
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def create_app() -> EchoApp:
    """Zero-argument factory, as ``strongroom.entrypoints.http.app:create_app`` will be."""
    from strongroom.config import load_settings

    load_settings()  # the settings the worker sees come from the environment serve() exported
    return EchoApp()


def create_unconfigured_app() -> EchoApp:
    """A factory that fails as the real one does on a bad configuration."""
    from strongroom.errors import ConfigurationError

    raise ConfigurationError("no keyring passphrase configured (test)")


# --- a server in a thread -------------------------------------------------------------------------


@contextmanager
def running(config: uvicorn.Config, app: EchoApp) -> Iterator[int]:
    """Serve ``config`` on a pre-bound ephemeral 127.0.0.1 port; yields the port.

    The socket listens before the thread starts, so clients may connect at once; the server
    accepts them once it has started, which the app's lifespan start-up signals.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        if not app.started.wait(READ_TIMEOUT_S):
            raise RuntimeError("the server did not start")
        yield port
    finally:
        server.should_exit = True
        thread.join(READ_TIMEOUT_S)
        listener.close()


# --- certificates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A client CA and a client certificate it issued, as PEM files."""

    ca_file: Path
    client_cert_file: Path
    client_key_file: Path
    client_cert_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(directory: Path, ca_name: str = "test-client-ca", client: str = "svc-a") -> Pki:
    """A CA and a client certificate (clientAuth) it signed, valid for one day."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(client))
        .issuer_name(ca.subject)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_file=directory / "client-ca.pem",
        client_cert_file=directory / "client.pem",
        client_key_file=directory / "client.key",
        client_cert_pem=cert.public_bytes(serialization.Encoding.PEM),
    )
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.client_cert_file.write_bytes(pki.client_cert_pem)
    pki.client_key_file.write_bytes(_key_pem(client_key))
    return pki


# --- clients --------------------------------------------------------------------------------------


def client_context(server_cert: Path, pki: Pki | None = None) -> ssl.SSLContext:
    """A client trusting only the server's (self-signed) certificate, with a client certificate
    when ``pki`` is given."""
    context = ssl.create_default_context(cafile=str(server_cert))
    if pki is not None:
        context.load_cert_chain(pki.client_cert_file, pki.client_key_file)
    return context


def raw_request(path: str = "/", body: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )


def read_response(sock: socket.socket | ssl.SSLSocket) -> tuple[int, dict[str, Any]]:
    """Read one response with a content-length body; (status, parsed JSON body or {})."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response body")
        rest += chunk
    return status, (json.loads(rest[:length]) if length else {})


def https_request(
    port: int, context: ssl.SSLContext, body: bytes = b"", host: str = "localhost"
) -> tuple[int, dict[str, Any]]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(raw_request(body=body))
        return read_response(tls)


def wait_closed(sock: socket.socket | ssl.SSLSocket, timeout: float = READ_TIMEOUT_S) -> bytes:
    """Block until the server closes ``sock`` (or ``timeout``: socket.timeout propagates);
    returns what it sent first (b"" when it closed without a response)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        pass
    return received
