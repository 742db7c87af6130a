"""Logins, MFA step-up, logout, the OAuth2 token endpoint and the server's public keys.

* ``POST /v1/auth/login``: a user's password (+ TOTP) opens a session whose token (``srs_...``)
  is answered once. Argon2id costs ~100 ms, so the check runs in a worker thread. The audit
  record names the user even when the login fails (when the name is well formed): repeated
  failures against one account must be visible in the log. Every failure is the same 401.
* ``POST /v1/auth/step-up``: a TOTP code in a live session refreshes its MFA time, which
  promote, rollback and credential management need (RFC 9470's challenge names this route).
* ``POST /v1/auth/logout``: ends the calling session.
* ``POST /v1/oauth/token``: the client-credentials grant (RFC 6749 section 4.4). A *service*
  authenticates with its API key (``Authorization: Bearer sr_...``) or its mTLS certificate and
  gets a short-lived access token carrying its roles. Only long-lived credentials can be
  exchanged: a token cannot be renewed with itself, and users log in instead.
* ``GET /.well-known/jwks.json``: the public key of those tokens, for other services.
"""

from __future__ import annotations

import asyncio
from typing import Final
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strongroom.core.audit.record import bounded_text
from strongroom.core.identity.principal import CredentialKind, PrincipalKind
from strongroom.entrypoints.http import schemas
from strongroom.entrypoints.http.access import client_ip
from strongroom.entrypoints.http.app import ServerParts
from strongroom.entrypoints.http.bodies import (
    FORM,
    json_response,
    no_content,
    read_json,
    require_media_type,
)
from strongroom.entrypoints.http.guard import request_log
from strongroom.entrypoints.http.routes.caller import require_session, require_standing
from strongroom.errors import (
    AuthenticationError,
    BusyError,
    ForbiddenError,
    InvalidInputError,
    InvalidScopeError,
    OAuthRequestError,
    UnsupportedGrantTypeError,
)
from strongroom.services.identity import refusal_reason

MAX_FORM_FIELDS: Final = 16
MAX_CONCURRENT_PASSWORD_CHECKS: Final = 4
"""Argon2id checks at once per worker (each ~0.1 s of CPU and 64 MiB); more are refused 503."""
EXCHANGEABLE: Final = frozenset({CredentialKind.API_KEY, CredentialKind.MTLS})
"""Credentials a service may exchange for an access token (never a token itself)."""


class SessionRoutes:
    def __init__(self, parts: ServerParts) -> None:
        self._access = parts.access
        self._identity = parts.identity
        self._issuer = parts.token_issuer
        self._password_checks = asyncio.Semaphore(MAX_CONCURRENT_PASSWORD_CHECKS)
        self._limits = parts.limits

    def routes(self) -> list[Route]:
        return [
            Route("/v1/auth/login", self.login, methods=["POST"]),
            Route("/v1/auth/step-up", self.step_up, methods=["POST"]),
            Route("/v1/auth/logout", self.logout, methods=["POST"]),
            Route("/v1/oauth/token", self.token, methods=["POST"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
        ]

    async def login(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = "auth.login", "session"
        if self._limits is not None:  # unauthenticated traffic: counted per client address
            address = client_ip(request)
            self._limits.check_address(address)
            await self._limits.charge_address(address)
        body = await read_json(request, schemas.LoginRequest)
        user_id = f"user:{body.user}"
        log.principal = user_id
        if self._password_checks.locked():  # argon2id: ~0.1 s and 64 MiB each; no queueing
            raise BusyError("too many logins in progress")
        try:
            async with self._password_checks:
                token, session, principal = await asyncio.to_thread(
                    self._identity.login, user_id, body.password, body.totp
                )
        except AuthenticationError as exc:
            log.details["auth"] = refusal_reason(exc) or "unauthenticated"
            raise
        log.details.update(credential=f"password:{session.id}", mfa=session.mfa_at is not None)
        return json_response(
            schemas.SessionOut(
                token=token,
                principal=principal.id,
                expires_at=session.expires_at,
                mfa_at=session.mfa_at,
            )
        )

    async def step_up(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = "auth.step_up", "session"
        principal = await self._access.authenticate(request)
        token = require_session(request, principal)
        body = await read_json(request, schemas.StepUpRequest)
        try:
            session = await asyncio.to_thread(self._identity.step_up, token, body.totp)
        except AuthenticationError as exc:
            log.details["auth"] = refusal_reason(exc) or "unauthenticated"
            raise
        return json_response(
            schemas.StepUpOut(mfa_at=session.mfa_at, expires_at=session.expires_at)
        )

    async def logout(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = "auth.logout", "session"
        principal = await self._access.authenticate(request)
        token = require_session(request, principal)
        await asyncio.to_thread(self._identity.logout, token)
        return no_content()

    async def token(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = "auth.token", "principal:*"
        principal = await self._access.authenticate(request)
        log.resource = f"principal:{principal.id}"
        if principal.kind is not PrincipalKind.SERVICE:
            log.details["denial"] = "not_a_service"
            raise ForbiddenError
        if principal.credential.kind not in EXCHANGEABLE:
            log.details["denial"] = "credential_not_exchangeable"
            raise ForbiddenError
        require_standing(self._access, request, principal)
        form = await _token_form(request)
        client_id = principal.id.removeprefix("svc:")
        if form.client_id is not None and form.client_id != client_id:
            raise OAuthRequestError("client_id does not name the authenticated client")
        scopes = form.scope.split(" ") if form.scope else []
        try:
            token = self._issuer.issue(client_id, principal.roles, scopes)
        except InvalidInputError:
            raise InvalidScopeError("scope must be space-separated RFC 6749 scope tokens") from None
        log.details["scope"] = bounded_text(form.scope, 256) if form.scope else None
        ttl = int(self._issuer.ttl.total_seconds())
        body = schemas.TokenOut(
            access_token=token,
            token_type="Bearer",  # noqa: S106 - the RFC 6750 token type  # nosec B106
            expires_in=ttl,
            scope=form.scope,
        )
        headers = {"cache-control": "no-store", "pragma": "no-cache"}
        return json_response(body, headers=headers, exclude_none=True)

    async def jwks(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = "auth.jwks", "server"
        return json_response(schemas.JwkSet.model_validate(self._issuer.jwks()))


async def _token_form(request: Request) -> schemas.TokenForm:
    """The token request's form (RFC 6749 sections 3.2 and 4.4.2): repeated parameters are
    refused, empty ones count as absent, unknown ones are ignored."""
    require_media_type(request, FORM)
    body = await request.body()
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=False,
            strict_parsing=bool(body),
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise OAuthRequestError("the token request is not a valid form") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise OAuthRequestError("a token request parameter is repeated")
        values[key] = value
    grant = values.get("grant_type")
    if grant is None:
        raise OAuthRequestError("grant_type is required")
    if grant != "client_credentials":
        raise UnsupportedGrantTypeError("only grant_type=client_credentials is supported")
    try:
        return schemas.TokenForm.model_validate(values)
    except ValidationError:
        raise OAuthRequestError("the token request has a malformed parameter") from None
