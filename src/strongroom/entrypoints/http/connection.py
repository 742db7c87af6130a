"""One client connection: uvicorn's httptools protocol, with a header deadline and the TLS scope.

Why a subclass of a uvicorn internal: the two things done here can only be done where bytes
arrive, below the ASGI app, and uvicorn has no public hook for either.

- **Slow clients (slowloris).** uvicorn bounds the idle time between requests (keep-alive) but
  not the time a client may take to send a request line and headers, nor their size (llhttp has
  no limit). A connection that has not completed its headers ``header_timeout_s`` after it was
  made, or after a new request began, is closed without a response; headers larger than
  ``MAX_HEADER_BYTES`` get 431. The app never sees such a request.
- **Client certificates (mTLS).** The ASGI TLS extension (``scope["extensions"]["tls"]``) is not
  filled by uvicorn. It is read once per connection, when the handshake is done, and copied into
  each request's scope: ``client_cert_chain`` holds the verified leaf certificate as PEM (the
  stdlib exposes only the leaf before Python 3.13), empty without a client certificate.

Invariants: the deadline runs whenever the connection waits for a request line or headers and
never while the app works on a request or reads its body; the TLS fields come from the handshake
alone, never from headers. Pinned by ``tests/integration/test_server_protocol.py``; re-check them
when upgrading uvicorn (``on_message_begin``, ``on_headers_complete``, ``cycle``, ``parser``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from strongroom.core.crypto.certificates import certificate_subject
from strongroom.errors import InvalidInputError

MAX_HEADER_BYTES: Final = 64 * 1024
"""Request line plus headers. Generous for bearer tokens; nginx's default is 32 KiB. Counted per
read, so a pipelined read that ends one large request and begins the next may over-count."""

DEFAULT_HEADER_TIMEOUT_S: Final = 10.0

TLS_VERSIONS: Final = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
"""``ssl.SSLObject.version()`` to the wire value the ASGI TLS extension carries."""

_RESPONSE_431: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
)

logger = logging.getLogger(__name__)


def _cipher_suite_id(ssl_object: ssl.SSLObject) -> int | None:
    """The IANA number of the negotiated cipher suite (``get_ciphers`` ids carry 0x0300 above)."""
    negotiated = ssl_object.cipher()
    if negotiated is None:
        return None
    for cipher in ssl_object.context.get_ciphers():
        if cipher["name"] == negotiated[0]:
            return int(cipher["id"]) & 0xFFFF
    return None


@dataclass(frozen=True, slots=True)
class ConnectionTls:
    """What the handshake established, read once per connection.

    The client certificate was verified against the client CA during the handshake (the
    server's context refuses unverifiable ones), so ``client_cert_error`` is always None.
    """

    client_chain: tuple[str, ...]
    client_name: str | None
    tls_version: int | None
    cipher_suite: int | None

    def scope_extension(self) -> dict[object, object]:
        """The ASGI TLS extension: a fresh dict and list per request, so that an app that
        changes its scope cannot change what the next request on the connection sees."""
        return {
            "server_cert": None,
            "client_cert_chain": list(self.client_chain),
            "client_cert_name": self.client_name,
            "client_cert_error": None,
            "tls_version": self.tls_version,
            "cipher_suite": self.cipher_suite,
        }


def connection_tls(transport: asyncio.BaseTransport) -> ConnectionTls | None:
    """The TLS facts of a connection, or None when it is not TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    name = None
    if der:
        try:
            name = certificate_subject(der)
        except InvalidInputError:  # OpenSSL verified it, so unreadable only in theory
            name = None
    return ConnectionTls(
        client_chain=(ssl.DER_cert_to_PEM_cert(der),) if der else (),
        client_name=name,
        tls_version=TLS_VERSIONS.get(ssl_object.version() or ""),
        cipher_suite=_cipher_suite_id(ssl_object),
    )


class HardenedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring. The header deadline is the ``header_timeout_s`` attribute of
    uvicorn's config (``server.ServerConfig`` carries it into every worker)."""

    _header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None
    _counting_header_bytes: bool = False
    _header_bytes: int = 0
    _tls: ConnectionTls | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timeout_s = float(
            getattr(self.config, "header_timeout_s", DEFAULT_HEADER_TIMEOUT_S)
        )
        self._tls = connection_tls(transport)
        self._arm_header_timer()
        self._counting_header_bytes, self._header_bytes = True, 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._between_requests():
            self._arm_header_timer()  # bytes after a response: a new request (or junk) begins
        super().data_received(data)
        if self._counting_header_bytes and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._reject_oversized_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls.scope_extension()}
        if self._header_timer is None:
            self._arm_header_timer()
        self._counting_header_bytes, self._header_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        self._counting_header_bytes = False
        super().on_headers_complete()

    # --- the header deadline ----------------------------------------------------------------

    def _between_requests(self) -> bool:
        cycle: RequestResponseCycle | None = self.cycle
        return cycle is None or cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            logger.info(
                "closing a connection from %s: no complete request headers within %.1f s",
                self.client[0] if self.client else "?",
                self._header_timeout_s,
            )
            self.transport.close()

    def _reject_oversized_headers(self) -> None:
        self._stop_header_timer()
        self._counting_header_bytes = False
        if self._between_requests():  # else a response is being written: just close
            self.transport.write(_RESPONSE_431)
        self.transport.close()
