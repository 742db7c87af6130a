"""The OpenAPI 3.1 document of the server, generated from a declarative table of operations.

``operations.OPERATIONS`` says, for every route of the app, its method and path, who may call
it, its request body and query, and every response it can give; this module turns that table
into the document served at ``/v1/openapi.json``. Schemas come from the pydantic models the
handlers actually parse and serialise (``schemas``), via pydantic's JSON Schema generation
(JSON Schema 2020-12, which OpenAPI 3.1 uses as is).

Invariants (tests check them against the running router):

* every route is documented and nothing is documented that does not exist;
* every operation lists every status it can answer: its successes, the errors of its own
  logic, and those every request can meet in the guard and router (400 malformed framing, 405,
  408 slow body, 413 body too large, 500, 503 audit log unavailable), plus 401/403 when it
  needs a credential and 415 when it takes a body. Every error is an RFC 9457 problem
  (``application/problem+json``, schema ``Problem``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from strongroom.entrypoints.http.bodies import JSON
from strongroom.entrypoints.http.problems import PROBLEM_TYPE
from strongroom.entrypoints.http.schemas import Problem

OPENAPI_VERSION: Final = "3.1.0"
REF_TEMPLATE: Final = "#/components/schemas/{model}"
PATH_PARAM_RE: Final = re.compile(r"\{([a-z_]+)\}")
ALWAYS: Final = (400, 405, 408, 413, 500, 503)
"""What any request can meet before or around its handler (guard, router, audit log)."""

Mode = Literal["validation", "serialization"]


class Auth(StrEnum):
    NONE = "none"
    """Public: health probes, the token endpoint's public keys, login."""
    CREDENTIAL = "credential"
    """Any credential: API key, session, access token or mTLS certificate."""
    SESSION = "session"
    """A password login session only (``srs_...``)."""


@dataclass(frozen=True, slots=True)
class Body:
    model: type[BaseModel]
    media_type: str = JSON
    extra_media_types: tuple[str, ...] = ()
    """Further media types carrying the same operation (e.g. binary tensors)."""
    checks_media_type: bool = True
    """Whether another ``Content-Type`` is refused (415)."""


@dataclass(frozen=True, slots=True)
class Reply:
    description: str
    model: type[BaseModel] | None = None
    media_types: tuple[str, ...] = (JSON,)
    headers: tuple[str, ...] = ()
    raw_schema: Mapping[str, Any] | None = None
    or_problem: bool = False
    """The same status may also be a problem (e.g. readiness 503 from the audit log)."""


@dataclass(frozen=True, slots=True)
class Operation:
    operation_id: str
    method: str
    path: str
    summary: str
    tag: str
    auth: Auth
    replies: Mapping[int, Reply]
    action: str | None = None
    """The RBAC action the operation authorizes (``None``: none, or decided item by item)."""
    body: Body | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    """Statuses of the operation's own logic (404, 409, 422...), beyond the automatic ones."""
    description: str = ""

    def statuses(self) -> tuple[int, ...]:
        """Every status this operation can answer, sorted."""
        automatic: set[int] = set(ALWAYS)
        if self.auth is not Auth.NONE:
            automatic |= {401, 403, 429}  # 429: rate limits, quotas, failed attempts
        if self.body is not None and self.body.checks_media_type:
            automatic.add(415)
        return tuple(sorted({*self.replies, *automatic, *self.errors}))


@dataclass(frozen=True, slots=True)
class Parameter:
    pattern: str
    description: str


@dataclass(frozen=True, slots=True)
class ApiInfo:
    title: str
    version: str
    description: str
    server_url: str
    path_parameters: Mapping[str, Parameter] = field(default_factory=dict)


_ERRORS: Final[Mapping[int, tuple[str, str, tuple[str, ...]]]] = {
    400: ("BadRequest", "Malformed request: invalid input, JSON or framing.", ()),
    401: (
        "Unauthorized",
        (
            "No valid credential (one answer for every reason), or `auth.mfa_required`: a "
            "fresh MFA step-up is needed (`POST /v1/auth/step-up`, RFC 9470 challenge)."
        ),
        ("WWW-Authenticate",),
    ),
    403: ("Forbidden", "Not allowed (one answer for every reason).", ()),
    404: ("NotFound", "No such resource.", ()),
    405: ("MethodNotAllowed", "The path exists with other methods.", ("Allow",)),
    408: ("RequestTimeout", "The request body did not arrive in time.", ()),
    409: ("Conflict", "Conflicts with the current state (or an invalid stage change).", ()),
    413: ("ContentTooLarge", "The body (or one of its parts) exceeds its limit.", ()),
    415: ("UnsupportedMediaType", "The body is not of the media type the operation takes.", ()),
    422: ("UnprocessableContent", "A signature did not verify.", ()),
    429: (
        "TooManyRequests",
        (
            "A rate limit or quota was exceeded, or too many failed attempts: retry after "
            "`Retry-After` seconds."
        ),
        ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"),
    ),
    500: ("InternalError", "Internal error (no details are ever given).", ()),
    503: (
        "Unavailable",
        (
            "The audit log cannot record the request (fail closed), a backend or key is "
            "unavailable, or (readiness) not ready."
        ),
        ("Retry-After",),
    ),
}
_HEADERS: Final[Mapping[str, str]] = {
    "WWW-Authenticate": "Bearer challenge (RFC 6750, RFC 9470).",
    "Allow": "The methods the path accepts.",
    "Retry-After": "Seconds to wait before retrying.",
    "RateLimit-Limit": "The limit that refused the request (requests in its window).",
    "RateLimit-Remaining": "Requests left in the window (0 when refused).",
    "RateLimit-Reset": "Seconds until the window has room again.",
    "Location": "The URL of the created resource.",
    "Inference-Header-Content-Length": "Length of the JSON part before binary tensors.",
}


def _schemas(operations: Iterable[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """Component schemas of every model the operations use, and each model's reference."""
    wanted: dict[tuple[type[BaseModel], Mode], None] = {(Problem, "serialization"): None}
    for op in operations:
        if op.body is not None:
            wanted[(op.body.model, "validation")] = None
        for reply in op.replies.values():
            if reply.model is not None:
                wanted[(reply.model, "serialization")] = None
    refs, definitions = models_json_schema(list(wanted), ref_template=REF_TEMPLATE)
    return dict(refs), dict(definitions.get("$defs", {}))


def _content(ref: Mapping[str, Any], media_types: Iterable[str]) -> dict[str, Any]:
    return {media: {"schema": dict(ref)} for media in media_types}


def _response(reply: Reply, refs: Mapping[Any, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": reply.description}
    schema: Mapping[str, Any] | None = reply.raw_schema
    if reply.model is not None:
        schema = refs[(reply.model, "serialization")]
    if schema is not None:
        response["content"] = _content(schema, reply.media_types)
    if reply.or_problem:
        problem = refs[(Problem, "serialization")]
        response.setdefault("content", {})[PROBLEM_TYPE] = {"schema": dict(problem)}
    if reply.headers:
        response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in reply.headers}
    return response


def _parameters(op: Operation, info: ApiInfo) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name in PATH_PARAM_RE.findall(op.path):
        spec = info.path_parameters[name]
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": spec.description,
                "schema": {"type": "string", "pattern": spec.pattern},
            }
        )
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=REF_TEMPLATE)
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            description = prop.pop("description", "")
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "description": description,
                    "schema": prop,
                }
            )
    return parameters


def _security(auth: Auth) -> list[dict[str, list[str]]]:
    if auth is Auth.NONE:
        return []
    if auth is Auth.SESSION:
        return [{"session": []}]
    return [{"bearer": []}, {"mutualTLS": []}]


def _operation(op: Operation, info: ApiInfo, refs: Mapping[Any, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in op.statuses():
        reply = op.replies.get(status)
        if reply is not None:
            responses[str(status)] = _response(reply, refs)
        else:
            responses[str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _security(op.auth),
        "responses": responses,
    }
    if op.description:
        document["description"] = op.description
    if op.action is not None:
        document["x-strongroom-action"] = op.action
    parameters = _parameters(op, info)
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        ref = refs[(op.body.model, "validation")]
        media = (op.body.media_type, *op.body.extra_media_types)
        document["requestBody"] = {"required": True, "content": _content(ref, media)}
    return document


def _components(definitions: Mapping[str, Any], refs: Mapping[Any, Any]) -> dict[str, Any]:
    problem = refs[(Problem, "serialization")]
    responses = {
        name: {
            "description": description,
            "content": {PROBLEM_TYPE: {"schema": dict(problem)}},
            **(
                {"headers": {h: {"$ref": f"#/components/headers/{h}"} for h in headers}}
                if headers
                else {}
            ),
        }
        for name, description, headers in _ERRORS.values()
    }
    return {
        "schemas": dict(sorted(definitions.items())),
        "responses": responses,
        "headers": {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in _HEADERS.items()
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (sr_...), a login session (srs_...), or an access "
                "token (JWT) from this server's token endpoint or a configured OIDC issuer.",
            },
            "session": {
                "type": "http",
                "scheme": "bearer",
                "description": "A login session token (srs_...) from POST /v1/auth/login.",
            },
            "mutualTLS": {
                "type": "mutualTLS",
                "description": "A client certificate bound to a principal (when mTLS is on).",
            },
        },
    }


def build_document(operations: Iterable[Operation], info: ApiInfo) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``operations`` (see the module docstring)."""
    ops = list(operations)
    seen: set[tuple[str, str]] = set()
    for op in ops:
        key = (op.method, op.path)
        if key in seen:
            raise ValueError(f"{op.method} {op.path} is documented twice")
        seen.add(key)
    refs, definitions = _schemas(ops)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, info, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": info.title, "version": info.version, "description": info.description},
        "servers": [{"url": info.server_url}],
        "paths": dict(sorted(paths.items())),
        "components": _components(definitions, refs),
        "tags": [{"name": tag} for tag in sorted({op.tag for op in ops})],
    }
