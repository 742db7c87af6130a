"""``/v1/principals`` and ``/v1/api-keys``: principals, their roles, grants and credentials.

Reading needs ``principal.read`` (admin, auditor); creating and changing principals needs
``principal.manage``, and issuing, rotating or revoking credentials ``credential.manage``
(admin), both with a fresh MFA step-up (``authorize`` enforces it). Every change is the audit
record of its request, naming the principal and, for keys, the key id (never a secret).

Two routes act on a key by its id alone (rotate, revoke): they authorize ``credential.manage``
on every principal (``principal:*``, which only a global role holds) *before* the key is looked
up, so a caller cannot learn which key ids exist.

A user may also set its own password, from a password session with fresh MFA (the same step-up
an admin needs); the service checks the password policy and history and ends the user's other
sessions.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from ipaddress import ip_network

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strongroom.core.audit.record import bounded_text
from strongroom.core.identity.api_keys import KEY_ID_RE, StoredApiKey
from strongroom.core.identity.ports import CertificateBinding, PrincipalRecord
from strongroom.core.identity.principal import (
    CredentialKind,
    Grant,
    check_principal_id,
)
from strongroom.core.policy.conditions import StepUpClass
from strongroom.core.policy.rbac import Action, Resource
from strongroom.entrypoints.http import schemas
from strongroom.entrypoints.http.app import ServerParts
from strongroom.entrypoints.http.bodies import json_response, no_content, read_json
from strongroom.entrypoints.http.guard import RequestLog, request_log
from strongroom.entrypoints.http.routes.caller import require_standing
from strongroom.errors import ConflictError, InvalidInputError, NotFoundError
from strongroom.services.identity import normalize_fingerprint


def principal_out(record: PrincipalRecord) -> schemas.PrincipalOut:
    return schemas.PrincipalOut(
        id=record.id,
        kind=record.kind,
        roles=sorted(record.roles),
        grants=[schemas.GrantOut(role=g.role, pattern=g.pattern) for g in record.grants],
        networks=[str(n) for n in record.networks],
        disabled=record.disabled,
        created_at=record.created_at,
        description=record.description,
    )


def key_out(record: StoredApiKey) -> schemas.ApiKeyOut:
    return schemas.ApiKeyOut(
        key_id=record.key_id,
        principal_id=record.principal_id,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


def _grants(grants: list[schemas.GrantBody]) -> list[Grant]:
    return [Grant(g.role, g.pattern) for g in grants]


def _principal_log(request: Request, action: Action) -> tuple[RequestLog, str]:
    log = request_log(request.scope)
    principal_id = request.path_params["id"]
    log.action = action.value
    log.resource = bounded_text(f"principal:{principal_id}", 256)
    return log, check_principal_id(principal_id)


def _key_log(request: Request, action: Action) -> tuple[RequestLog, str]:
    log = request_log(request.scope)
    key_id = request.path_params["key_id"]
    log.action, log.resource = action.value, "principal:*"
    if not KEY_ID_RE.fullmatch(key_id):
        raise InvalidInputError("an API key id is 12 characters of a-z and 2-7")
    log.details["key_id"] = key_id
    return log, key_id


class IdentityAdminRoutes:
    def __init__(self, parts: ServerParts) -> None:
        self._access = parts.access
        self._identity = parts.identity

    def routes(self) -> list[Route]:
        one = "/v1/principals/{id}"
        return [
            Route("/v1/principals", self.list_principals, methods=["GET"]),
            Route("/v1/principals", self.create_principal, methods=["POST"]),
            Route(one, self.get_principal, methods=["GET"]),
            Route(one, self.update_principal, methods=["PATCH"]),
            Route(one + "/api-keys", self.list_keys, methods=["GET"]),
            Route(one + "/api-keys", self.issue_key, methods=["POST"]),
            Route("/v1/api-keys/{key_id}/rotate", self.rotate_key, methods=["POST"]),
            Route("/v1/api-keys/{key_id}", self.revoke_key, methods=["DELETE"]),
            Route(one + "/certificates/{fingerprint}", self.bind_certificate, methods=["PUT"]),
            Route(one + "/certificates/{fingerprint}", self.unbind_certificate, methods=["DELETE"]),
            Route(one + "/password", self.set_password, methods=["PUT"]),
        ]

    # --- principals -----------------------------------------------------------------------------

    async def list_principals(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = Action.PRINCIPAL_READ.value, "principal:*"
        await self._access.require(request, Action.PRINCIPAL_READ, Resource.principal())
        records = await asyncio.to_thread(self._identity.list_principals)
        log.details["count"] = len(records)
        return json_response(schemas.PrincipalList(principals=[principal_out(r) for r in records]))

    async def create_principal(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = Action.PRINCIPAL_MANAGE.value, "principal:*"
        # Only a global role manages principals, so "every principal" decides the same as the
        # new id would, and the caller is refused before its body is read.
        await self._access.require(request, Action.PRINCIPAL_MANAGE, Resource.principal())
        body = await read_json(request, schemas.PrincipalCreate)
        log.resource = f"principal:{body.id}"
        record = await asyncio.to_thread(
            self._identity.create_principal,
            body.id,
            roles=body.roles,
            grants=_grants(body.grants),
            networks=[ip_network(n) for n in body.networks],
            description=body.description,
        )
        log.details["roles"] = ",".join(sorted(record.roles))
        location = f"/v1/principals/{record.id}"
        return json_response(principal_out(record), 201, {"location": location})

    async def get_principal(self, request: Request) -> Response:
        _log, principal_id = _principal_log(request, Action.PRINCIPAL_READ)
        await self._access.require(request, Action.PRINCIPAL_READ, Resource.principal(principal_id))
        record = await asyncio.to_thread(self._identity.get_principal, principal_id)
        return json_response(principal_out(record))

    async def update_principal(self, request: Request) -> Response:
        log, principal_id = _principal_log(request, Action.PRINCIPAL_MANAGE)
        await self._access.require(
            request, Action.PRINCIPAL_MANAGE, Resource.principal(principal_id)
        )
        body = await read_json(request, schemas.PrincipalUpdate)
        log.details["changed"] = ",".join(sorted(body.model_fields_set))
        record = await asyncio.to_thread(
            lambda: self._identity.update_principal(
                principal_id,
                roles=body.roles,
                grants=None if body.grants is None else _grants(body.grants),
                networks=None if body.networks is None else [ip_network(n) for n in body.networks],
                disabled=body.disabled,
                description=body.description,
            )
        )
        return json_response(principal_out(record))

    # --- API keys -------------------------------------------------------------------------------

    async def list_keys(self, request: Request) -> Response:
        _log, principal_id = _principal_log(request, Action.PRINCIPAL_READ)
        await self._access.require(request, Action.PRINCIPAL_READ, Resource.principal(principal_id))
        keys = await asyncio.to_thread(self._identity.list_api_keys, principal_id)
        return json_response(schemas.ApiKeyList(keys=[key_out(k) for k in keys]))

    async def issue_key(self, request: Request) -> Response:
        log, principal_id = _principal_log(request, Action.CREDENTIAL_MANAGE)
        await self._access.require(
            request, Action.CREDENTIAL_MANAGE, Resource.principal(principal_id)
        )
        body = await read_json(request, schemas.ApiKeyIssue)
        issued, record = await asyncio.to_thread(
            lambda: self._identity.issue_api_key(principal_id, expires_at=body.expires_at)
        )
        log.details["key_id"] = record.key_id
        out = schemas.IssuedApiKeyOut(token=issued.token, key=key_out(record))
        return json_response(out, 201)

    async def rotate_key(self, request: Request) -> Response:
        log, key_id = _key_log(request, Action.CREDENTIAL_MANAGE)
        await self._access.require(request, Action.CREDENTIAL_MANAGE, Resource.principal())
        body = await read_json(request, schemas.ApiKeyRotate)
        rotation = await asyncio.to_thread(
            lambda: self._identity.rotate_api_key(
                key_id, grace=timedelta(seconds=body.grace_seconds), expires_at=body.expires_at
            )
        )
        log.resource = f"principal:{rotation.new_record.principal_id}"
        log.details.update(new_key_id=rotation.new_record.key_id, grace_s=body.grace_seconds)
        out = schemas.RotatedApiKeyOut(
            token=rotation.issued.token,
            key=key_out(rotation.new_record),
            previous=key_out(rotation.old_record),
        )
        return json_response(out, 201)

    async def revoke_key(self, request: Request) -> Response:
        log, key_id = _key_log(request, Action.CREDENTIAL_MANAGE)
        await self._access.require(request, Action.CREDENTIAL_MANAGE, Resource.principal())
        record = await asyncio.to_thread(self._identity.revoke_api_key, key_id)
        log.resource = f"principal:{record.principal_id}"
        return json_response(key_out(record))

    # --- certificates and passwords -------------------------------------------------------------

    async def bind_certificate(self, request: Request) -> Response:
        log, principal_id = _principal_log(request, Action.CREDENTIAL_MANAGE)
        await self._access.require(
            request, Action.CREDENTIAL_MANAGE, Resource.principal(principal_id)
        )
        fingerprint = normalize_fingerprint(request.path_params["fingerprint"])
        log.details["fingerprint"] = fingerprint

        def bind() -> tuple[schemas.CertificateOut, int]:
            try:
                binding = self._identity.bind_certificate(principal_id, fingerprint)
            except ConflictError:  # already bound: fine if to this principal (PUT is idempotent)
                for known in self._identity.list_certificates(principal_id):
                    if known.fingerprint == fingerprint:
                        return _certificate(known), 200
                raise
            return _certificate(binding), 201

        body, status = await asyncio.to_thread(bind)
        return json_response(body, status)

    async def unbind_certificate(self, request: Request) -> Response:
        log, principal_id = _principal_log(request, Action.CREDENTIAL_MANAGE)
        await self._access.require(
            request, Action.CREDENTIAL_MANAGE, Resource.principal(principal_id)
        )
        fingerprint = normalize_fingerprint(request.path_params["fingerprint"])
        log.details["fingerprint"] = fingerprint

        def unbind() -> None:
            bound = {c.fingerprint for c in self._identity.list_certificates(principal_id)}
            if fingerprint not in bound:
                raise NotFoundError("this certificate is not bound to this principal")
            self._identity.unbind_certificate(fingerprint)

        await asyncio.to_thread(unbind)
        return no_content()

    async def set_password(self, request: Request) -> Response:
        log, user_id = _principal_log(request, Action.CREDENTIAL_MANAGE)
        principal = await self._access.authenticate(request)
        own = principal.id == user_id and principal.credential.kind is CredentialKind.PASSWORD
        if own:
            require_standing(self._access, request, principal, fresh_mfa=StepUpClass.ADMINISTRATION)
            log.details["self_service"] = True
        else:
            self._access.authorize(
                request, principal, Action.CREDENTIAL_MANAGE, Resource.principal(user_id)
            )
        body = await read_json(request, schemas.PasswordSet)
        await asyncio.to_thread(self._identity.set_password, user_id, body.password)
        return no_content()


def _certificate(binding: CertificateBinding) -> schemas.CertificateOut:
    return schemas.CertificateOut(
        fingerprint=binding.fingerprint,
        principal_id=binding.principal_id,
        created_at=binding.created_at,
    )
