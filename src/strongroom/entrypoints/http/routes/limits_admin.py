"""``/v1/limits``: the request guard's defaults and its overrides per model and per principal.

Reading needs ``principal.read`` on every principal (admin, auditor): the list names principals.
Setting or removing a principal's override needs ``principal.manage`` on it, and a model's
``model.limit`` on it (deployer); both are step-up actions. The principal or model must exist.
Every change is the audit record of its request (the subject, and which fields were set), and
applies at once on this worker, within ``model_refresh_s`` on the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strongroom.core.audit.record import bounded_text
from strongroom.core.identity.principal import check_principal_id
from strongroom.core.policy.limits import Quota, QuotaPeriod, Rate
from strongroom.core.policy.overrides import GuardOverride, GuardPolicy, SubjectKind
from strongroom.core.policy.rbac import Action, Resource
from strongroom.core.registry.model import check_model_name
from strongroom.entrypoints.http import limit_schemas as ls
from strongroom.entrypoints.http.app import ServerParts
from strongroom.entrypoints.http.bodies import json_response, no_content, read_json
from strongroom.entrypoints.http.guard import RequestLog, request_log
from strongroom.errors import InvalidInputError, NotFoundError
from strongroom.services.request_limits import LimitDefaults, RequestLimits


class LimitsAdminRoutes:
    def __init__(self, parts: ServerParts) -> None:
        self._parts = parts
        self._access = parts.access
        self._limits = parts.limits

    def routes(self) -> list[Route]:
        return [
            Route("/v1/limits", self.list_limits, methods=["GET"]),
            Route("/v1/limits/principals/{id}", self.put_principal, methods=["PUT"]),
            Route("/v1/limits/principals/{id}", self.delete_principal, methods=["DELETE"]),
            Route("/v1/limits/models/{name}", self.put_model, methods=["PUT"]),
            Route("/v1/limits/models/{name}", self.delete_model, methods=["DELETE"]),
        ]

    async def list_limits(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = Action.PRINCIPAL_READ.value, "principal:*"
        await self._access.require(request, Action.PRINCIPAL_READ, Resource.principal())
        limits = self._limits
        if limits is None:
            return json_response(ls.LimitsOut(enabled=False, defaults=None, overrides=[]))
        stored = await asyncio.to_thread(limits.refresh)
        shared = bool(self._parts.settings.rate_limit_url)
        return json_response(
            ls.LimitsOut(
                enabled=True,
                defaults=_defaults_out(limits.defaults, shared=shared),
                overrides=[override_out(o) for o in stored],
            )
        )

    async def put_principal(self, request: Request) -> Response:
        log, subject = _subject_log(request, SubjectKind.PRINCIPAL)
        principal = await self._access.require(
            request, Action.PRINCIPAL_MANAGE, Resource.principal(subject)
        )
        body = await read_json(request, ls.GuardPolicyIn)
        await asyncio.to_thread(self._parts.identity.get_principal, subject)
        return await self._put(log, SubjectKind.PRINCIPAL, subject, body, principal.id)

    async def put_model(self, request: Request) -> Response:
        log, subject = _subject_log(request, SubjectKind.MODEL)
        principal = await self._access.require(request, Action.MODEL_LIMIT, Resource.model(subject))
        body = await read_json(request, ls.GuardPolicyIn)
        if body.deny_networks:
            raise InvalidInputError("deny_networks applies to principals, not models")
        versions = await asyncio.to_thread(self._parts.registry.list_versions, subject)
        if not versions:
            raise NotFoundError(f"model {subject!r} not found")
        return await self._put(log, SubjectKind.MODEL, subject, body, principal.id)

    async def delete_principal(self, request: Request) -> Response:
        _log, subject = _subject_log(request, SubjectKind.PRINCIPAL)
        await self._access.require(request, Action.PRINCIPAL_MANAGE, Resource.principal(subject))
        return await self._delete(SubjectKind.PRINCIPAL, subject)

    async def delete_model(self, request: Request) -> Response:
        _log, subject = _subject_log(request, SubjectKind.MODEL)
        await self._access.require(request, Action.MODEL_LIMIT, Resource.model(subject))
        return await self._delete(SubjectKind.MODEL, subject)

    async def _put(
        self, log: RequestLog, kind: SubjectKind, subject: str, body: ls.GuardPolicyIn, by: str
    ) -> Response:
        limits = self._enabled()
        override = GuardOverride(
            kind=kind,
            subject=subject,
            policy=policy_of(body),
            updated_at=self._parts.clock(),
            updated_by=by,
        )
        log.details["set"] = ",".join(sorted(override.policy.to_dict())) or "nothing"
        await asyncio.to_thread(limits.put_override, override)
        return json_response(override_out(override))

    async def _delete(self, kind: SubjectKind, subject: str) -> Response:
        limits = self._enabled()
        await asyncio.to_thread(limits.delete_override, kind, subject)
        return no_content()

    def _enabled(self) -> RequestLimits:
        if self._limits is None:
            raise InvalidInputError("the request guard is off (unsafe_no_request_guard)")
        return self._limits


def _subject_log(request: Request, kind: SubjectKind) -> tuple[RequestLog, str]:
    log = request_log(request.scope)
    is_principal = kind is SubjectKind.PRINCIPAL
    text = request.path_params["id" if is_principal else "name"]
    log.action = f"{kind.value}.limits"
    log.resource = bounded_text(f"{kind.value}:{text}", 256)
    check: Callable[[str], str] = check_principal_id if is_principal else check_model_name
    return log, check(text)


def _rate(value: ls.RateIn | None) -> Rate | None:
    return None if value is None else Rate(per_second=value.per_second, burst=value.burst)


def policy_of(body: ls.GuardPolicyIn) -> GuardPolicy:
    quota = body.quota
    return GuardPolicy(
        rate=_rate(body.rate),
        model_rate=_rate(body.model_rate),
        quota=None if quota is None else Quota(limit=quota.limit, period=QuotaPeriod(quota.period)),
        max_concurrent=body.max_concurrent,
        deny_networks=tuple(body.deny_networks),
    )


def _rate_out(rate: Rate | None) -> ls.RateOut | None:
    return None if rate is None else ls.RateOut(per_second=rate.per_second, burst=rate.burst)


def _quota_out(quota: Quota | None) -> ls.QuotaOut | None:
    if quota is None:
        return None
    period: Literal["day", "month"] = "day" if quota.period is QuotaPeriod.DAY else "month"
    return ls.QuotaOut(limit=quota.limit, period=period)


def override_out(override: GuardOverride) -> ls.GuardOverrideOut:
    policy = override.policy
    kind: Literal["principal", "model"] = (
        "principal" if override.kind is SubjectKind.PRINCIPAL else "model"
    )
    return ls.GuardOverrideOut(
        kind=kind,
        subject=override.subject,
        policy=ls.GuardPolicyOut(
            rate=_rate_out(policy.rate),
            model_rate=_rate_out(policy.model_rate),
            quota=_quota_out(policy.quota),
            max_concurrent=policy.max_concurrent,
            deny_networks=list(policy.deny_networks),
        ),
        updated_at=override.updated_at,
        updated_by=override.updated_by,
    )


def _defaults_out(defaults: LimitDefaults, *, shared: bool) -> ls.LimitDefaultsOut:
    values: dict[str, Any] = {
        "principal": _rate_out(defaults.principal),
        "model": _rate_out(defaults.model),
        "principal_model": _rate_out(defaults.principal_model),
        "address": _rate_out(defaults.address),
        "quota": _quota_out(defaults.quota),
    }
    return ls.LimitDefaultsOut(
        **values,
        max_concurrent_per_principal=defaults.max_concurrent_per_principal,
        max_queue_per_model=defaults.max_queue_per_model,
        shared=shared,
    )
