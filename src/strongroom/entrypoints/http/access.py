"""Request -> principal -> decision: the one authenticator and the one authorization call.

``Access.require(request, action, resource)`` is what every protected route calls first. It
authenticates the request with exactly one credential and then calls
``core.policy.rbac.authorize``, which raises (deny by default). Both outcomes are written to
the request's ``RequestLog`` (principal, credential, and on refusal the internal reason) so
that the audit record says who tried what and why it was refused, while the client sees only
the opaque 401/403 of ``problems``.

Credentials, in the ``Authorization: Bearer`` header unless noted:

* ``sr_<id>_<secret>``: an API key (``IdentityService.authenticate_api_key``).
* ``srs_<id>_<secret>``: a password (+ TOTP) login session.
* ``<header>.<claims>.<signature>``: a JWT from a configured issuer or from this server's own
  token endpoint. A verified token is cached until it expires (``JwtVerifier.cached``, on the
  event loop); otherwise verification runs in a worker thread, since it may fetch keys.
* No ``Authorization`` header, on a TLS connection that presented a client certificate the
  server verified against its client CA: that certificate (mTLS), if it is bound to a
  principal. A certificate never overrides an ``Authorization`` header.

Anything else (other schemes, several credentials in one header, malformed values) is the same
401.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import ssl
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final, Protocol

from strongroom.core.identity.principal import Principal
from strongroom.core.identity.tokens import VerifiedToken, rejection_reason
from strongroom.core.policy.conditions import RequestContext, StepUpSettings, denial_reason
from strongroom.core.policy.rbac import Action, Decision, Resource, authorize
from strongroom.core.types import Clock
from strongroom.entrypoints.http.guard import Scope, header, request_log
from strongroom.errors import AuthenticationError, ForbiddenError
from strongroom.services.identity import IdentityService
from strongroom.services.identity import refusal_reason as identity_refusal_reason

API_KEY_PREFIX: Final = "sr_"
SESSION_PREFIX: Final = "srs_"
MAX_CREDENTIAL_CHARS: Final = 8192
_LOG: Final = logging.getLogger("strongroom.auth")


class BearerVerifier(Protocol):
    """What ``adapters.identity.jwt_verifier.JwtVerifier`` offers the server."""

    def cached(self, token: str) -> VerifiedToken | None: ...

    def verify(self, token: str) -> VerifiedToken: ...


class Request(Protocol):
    """What access checks read of a request: its ASGI scope (a Starlette ``Request`` is one;
    the raw inference endpoint passes a ``ScopeView``)."""

    @property
    def scope(self) -> Scope: ...


class ScopeView:
    """A bare ASGI scope as a ``Request`` for access checks, without Starlette's wrapper."""

    __slots__ = ("scope",)

    def __init__(self, scope: Scope) -> None:
        self.scope = scope


class Access:
    def __init__(
        self,
        *,
        identity: IdentityService,
        tokens: BearerVerifier | None,
        roles_from_token: frozenset[str],
        clock: Clock,
        step_up: StepUpSettings,
        blocking_store: bool = False,
    ) -> None:
        """``blocking_store``: credential checks may read a remote database on every request
        (PostgreSQL: the credential epoch, cache misses), so they run in a worker thread
        instead of stalling the event loop. The embedded store's checks are memory reads."""
        self._identity = identity
        self._blocking = blocking_store
        self._tokens = tokens
        self._roles_from_token = roles_from_token
        self._clock = clock
        self._step_up = step_up

    async def require(self, request: Request, action: Action, resource: Resource) -> Principal:
        """The caller, allowed to do ``action`` on ``resource`` now; raises otherwise."""
        principal = await self.authenticate(request)
        self.authorize(request, principal, action, resource)
        return principal

    def authorize(
        self, request: Request, principal: Principal, action: Action, resource: Resource
    ) -> Decision:
        log = request_log(request.scope)
        try:
            return authorize(principal, action, resource, self.context(request))
        except ForbiddenError as exc:
            reason = denial_reason(exc)
            log.details["denial"] = reason.value if reason else "forbidden"
            raise

    def context(self, request: Request) -> RequestContext:
        return RequestContext(
            now=self._clock(), client_ip=client_ip(request), step_up=self._step_up
        )

    async def authenticate(self, request: Request) -> Principal:
        log = request_log(request.scope)
        try:
            principal = await self._authenticate(request)
        except AuthenticationError as exc:
            log.details["auth"] = _why(exc)
            raise
        log.principal = principal.id
        log.details["credential"] = f"{principal.credential.kind.value}:{principal.credential.id}"
        return principal

    async def _authenticate(self, request: Request) -> Principal:
        raw = header(request.scope, b"authorization")
        if raw is None:
            fingerprint = client_certificate_fingerprint(request)
            if fingerprint is None:
                raise AuthenticationError
            return await self._call(self._identity.authenticate_certificate, fingerprint)
        scheme, _, token = raw.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > MAX_CREDENTIAL_CHARS:
            raise AuthenticationError
        token = token.strip()
        if token.startswith(SESSION_PREFIX):
            return await self._call(self._identity.authenticate_session, token)
        if token.startswith(API_KEY_PREFIX):
            return await self._call(self._identity.authenticate_api_key, token)
        if token.count(".") == 2 and self._tokens is not None:  # noqa: PLR2004 - a compact JWS
            return await self._bearer_token(token)
        raise AuthenticationError

    async def _bearer_token(self, token: str) -> Principal:
        tokens = self._tokens
        if tokens is None:
            raise AuthenticationError
        verified = tokens.cached(token)
        if verified is None:
            verified = await asyncio.to_thread(tokens.verify, token)
        from_token = verified.issuer in self._roles_from_token
        return await self._call(
            functools.partial(
                self._identity.complete_token_principal,
                verified.principal,
                roles_from_token=from_token,
            )
        )

    async def _call(self, check: Callable[..., Principal], *args: Any) -> Principal:
        if self._blocking:
            return await asyncio.to_thread(check, *args)
        return check(*args)


def _why(error: AuthenticationError) -> str:
    """The internal reason of a refusal, for the audit record only."""
    stored = identity_refusal_reason(error)
    if stored is not None:
        return stored
    token = rejection_reason(error)
    if token is not None:
        return str(token.value)
    cause = error.__cause__
    return type(cause).__name__.lower() if cause is not None else "unauthenticated"


def client_ip(request: Request) -> IPv4Address | IPv6Address | None:
    """The transport peer: proxies' headers are never trusted here."""
    client = request.scope.get("client")
    if not client:
        return None
    return _parse_ip(str(client[0]))


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    """Parsing is ~10 µs; clients repeat, so the (bounded) cache pays on the request path."""
    try:
        return ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def client_certificate_fingerprint(request: Request) -> str | None:
    """SHA-256 (hex) of the DER client certificate the TLS layer verified, if any."""
    tls = request.scope.get("extensions", {}).get("tls")
    if not tls:
        return None
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    try:
        der = ssl.PEM_cert_to_DER_cert(chain[0])
    except ValueError:
        return None
    return hashlib.sha256(der).hexdigest()
