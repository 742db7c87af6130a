"""``strongroom serve``: uvicorn, configured from ``Settings`` and hardened, running the app.

The listener speaks HTTPS only (TLS 1.2 and 1.3; for 1.2 only ECDHE key exchange with AEAD
ciphers; no compression, renegotiation or session tickets), optionally requiring client
certificates (mTLS). Plain HTTP exists only with ``unsafe_plaintext``, and then every process
that serves logs a warning when it starts.

Invariants:
- Nothing listens before the certificate, key and client CA have been checked in the parent
  process: missing, unreadable, mismatched, expired or not-yet-valid files, or a key that other
  users can read, are a ``ConfigurationError`` with a hint, never a worker crash.
- Worker processes are spawned (uvicorn's supervisor) and rebuild everything from the uvicorn
  ``Config`` and the environment: the config holds only picklable values (module-level
  functions and classes, paths), and ``serve`` exports to ``os.environ`` the settings the CLI can
  override, because the app factory reads its settings from there.
- uvicorn trusts no proxy headers (``X-Forwarded-For`` would let any client choose the address
  that the audit log and IP conditions see), sends no ``server`` header, and keeps no access log:
  the audit trail records every request.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import ssl
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

import uvicorn
from uvicorn.config import LOGGING_CONFIG, STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from strongroom import bootstrap
from strongroom.config import ENV_PREFIX, Settings
from strongroom.core.crypto.certificates import CertificateSummary, check_certificate_and_key
from strongroom.entrypoints.http.connection import MAX_HEADER_BYTES, HardenedHttpToolsProtocol
from strongroom.errors import ConfigurationError, StrongroomError

APP_FACTORY: Final = "strongroom.entrypoints.http.app:create_app"
"""Zero-argument factory; it loads ``Settings`` from the environment in each worker."""

TLS12_CIPHERS: Final = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
"""TLS 1.2 suites: forward secret and AEAD only (Mozilla's "intermediate" list). TLS 1.3's
suites are all AEAD and are left at OpenSSL's defaults."""

LIMIT_CONCURRENCY: Final = 1000
"""Per worker: open connections plus running requests beyond which requests get 503 at once,
before the app runs, instead of queueing without bound."""

GRACEFUL_SHUTDOWN_S: Final = 30
"""On SIGTERM, requests in flight get this long to finish before connections are closed."""

EXPORTED_SETTINGS: Final = ("home", "host", "port", "workers", "unsafe_plaintext")
"""The settings ``strongroom serve`` can override on its command line."""

PLAINTEXT_WARNING: Final = (
    "unsafe_plaintext is set: serving plain HTTP without TLS. API keys, tokens, passwords, model"
    " inputs and predictions cross the network unencrypted and can be read or altered. Only run"
    " like this behind a TLS-terminating proxy on a network you trust."
)

logger = logging.getLogger(__name__)


class ServerConfig(uvicorn.Config):
    """uvicorn's ``Config`` plus what each worker needs from the settings.

    ``load()`` runs once in every process that serves (each worker, or the only process), which
    is where the plaintext warning belongs: a warning only the supervisor printed would be lost
    from the logs of a restarted worker.
    """

    def __init__(self, app: Any, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s

    def load(self) -> None:
        """Load the app; in a supervised worker, a failure exits with uvicorn's start-up failure
        status, which stops the supervisor instead of restarting the worker for ever."""
        if not self.is_ssl:
            logger.warning(PLAINTEXT_WARNING)
        try:
            super().load()
        except StrongroomError as exc:
            if self.workers == 1:
                raise  # the CLI's error boundary reports it
            logger.error("the worker cannot start: error [%s]: %s", exc.code, exc)  # noqa: TRY400 - a clear one-liner, no traceback
            sys.exit(STARTUP_FAILURE)
        except Exception:
            if self.workers == 1:
                raise
            logger.exception("the worker cannot start")
            sys.exit(STARTUP_FAILURE)


def tls_context(
    config: uvicorn.Config,
    default_factory: Callable[[], ssl.SSLContext],  # noqa: ARG001 - uvicorn's is too lax
) -> ssl.SSLContext:
    """The server's TLS context, built from the paths and client-certificate mode on ``config``.

    Module-level so that it pickles into spawned workers. Raises ``ssl.SSLError`` or ``OSError``
    on unusable files (``build_config`` calls it once in the parent to turn those into
    ``ConfigurationError`` before anything listens).
    """
    if config.ssl_certfile is None or config.ssl_keyfile is None:
        raise ConfigurationError("TLS is on but no certificate or key is configured")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_NO_TICKET
    )
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile, password=_no_password)
    if config.ssl_ca_certs is not None:
        context.load_verify_locations(cafile=config.ssl_ca_certs)
        context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    return context


def _no_password() -> str:
    """OpenSSL would otherwise prompt on the terminal for an encrypted key's password."""
    raise ConfigurationError("the TLS private key is encrypted; the server cannot prompt for it")


def check_tls_files(settings: Settings) -> CertificateSummary:
    """Refuse (``ConfigurationError``) a missing or unusable certificate, key or client CA."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None or key is None:
        raise ConfigurationError("no TLS certificate configured", hint=_MISSING_HINT)
    cert_pem = _read(cert, "TLS certificate")
    if key.is_file() and key.stat().st_mode & 0o077:
        raise ConfigurationError(
            f"the TLS private key {key} is readable by other users",
            hint=f"run: chmod 600 {key} (Kubernetes: defaultMode 0400 on the secret volume)",
        )
    key_pem = _read(key, "TLS private key")
    if settings.tls_client_ca_file is not None:
        _read(
            settings.tls_client_ca_file,
            "client CA bundle",
            hint="tls_client_ca_file names a PEM file of the CAs that issue client certificates",
        )
    return check_certificate_and_key(
        cert_pem, key_pem, bootstrap.utc_now(), cert_name=str(cert), key_name=str(key)
    )


_MISSING_HINT = (
    "run `strongroom init` for a development certificate, or set tls_cert_file and"
    " tls_key_file; plain HTTP needs unsafe_plaintext and belongs only behind a TLS proxy"
)


def _read(path: Path, what: str, hint: str = _MISSING_HINT) -> bytes:
    if not path.is_file():
        raise ConfigurationError(f"no {what} at {path}", hint=hint)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} {path}: {exc.strerror}") from None


def log_config() -> dict[str, Any]:
    """uvicorn's logging set-up, plus Strongroom's own loggers on the same handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["strongroom"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def build_config(
    settings: Settings,
    app: Any = APP_FACTORY,
    *,
    factory: bool = True,
    logging_config: dict[str, Any] | None = None,
) -> ServerConfig:
    """The uvicorn configuration for ``settings``, after checking every TLS file.

    ``app`` is an import string (required for several workers) or, in tests, an ASGI app;
    ``logging_config`` None keeps the current logging (tests), the default is ``log_config()``.
    """
    summary = None if settings.unsafe_plaintext else check_tls_files(settings)
    tls = {} if summary is None else _tls_options(settings)
    config = ServerConfig(
        app,
        header_timeout_s=settings.header_timeout_s,
        factory=factory,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=HardenedHttpToolsProtocol,
        ws="none",
        lifespan="on",  # a failing start-up (audit log, models) stops the worker
        interface="asgi3",
        proxy_headers=False,
        server_header=False,
        date_header=True,
        access_log=False,
        log_config=logging_config,
        limit_concurrency=LIMIT_CONCURRENCY,
        timeout_keep_alive=math.ceil(settings.keep_alive_timeout_s),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **tls,
    )
    if summary is not None:  # after ServerConfig set up logging, so that this is seen
        try:
            tls_context(config, ssl.create_default_context)  # what each worker will do
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"cannot load the TLS configuration: {exc}",
                hint="check tls_cert_file, tls_key_file and tls_client_ca_file",
            ) from None
        logger.info(
            "TLS certificate %s (sha256 %s) valid until %s%s",
            summary.subject,
            summary.fingerprint,
            summary.not_after.date().isoformat(),
            "; client certificates required" if settings.mtls_required else "",
        )
    return config


def _tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS options: read by ``tls_context`` in each worker."""
    return {
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
        "ssl_ca_certs": settings.tls_client_ca_file,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if settings.mtls_required else ssl.CERT_OPTIONAL,
        "ssl_context_factory": tls_context,
    }


def export_settings(settings: Settings, environ: MutableMapping[str, str] | None = None) -> None:
    """Put the command line's overrides where the app factory of every worker reads them."""
    target = os.environ if environ is None else environ
    for name in EXPORTED_SETTINGS:
        value = getattr(settings, name)
        target[f"{ENV_PREFIX}{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )


def serve(settings: Settings, app: str = APP_FACTORY) -> None:
    """Run the server until SIGINT/SIGTERM; with ``workers > 1`` under uvicorn's supervisor,
    which binds the socket once and restarts a worker that dies."""
    config = build_config(settings, app, logging_config=log_config())
    export_settings(settings)
    if config.workers > 1:
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
        started = not any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    else:
        server = uvicorn.Server(config)
        try:
            server.run()
        except SystemExit as exc:  # uvicorn's way of failing a start-up (lifespan, bind)
            if exc.code != STARTUP_FAILURE:
                raise
        started = server.started
    if not started:
        raise ConfigurationError(
            "the server did not start (see the log above)",
            hint=f"is {settings.host}:{settings.port} free, and does the app start?",
        )
