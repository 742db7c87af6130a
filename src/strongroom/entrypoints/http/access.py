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
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final, Protocol

from strongroom.core.identity.principal import Principal
from strongroom.core.identity.tokens import VerifiedToken, rejection_reason
from strongroom.core.policy.conditions import (
    RequestContext,
    StepUpSettings,
    denial_reason,
)
from strongroom.core.policy.forwarded import ResolvedClient
from strongroom.core.policy.limits import Verdict
from strongroom.core.policy.network import parse_address_or_none
from strongroom.core.policy.rbac import Action, Decision, Resource, authorize
from strongroom.core.types import Clock
from strongroom.entrypoints.http.guard import CLIENT_KEY, Scope, header, request_log
from strongroom.errors import AuthenticationError, ForbiddenError, RateLimitedError
from strongroom.services.admission import Admission
from strongroom.services.identity import IdentityService
from strongroom.services.identity import refusal_reason as identity_refusal_reason
from strongroom.services.request_limits import RequestLimits

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
        limits: RequestLimits | None = None,
    ) -> None:
        """``blocking_store``: credential checks may read a remote database on every request
        (PostgreSQL: the credential epoch, cache misses), so they run in a worker thread
        instead of stalling the event loop. The embedded store's checks are memory reads.

        ``limits``: rate limits, quotas, per-principal network denials and concurrency bounds
        (``services.request_limits``); None turns them off (``unsafe_no_request_guard``)."""
        self._identity = identity
        self._blocking = blocking_store
        self._tokens = tokens
        self._roles_from_token = roles_from_token
        self._clock = clock
        self._step_up = step_up
        self._limits = limits
        self._admission = Admission(limits) if limits is not None else None

    @property
    def admission(self) -> Admission | None:
        return self._admission

    async def require(self, request: Request, action: Action, resource: Resource) -> Principal:
        """The caller, allowed to do ``action`` on ``resource`` now and within its limits;
        raises otherwise (401, 403, 429, or 503 when a limit cannot be checked)."""
        principal = await self._identify(request)
        self.authorize(request, principal, action, resource)
        if action is Action.MODEL_PREDICT:
            await self.admit(request, principal, model=resource.name, inference=True)
        else:
            await self.admit(request, principal, model=None, inference=False)
        return principal

    async def authenticate(self, request: Request) -> Principal:
        """The caller, for routes that decide access themselves; counted against its limits."""
        principal = await self._identify(request)
        await self.admit(request, principal, model=None, inference=False)
        return principal

    async def admit(
        self, request: Request, principal: Principal, *, model: str | None, inference: bool
    ) -> None:
        """Charge the request to ``principal``'s limits and take one of its concurrent slots."""
        limits, admission = self._limits, self._admission
        if limits is None or admission is None:
            return
        log = request_log(request.scope)
        try:
            verdict = await limits.admit(principal.id, model, inference=inference)
        except RateLimitedError as exc:
            log.details["limit"] = exc.scope
            raise
        if verdict.scope is not None:
            log.headers = rate_limit_headers(verdict)
        log.on_exit(admission.enter_principal(principal.id))

    def authorize(
        self, request: Request, principal: Principal, action: Action, resource: Resource
    ) -> Decision:
        log = request_log(request.scope)
        try:
            decision = authorize(principal, action, resource, self.context(request))
            self.check_denied_networks(request, principal)
        except ForbiddenError as exc:
            reason = denial_reason(exc)
            log.details["denial"] = reason.value if reason else "forbidden"
            raise
        return decision

    def check_denied_networks(self, request: Request, principal: Principal) -> None:
        """Deny a principal calling from a network its override denies (``ForbiddenError``)."""
        limits = self._limits
        if limits is None:
            return
        rules = limits.denied_networks(principal.id)
        if rules is not None:
            rules.check(client_ip(request))

    def context(self, request: Request) -> RequestContext:
        return RequestContext(
            now=self._clock(), client_ip=client_ip(request), step_up=self._step_up
        )

    async def _identify(self, request: Request) -> Principal:
        log = request_log(request.scope)
        limits = self._limits
        if limits is not None:  # an address out of attempts is not even checked
            limits.check_address(client_ip(request))
        try:
            principal = await self._authenticate(request)
        except AuthenticationError as exc:
            log.details["auth"] = _why(exc)
            if limits is not None:
                await _charge_failure(limits, request, exc)
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


async def _charge_failure(
    limits: RequestLimits, request: Request, error: AuthenticationError
) -> None:
    """Count a failed authentication against the client address (429 once it runs out)."""
    try:
        await limits.charge_address(client_ip(request))
    except RateLimitedError as limited:
        request_log(request.scope).details["limit"] = limited.scope
        raise limited from error


def rate_limit_headers(verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """``RateLimit-*`` fields for an admitted request: its most constraining limit."""
    return [
        (b"ratelimit-limit", b"%d" % verdict.limit),
        (b"ratelimit-remaining", b"%d" % verdict.remaining),
        (b"ratelimit-reset", b"%d" % verdict.reset_s),
    ]


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
    """The client address: the one the guard resolved (``"strongroom.client"``, which reads
    trusted proxies' headers), else the transport peer. None when unknown or refused."""
    resolved = request.scope.get(CLIENT_KEY)
    if isinstance(resolved, ResolvedClient):
        return resolved.address
    client = request.scope.get("client")
    if not client:
        return None
    return _parse_ip(str(client[0]))


def _parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    """Strict, as every address rule reads it: a zone id or an odd spelling is None (unknown),
    never a guess that could slip past a rule. Cached (bounded) in ``network``."""
    return parse_address_or_none(text)


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
