"""``/v1/audit``: the auditor's query and verification API.

``GET /v1/audit/records`` needs ``audit.read`` and ``GET /v1/audit/verify`` ``audit.verify``
(the auditor role only: admins do not read the record that watches them).

Reading the log is itself audited, exactly once per request: the guard writes this request's
record, so the ``AuditService`` used here records its reads *into that record* (the query's
filters go into its details) instead of writing a second one (``AuditService.with_recorder``).
The record is durable before the response is sent, so no audit data leaves the server unless
its reading is on the log. Verification shows no record content (as ``strongroom audit
verify``), and its outcome (ok, first bad sequence number) is in the request's record too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strongroom.core.audit.ports import AuditQuery
from strongroom.core.audit.record import AuditEvent, bounded_text
from strongroom.core.policy.rbac import Action, Resource
from strongroom.entrypoints.http import schemas
from strongroom.entrypoints.http.app import ServerParts
from strongroom.entrypoints.http.bodies import json_response, read_query
from strongroom.entrypoints.http.guard import RequestLog, request_log
from strongroom.services.audit_reading import LOG_RESOURCE, AuditReader, AuditService


def _into(log: RequestLog) -> Callable[[AuditEvent], None]:
    """A recorder that puts a read's details into this request's own audit record."""

    def record(event: AuditEvent) -> None:
        for key, value in event.details.items():
            log.details[f"read.{key}"] = value

    return record


class AuditAdminRoutes:
    def __init__(self, parts: ServerParts) -> None:
        self._access = parts.access
        self._service_factory = parts.audit_service
        self._base: AuditService | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/v1/audit/records", self.records, methods=["GET"]),
            Route("/v1/audit/verify", self.verify, methods=["GET"]),
        ]

    def _service(self, log: RequestLog) -> AuditService:
        """The auditor's service, recording into ``log`` (built once: it holds no state but
        the store it reads)."""
        if self._base is None:
            self._base = cast("AuditService", self._service_factory())
        return self._base.with_recorder(_into(log))

    async def records(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = Action.AUDIT_READ.value, LOG_RESOURCE
        principal = await self._access.require(request, Action.AUDIT_READ, Resource.audit())
        params = read_query(request, schemas.AuditRecordsQuery)
        query = AuditQuery(
            action=params.action,
            principal=params.principal,
            since=params.since,
            until=params.until,
            after_seq=params.after_seq,
            limit=params.limit,
        )
        if params.outcome is not None:
            log.details["read.outcome"] = params.outcome
        reader = AuditReader(principal=principal.id, request_id=log.request_id)
        service = self._service(log)
        found = await asyncio.to_thread(service.query, query, reader)
        last_seq = found[-1]["seq"] if len(found) == params.limit else None
        kept = [r for r in found if params.outcome is None or r["outcome"] == params.outcome]
        log.details["read.returned"] = len(kept)
        page = schemas.AuditRecordsPage(
            records=[schemas.AuditRecordOut.model_validate(r) for r in kept],
            next_after_seq=last_seq,
        )
        return json_response(page)

    async def verify(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = Action.AUDIT_VERIFY.value, LOG_RESOURCE
        await self._access.require(request, Action.AUDIT_VERIFY, Resource.audit())
        result = await asyncio.to_thread(self._service(log).verify)
        log.details.update(
            ok=result.ok,
            complete=result.complete,
            records_checked=result.records_checked,
            problem=None if result.problem is None else str(result.problem),
            first_bad_seq=result.first_bad_seq,
        )
        span = result.suspect_range
        return json_response(
            schemas.AuditVerificationOut(
                ok=result.ok,
                records_checked=result.records_checked,
                problem=None if result.problem is None else str(result.problem),
                first_bad_seq=result.first_bad_seq,
                suspect_range=None if span is None else list(span),
                signed_size=result.signed_size,
                proven_size=result.proven_size,
                completeness=bounded_text(result.completeness),
                complete=result.complete,
            )
        )
