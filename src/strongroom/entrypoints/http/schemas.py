"""Request and response bodies of the admin API (``/v1``), as pydantic models.

Request models forbid unknown members, refuse NaN and infinities, are strict about JSON types
(a number is never accepted for a string, nor ``"1"`` for a number) and frozen; they are parsed
with ``bodies.read_json`` only, which turns a ``ValidationError`` into the caller's 400. Their
patterns repeat the domain rules (principal ids, grant patterns, TOTP codes) so that a bad value
is refused here with a message that names the field and never repeats the value; the domain
objects built from them check the same rules again.

Response models are what handlers serialise (``bodies.json_response``), so the OpenAPI document
generated from them (``openapi``) describes exactly what is sent. Open Inference Protocol bodies
are in ``oip_schemas`` (documentation only: ``oip`` parses those).
"""

from __future__ import annotations

import re
from datetime import datetime
from ipaddress import ip_network
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from strongroom.core.audit.ports import MAX_READ_LIMIT
from strongroom.core.audit.record import MAX_SAFE_INTEGER
from strongroom.core.identity.passwords import MIN_PASSWORD_LENGTH
from strongroom.core.identity.principal import MAX_GRANTS, MAX_NETWORKS, PrincipalKind, Role
from strongroom.core.registry.formats import ModelFormat
from strongroom.core.registry.model import MAX_REASON_LENGTH, Stage

PRINCIPAL_ID_PATTERN: Final = r"^(user|svc):[A-Za-z0-9][A-Za-z0-9._@+=:|-]{0,127}$"
USER_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._@+=:|-]{0,127}$"
GRANT_PATTERN: Final = r"^[a-z0-9._*?-]{1,64}$"
TOTP_PATTERN: Final = r"^[0-9]{6,8}$"
NO_NUL_PATTERN: Final = r"^[^\x00]*$"
"""Free text holds no NUL character (PostgreSQL cannot store one; ``bodies`` refuses it in
every JSON body, and the patterns say so in the document)."""
NO_CONTROL_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""No character of category Cc (what ``check_description`` refuses)."""
REASON_PATTERN: Final = r"^[^\x00-\x1f]*[^\s\x00-\x1f\x85][^\x00-\x1f]*$"
"""What ``check_reason`` accepts, or slightly less: no control character below U+0020 and at
least one character that is not white space."""
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
MAX_PASSWORD_CHARS: Final = 1024
MAX_ROTATION_GRACE_S: Final = 30 * 24 * 3600
MAX_AUDIT_PAGE: Final = min(1000, MAX_READ_LIMIT)
MAX_SEQ: Final = MAX_SAFE_INTEGER
"""Largest ``after_seq``: the query is recorded in the request's own audit record, whose
integers are I-JSON's (a larger one made that record, and so the request, fail with a 500)."""


class RequestModel(BaseModel):
    """Base of every JSON request body (see the module docstring)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, strict=True, str_max_length=4096
    )


class ResponseModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _network(value: str) -> str:
    """A CIDR network in its canonical spelling; the message never repeats the value."""
    try:
        return str(ip_network(value, strict=True))
    except ValueError:
        raise ValueError("must be a CIDR network such as 10.0.0.0/8 (host bits zero)") from None


def _rfc3339(value: object) -> object:
    """Only RFC 3339 text is a time in a query string (pydantic would also read ``0.5`` or
    ``1700000000`` as seconds since the epoch, which the document does not promise)."""
    if isinstance(value, str) and not re.fullmatch(RFC3339_PATTERN, value):
        raise ValueError("must be an RFC 3339 date-time with an offset")
    return value


Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON_LENGTH, pattern=REASON_PATTERN)]
Description = Annotated[str, Field(max_length=256, pattern=NO_CONTROL_PATTERN)]
QueryTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
NetworkText = Annotated[str, Field(max_length=64), AfterValidator(_network)]
TotpCode = Annotated[str, Field(pattern=TOTP_PATTERN)]


# --- errors ---------------------------------------------------------------------------------------


class Problem(ResponseModel):
    """RFC 9457 problem details; ``code`` is stable, ``error`` repeats ``detail`` for Open
    Inference Protocol clients."""

    type: str = Field(examples=["urn:strongroom:problem:auth.unauthenticated"])
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None
    error: str


# --- registry -------------------------------------------------------------------------------------


class PromoteRequest(RequestModel):
    to: Literal["staging", "production"]
    reason: Reason


class RollbackRequest(RequestModel):
    reason: Reason


class FileOut(ResponseModel):
    path: str
    sha256: str
    size: int


class ModelCardOut(ResponseModel):
    owner: str
    description: str
    training_data: str
    metrics: dict[str, float]


class VersionOut(ResponseModel):
    model: str
    version: int
    stage: Stage
    format: str
    manifest_digest: str
    signed: bool
    created_at: datetime
    created_by: str
    files: list[FileOut]
    primary: str
    card: ModelCardOut
    input_schema: dict[str, Any]
    trusted_types: list[str]


class StageEventOut(ResponseModel):
    model: str
    version: int
    from_stage: Stage
    to_stage: Stage
    kind: str
    reason: str
    actor: str
    at: datetime


class VersionDetail(VersionOut):
    history: list[StageEventOut]


class ModelSummary(ResponseModel):
    name: str
    versions: int
    latest_version: int | None
    production_version: int | None


class ModelList(ResponseModel):
    models: list[ModelSummary]


class ModelDetail(ResponseModel):
    name: str
    production_version: int | None
    versions: list[VersionOut]
    history: list[StageEventOut]


class PublishForm(BaseModel):
    """``multipart/form-data`` parts of a publish (documentation; ``uploads`` parses them)."""

    model_config = ConfigDict(extra="forbid")

    artifact: bytes = Field(
        description="The model file, or a .zip/.tar/.tar.gz archive; its file name is used.",
        json_schema_extra={"contentMediaType": "application/octet-stream"},
    )
    signature: str | None = Field(
        None, description="OpenSSF model-signing (sigstore bundle) JSON over the upload."
    )
    schema_: str | None = Field(None, alias="schema", description="Input schema JSON.")
    reference: str | None = Field(
        None, description="Reference sample, CSV with a header, to infer input ranges."
    )
    card: str | None = Field(
        None, description="Model card JSON (owner, description, training_data, metrics)."
    )
    format: ModelFormat | None = Field(None, description="Declared format (else detected).")
    primary: str | None = Field(
        None, description="The model file inside an archive (at most 1024 bytes of UTF-8)."
    )
    trusted_type: list[str] | None = Field(
        None,
        description="skops: a type the model may load (repeat the part for several; at most "
        "256 parts of 256 bytes of UTF-8 each).",
    )


class PublishResult(ResponseModel):
    version: VersionOut
    signer: str | None
    warnings: list[str]


class StageChange(ResponseModel):
    events: list[StageEventOut]


# --- principals and credentials -------------------------------------------------------------------


class GrantBody(RequestModel):
    role: Role
    pattern: str = Field(pattern=GRANT_PATTERN)


class GrantOut(ResponseModel):
    role: Role
    pattern: str


class PrincipalCreate(RequestModel):
    id: str = Field(pattern=PRINCIPAL_ID_PATTERN, examples=["svc:scoring", "user:alice"])
    roles: list[Role] = Field(default=[], max_length=len(Role))
    grants: list[GrantBody] = Field(default=[], max_length=MAX_GRANTS)
    networks: list[NetworkText] = Field(default=[], max_length=MAX_NETWORKS)
    description: Description = ""


class PrincipalUpdate(RequestModel):
    """Members given replace the stored ones; members left out are kept."""

    roles: list[Role] | None = Field(default=None, max_length=len(Role))
    grants: list[GrantBody] | None = Field(default=None, max_length=MAX_GRANTS)
    networks: list[NetworkText] | None = Field(default=None, max_length=MAX_NETWORKS)
    disabled: bool | None = None
    description: Description | None = None

    @model_validator(mode="after")
    def _something(self) -> PrincipalUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one member to change")
        return self


class PrincipalOut(ResponseModel):
    id: str
    kind: PrincipalKind
    roles: list[Role]
    grants: list[GrantOut]
    networks: list[str]
    disabled: bool
    created_at: datetime
    description: str


class PrincipalList(ResponseModel):
    principals: list[PrincipalOut]


class ApiKeyIssue(RequestModel):
    expires_at: AwareDatetime | None = None


class ApiKeyRotate(RequestModel):
    grace_seconds: int = Field(default=0, ge=0, le=MAX_ROTATION_GRACE_S)
    """How long the old key keeps working (0: it ends now)."""
    expires_at: AwareDatetime | None = None
    """Expiry of the new key (none by default)."""


class ApiKeyOut(ResponseModel):
    key_id: str
    principal_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyList(ResponseModel):
    keys: list[ApiKeyOut]


class IssuedApiKeyOut(ResponseModel):
    token: str = Field(description="The key itself: shown this once, never stored.")
    key: ApiKeyOut


class RotatedApiKeyOut(IssuedApiKeyOut):
    previous: ApiKeyOut


class CertificateOut(ResponseModel):
    fingerprint: str
    principal_id: str
    created_at: datetime


class PasswordSet(RequestModel):
    password: str = Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_CHARS,
        pattern=NO_CONTROL_PATTERN,
        description="The password policy also refuses common passwords, the user name and "
        "the last 4 passwords (400).",
    )


# --- sessions and tokens --------------------------------------------------------------------------


class LoginRequest(RequestModel):
    user: str = Field(pattern=USER_NAME_PATTERN, description="The user name (id user:<name>).")
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS, pattern=NO_NUL_PATTERN)
    totp: TotpCode | None = None


class SessionOut(ResponseModel):
    token: str = Field(description="The session token (srs_...): shown once.")
    principal: str
    expires_at: datetime
    mfa_at: datetime | None


class StepUpRequest(RequestModel):
    totp: TotpCode


class StepUpOut(ResponseModel):
    mfa_at: datetime | None
    expires_at: datetime


class TokenForm(BaseModel):
    """``application/x-www-form-urlencoded`` token request (RFC 6749 section 4.4.2); unknown
    parameters are ignored as RFC 6749 section 3.2 requires, repeated ones refused."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    grant_type: Literal["client_credentials"]
    scope: str | None = Field(None, max_length=4096, description="Space-separated scopes.")
    client_id: str | None = Field(
        None, max_length=256, description="If given, the authenticated service's name."
    )


class TokenOut(ResponseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str | None = None


class Jwk(ResponseModel):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class JwkSet(ResponseModel):
    keys: list[Jwk]


# --- audit ----------------------------------------------------------------------------------------


class AuditRecordsQuery(BaseModel):
    """Query parameters of ``GET /v1/audit/records`` (all filters must match)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    since: QueryTime | None = Field(None, description="Inclusive (RFC 3339 with offset).")
    until: QueryTime | None = Field(None, description="Exclusive.")
    principal: str | None = Field(None, max_length=1024, pattern=NO_NUL_PATTERN)
    action: str | None = Field(None, max_length=128, pattern=NO_NUL_PATTERN)
    outcome: Literal["allowed", "denied", "error"] | None = Field(
        None, description="Applied to the page the other filters select."
    )
    after_seq: int = Field(
        -1, ge=-1, le=MAX_SEQ, description="Page on: records after this sequence number."
    )
    limit: int = Field(100, ge=1, le=MAX_AUDIT_PAGE)


class AuditRecordOut(ResponseModel):
    v: int
    seq: int
    time: str
    principal: str | None
    action: str
    resource: str
    model_version: int | None
    manifest_digest: str | None
    outcome: Literal["allowed", "denied", "error"]
    reason: str | None
    client_address: str | None
    request_id: str
    input_hmac: str | None
    latency_us: int | None
    details: dict[str, str | int | bool | None]


class AuditRecordsPage(ResponseModel):
    records: list[AuditRecordOut]
    next_after_seq: int | None = Field(
        description="Pass as after_seq for the next page; null when this page was the last."
    )


class AuditVerificationOut(ResponseModel):
    ok: bool
    records_checked: int
    problem: str | None
    first_bad_seq: int | None
    suspect_range: list[int] | None
    signed_size: int
    proven_size: int | None
    complete: bool
    completeness: str
