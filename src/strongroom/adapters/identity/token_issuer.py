"""Strongroom's own access tokens for the OAuth2 client-credentials grant (RFC 6749 section 4.4).

A service that authenticated at the token endpoint (with its API key or mTLS certificate) gets
a short-lived JWT access token instead of sending its long-lived credential on every request.
``TokenIssuer.issue`` makes an RFC 9068 token: header ``{"alg": "EdDSA", "typ": "at+jwt",
"kid": <RFC 7638 thumbprint>}``, claims ``iss``, ``aud``, ``sub`` = ``client_id``,
``client_id``, ``iat`` = ``nbf``, ``exp`` = ``iat + ttl``, a random ``jti``, ``roles`` and
``scope``. It is signed with Ed25519 through ``core.crypto`` (deterministic: only the ``jti``
uses randomness, which is injected, as is the clock).

Strongroom verifies its own tokens like any other issuer's: ``issuer_config()`` returns the
``IssuerConfig`` (EdDSA only, ``at+jwt`` only, the inline JWK Set from ``jwks()``, subjects
mapped to ``svc:<client_id>``, roles from the ``roles`` claim) to hand to ``JwtVerifier``.
``jwks()`` may also be published (for example at ``/.well-known/jwks.json``) so that other
services can check the tokens.

Invariants: ``ttl`` is between 1 second and 60 minutes (default 5 minutes); the private key is a
32-byte Ed25519 seed, never logged or exposed; ``client_id`` must form a valid ``svc:`` principal
id and scopes must be RFC 6749 scope tokens, else ``InvalidInputError``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final

from strongroom.adapters.identity.jwks import b64url_encode
from strongroom.core.crypto.ed25519 import (
    ED25519_KEY_BYTES,
    ed25519_public_from_private,
    ed25519_sign,
)
from strongroom.core.identity.principal import Role, check_principal_id
from strongroom.core.identity.tokens import IssuerConfig, SubjectKind, TokenType
from strongroom.core.types import Clock, RandomBytes
from strongroom.errors import ConfigurationError, InvalidInputError

DEFAULT_TTL: Final = timedelta(minutes=5)
MAX_TTL: Final = timedelta(minutes=60)
MIN_TTL: Final = timedelta(seconds=1)
VERIFY_LEEWAY: Final = timedelta(seconds=5)
"""Clock skew tolerated between the workers or hosts that issue and verify these tokens."""
JTI_BYTES: Final = 16
MAX_SCOPES: Final = 64
ROLES_CLAIM: Final = "roles"
_SCOPE_TOKEN_RE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")


def _compact_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


class TokenIssuer:
    """Issues EdDSA ``at+jwt`` access tokens for service principals (see module doc)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        private_key: bytes,
        clock: Clock,
        random_bytes: RandomBytes,
        ttl: timedelta = DEFAULT_TTL,
        unsafe_http: bool = False,
    ) -> None:
        if not isinstance(private_key, bytes) or len(private_key) != ED25519_KEY_BYTES:
            raise ConfigurationError("the token signing key must be a 32-byte Ed25519 seed")
        if not isinstance(ttl, timedelta) or not MIN_TTL <= ttl <= MAX_TTL:
            raise ConfigurationError(f"token ttl must be between {MIN_TTL} and {MAX_TTL}")
        if ttl % timedelta(seconds=1):
            raise ConfigurationError("token ttl must be a whole number of seconds")
        self._private_key = private_key
        self._clock = clock
        self._random_bytes = random_bytes
        self._ttl = ttl
        public = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(ed25519_public_from_private(private_key)),
        }
        self._kid = b64url_encode(hashlib.sha256(_compact_json(public)).digest())
        self._public_jwk = MappingProxyType(
            {**public, "kid": self._kid, "alg": "EdDSA", "use": "sig"}
        )
        # Validates issuer and audience with the same rules as every other issuer.
        self._config = IssuerConfig(
            issuer=issuer,
            audiences=(audience,),
            algorithms=("EdDSA",),
            jwks=self.jwks(),
            token_types=frozenset({TokenType.ACCESS}),
            required_claims=("client_id", "iat", "jti"),
            leeway=VERIFY_LEEWAY,
            subject_kind=SubjectKind.SERVICE,
            role_claim=(ROLES_CLAIM,),
            role_map={role.value: role for role in Role},
            mfa_amr_values=(),
            unsafe_http_jwks=unsafe_http,
        )

    @property
    def key_id(self) -> str:
        return self._kid

    @property
    def ttl(self) -> timedelta:
        """Lifetime of every token: the ``expires_in`` of the token endpoint's answer."""
        return self._ttl

    def jwks(self) -> dict[str, Any]:
        """The public key as a JWK Set (a fresh dict each call: safe to serialise or publish)."""
        return {"keys": [dict(self._public_jwk)]}

    def issuer_config(self, *, also_trust: Iterable[Mapping[str, Any]] = ()) -> IssuerConfig:
        """The ``IssuerConfig`` under which ``JwtVerifier`` accepts exactly these tokens.

        After a key rotation, pass the previous issuer's ``jwks()["keys"]`` as ``also_trust``
        for one ``ttl``, so that tokens issued just before the rotation stay valid until they
        expire.
        """
        previous = [dict(key) for key in also_trust]
        if not previous:
            return self._config
        return replace(self._config, jwks={"keys": [dict(self._public_jwk), *previous]})

    def issue(self, client_id: str, roles: Iterable[Role] = (), scope: Iterable[str] = ()) -> str:
        """A signed access token for the service ``client_id`` (``svc:<client_id>``)."""
        if not isinstance(client_id, str):
            raise InvalidInputError("client_id must be a string")
        check_principal_id(f"svc:{client_id}")
        role_values = sorted({_role(role).value for role in roles})
        scopes = list(
            dict.fromkeys(_scope(s) for s in ([scope] if isinstance(scope, str) else scope))
        )
        if len(scopes) > MAX_SCOPES:
            raise InvalidInputError(f"at most {MAX_SCOPES} scopes")
        now = self._clock()
        if now.utcoffset() is None:
            raise InvalidInputError("the clock must return timezone-aware times")
        issued_at = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self._config.issuer,
            "aud": self._config.audiences[0],
            "sub": client_id,
            "client_id": client_id,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + int(self._ttl.total_seconds()),
            "jti": b64url_encode(self._random_bytes(JTI_BYTES)),
            ROLES_CLAIM: role_values,
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        header = {"alg": "EdDSA", "typ": "at+jwt", "kid": self._kid}
        signing_input = (
            f"{b64url_encode(_compact_json(header))}.{b64url_encode(_compact_json(claims))}"
        )
        signature = ed25519_sign(self._private_key, signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(signature)}"


def _role(value: object) -> Role:
    if not isinstance(value, Role):
        raise InvalidInputError(f"not a Role: {value!r}")
    return value


def _scope(value: object) -> str:
    """One RFC 6749 scope token (printable ASCII without space, ``"`` or ``\\``)."""
    if not isinstance(value, str) or not _SCOPE_TOKEN_RE.fullmatch(value):
        raise InvalidInputError(f"invalid scope token {value!r}")
    return value
