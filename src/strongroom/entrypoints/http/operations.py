"""The contract of every route of the server: the table ``openapi`` turns into the document.

One entry per (method, path) the router answers; ``tests/integration/test_openapi_document.py``
checks that this table and the router agree both ways. Each entry lists the statuses of the
route's own logic (``errors``); those every request can meet (guard, router, audit log,
authentication, media type) are added by ``Operation.statuses``.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from strongroom.entrypoints.http import limit_schemas as ls
from strongroom.entrypoints.http import oip_schemas as oip
from strongroom.entrypoints.http import schemas as s
from strongroom.entrypoints.http.bodies import FORM, MULTIPART
from strongroom.entrypoints.http.openapi import ApiInfo, Auth, Body, Operation, Parameter, Reply

OCTETS: Final = "application/octet-stream"
C: Final = Auth.CREDENTIAL

PATH_PARAMETERS: Final = {
    "name": Parameter(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$", "Model name."),
    "version": Parameter(r"^[1-9][0-9]{0,8}$", "Model version (a positive integer)."),
    "id": Parameter(s.PRINCIPAL_ID_PATTERN, "Principal id: user:<name> or svc:<name>."),
    "key_id": Parameter(r"^[a-z2-7]{12}$", "API key id (the part after sr_)."),
    "fingerprint": Parameter(
        r"^(?:[0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31})$",
        "SHA-256 of the client certificate's DER encoding: 64 hex digits, or 32 pairs "
        "separated by colons.",
    ),
}


def _ok(
    model: type[BaseModel] | None = None,
    description: str = "OK",
    *,
    headers: tuple[str, ...] = (),
    or_problem: bool = False,
    raw_schema: dict[str, Any] | None = None,
) -> Reply:
    return Reply(description, model, headers=headers, or_problem=or_problem, raw_schema=raw_schema)


# fmt: off
# The table below is kept one operation per block, its positional fields aligned with
# ``Operation``: id, method, path, summary, tag, auth, replies, action, then keywords.


_MODEL = "/v2/models/{name}"
_PINNED = _MODEL + "/versions/{version}"
_V1_MODEL = "/v1/models/{name}"
_PRINCIPAL = "/v1/principals/{id}"
_CERT = _PRINCIPAL + "/certificates/{fingerprint}"
_INFER_BODY = Body(oip.InferRequest, extra_media_types=(OCTETS,))
_INFER_DESCRIPTION = (
    "The body is the JSON request, alone (application/json) or followed by binary tensors "
    "(Triton's binary tensor extension: application/octet-stream with the header "
    "Inference-Header-Content-Length). The body is recognised by its content: a body without "
    "Content-Type (tritonclient) or labelled application/x-www-form-urlencoded (curl -d) is "
    "read the same way; any other media type, or a charset other than UTF-8, is refused (415)."
)
_INFER_REPLY = Reply(
    "Outputs; binary tensors follow the JSON part when requested.",
    oip.InferResponse,
    media_types=("application/json", OCTETS),
    headers=("Inference-Header-Content-Length",),
)
_MODEL_ERRORS = (404, 422)


def _inference() -> list[Operation]:
    ready = "/ready"
    model_ops = []
    for path, which in ((_MODEL, "production"), (_PINNED, "pinned")):
        model_ops += [
            Operation(
                f"modelMetadata_{which}", "GET", path, "Model metadata", "inference", C,
                {200: _ok(oip.ModelMetadata)}, "model.read", errors=_MODEL_ERRORS,
            ),
            Operation(
                f"modelReady_{which}", "GET", path + ready, "Model readiness", "inference", C,
                {200: _ok(oip.ModelReady)}, "model.read", errors=_MODEL_ERRORS,
            ),
            Operation(
                f"infer_{which}", "POST", path + "/infer", "Run the model", "inference", C,
                {200: _INFER_REPLY}, "model.predict", body=_INFER_BODY, errors=_MODEL_ERRORS,
                description=_INFER_DESCRIPTION,
            ),
        ]
    return [
        Operation(
            "serverLive", "GET", "/v2/health/live", "Liveness", "inference", Auth.NONE,
            {200: _ok(oip.ServerLive)},
        ),
        Operation(
            "serverReady", "GET", "/v2/health/ready", "Readiness", "inference", Auth.NONE,
            {
                200: _ok(oip.ServerReady),
                503: _ok(oip.ServerReady, "Not ready (or a problem)", or_problem=True),
            },
        ),
        Operation(
            "serverMetadata", "GET", "/v2", "Server metadata", "inference", C,
            {200: _ok(oip.ServerMetadata)}, "server.read",
        ),
        *model_ops,
    ]


def _registry() -> list[Operation]:
    created = _ok(s.PublishResult, "Published", headers=("Location",))
    return [
        Operation(
            "listModels", "GET", "/v1/models", "List the models the caller may read", "models",
            C, {200: _ok(s.ModelList)}, "model.read",
        ),
        Operation(
            "showModel", "GET", _V1_MODEL, "A model's versions and stage history", "models", C,
            {200: _ok(s.ModelDetail)}, "model.read", errors=(404,),
        ),
        Operation(
            "publishVersion", "POST", _V1_MODEL + "/versions", "Publish a new version",
            "models", C, {201: created}, "model.push",
            body=Body(s.PublishForm, MULTIPART), errors=(409, 422),
        ),
        Operation(
            "showVersion", "GET", _V1_MODEL + "/versions/{version}", "One version", "models", C,
            {200: _ok(s.VersionDetail)}, "model.read", errors=(404,),
        ),
        Operation(
            "promoteVersion", "POST", _V1_MODEL + "/versions/{version}/promote",
            "Move a version to staging or production (MFA step-up)", "models", C,
            {200: _ok(s.StageChange)}, "model.promote",
            body=Body(s.PromoteRequest), errors=(404, 409, 422),
        ),
        Operation(
            "rollbackModel", "POST", _V1_MODEL + "/rollback",
            "Put the previous production version back (MFA step-up)", "models", C,
            {200: _ok(s.StageChange)}, "model.rollback",
            body=Body(s.RollbackRequest), errors=(404, 409, 422),
        ),
    ]


def _principals() -> list[Operation]:
    p = "principals"
    return [
        Operation(
            "listPrincipals", "GET", "/v1/principals", "List principals", p, C,
            {200: _ok(s.PrincipalList)}, "principal.read",
        ),
        Operation(
            "createPrincipal", "POST", "/v1/principals", "Create a principal (MFA step-up)", p,
            C, {201: _ok(s.PrincipalOut, "Created", headers=("Location",))},
            "principal.manage", body=Body(s.PrincipalCreate), errors=(409,),
        ),
        Operation(
            "getPrincipal", "GET", _PRINCIPAL, "One principal", p, C,
            {200: _ok(s.PrincipalOut)}, "principal.read", errors=(404,),
        ),
        Operation(
            "updatePrincipal", "PATCH", _PRINCIPAL,
            "Change roles, grants, networks, description or disable (MFA step-up)", p, C,
            {200: _ok(s.PrincipalOut)}, "principal.manage",
            body=Body(s.PrincipalUpdate), errors=(404, 409),
        ),
    ]


def _credentials() -> list[Operation]:
    p = "principals"
    key = "/v1/api-keys/{key_id}"
    return [
        Operation(
            "listApiKeys", "GET", _PRINCIPAL + "/api-keys", "A principal's API keys", p, C,
            {200: _ok(s.ApiKeyList)}, "principal.read", errors=(404,),
        ),
        Operation(
            "issueApiKey", "POST", _PRINCIPAL + "/api-keys",
            "Issue an API key, shown once (MFA step-up)", p, C,
            {201: _ok(s.IssuedApiKeyOut, "Issued")}, "credential.manage",
            body=Body(s.ApiKeyIssue), errors=(404, 409),
        ),
        Operation(
            "rotateApiKey", "POST", key + "/rotate", "Rotate an API key (MFA step-up)", p, C,
            {201: _ok(s.RotatedApiKeyOut, "Rotated")}, "credential.manage",
            body=Body(s.ApiKeyRotate), errors=(404, 409),
        ),
        Operation(
            "revokeApiKey", "DELETE", key, "Revoke an API key (MFA step-up)", p, C,
            {200: _ok(s.ApiKeyOut, "Revoked")}, "credential.manage", errors=(404,),
        ),
        Operation(
            "bindCertificate", "PUT", _CERT, "Bind a client certificate (MFA step-up)", p, C,
            {200: _ok(s.CertificateOut, "Already bound"), 201: _ok(s.CertificateOut, "Bound")},
            "credential.manage", errors=(404, 409),
        ),
        Operation(
            "unbindCertificate", "DELETE", _CERT, "Unbind a client certificate (MFA step-up)",
            p, C, {204: _ok(description="Unbound")}, "credential.manage", errors=(404,),
        ),
        Operation(
            "setPassword", "PUT", _PRINCIPAL + "/password",
            "Set a user's password: an admin, or the user itself (MFA step-up)", p, C,
            {204: _ok(description="Set")}, "credential.manage",
            body=Body(s.PasswordSet), errors=(404, 409),
        ),
    ]


def _auth() -> list[Operation]:
    a = "auth"
    return [
        Operation(
            "login", "POST", "/v1/auth/login", "Log in with password and TOTP", a, Auth.NONE,
            {200: _ok(s.SessionOut)}, body=Body(s.LoginRequest), errors=(401, 429),
        ),
        Operation(
            "stepUp", "POST", "/v1/auth/step-up", "Refresh the session's MFA with a TOTP code",
            a, Auth.SESSION, {200: _ok(s.StepUpOut)}, body=Body(s.StepUpRequest),
        ),
        Operation(
            "logout", "POST", "/v1/auth/logout", "End the session", a, Auth.SESSION,
            {204: _ok(description="Ended")},
        ),
        Operation(
            "issueToken", "POST", "/v1/oauth/token",
            "OAuth2 client-credentials grant for services (API key or mTLS)", a, C,
            {200: _ok(s.TokenOut)}, body=Body(s.TokenForm, FORM),
            description="Errors use codes oauth.invalid_request, oauth.unsupported_grant_type "
            "and oauth.invalid_scope (RFC 6749 section 5.2).",
        ),
        Operation(
            "jwks", "GET", "/.well-known/jwks.json", "Public keys of the access tokens", a,
            Auth.NONE, {200: _ok(s.JwkSet)},
        ),
    ]


def _audit_and_meta() -> list[Operation]:
    return [
        Operation(
            "queryAudit", "GET", "/v1/audit/records", "Query audit records (auditor)", "audit",
            C, {200: _ok(s.AuditRecordsPage)}, "audit.read", query=s.AuditRecordsQuery,
        ),
        Operation(
            "verifyAudit", "GET", "/v1/audit/verify", "Verify the whole audit log (auditor)",
            "audit", C, {200: _ok(s.AuditVerificationOut)}, "audit.verify",
        ),
        Operation(
            "openapi", "GET", "/v1/openapi.json", "This document", "meta", C,
            {200: _ok(raw_schema={"type": "object"})}, "server.read",
        ),
    ]


def _limits() -> list[Operation]:
    t = "limits"
    principal = "/v1/limits/principals/{id}"
    model = "/v1/limits/models/{name}"
    return [
        Operation(
            "listLimits", "GET", "/v1/limits", "Guard defaults and every override", t, C,
            {200: _ok(ls.LimitsOut)}, "principal.read",
        ),
        Operation(
            "setPrincipalLimits", "PUT", principal,
            "Set a principal's limits and denied networks (MFA step-up)", t, C,
            {200: _ok(ls.GuardOverrideOut)}, "principal.manage",
            body=Body(ls.GuardPolicyIn), errors=(404,),
        ),
        Operation(
            "deletePrincipalLimits", "DELETE", principal,
            "Back to the defaults for a principal (MFA step-up)", t, C,
            {204: _ok(description="Removed")}, "principal.manage", errors=(404,),
        ),
        Operation(
            "setModelLimits", "PUT", model, "Set a model's limits (MFA step-up)", t, C,
            {200: _ok(ls.GuardOverrideOut)}, "model.limit",
            body=Body(ls.GuardPolicyIn), errors=(404,),
        ),
        Operation(
            "deleteModelLimits", "DELETE", model,
            "Back to the defaults for a model (MFA step-up)", t, C,
            {204: _ok(description="Removed")}, "model.limit", errors=(404,),
        ),
    ]


# fmt: on

OPERATIONS: Final = (
    *_inference(),
    *_registry(),
    *_principals(),
    *_credentials(),
    *_auth(),
    *_audit_and_meta(),
    *_limits(),
)


def api_info(version: str, server_url: str) -> ApiInfo:
    return ApiInfo(
        title="Strongroom",
        version=version,
        description="Open Inference Protocol v2 (/v2) and the admin API (/v1). Errors are RFC "
        "9457 problems with stable codes; see docs/api.md.",
        server_url=server_url,
        path_parameters=PATH_PARAMETERS,
    )
