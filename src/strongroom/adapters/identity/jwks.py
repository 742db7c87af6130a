"""JOSE building blocks of bearer-token verification: strict parsing, JWK Sets, JWS checks.

* ``parse_compact``: at most 8 KiB, exactly three segments of canonical unpadded base64url, a
  header that is a JSON object without duplicate keys or NaN, a non-empty signature.
* ``KeySet.from_jwks``: the usable keys of an issuer's JWK Set. Signing keys only (``use`` absent
  or ``sig``, ``key_ops`` absent or containing ``verify``); RSA of 2048-16384 bits with an odd
  exponent of at least 3 and no ROCA fingerprint; EC P-256/384/521 points that lie on their curve;
  Ed25519. A set holding private or symmetric key material is refused whole (that issuer is
  broken or compromised); keys sharing a ``kid`` are dropped as ambiguous. A key with an ``alg``
  member serves only that algorithm, and every algorithm fits exactly one key type (RSA for RS/PS,
  EC of the matching curve for ES, OKP Ed25519 for EdDSA), so a public key can never become an
  HMAC secret.
* ``verify_jws``: parse, header policy (``tokens.check_header``), key by ``kid`` (without one:
  the only key fitting the algorithm), then PyJWT's signature check with the algorithm pinned and
  the key bound to it. ``JwtVerifier`` uses the same pieces and adds the JWT claims.
* ``https_jwks_fetcher``: one GET of the configured URL, TLS 1.2+ verified, no redirects, capped.

Refusals of tokens are the opaque ``AuthenticationError`` (reason on ``__cause__``); problems
with key material are ``ValueError`` for the caller to log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import jwt
from jwt import api_jws

from strongroom.core.identity.tokens import (
    ALGORITHM_KEY_TYPES,
    RejectReason,
    TokenRejection,
    TokenType,
    check_header,
    reject,
)
from strongroom.errors import AuthenticationError, ConfigurationError

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS: Final = 8 * 1024
MAX_JWKS_BYTES: Final = 256 * 1024
MAX_JWKS_KEYS: Final = 100
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 16384
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")
_SECRET_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS: Final = MappingProxyType(
    {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
)
_COORDINATE_BYTES: Final = MappingProxyType({"P-256": 32, "P-384": 48, "P-521": 66, "Ed25519": 32})
_ROCA_PRIMES: Final = (
    *(3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89),
    *(97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167),
)
_ROCA_GENERATOR: Final = 65537
_ALL_TYPES: Final = frozenset(TokenType)
_PYJWT_REASONS: Final = (
    (jwt.InvalidSignatureError, RejectReason.BAD_SIGNATURE),
    (jwt.InvalidAudienceError, RejectReason.WRONG_AUDIENCE),
    (jwt.InvalidIssuerError, RejectReason.WRONG_ISSUER),
    (jwt.MissingRequiredClaimError, RejectReason.MISSING_CLAIM),
    (jwt.InvalidAlgorithmError, RejectReason.ALG_NOT_ALLOWED),
    (jwt.InvalidKeyError, RejectReason.NO_KEY),
    (jwt.DecodeError, RejectReason.MALFORMED),
)


# --- strict parsing ------------------------------------------------------------------------------


def b64url_decode(segment: str) -> bytes:
    """Unpadded base64url in its one canonical spelling; ``ValueError`` for anything else."""
    if not _B64URL_RE.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != segment:
        raise ValueError("not canonical base64url")
    return data


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate JSON key {key[:32]!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> None:
    raise ValueError(f"JSON constant {name} not allowed")


def parse_json_object(data: bytes) -> dict[str, Any]:
    """A UTF-8 JSON object with unique keys and no NaN/Infinity; ``ValueError`` otherwise."""
    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constants
        )
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - bad input data, like json's errors
    return value


@dataclass(frozen=True)
class CompactJws:
    """A parsed (not yet verified) compact JWS."""

    header: Mapping[str, Any]
    payload: bytes
    signature: bytes


def parse_compact(token: object) -> CompactJws:
    """Parse ``header.payload.signature`` strictly, or raise ``AuthenticationError``."""
    if not isinstance(token, str):
        reject(RejectReason.MALFORMED, "not a string")
    if len(token) > MAX_TOKEN_CHARS:
        reject(RejectReason.TOO_LARGE)
    parts = token.split(".")
    if len(parts) != 3:  # noqa: PLR2004 - header, payload, signature
        reject(RejectReason.MALFORMED, "not three segments")
    try:
        header = parse_json_object(b64url_decode(parts[0]))
        payload = b64url_decode(parts[1])
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise AuthenticationError from TokenRejection(RejectReason.MALFORMED, str(exc))
    if not signature:
        reject(RejectReason.MALFORMED, "empty signature")
    return CompactJws(header=MappingProxyType(header), payload=payload, signature=signature)


# --- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerificationKey:
    """One usable public key of a JWK Set, bound to one algorithm."""

    kid: str | None
    alg: str
    thumbprint: str  # RFC 7638: identifies the key material, whatever its kid
    jwk: jwt.PyJWK = field(repr=False)


def _has_roca_fingerprint(n: int) -> bool:
    """Whether ``n`` has the structure of Infineon's vulnerable RSA keys (CVE-2017-15361).

    Such moduli are ``k * M + (65537^a mod M)``, so ``n mod p`` lies in the subgroup generated by
    65537 for every small prime ``p``; a random modulus does so for all 38 primes here with a
    probability of about 2^-27 (the test of the ROCA authors' detector).
    """
    return all(n % p in {pow(_ROCA_GENERATOR, i, p) for i in range(p - 1)} for p in _ROCA_PRIMES)


def _check_rsa(public: Mapping[str, str]) -> None:
    n = int.from_bytes(b64url_decode(public["n"]), "big")
    e = int.from_bytes(b64url_decode(public["e"]), "big")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS or n % 2 == 0:
        raise ValueError("RSA modulus size out of policy")
    if e < 3 or e % 2 == 0 or e >= n:  # noqa: PLR2004 - the smallest valid RSA exponent
        raise ValueError("RSA exponent out of policy")
    if _has_roca_fingerprint(n):
        raise ValueError("RSA modulus has the ROCA fingerprint")


def _public_members(entry: Mapping[str, Any]) -> dict[str, str]:
    """The public members of a signing JWK after the key policy; ``ValueError`` if refused."""
    kty = entry.get("kty")
    if not isinstance(kty, str) or kty not in _PUBLIC_MEMBERS:
        raise ValueError(f"unsupported kty {kty!r}")
    if entry.get("use", "sig") != "sig":
        raise ValueError("not a signing key (use)")
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise ValueError("not a verification key (key_ops)")
    public = {"kty": kty}
    for name in _PUBLIC_MEMBERS[kty]:
        value = entry.get(name)
        if not isinstance(value, str):
            raise ValueError(f"member {name} missing")  # noqa: TRY004 - bad key data
        public[name] = value
    if kty == "RSA":
        _check_rsa(public)
    elif len(b64url_decode(public["x"])) != _COORDINATE_BYTES.get(public["crv"], -1) or (
        kty == "EC" and len(b64url_decode(public["y"])) != _COORDINATE_BYTES[public["crv"]]
    ):
        raise ValueError("bad curve or coordinate length")
    return public


def _thumbprint(public: Mapping[str, str]) -> str:
    canonical = json.dumps(dict(public), separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def _keys_of(entry: Mapping[str, Any], algorithms: Collection[str]) -> list[VerificationKey]:
    public = _public_members(entry)
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    key_alg = entry.get("alg")
    curve = public.get("crv")
    fitting = [
        alg
        for alg in algorithms
        if ALGORITHM_KEY_TYPES.get(alg) == (public["kty"], curve)
        and (key_alg is None or key_alg == alg)
    ]
    thumbprint = _thumbprint(public)
    try:
        return [VerificationKey(kid, alg, thumbprint, jwt.PyJWK(public, alg)) for alg in fitting]
    except jwt.PyJWTError as exc:  # e.g. an EC point not on its curve
        raise ValueError(f"unusable key: {exc}") from exc


class KeySet:
    """The usable verification keys of one issuer's JWK Set (policy: see the module doc)."""

    def __init__(self, keys: Sequence[VerificationKey]) -> None:
        self._keys = tuple(keys)
        self._thumbprints = frozenset(k.thumbprint for k in self._keys)

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any] | bytes, algorithms: Collection[str]) -> KeySet:
        """Keys usable with ``algorithms``; ``ValueError`` if the set itself is unacceptable."""
        data = parse_json_object(jwks) if isinstance(jwks, bytes) else jwks
        entries = data.get("keys")
        if not isinstance(entries, list) or not 0 < len(entries) <= MAX_JWKS_KEYS:
            raise ValueError(f"a JWK Set needs a 'keys' list of 1-{MAX_JWKS_KEYS} keys")
        if not all(isinstance(e, Mapping) for e in entries):
            raise ValueError("a JWK Set member is not an object")
        if any(_SECRET_MEMBERS.intersection(e) for e in entries):
            raise ValueError("the JWK Set holds private or symmetric key material")
        kids = [e.get("kid") for e in entries if isinstance(e.get("kid"), str)]
        ambiguous = {kid for kid in kids if kids.count(kid) > 1}
        keys: list[VerificationKey] = []
        for index, entry in enumerate(entries):
            if entry.get("kid") in ambiguous:
                log.warning("JWK Set: kid %r is used more than once; ignored", entry.get("kid"))
                continue
            try:
                keys.extend(_keys_of(entry, algorithms))
            except ValueError as exc:
                log.info("JWK Set: key %d (kid %r) ignored: %s", index, entry.get("kid"), exc)
        return cls(keys)

    def find(self, alg: str, kid: str | None) -> VerificationKey | None:
        """The key for ``kid`` and ``alg``; without ``kid``, the only key fitting ``alg``."""
        found = [k for k in self._keys if k.alg == alg and (kid is None or k.kid == kid)]
        return found[0] if len(found) == 1 else None

    def holds(self, thumbprint: str) -> bool:
        return thumbprint in self._thumbprints

    def __len__(self) -> int:
        return len(self._keys)


def verify_jws(
    token: str,
    keys: KeySet,
    *,
    algorithms: Collection[str],
    token_types: Collection[TokenType] = _ALL_TYPES,
) -> bytes:
    """Verify a compact JWS against ``keys`` and return its payload (no claim checks).

    The same parsing, header policy, key selection and PyJWT signature check as ``JwtVerifier``,
    for callers whose payload is not a JWT (and for conformance tests).
    """
    jws = parse_compact(token)
    header = check_header(jws.header, algorithms=algorithms, token_types=token_types)
    key = keys.find(header.alg, header.kid)
    if key is None:
        reject(RejectReason.NO_KEY)
    try:
        decoded = api_jws.decode_complete(
            token,
            key=key.jwk,
            algorithms=[header.alg],
            options={"verify_signature": True, "enforce_minimum_key_length": True},
        )
    except jwt.PyJWTError as exc:
        raise AuthenticationError from TokenRejection(reason_of(exc), type(exc).__name__)
    payload: bytes = decoded["payload"]
    return payload


def reason_of(exc: jwt.PyJWTError) -> RejectReason:
    for kind, reason in _PYJWT_REASONS:
        if isinstance(exc, kind):
            return reason
    return RejectReason.BAD_CLAIM


# --- fetching JWK Sets ---------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: a JWK Set comes from the configured URL or from nowhere."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def https_jwks_fetcher(
    timeout_s: float = 5.0,
    max_bytes: int = MAX_JWKS_BYTES,
    *,
    allowed_urls: Collection[str] | None = None,
    allow_http: bool = False,
    cafile: str | None = None,
) -> Callable[[str], bytes]:
    """A ``fetch_jwks`` for ``JwtVerifier``: one GET, TLS 1.2+ verified, no redirects, capped.

    ``allowed_urls`` (the configured ``jwks_url`` values) makes it refuse any other URL;
    ``allow_http`` exists only for issuers configured with ``unsafe_http_jwks``; ``cafile``
    adds a private CA. Raises ``OSError`` (network, TLS, HTTP status) or ``ValueError``.
    """
    if not 0 < timeout_s <= 60:  # noqa: PLR2004 - a minute is the most a request may wait
        raise ConfigurationError("timeout_s must be more than 0 and at most 60")
    if not 0 < max_bytes <= 16 * MAX_JWKS_BYTES:
        raise ConfigurationError(f"max_bytes must be between 1 and {16 * MAX_JWKS_BYTES}")
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    opener = urllib.request.build_opener(
        _NoRedirects(), urllib.request.HTTPSHandler(context=context)
    )
    allowed = None if allowed_urls is None else frozenset(allowed_urls)
    schemes = {"https", "http"} if allow_http else {"https"}

    def fetch(url: str) -> bytes:
        if urlsplit(url).scheme not in schemes or (allowed is not None and url not in allowed):
            raise ValueError(f"refusing to fetch a JWK Set from {url!r}")
        request = urllib.request.Request(  # noqa: S310 - scheme checked just above
            url, headers={"Accept": "application/jwk-set+json, application/json"}
        )
        try:
            with opener.open(request, timeout=timeout_s) as response:
                body: bytes = response.read(max_bytes + 1)
        except urllib.error.HTTPError as exc:  # includes every refused redirect
            exc.close()  # it holds the connection
            raise OSError(f"JWK Set request to {url!r} answered HTTP {exc.code}") from None
        if len(body) > max_bytes:
            raise ValueError(f"JWK Set from {url!r} is larger than {max_bytes} bytes")
        return body

    return fetch
