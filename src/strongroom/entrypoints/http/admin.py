"""The admin API (``/v1``), the token endpoint's keys and the OpenAPI document, as routes.

``admin_routes(parts)`` is what ``app.create_app`` adds to the inference routes. The document
at ``/v1/openapi.json`` is built from ``operations.OPERATIONS`` on first request and kept; it
needs a credential like ``/v2`` server metadata (``server.read``, which every role holds).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from strongroom import __version__
from strongroom.core.policy.rbac import Action, Resource
from strongroom.entrypoints.http.access import Access
from strongroom.entrypoints.http.app import ServerParts
from strongroom.entrypoints.http.bodies import JSON
from strongroom.entrypoints.http.guard import request_log
from strongroom.entrypoints.http.openapi import build_document
from strongroom.entrypoints.http.operations import OPERATIONS, api_info
from strongroom.entrypoints.http.routes.audit_admin import AuditAdminRoutes
from strongroom.entrypoints.http.routes.identity_admin import IdentityAdminRoutes
from strongroom.entrypoints.http.routes.limits_admin import LimitsAdminRoutes
from strongroom.entrypoints.http.routes.registry_admin import RegistryAdminRoutes
from strongroom.entrypoints.http.routes.session import SessionRoutes


def openapi_document(server_url: str) -> dict[str, Any]:
    """The server's OpenAPI 3.1 document (every route of ``build_app`` with these routes)."""
    return build_document(OPERATIONS, api_info(__version__, server_url))


class OpenApiRoute:
    def __init__(self, access: Access, server_url: str) -> None:
        self._access = access
        self._server_url = server_url
        self._body: bytes | None = None

    async def serve(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = Action.SERVER_READ.value, "server"
        await self._access.require(request, Action.SERVER_READ, Resource.server())
        if self._body is None:
            self._body = orjson.dumps(openapi_document(self._server_url))
        return Response(self._body, media_type=JSON)


def admin_routes(parts: ServerParts) -> list[BaseRoute]:
    """Every route beyond the Open Inference Protocol's."""
    openapi = OpenApiRoute(parts.access, parts.settings.public_url)
    return [
        *RegistryAdminRoutes(parts).routes(),
        *IdentityAdminRoutes(parts).routes(),
        *SessionRoutes(parts).routes(),
        *AuditAdminRoutes(parts).routes(),
        *LimitsAdminRoutes(parts).routes(),
        Route("/v1/openapi.json", openapi.serve, methods=["GET"]),
    ]
