"""The bearer-token policy: which JWTs may authenticate a request, and as which ``Principal``.

This module is the pure half of JWT authentication (no I/O, no clock of its own, no JOSE
library). ``strongroom.adapters.identity.jwt_verifier`` parses tokens, fetches keys and checks
signatures, and asks this module every policy question:

* ``IssuerConfig``: one trusted issuer. Its ``iss`` is compared byte for byte; its algorithms
  are pinned (HMAC and ``none`` cannot be configured: a public key must never become a shared
  secret); its keys come only from its own ``jwks_url`` (``https://`` unless the explicit
  ``unsafe_http_jwks``) or an inline key set; leeway is at most 60 s.
* ``check_header``: refuses ``alg`` ``none`` in any casing, algorithms not pinned for the issuer,
  embedded or remote keys (``jwk``, ``jku``, ``x5u``, ``x5c``), any ``crit`` and other headers
  that change how a token is read (``b64``, ``zip``, ``enc``, ``cty``), unsafe ``kid`` values and
  token types the issuer does not accept. Other header parameters (``x5t``, vendor extras) carry
  no meaning here and are ignored, as RFC 7515 requires of parameters that are not understood.
* ``check_claims``: ``iss``, ``aud``, ``sub`` and ``exp`` are required; ``exp``/``nbf``/``iat``
  are judged against the injected ``now`` with the issuer's leeway.
* ID tokens are not access tokens. Rule: a token typed ``at+jwt`` (RFC 9068, case-insensitive,
  ``application/`` prefix optional) is an access token. A token typed ``JWT`` or untyped is
  accepted only if the issuer allows ``TokenType.GENERIC`` and it carries none of the claims
  that only OpenID Connect ID tokens carry (``nonce``, ``at_hash``, ``c_hash``, ``s_hash``).
  ``audiences`` must name this resource server, never a client id, so an ID token (whose
  ``aud`` is the client id of the relying party) also fails the audience check.
* ``principal_from_claims``: ``user:<prefix><sub>``, or ``svc:<prefix><client_id>`` for
  client-credentials tokens (``sub == client_id``, RFC 9068 section 2.2); roles only through
  the issuer's closed ``role_map`` (unknown values are ignored, never guessed).

Every refusal is the opaque ``AuthenticationError``; the reason (a ``RejectReason``) is on
``__cause__`` for the server log and audit record only. Read it with ``rejection_reason``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, NoReturn, Protocol
from urllib.parse import urlsplit

from strongroom.core.identity.principal import (
    CREDENTIAL_ID_RE,
    PRINCIPAL_ID_RE,
    CredentialInfo,
    CredentialKind,
    Principal,
    PrincipalKind,
    Role,
)
from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

ALGORITHM_KEY_TYPES: Final[Mapping[str, tuple[str, str | None]]] = MappingProxyType(
    {
        "RS256": ("RSA", None),
        "RS384": ("RSA", None),
        "RS512": ("RSA", None),
        "PS256": ("RSA", None),
        "PS384": ("RSA", None),
        "PS512": ("RSA", None),
        "ES256": ("EC", "P-256"),
        "ES384": ("EC", "P-384"),
        "ES512": ("EC", "P-521"),
        "EdDSA": ("OKP", "Ed25519"),
    }
)
"""Every algorithm an issuer may pin, with the only key type (``kty``, ``crv``) it may use."""

MAX_LEEWAY: Final = timedelta(seconds=60)
DEFAULT_LEEWAY: Final = timedelta(seconds=30)
MAX_KID_CHARS: Final = 128
MAX_AUDIENCES: Final = 64
MAX_ROLE_VALUES: Final = 256
MAX_TEXT_CHARS: Final = 512
FORBIDDEN_HEADERS: Final = frozenset(
    {"jwk", "jku", "x5u", "x5c", "crit", "b64", "zip", "enc", "cty"}
)
ID_TOKEN_CLAIMS: Final = frozenset({"nonce", "at_hash", "c_hash", "s_hash"})
BASE_REQUIRED_CLAIMS: Final = ("exp", "iss", "aud", "sub")
_MAX_NUMERIC_DATE: Final = 253402300800  # 10000-01-01T00:00:00Z: datetime's limit
_CLAIM_NAME_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")
_PREFIX_RE: Final = re.compile(r"(?:[a-z0-9][a-z0-9._-]{0,30}:)?")
_SAFE_KID_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")


class TokenType(StrEnum):
    ACCESS = "at+jwt"  # RFC 9068 JWT access token
    GENERIC = "JWT"  # typ "JWT" or no typ at all


class SubjectKind(StrEnum):
    """How ``sub``/``client_id`` become a principal id (see ``principal_from_claims``)."""

    AUTO = "auto"
    USER = "user"
    SERVICE = "service"


class RejectReason(StrEnum):
    """Why a token was refused: for the server log and the audit record, never the client."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNKNOWN_ISSUER = "unknown_issuer"
    ALG_NONE = "alg_none"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    FORBIDDEN_HEADER = "forbidden_header"
    BAD_KID = "bad_kid"
    BAD_TYPE = "bad_type"
    ID_TOKEN = "id_token"  # noqa: S105 - a reason label, not a secret  # nosec B105
    NO_KEY = "no_key"
    KEYS_UNAVAILABLE = "keys_unavailable"
    BAD_SIGNATURE = "bad_signature"
    MISSING_CLAIM = "missing_claim"
    BAD_CLAIM = "bad_claim"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_SUBJECT = "bad_subject"


class TokenRejection(Exception):  # noqa: N818 - a reason carried on __cause__, not an error
    """The reason behind an ``AuthenticationError``; read it with ``rejection_reason``."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


def reject(reason: RejectReason, detail: str = "") -> NoReturn:
    """Raise the opaque ``AuthenticationError`` with ``reason`` (and detail) on ``__cause__``."""
    raise AuthenticationError from TokenRejection(reason, detail)


def rejection_reason(error: BaseException) -> RejectReason | None:
    """The logged reason of a token refusal raised by this package, or None."""
    cause = error.__cause__
    return cause.reason if isinstance(cause, TokenRejection) else None


def _check_url(name: str, url: str, *, allow_http: bool) -> None:
    schemes = {"https", "http"} if allow_http else {"https"}
    if not isinstance(url, str) or not 0 < len(url) <= MAX_TEXT_CHARS or not url.isprintable():
        raise ConfigurationError(f"{name} must be a URL of at most {MAX_TEXT_CHARS} characters")
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname or "@" in parts.netloc:
        raise ConfigurationError(
            f"{name} must be an https:// URL with a host and no user info: {url!r}",
            hint="http:// only with unsafe_http_jwks = true (development only)",
        )
    if parts.fragment or " " in url:
        raise ConfigurationError(f"{name} must not contain a fragment or spaces: {url!r}")


def _check_texts(name: str, values: object, *, limit: int, non_empty: bool = True) -> None:
    if not isinstance(values, tuple) or (non_empty and not values) or len(values) > limit:
        raise ConfigurationError(f"{name} must be a tuple of 1-{limit} strings")
    for value in values:
        if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_CHARS:
            raise ConfigurationError(f"{name}: invalid entry {value!r}")
    if len(set(values)) != len(values):
        raise ConfigurationError(f"{name} must not repeat an entry")


def _freeze_jwks(jwks: Mapping[str, Any]) -> Mapping[str, Any]:
    """A private, JSON-shaped, read-only copy of an inline JWK Set."""
    try:
        copy = json.loads(json.dumps(dict(jwks), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError("jwks must be a JSON object (a JWK Set)") from exc
    if not isinstance(copy.get("keys"), list) or not copy["keys"]:
        raise ConfigurationError('jwks must be a JWK Set: {"keys": [...]} with at least one key')
    return MappingProxyType(copy)


@dataclass(frozen=True, kw_only=True)
class IssuerConfig:
    """One trusted token issuer. Invalid or unsafe settings raise ``ConfigurationError``.

    ``jwks_url`` (fetched, cached, refreshed) and ``jwks`` (an inline JWK Set, never refreshed:
    Strongroom's own ``TokenIssuer``) are mutually exclusive. ``role_claim`` is a path into the
    claims (``("roles",)``, ``("realm_access", "roles")``); empty means the token carries no
    roles and the server takes them from its principal store. ``subject_prefix`` (``""`` or
    ``"corp:"``) keeps two issuers' subjects apart: ``sub`` is only unique per issuer.
    """

    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    token_types: frozenset[TokenType] = frozenset({TokenType.ACCESS})
    required_claims: tuple[str, ...] = ()
    leeway: timedelta = DEFAULT_LEEWAY
    subject_kind: SubjectKind = SubjectKind.AUTO
    subject_prefix: str = ""
    role_claim: tuple[str, ...] = ()
    role_map: Mapping[str, Role] = field(default_factory=lambda: MappingProxyType({}))
    mfa_amr_values: tuple[str, ...] = ("mfa",)
    unsafe_http_jwks: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.unsafe_http_jwks, bool):
            raise ConfigurationError("unsafe_http_jwks must be a bool")
        _check_url("issuer", self.issuer, allow_http=self.unsafe_http_jwks)
        _check_texts("audiences", self.audiences, limit=MAX_AUDIENCES)
        self._check_algorithms()
        self._check_keys_source()
        if not isinstance(self.token_types, frozenset) or not self.token_types:
            raise ConfigurationError("token_types must be a non-empty frozenset of TokenType")
        if not all(isinstance(t, TokenType) for t in self.token_types):
            raise ConfigurationError("token_types must hold TokenType values")
        _check_texts("required_claims", self.required_claims, limit=32, non_empty=False)
        if not all(_CLAIM_NAME_RE.fullmatch(name) for name in self.required_claims):
            raise ConfigurationError("required_claims must be printable claim names")
        if not isinstance(self.leeway, timedelta) or not timedelta(0) <= self.leeway <= MAX_LEEWAY:
            raise ConfigurationError(f"leeway must be between 0 and {MAX_LEEWAY}")
        if not isinstance(self.subject_kind, SubjectKind):
            raise ConfigurationError("subject_kind must be a SubjectKind")
        if not isinstance(self.subject_prefix, str) or not _PREFIX_RE.fullmatch(
            self.subject_prefix
        ):
            raise ConfigurationError(
                "subject_prefix must be empty or like 'corp:' (lower-case, ends with ':')"
            )
        self._check_roles()
        _check_texts("mfa_amr_values", self.mfa_amr_values, limit=16, non_empty=False)

    def _check_algorithms(self) -> None:
        _check_texts("algorithms", self.algorithms, limit=len(ALGORITHM_KEY_TYPES))
        for alg in self.algorithms:
            if alg.upper().startswith("HS"):
                raise ConfigurationError(
                    f"algorithm {alg} refused: HMAC is never allowed for an issuer",
                    hint="a verifier's HMAC key would be a shared secret (RS/ES to HS confusion)",
                )
            if alg not in ALGORITHM_KEY_TYPES:
                raise ConfigurationError(
                    f"unsupported algorithm {alg!r}",
                    hint=f"choose from {', '.join(ALGORITHM_KEY_TYPES)}",
                )

    def _check_keys_source(self) -> None:
        if (self.jwks_url is None) == (self.jwks is None):
            raise ConfigurationError(f"issuer {self.issuer}: set exactly one of jwks_url, jwks")
        if self.jwks_url is not None:
            _check_url("jwks_url", self.jwks_url, allow_http=self.unsafe_http_jwks)
        if self.jwks is not None:
            object.__setattr__(self, "jwks", _freeze_jwks(self.jwks))

    def _check_roles(self) -> None:
        _check_texts("role_claim", self.role_claim, limit=8, non_empty=False)
        if not isinstance(self.role_map, Mapping):
            raise ConfigurationError("role_map must be a mapping of claim value to Role")
        frozen = dict(self.role_map)
        if not all(isinstance(k, str) and k and isinstance(v, Role) for k, v in frozen.items()):
            raise ConfigurationError("role_map must map non-empty strings to Role values")
        if frozen and not self.role_claim:
            raise ConfigurationError("role_map needs a role_claim to read roles from")
        object.__setattr__(self, "role_map", MappingProxyType(frozen))

    @property
    def all_required_claims(self) -> tuple[str, ...]:
        extra = tuple(c for c in self.required_claims if c not in BASE_REQUIRED_CLAIMS)
        return BASE_REQUIRED_CLAIMS + extra


# --- header ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderInfo:
    """What a checked JOSE header says: the pinned ``alg``, the ``kid`` and the token type."""

    alg: str
    kid: str | None
    token_type: TokenType


def is_safe_kid(kid: object) -> bool:
    """1-128 printable ASCII characters, no space, no path separator and no ``..``."""
    return (
        isinstance(kid, str)
        and bool(_SAFE_KID_RE.fullmatch(kid))
        and "/" not in kid
        and "\\" not in kid
        and ".." not in kid
    )


def token_type_of(typ: object) -> TokenType | None:
    """``at+jwt``/``application/at+jwt`` (any case) or ``JWT``/absent; None for anything else."""
    if typ is None:
        return TokenType.GENERIC
    if not isinstance(typ, str):
        return None
    lowered = typ.lower().removeprefix("application/")
    return {"at+jwt": TokenType.ACCESS, "jwt": TokenType.GENERIC}.get(lowered)


def check_header(
    header: Mapping[str, Any],
    *,
    algorithms: Collection[str],
    token_types: Collection[TokenType],
) -> HeaderInfo:
    """Refuse every header this server does not fully understand and trust (see module doc)."""
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        reject(RejectReason.MALFORMED, "alg missing or not a string")
    if alg.strip().lower() == "none":
        reject(RejectReason.ALG_NONE, repr(alg)[:40])
    forbidden = FORBIDDEN_HEADERS.intersection(header)
    if forbidden:
        reject(RejectReason.FORBIDDEN_HEADER, ",".join(sorted(forbidden)))  # fixed names only
    if alg not in algorithms or alg not in ALGORITHM_KEY_TYPES:
        reject(RejectReason.ALG_NOT_ALLOWED, repr(alg)[:40])
    kid = header.get("kid")
    if kid is not None and not is_safe_kid(kid):
        reject(RejectReason.BAD_KID)
    token_type = token_type_of(header.get("typ"))
    if token_type is None or token_type not in token_types:
        reject(RejectReason.BAD_TYPE, repr(header.get("typ"))[:64])
    return HeaderInfo(alg=alg, kid=kid, token_type=token_type)


# --- claims ---------------------------------------------------------------------------------------


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        reject(RejectReason.BAD_CLAIM, f"{name} is not a number")
    if not math.isfinite(value) or not 0 <= value < _MAX_NUMERIC_DATE:
        reject(RejectReason.BAD_CLAIM, f"{name} out of range")
    return float(value)


def _check_now(now: datetime) -> float:
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise InvalidInputError("now must be a timezone-aware datetime")
    return now.timestamp()


def _audiences_of(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud
    if (
        not isinstance(values, list)
        or not 0 < len(values) <= MAX_AUDIENCES
        or not all(isinstance(v, str) for v in values)
    ):
        reject(RejectReason.BAD_CLAIM, "aud")
    return values


def _check_identity_claims(config: IssuerConfig, claims: Mapping[str, Any]) -> None:
    for name in config.all_required_claims:
        if claims.get(name) is None:
            reject(RejectReason.MISSING_CLAIM, name)
    if claims["iss"] != config.issuer:
        reject(RejectReason.WRONG_ISSUER)
    if not set(_audiences_of(claims)).intersection(config.audiences):
        reject(RejectReason.WRONG_AUDIENCE)
    sub = claims["sub"]
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_TEXT_CHARS:
        reject(RejectReason.BAD_CLAIM, "sub")
    if "client_id" in claims and not isinstance(claims["client_id"], str):
        reject(RejectReason.BAD_CLAIM, "client_id")


def check_claims(
    config: IssuerConfig, claims: Mapping[str, Any], *, token_type: TokenType, now: datetime
) -> datetime:
    """Check a verified token's claims against ``config`` at ``now``; return its expiry.

    Expired means ``exp <= now - leeway``; not yet valid means ``nbf`` or ``iat`` after
    ``now + leeway``.
    """
    now_ts = _check_now(now)
    _check_identity_claims(config, claims)
    leeway = config.leeway.total_seconds()
    exp = _numeric_date(claims, "exp")
    if exp is None or exp <= now_ts - leeway:
        reject(RejectReason.EXPIRED)
    for name in ("nbf", "iat"):
        value = _numeric_date(claims, name)
        if value is not None and value > now_ts + leeway:
            reject(RejectReason.NOT_YET_VALID, name)
    if token_type is not TokenType.ACCESS and ID_TOKEN_CLAIMS.intersection(claims):
        reject(RejectReason.ID_TOKEN)
    return datetime.fromtimestamp(exp, UTC)


# --- principal ------------------------------------------------------------------------------------


def _claim_at(claims: Mapping[str, Any], path: tuple[str, ...]) -> object:
    value: object = claims
    for name in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def roles_from_claims(config: IssuerConfig, claims: Mapping[str, Any]) -> frozenset[Role]:
    """Roles through the closed ``role_map``; a list or a space-separated string is read."""
    if not config.role_claim:
        return frozenset()
    value = _claim_at(claims, config.role_claim)
    if value is None:
        return frozenset()
    values = value.split() if isinstance(value, str) else value
    if (
        not isinstance(values, list)
        or len(values) > MAX_ROLE_VALUES
        or not all(isinstance(v, str) for v in values)
    ):
        reject(RejectReason.BAD_CLAIM, "roles")
    return frozenset(config.role_map[v] for v in values if v in config.role_map)


def _identity(config: IssuerConfig, claims: Mapping[str, Any]) -> tuple[PrincipalKind, str]:
    sub = claims.get("sub")
    client_id = claims.get("client_id")
    if config.subject_kind is SubjectKind.SERVICE:
        name, kind = (client_id if isinstance(client_id, str) else sub), PrincipalKind.SERVICE
    elif config.subject_kind is SubjectKind.AUTO and client_id is not None and sub == client_id:
        name, kind = client_id, PrincipalKind.SERVICE
    else:
        name, kind = sub, PrincipalKind.USER
    prefix = "svc:" if kind is PrincipalKind.SERVICE else "user:"
    # A subject may not contain ':' — prefixes end with one, so "user:" + prefix + subject maps
    # (issuer, subject) to a principal id one-to-one: issuer A's subject "corp:alice" can never
    # become issuer B's (prefix "corp:") user "alice".
    if not isinstance(name, str) or ":" in name:
        reject(RejectReason.BAD_SUBJECT)
    principal_id = f"{prefix}{config.subject_prefix}{name}"
    if not PRINCIPAL_ID_RE.fullmatch(principal_id):
        reject(RejectReason.BAD_SUBJECT)
    return kind, principal_id


def _mfa_at(config: IssuerConfig, claims: Mapping[str, Any], now_ts: float) -> datetime | None:
    """``auth_time`` if ``amr`` names one of the trusted MFA methods; else None (never fresh)."""
    amr = claims.get("amr")
    if not config.mfa_amr_values or not isinstance(amr, list):
        return None
    if not any(isinstance(m, str) and m in config.mfa_amr_values for m in amr):
        return None
    auth_time = claims.get("auth_time")
    if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
        return None
    if not math.isfinite(auth_time) or not 0 <= auth_time <= now_ts + config.leeway.total_seconds():
        return None
    return datetime.fromtimestamp(auth_time, UTC)


def principal_from_claims(
    config: IssuerConfig, claims: Mapping[str, Any], *, now: datetime, fallback_credential_id: str
) -> Principal:
    """The ``Principal`` a checked token acts as (call ``check_claims`` first).

    The credential id is the token's ``jti`` when it is printable ASCII, else
    ``fallback_credential_id`` (the verifier passes a digest of the token). ``grants``,
    ``networks`` and ``disabled`` are left empty: they come from the principal store.
    """
    now_ts = _check_now(now)
    kind, principal_id = _identity(config, claims)
    exp = _numeric_date(claims, "exp")
    if exp is None:
        reject(RejectReason.MISSING_CLAIM, "exp")
    jti = claims.get("jti")
    credential_id = (
        jti if isinstance(jti, str) and CREDENTIAL_ID_RE.fullmatch(jti) else fallback_credential_id
    )
    return Principal(
        id=principal_id,
        kind=kind,
        credential=CredentialInfo(
            kind=CredentialKind.JWT,
            id=credential_id,
            expires_at=datetime.fromtimestamp(exp, UTC),
        ),
        roles=roles_from_claims(config, claims),
        mfa_at=_mfa_at(config, claims, now_ts) if kind is PrincipalKind.USER else None,
    )


# --- result and port ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature, header and claims all passed, and who it acts as.

    ``claims`` is read-only at the top level; treat nested values as read-only too (the
    verifier may hand the same object to many requests from its cache).
    """

    issuer: str
    algorithm: str
    key_id: str | None
    token_type: TokenType
    claims: Mapping[str, Any]
    principal: Principal
    expires_at: datetime


class TokenVerifier(Protocol):
    """The port the server authenticates bearer tokens through."""

    def verify(self, token: str) -> VerifiedToken:
        """Return the verified token or raise the opaque ``AuthenticationError``."""
        ...
