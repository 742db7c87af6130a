"""The HTTPS listener of ``strongroom serve``: real uvicorn servers on 127.0.0.1, real handshakes.

Each server runs ``build_config``'s configuration with a tiny ASGI app (``tls_harness``), so
these tests pin the TLS policy, mTLS and the start-up refusals independently of the app.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tls_harness import (
    READ_TIMEOUT_S,
    EchoApp,
    client_context,
    https_request,
    make_pki,
    raw_request,
    read_response,
    running,
    wait_closed,
)

from conftest import cli, cli_json
from strongroom import bootstrap
from strongroom.config import Settings, load_settings
from strongroom.core.crypto.certificates import (
    check_certificate_and_key,
    generate_development_certificate,
    pem_to_der,
)
from strongroom.entrypoints.http.server import PLAINTEXT_WARNING, build_config
from strongroom.errors import ConfigurationError

HERE = Path(__file__).resolve().parent
LEGACY = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)


def settings_for(home: Path, **overrides: Any) -> Settings:
    """Settings of an instance whose development certificate ``initialise_tls`` wrote."""
    settings = load_settings(home=home, **overrides)
    if not settings.unsafe_plaintext:
        bootstrap.initialise_tls(settings)
    return settings


def server_cert(settings: Settings) -> Path:
    assert settings.tls_cert_file is not None
    return settings.tls_cert_file


def _legacy_client(settings: Settings, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = client_context(server_cert(settings))
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are, on purpose
        context.minimum_version = context.maximum_version = version
    return context


def _permissive_server(settings: Settings, version: ssl.TLSVersion) -> int:
    """A bare ssl server that accepts ``version``: proves the legacy client really offers it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    context.load_cert_chain(server_cert(settings), settings.home / "tls" / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_once() -> None:
        with listener:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                read_until_blank_line(tls)
                tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

    threading.Thread(target=answer_once, daemon=True).start()
    return int(listener.getsockname()[1])


def read_until_blank_line(sock: ssl.SSLSocket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)


# --- protocol versions and ciphers ----------------------------------------------------------------


def test_tls12_and_tls13_are_accepted_with_aead_suites(tmp_path: Path):
    settings = settings_for(tmp_path / "home")
    app = EchoApp()
    with running(build_config(settings, lambda: app), app) as port:
        seen = {}
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            context = client_context(server_cert(settings))
            context.minimum_version = context.maximum_version = version
            for host in ("localhost", "127.0.0.1"):  # both names are in the dev certificate
                status, body = https_request(port, context, host=host)
                assert status == 200 and body["scheme"] == "https"
            seen[version] = body["tls"]
    assert seen[ssl.TLSVersion.TLSv1_2]["tls_version"] == 0x0303
    assert seen[ssl.TLSVersion.TLSv1_3]["tls_version"] == 0x0304
    # ECDHE-ECDSA-AES{128,256}-GCM or CHACHA20-POLY1305 (IANA 0xC02B, 0xC02C, 0xCCA9)
    assert seen[ssl.TLSVersion.TLSv1_2]["cipher_suite"] in {0xC02B, 0xC02C, 0xCCA9}
    assert seen[ssl.TLSVersion.TLSv1_3]["cipher_suite"] in {0x1301, 0x1302, 0x1303}
    for tls in seen.values():
        assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None


@pytest.mark.parametrize("version", LEGACY, ids=["tls1.0", "tls1.1"])
def test_tls10_and_tls11_are_refused(tmp_path: Path, version: ssl.TLSVersion):
    settings = settings_for(tmp_path / "home")
    legacy = _legacy_client(settings, version)
    assert https_request(_permissive_server(settings, version), legacy)[0] == 200  # control
    app = EchoApp()
    with running(build_config(settings, lambda: app), app) as port:
        with pytest.raises(ssl.SSLError):
            https_request(port, legacy)
        assert https_request(port, client_context(server_cert(settings)))[0] == 200
    assert len(app.scopes) == 1


def test_tls12_without_forward_secrecy_or_aead_is_refused(tmp_path: Path):
    settings = settings_for(tmp_path / "home")
    app = EchoApp()
    with running(build_config(settings, lambda: app), app) as port:
        for suite in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA", "AES128-GCM-SHA256"):
            context = client_context(server_cert(settings))
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers(suite)
            with pytest.raises(ssl.SSLError):
                https_request(port, context)
    assert app.scopes == []


def test_plaintext_request_on_the_tls_port_gets_no_http_answer(tmp_path: Path):
    settings = settings_for(tmp_path / "home")
    app = EchoApp()
    with (
        running(build_config(settings, lambda: app), app) as port,
        socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as conn,
    ):
        conn.sendall(raw_request())
        assert not wait_closed(conn).startswith(b"HTTP/")
    assert app.scopes == []


# --- mTLS -----------------------------------------------------------------------------------------


def _refused(port: int, context: ssl.SSLContext) -> bool:
    """True when the server refuses the client certificate (at the handshake, or, with TLS 1.3,
    on the first read: the client's side of the handshake completes before the server checks)."""
    try:
        https_request(port, context)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return False


def test_mtls_required_refuses_clients_without_a_valid_certificate(tmp_path: Path):
    pki, stranger = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other", ca_name="other-ca")
    settings = settings_for(tmp_path / "home", tls_client_ca_file=pki.ca_file, mtls_required=True)
    app = EchoApp()
    with running(build_config(settings, lambda: app), app) as port:
        cert = server_cert(settings)
        assert _refused(port, client_context(cert))
        assert _refused(port, client_context(cert, stranger))
        status, body = https_request(port, client_context(cert, pki))
    assert status == 200
    tls = body["tls"]
    assert len(tls["client_cert_chain"]) == 1
    assert pem_to_der(tls["client_cert_chain"][0].encode()) == pem_to_der(pki.client_cert_pem)
    assert tls["client_cert_name"] == "CN=svc-a"
    assert len(app.scopes) == 1  # the refused clients never reached the app


def test_mtls_optional_admits_clients_without_a_certificate(tmp_path: Path):
    pki, stranger = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other", ca_name="other-ca")
    settings = settings_for(tmp_path / "home", tls_client_ca_file=pki.ca_file)
    app = EchoApp()
    with running(build_config(settings, lambda: app), app) as port:
        cert = server_cert(settings)
        anonymous = https_request(port, client_context(cert))
        identified = https_request(port, client_context(cert, pki))
        assert _refused(port, client_context(cert, stranger))  # given: must verify
    assert anonymous[0] == 200 and anonymous[1]["tls"]["client_cert_chain"] == []
    assert identified[0] == 200 and len(identified[1]["tls"]["client_cert_chain"]) == 1


def test_each_request_on_a_connection_gets_its_own_copy_of_the_tls_scope(tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    settings = settings_for(tmp_path / "home", tls_client_ca_file=pki.ca_file)
    app = EchoApp()
    with running(build_config(settings, lambda: app), app) as port:
        context = client_context(server_cert(settings), pki)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            for _ in range(2):
                conn.sendall(raw_request())
                assert read_response(conn)[0] == 200
    first, second = (scope["extensions"]["tls"] for scope in app.scopes)
    assert first == second and first is not second
    assert first["client_cert_chain"] is not second["client_cert_chain"]


# --- plaintext opt-in -----------------------------------------------------------------------------


def test_unsafe_plaintext_serves_http_and_warns_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    settings = settings_for(tmp_path / "home", unsafe_plaintext=True)
    app = EchoApp()
    with (
        caplog.at_level(logging.WARNING, logger="strongroom"),
        running(build_config(settings, lambda: app), app) as port,
        socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as conn,
    ):
        conn.sendall(raw_request())
        status, body = read_response(conn)
    assert status == 200 and body["scheme"] == "http" and body["tls"] is None
    warnings_logged = [r for r in caplog.records if r.getMessage() == PLAINTEXT_WARNING]
    assert len(warnings_logged) == 1 and warnings_logged[0].levelno == logging.WARNING


def test_tls_server_does_not_warn_about_plaintext(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    settings = settings_for(tmp_path / "home")
    app = EchoApp()
    with (
        caplog.at_level(logging.WARNING, logger="strongroom"),
        running(build_config(settings, lambda: app), app) as port,
    ):
        assert https_request(port, client_context(server_cert(settings)))[0] == 200
    assert PLAINTEXT_WARNING not in caplog.messages


# --- refusing to start ----------------------------------------------------------------------------


def _write_dev_pair(settings: Settings, when: datetime) -> None:
    dev = generate_development_certificate(lambda: when, os.urandom)
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    settings.tls_cert_file.write_bytes(dev.cert_pem)
    settings.tls_key_file.write_bytes(dev.key_pem)


def test_refuses_to_start_without_a_certificate(tmp_path: Path):
    settings = load_settings(home=tmp_path / "fresh")
    with pytest.raises(ConfigurationError, match="no TLS certificate at") as refused:
        build_config(settings, EchoApp())
    assert "unsafe_plaintext" in (refused.value.hint or "")
    assert "strongroom init" in (refused.value.hint or "")


def test_refuses_a_key_that_does_not_belong_to_the_certificate(tmp_path: Path):
    settings = settings_for(tmp_path / "home")
    assert settings.tls_key_file is not None
    other = generate_development_certificate(lambda: datetime.now(UTC), os.urandom)
    settings.tls_key_file.write_bytes(other.key_pem)
    with pytest.raises(ConfigurationError, match="does not belong to the certificate"):
        build_config(settings, EchoApp())


def test_refuses_an_expired_or_not_yet_valid_certificate(tmp_path: Path):
    settings = settings_for(tmp_path / "home")
    _write_dev_pair(settings, datetime.now(UTC) - timedelta(days=91))
    with pytest.raises(ConfigurationError, match="expired on"):
        build_config(settings, EchoApp())
    _write_dev_pair(settings, datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(ConfigurationError, match="not valid before"):
        build_config(settings, EchoApp())


def test_refuses_a_key_readable_by_other_users(tmp_path: Path):
    settings = settings_for(tmp_path / "home")
    assert settings.tls_key_file is not None
    settings.tls_key_file.chmod(0o640)
    with pytest.raises(ConfigurationError, match="readable by other users") as refused:
        build_config(settings, EchoApp())
    assert "chmod 600" in (refused.value.hint or "")


def test_refuses_an_unreadable_client_ca(tmp_path: Path):
    missing = load_settings(home=tmp_path / "a", tls_client_ca_file=tmp_path / "nope.pem")
    bootstrap.initialise_tls(missing)
    with pytest.raises(ConfigurationError, match="no client CA bundle"):
        build_config(missing, EchoApp())
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    broken = load_settings(home=tmp_path / "b", tls_client_ca_file=garbage)
    bootstrap.initialise_tls(broken)
    with pytest.raises(ConfigurationError, match="cannot load the TLS configuration"):
        build_config(broken, EchoApp())


def test_serve_command_refuses_an_instance_without_a_certificate(tmp_path: Path):
    refused = cli(tmp_path / "fresh", "serve", "--port", "1", expect=7)
    assert "no TLS certificate" in refused.stderr and "unsafe_plaintext" in refused.stderr


# --- init -----------------------------------------------------------------------------------------


def test_init_writes_a_development_certificate_and_never_overwrites_it(tmp_path: Path):
    home = tmp_path / "home"
    cli_json(home, "init")
    cert, key = home / "tls" / "server.crt", home / "tls" / "server.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (home / "tls").stat().st_mode & 0o077 == 0
    summary = check_certificate_and_key(
        cert.read_bytes(), key.read_bytes(), datetime.now(UTC), cert_name="c", key_name="k"
    )
    assert summary.subject == "CN=strongroom-dev"
    assert timedelta(days=89) < summary.not_after - datetime.now(UTC) <= timedelta(days=90)
    before = (cert.read_bytes(), key.read_bytes())
    settings = load_settings(home=home)
    assert bootstrap.initialise_tls(settings) is None
    key.unlink()  # a half pair is left for a human, not completed or replaced
    assert bootstrap.initialise_tls(settings) is None
    assert cert.read_bytes() == before[0] and not key.exists()


def test_init_leaves_operator_certificates_alone(tmp_path: Path):
    own = tmp_path / "own.crt", tmp_path / "own.key"
    settings = load_settings(home=tmp_path / "home", tls_cert_file=own[0], tls_key_file=own[1])
    assert bootstrap.initialise_tls(settings) is None
    assert not own[0].exists() and not (tmp_path / "home" / "tls").exists()


# --- several workers, as `strongroom serve` runs them ---------------------------------------------


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def _await_lines(proc: subprocess.Popen[bytes], needle: str, count: int) -> list[str]:
    """Read the server's stderr until ``needle`` appeared ``count`` times (bounded in time)."""
    assert proc.stderr is not None
    fd, text = proc.stderr.fileno(), ""
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while text.count(needle) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise AssertionError(f"timed out waiting for {needle!r}: {text}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"the server exited: {text}")
            text += chunk.decode(errors="replace")
    return text.splitlines()


def _serve_in_subprocess(
    home: Path, port: int, app: str, workers: int = 2
) -> subprocess.Popen[bytes]:
    """``serve`` with plaintext workers, as the CLI calls it, in a process of its own."""
    script = (
        "import sys\n"
        "from strongroom.config import load_settings\n"
        "from strongroom.entrypoints.http.server import serve\n"
        "from strongroom.errors import ConfigurationError\n"
        f"settings = load_settings(home={str(home)!r}, port={port}, workers={workers},"
        " unsafe_plaintext=True)\n"
        "try:\n"
        f"    serve(settings, app={app!r})\n"
        "except ConfigurationError as exc:\n"
        "    sys.exit(f'refused: {exc}')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> str:
    """Wait (bounded) for ``proc`` to exit by itself; its stderr."""
    try:
        proc.wait(60)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait(READ_TIMEOUT_S)
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    proc.stderr.close()
    return log


def test_a_single_worker_that_cannot_bind_fails_with_a_configuration_error(tmp_path: Path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = int(taken.getsockname()[1])
        proc = _serve_in_subprocess(tmp_path / "home", port, "tls_harness:create_app", 1)
        log = _finish(proc)
    assert proc.returncode == 1 and "refused: the server did not start" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_workers_that_cannot_start_stop_the_server_instead_of_restarting(tmp_path: Path):
    app = "tls_harness:create_unconfigured_app"
    proc = _serve_in_subprocess(tmp_path / "home", _free_port(), app)
    log = _finish(proc)
    assert proc.returncode == 1 and "refused: the server did not start" in log
    failures = log.count("the worker cannot start: error [config.invalid]: no keyring passphrase")
    assert 1 <= failures <= 2  # one per worker at most: no restart loop
    assert "Traceback" not in log


@pytest.mark.slow
def test_serve_with_two_workers_exports_settings_and_warns_in_each_worker(tmp_path: Path):
    home, port = tmp_path / "home", _free_port()
    proc = _serve_in_subprocess(home, port, "tls_harness:create_app")
    try:
        lines = _await_lines(proc, "Application startup complete", 2)
        with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as conn:
            conn.sendall(raw_request())
            status, body = read_response(conn)
    finally:
        proc.terminate()
        proc.wait(READ_TIMEOUT_S)
        assert proc.stderr is not None
        proc.stderr.close()
    assert status == 200 and body["scheme"] == "http"
    assert body["env_home"] == str(home.resolve()) and body["env_port"] == str(port)
    assert body["pid"] != proc.pid
    assert sum(PLAINTEXT_WARNING in line for line in lines) == 2
