"""TokenIssuer: client-credentials access tokens that JwtVerifier (and plain PyJWT) accept."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from strongroom.adapters.identity.jwt_verifier import JwtVerifier
from strongroom.adapters.identity.token_issuer import TokenIssuer
from strongroom.core.identity.principal import PrincipalKind, Role
from strongroom.core.identity.tokens import RejectReason, TokenType, rejection_reason
from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ISS = "https://strongroom.example"
AUD = "https://strongroom.example/api"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    return json.loads(unb64(head)), json.loads(unb64(body))


def make_issuer(seed: bytes | None = None, **options: Any) -> tuple[TokenIssuer, Clock]:
    clock = Clock()
    options = {"issuer": ISS, "audience": AUD, "clock": clock, "random_bytes": os.urandom} | options
    return TokenIssuer(private_key=seed or os.urandom(32), **options), clock


def verifier_for(issuer: TokenIssuer, clock: Clock) -> JwtVerifier:
    return JwtVerifier([issuer.issuer_config()], fetch_jwks=_never, clock=clock)


def _never(url: str) -> bytes:
    raise AssertionError(f"no fetch expected: {url}")


def test_issued_token_verifies_as_the_service_principal() -> None:
    issuer, clock = make_issuer()
    token = issuer.issue("scoring-svc", [Role.PREDICTOR, Role.AUDITOR], ["models:read"])
    verified = verifier_for(issuer, clock).verify(token)
    principal = verified.principal
    assert principal.id == "svc:scoring-svc"
    assert principal.kind is PrincipalKind.SERVICE
    assert principal.roles == frozenset({Role.PREDICTOR, Role.AUDITOR})
    assert principal.credential.expires_at == NOW + timedelta(minutes=5)
    assert principal.credential.id == verified.claims["jti"]
    assert verified.token_type is TokenType.ACCESS
    assert verified.algorithm == "EdDSA"


def test_token_shape_follows_rfc_9068() -> None:
    seed, random_part = os.urandom(32), b"\x01" * 16
    issuer, _ = make_issuer(seed, random_bytes=lambda n: random_part[:n])
    header, claims = parts(issuer.issue("batch", [Role.MODEL_OWNER], "push"))
    public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    thumbprint_input = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64(public)}, separators=(",", ":")
    )
    assert header == {
        "alg": "EdDSA",
        "typ": "at+jwt",
        "kid": b64(hashlib.sha256(thumbprint_input.encode()).digest()),
    }
    t = int(NOW.timestamp())
    assert claims == {
        "iss": ISS,
        "aud": AUD,
        "sub": "batch",
        "client_id": "batch",
        "iat": t,
        "nbf": t,
        "exp": t + 300,
        "jti": b64(random_part),
        "roles": ["model-owner"],
        "scope": "push",
    }


def test_plain_pyjwt_accepts_the_token_with_the_published_key() -> None:
    issuer, _ = make_issuer(clock=lambda: datetime.now(UTC))
    token = issuer.issue("interop", [Role.PREDICTOR])
    key = jwt.PyJWK(issuer.jwks()["keys"][0])
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=AUD, issuer=ISS)
    assert claims["sub"] == "interop"
    assert "d" not in issuer.jwks()["keys"][0]


def test_signing_is_deterministic_for_the_same_inputs() -> None:
    seed = os.urandom(32)
    fixed: Any = bytes  # bytes(n): n zero bytes, a fixed "random" source for this test
    first, _ = make_issuer(seed, random_bytes=fixed)
    second, _ = make_issuer(seed, random_bytes=fixed)
    assert first.issue("a", [Role.PREDICTOR]) == second.issue("a", [Role.PREDICTOR])
    assert first.key_id == second.key_id


def test_ttl_bounds_and_expiry() -> None:
    for ttl in (timedelta(0), timedelta(minutes=61), timedelta(seconds=1.5), timedelta(-1)):
        with pytest.raises(ConfigurationError):
            make_issuer(ttl=ttl)
    issuer, clock = make_issuer(ttl=timedelta(minutes=60))
    assert issuer.ttl == timedelta(minutes=60)
    verifier = verifier_for(issuer, clock)
    token = issuer.issue("svc1")
    clock.now = NOW + timedelta(minutes=60, seconds=4)  # within the 5 s verification leeway
    verifier.clear_cache()
    assert verifier.verify(token).principal.id == "svc:svc1"
    clock.now = NOW + timedelta(minutes=60, seconds=5)
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(token)
    assert rejection_reason(caught.value) is RejectReason.EXPIRED
    assert make_issuer()[0].ttl == timedelta(minutes=5)


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def test_tampered_tokens_are_refused() -> None:
    issuer, clock = make_issuer()
    token = issuer.issue("svc1", [Role.PREDICTOR])
    head, body, sig = token.split(".")
    header, claims = parts(token)
    elevated = b64(json.dumps(claims | {"roles": ["admin"]}).encode())
    other_issuer, _ = make_issuer(issuer=ISS)
    tampered = {
        "payload byte": f"{head}.{_flip(body, 10)}.{sig}",
        "roles raised": f"{head}.{elevated}.{sig}",
        "signature byte": f"{head}.{body}.{_flip(sig, 5)}",
        "alg none": f"{b64(json.dumps(header | {'alg': 'none'}).encode())}.{body}.{sig}",
        "typ JWT": f"{b64(json.dumps(header | {'typ': 'JWT'}).encode())}.{body}.{sig}",
        "another key": other_issuer.issue("svc1", [Role.PREDICTOR]),
    }
    verifier = verifier_for(issuer, clock)
    assert verifier.verify(token).principal.roles == frozenset({Role.PREDICTOR})
    refused = {}
    for name, forged in tampered.items():
        with pytest.raises(AuthenticationError) as caught:
            verifier.verify(forged)
        refused[name] = rejection_reason(caught.value)
    assert refused == {
        "payload byte": RejectReason.MALFORMED,
        "roles raised": RejectReason.BAD_SIGNATURE,
        "signature byte": RejectReason.BAD_SIGNATURE,
        "alg none": RejectReason.ALG_NONE,
        "typ JWT": RejectReason.BAD_TYPE,
        "another key": RejectReason.NO_KEY,
    }


@pytest.mark.parametrize(
    ("client_id", "roles", "scope"),
    [
        ("bad id", [], []),
        ("", [], []),
        ("x" * 200, [], []),
        ("ok", ["admin"], []),
        ("ok", [], ['a"b']),
        ("ok", [], [""]),
        ("ok", [], [f"s{n}" for n in range(65)]),
    ],
)
def test_invalid_requests_are_refused(client_id: str, roles: list[Any], scope: list[str]) -> None:
    issuer, _ = make_issuer()
    with pytest.raises(InvalidInputError):
        issuer.issue(client_id, roles, scope)


@pytest.mark.parametrize(
    "options",
    [
        {"seed": b"short"},
        {"issuer": "http://strongroom.example"},
        {"issuer": "strongroom"},
        {"audience": ""},
    ],
)
def test_invalid_issuer_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        make_issuer(**options)


def test_http_issuer_only_with_the_unsafe_flag() -> None:
    issuer, clock = make_issuer(issuer="http://localhost:8080", unsafe_http=True)
    assert verifier_for(issuer, clock).verify(issuer.issue("dev")).issuer == "http://localhost:8080"


def test_published_key_set_is_a_copy() -> None:
    issuer, clock = make_issuer()
    published = issuer.jwks()
    published["keys"][0]["x"] = "tampered"
    assert issuer.jwks()["keys"][0]["x"] != "tampered"
    assert verifier_for(issuer, clock).verify(issuer.issue("svc1")).issuer == ISS


def test_rotation_keeps_tokens_of_the_previous_key_for_one_ttl() -> None:
    old, clock = make_issuer()
    new, _ = make_issuer(clock=clock)
    before = old.issue("svc1")
    rotated = JwtVerifier(
        [new.issuer_config(also_trust=old.jwks()["keys"])], fetch_jwks=_never, clock=clock
    )
    assert rotated.verify(before).key_id == old.key_id
    assert rotated.verify(new.issue("svc1")).key_id == new.key_id
    with pytest.raises(AuthenticationError) as caught:
        verifier_for(new, clock).verify(before)
    assert rejection_reason(caught.value) is RejectReason.NO_KEY
