"""The connection protocol (``entrypoints.http.connection``): header deadline and header size.

Real servers from ``build_config`` on 127.0.0.1 (TLS, as deployed, unless a test says why not).
Timing assertions only bound waits from above or compare with the configured deadline; every
wait is a blocking socket read with a timeout, never a sleep.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tls_harness import (
    READ_TIMEOUT_S,
    EchoApp,
    client_context,
    raw_request,
    read_response,
    running,
    wait_closed,
)

from strongroom import bootstrap
from strongroom.config import load_settings
from strongroom.entrypoints.http.connection import MAX_HEADER_BYTES
from strongroom.entrypoints.http.server import build_config

HEADER_TIMEOUT_S = 0.5


@contextmanager
def server(
    tmp_path: Path, app: EchoApp | None = None, **overrides: Any
) -> Iterator[tuple[EchoApp, ssl.SSLContext, int]]:
    settings = load_settings(
        home=tmp_path / "home",
        header_timeout_s=HEADER_TIMEOUT_S,
        keep_alive_timeout_s=60,  # far beyond every bound below: only the deadline can close
        **overrides,
    )
    bootstrap.initialise_tls(settings)
    assert settings.tls_cert_file is not None
    app = app or EchoApp()
    with running(build_config(settings, lambda: app), app) as port:
        yield app, client_context(settings.tls_cert_file), port


@contextmanager
def connect(context: ssl.SSLContext, port: int) -> Iterator[ssl.SSLSocket]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        yield conn


def closed_after(conn: ssl.SSLSocket) -> tuple[bytes, float]:
    started = time.monotonic()
    received = wait_closed(conn)
    return received, time.monotonic() - started


# --- slowloris ----------------------------------------------------------------------------------


def test_half_a_request_line_is_closed_after_the_header_timeout(tmp_path: Path):
    with server(tmp_path) as (app, context, port), connect(context, port) as conn:
        opened = time.monotonic()
        conn.sendall(b"GET /v2/health/li")
        received, _ = closed_after(conn)
        elapsed = time.monotonic() - opened
    assert received == b""  # closed without a response
    assert HEADER_TIMEOUT_S * 0.9 <= elapsed < READ_TIMEOUT_S / 2
    assert app.scopes == []


def test_a_silent_connection_is_closed_after_the_header_timeout(tmp_path: Path):
    with server(tmp_path) as (app, context, port), connect(context, port) as conn:
        received, elapsed = closed_after(conn)
    assert received == b"" and elapsed < READ_TIMEOUT_S / 2
    assert app.scopes == []


def test_headers_trickled_byte_by_byte_do_not_extend_the_deadline(tmp_path: Path):
    """Each byte arrives well inside the deadline; the whole request does not."""
    request = raw_request()
    with server(tmp_path) as (app, context, port), connect(context, port) as conn:
        opened = time.monotonic()
        conn.settimeout(HEADER_TIMEOUT_S / 5)
        closed = False
        for byte in request[:-1]:
            try:
                conn.sendall(bytes([byte]))
                if conn.recv(1) == b"":  # waits up to a fifth of the deadline: the trickle rate
                    closed = True
                    break
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                closed = True
                break
        elapsed = time.monotonic() - opened
    assert closed and elapsed < HEADER_TIMEOUT_S * 3
    assert app.scopes == []


def test_the_deadline_restarts_for_each_request_on_a_keep_alive_connection(tmp_path: Path):
    with server(tmp_path) as (app, context, port), connect(context, port) as conn:
        for _ in range(2):  # two full requests, each answered
            conn.sendall(raw_request())
            assert read_response(conn)[0] == 200
        conn.sendall(b"POST / HTTP/1.1\r\nhost: loc")
        received, elapsed = closed_after(conn)
    assert received == b"" and HEADER_TIMEOUT_S * 0.9 <= elapsed < READ_TIMEOUT_S / 2
    assert len(app.scopes) == 2


def test_blank_lines_between_requests_do_not_escape_the_deadline(tmp_path: Path):
    with server(tmp_path) as (_, context, port), connect(context, port) as conn:
        conn.sendall(raw_request())
        assert read_response(conn)[0] == 200
        conn.sendall(b"\r\n")  # llhttp skips it without starting a message
        received, elapsed = closed_after(conn)
    assert received == b"" and elapsed < READ_TIMEOUT_S / 2


def test_the_deadline_does_not_cover_a_slow_body_or_a_slow_app(tmp_path: Path):
    app = EchoApp(delay_s=HEADER_TIMEOUT_S * 3)  # the app works longer than the deadline
    with server(tmp_path, app) as (_, context, port), connect(context, port) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\n\r\nab")
        conn.settimeout(HEADER_TIMEOUT_S * 3)
        with pytest.raises(TimeoutError):  # the server keeps the connection open meanwhile
            conn.recv(1)
        conn.settimeout(READ_TIMEOUT_S)
        conn.sendall(b"cde")
        status, body = read_response(conn)
    assert status == 200 and body["body"] == "abcde"


def test_pipelined_requests_are_all_answered(tmp_path: Path):
    with server(tmp_path) as (app, context, port), connect(context, port) as conn:
        conn.sendall(raw_request(body=b"one") + raw_request(body=b"two"))
        first, second = read_response(conn), read_response(conn)
    assert first[1]["body"] == "one" and second[1]["body"] == "two"
    assert len(app.scopes) == 2


# --- header size ----------------------------------------------------------------------------------


def test_oversized_headers_get_431_without_reaching_the_app(tmp_path: Path):
    with server(tmp_path) as (app, context, port), connect(context, port) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nhost: localhost\r\nx-big: ")
        conn.sendall(b"a" * (MAX_HEADER_BYTES + 1024))
        received = wait_closed(conn)
    assert received.startswith(b"HTTP/1.1 431 ")
    assert app.scopes == []


def test_headers_just_under_the_limit_are_served(tmp_path: Path):
    big = b"a" * (MAX_HEADER_BYTES - 1024)
    with server(tmp_path) as (app, context, port), connect(context, port) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nhost: localhost\r\nx-big: " + big + b"\r\n\r\n")
        status, _ = read_response(conn)
    assert status == 200
    assert (b"x-big", big) in app.scopes[0]["headers"]
