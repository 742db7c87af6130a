"""The JWT forgery suite: every forged, confused or out-of-policy token is refused (0 accepted).

Five issuers with keys generated at test time (A: RS256+PS256, B: ES256 accepting untyped JWTs,
C: EdDSA, D: RS256, E: RS256+ES256) and attacker keys. Each case names the refusal reason it must
hit, so a case cannot pass by failing for an unrelated reason; positive controls for every
algorithm prove that the same fixtures do produce accepted tokens, so the suite can fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from strongroom.adapters.identity.jwt_verifier import JwtVerifier
from strongroom.core.identity.tokens import (
    IssuerConfig,
    RejectReason,
    TokenType,
    rejection_reason,
)
from strongroom.errors import AuthenticationError

R = RejectReason
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
AUD = "https://strongroom.example/api"
A, B, C, D, E = (f"https://idp-{x}.example" for x in "abcde")
ATTACKER_URL = "https://attacker.example/jwks.json"
DROP = object()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(alg: str, key: Any, data: bytes) -> bytes:
    if alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        return hmac.new(key, data, digest).digest()
    return jwt.get_algorithm_by_name(alg).sign(data, key)


def make(
    header: dict[str, Any] | str,
    claims: dict[str, Any] | str | bytes,
    key: Any = None,
    *,
    alg: str | None = None,
    signature: bytes | None = None,
) -> str:
    """A compact JWS from raw parts; ``header``/``claims`` as text keep duplicate keys."""
    head = header if isinstance(header, str) else json.dumps(header)
    body = (
        claims
        if isinstance(claims, bytes)
        else (claims if isinstance(claims, str) else json.dumps(claims)).encode()
    )
    signing_input = f"{b64(head.encode())}.{b64(body)}"
    if signature is None:
        signature = sign(alg or json.loads(head)["alg"], key, signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


def claims(iss: str = A, **changes: Any) -> dict[str, Any]:
    base = {
        "iss": iss,
        "aud": AUD,
        "sub": "alice",
        "client_id": "portal",
        "exp": T + 300,
        "iat": T - 10,
        "nbf": T - 10,
        "jti": "jti-1",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


def hdr(alg: str, kid: str | None, typ: str | None = "at+jwt", **extra: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": alg}
    if kid is not None:
        header["kid"] = kid
    if typ is not None:
        header["typ"] = typ
    header.update(extra)
    return header


@dataclass
class Fetcher:
    bodies: dict[str, bytes]
    calls: list[str] = field(default_factory=list)

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.bodies[url]


@dataclass
class World:
    keys: dict[str, Any]
    public_jwks: dict[str, dict[str, Any]]
    issuers: list[IssuerConfig]
    bodies: dict[str, bytes]

    def key(self, name: str) -> Any:
        return self.keys[name]

    def public_pem(self, name: str) -> bytes:
        return (
            self.keys[name]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def verifier(self) -> tuple[JwtVerifier, Fetcher]:
        fetcher = Fetcher(dict(self.bodies))
        return JwtVerifier(self.issuers, fetch_jwks=fetcher, clock=lambda: NOW), fetcher


def _jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, "use": "sig", **extra}


def build_world() -> World:
    keys: dict[str, Any] = {
        name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for name in ("a1", "a2", "d1", "e-rsa", "atk-rsa")
    }
    keys |= {name: ec.generate_private_key(ec.SECP256R1()) for name in ("b1", "e-ec", "atk-ec")}
    keys |= {name: ed25519.Ed25519PrivateKey.generate() for name in ("c1", "atk-ed")}
    sets = {
        A: [_jwk(keys["a1"], "a1"), _jwk(keys["a2"], "a2", alg="RS256")],
        B: [_jwk(keys["b1"], "b1")],
        C: [_jwk(keys["c1"], "c1")],
        D: [_jwk(keys["d1"], "d1")],
        E: [_jwk(keys["e-rsa"], "e-rsa"), _jwk(keys["e-ec"], "e-ec")],
    }
    plan = {
        A: (("RS256", "PS256"), "", frozenset({TokenType.ACCESS})),
        B: (("ES256",), "b:", frozenset(TokenType)),
        C: (("EdDSA",), "c:", frozenset({TokenType.ACCESS})),
        D: (("RS256",), "d:", frozenset({TokenType.ACCESS})),
        E: (("RS256", "ES256"), "e:", frozenset({TokenType.ACCESS})),
    }
    issuers = [
        IssuerConfig(
            issuer=iss,
            audiences=(AUD,),
            algorithms=algs,
            jwks_url=f"{iss}/jwks",
            subject_prefix=prefix,
            token_types=types,
        )
        for iss, (algs, prefix, types) in plan.items()
    ]
    bodies = {f"{iss}/jwks": json.dumps({"keys": keyset}).encode() for iss, keyset in sets.items()}
    bodies[ATTACKER_URL] = json.dumps({"keys": [_jwk(keys["atk-rsa"], "a1")]}).encode()
    return World(keys, {iss: {"keys": ks} for iss, ks in sets.items()}, issuers, bodies)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


# --- builders used by the cases ------------------------------------------------------------------


def good(w: World, iss: str = A, alg: str = "RS256", kid: str = "a1", **changes: Any) -> str:
    return make(hdr(alg, kid), claims(iss, **changes), w.key(kid))


def with_header(w: World, header: dict[str, Any] | str, key: str = "a1", **changes: Any) -> str:
    head = header if isinstance(header, str) else json.dumps(header)
    return make(head, claims(**changes), w.key(key), alg=json.loads(head).get("alg", "RS256"))


def alg_none(casing: str, *, signed: bool) -> Callable[[World], str]:
    def build(w: World) -> str:
        signature = sign("RS256", w.key("a1"), b"anything") if signed else b""
        return make(hdr(casing, "a1"), claims(), signature=signature)

    return build


def hmac_with(secret: Callable[[World], bytes], iss: str, kid: str, alg: str = "HS256") -> Any:
    return lambda w: make(hdr(alg, kid), claims(iss), secret(w), alg=alg)


def replace_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


def signature_of(token: str) -> bytes:
    segment = token.split(".")[2]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def standard_alphabet(w: World) -> str:
    for n in range(200):
        token = good(w, jti=f"jti-{n}")
        swapped = token.replace("-", "+").replace("_", "/")
        if swapped != token:
            return swapped
    raise AssertionError("no token with - or _ in 200 tries")


def noncanonical_bits(w: World) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for pad in range(4):
        head = json.dumps(hdr("RS256", "a1")) + " " * pad
        segment = b64(head.encode())
        if len(segment) % 4 in {2, 3}:
            break
    token = make(head, claims(), w.key("a1"))
    tweaked = segment[:-1] + alphabet[alphabet.index(segment[-1]) ^ 1]
    return replace_segment(token, 0, tweaked)


def x5c_chain(w: World) -> str:
    key = w.key("atk-rsa")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp-a.example")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    chain = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    return make(hdr("RS256", "a1", x5c=chain), claims(), key)


def id_token(iss: str, key: str, alg: str, typ: str | None, **changes: Any) -> Any:
    return lambda w: make(hdr(alg, key, typ=typ), claims(iss, **changes), w.key(key))


@dataclass(frozen=True)
class Case:
    name: str
    reason: RejectReason
    build: Callable[[World], str]


_PEM = World.public_pem
CASES: tuple[Case, ...] = (
    # alg none, every casing, with and without a signature
    *(
        Case(f"alg {c!r} unsigned", R.MALFORMED, alg_none(c, signed=False))
        for c in ("none", "None", "NONE", "nOnE")
    ),
    *(
        Case(f"alg {c!r} signed", R.ALG_NONE, alg_none(c, signed=True))
        for c in ("none", "None", "NONE", "nOnE", "none ")
    ),
    # empty, stripped or junk signatures
    Case("signature stripped", R.MALFORMED, lambda w: replace_segment(good(w), 2, "")),
    Case("signature and dot stripped", R.MALFORMED, lambda w: good(w).rsplit(".", 1)[0]),
    Case(
        "ES256 empty signature",
        R.MALFORMED,
        lambda w: replace_segment(good(w, B, "ES256", "b1"), 2, ""),
    ),
    Case(
        "RSA signature all zero",
        R.BAD_SIGNATURE,
        lambda w: replace_segment(good(w), 2, b64(bytes(256))),
    ),
    Case(
        "ES256 r = s = 0",
        R.BAD_SIGNATURE,
        lambda w: replace_segment(good(w, B, "ES256", "b1"), 2, b64(bytes(64))),
    ),
    Case(
        "EdDSA signature all zero",
        R.BAD_SIGNATURE,
        lambda w: replace_segment(good(w, C, "EdDSA", "c1"), 2, b64(bytes(64))),
    ),
    Case(
        "signature truncated",
        R.BAD_SIGNATURE,
        lambda w: replace_segment(good(w), 2, b64(signature_of(good(w))[:-1])),
    ),
    Case(
        "signature of another token",
        R.BAD_SIGNATURE,
        lambda w: replace_segment(good(w), 2, good(w, sub="bob").split(".")[2]),
    ),
    # RS/ES/EdDSA to HS confusion: the public key (PEM, JWK, DER, raw) as HMAC secret
    Case("HS256 with RSA PEM", R.ALG_NOT_ALLOWED, hmac_with(lambda w: _PEM(w, "a1"), A, "a1")),
    Case(
        "HS384 with RSA PEM",
        R.ALG_NOT_ALLOWED,
        hmac_with(lambda w: _PEM(w, "a1"), A, "a1", "HS384"),
    ),
    Case(
        "HS512 with RSA PEM",
        R.ALG_NOT_ALLOWED,
        hmac_with(lambda w: _PEM(w, "a1"), A, "a1", "HS512"),
    ),
    Case(
        "HS256 with RSA JWK",
        R.ALG_NOT_ALLOWED,
        hmac_with(lambda w: json.dumps(w.public_jwks[A]["keys"][0]).encode(), A, "a1"),
    ),
    Case(
        "HS256 with RSA DER",
        R.ALG_NOT_ALLOWED,
        hmac_with(
            lambda w: (
                w.key("a1")
                .public_key()
                .public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ),
            A,
            "a1",
        ),
    ),
    Case("HS256 with EC PEM", R.ALG_NOT_ALLOWED, hmac_with(lambda w: _PEM(w, "b1"), B, "b1")),
    Case(
        "HS256 with EC JWK",
        R.ALG_NOT_ALLOWED,
        hmac_with(lambda w: json.dumps(w.public_jwks[B]["keys"][0]).encode(), B, "b1"),
    ),
    Case(
        "HS256 with Ed25519 raw key",
        R.ALG_NOT_ALLOWED,
        hmac_with(lambda w: w.key("c1").public_key().public_bytes_raw(), C, "c1"),
    ),
    Case(
        "HS256 on the two-family issuer",
        R.ALG_NOT_ALLOWED,
        hmac_with(lambda w: _PEM(w, "e-rsa"), E, "e-rsa"),
    ),
    # embedded and remote keys
    Case(
        "embedded jwk, attacker kid",
        R.FORBIDDEN_HEADER,
        lambda w: make(
            hdr("RS256", "atk", jwk=_jwk(w.key("atk-rsa"), "atk")), claims(), w.key("atk-rsa")
        ),
    ),
    Case(
        "embedded jwk, legit kid",
        R.FORBIDDEN_HEADER,
        lambda w: make(
            hdr("RS256", "a1", jwk=_jwk(w.key("atk-rsa"), "a1")), claims(), w.key("atk-rsa")
        ),
    ),
    Case(
        "embedded EC jwk",
        R.FORBIDDEN_HEADER,
        lambda w: make(
            hdr("ES256", "b1", jwk=_jwk(w.key("atk-ec"), "b1")), claims(B), w.key("atk-ec")
        ),
    ),
    Case(
        "jku to attacker",
        R.FORBIDDEN_HEADER,
        lambda w: make(hdr("RS256", "a1", jku=ATTACKER_URL), claims(), w.key("atk-rsa")),
    ),
    Case(
        "jku to the issuer's own URL",
        R.FORBIDDEN_HEADER,
        lambda w: make(hdr("RS256", "a1", jku=f"{A}/jwks"), claims(), w.key("a1")),
    ),
    Case(
        "x5u to attacker",
        R.FORBIDDEN_HEADER,
        lambda w: make(
            hdr("RS256", "a1", x5u="https://attacker.example/cert.pem"), claims(), w.key("atk-rsa")
        ),
    ),
    Case("x5c self-signed chain", R.FORBIDDEN_HEADER, x5c_chain),
    # extensions and nested tokens
    Case(
        "crit with exp",
        R.FORBIDDEN_HEADER,
        lambda w: with_header(w, hdr("RS256", "a1", crit=["exp"])),
    ),
    Case("crit empty", R.FORBIDDEN_HEADER, lambda w: with_header(w, hdr("RS256", "a1", crit=[]))),
    Case(
        "crit b64 unencoded",
        R.FORBIDDEN_HEADER,
        lambda w: with_header(w, hdr("RS256", "a1", crit=["b64"], b64=False)),
    ),
    Case(
        "b64 false without crit",
        R.FORBIDDEN_HEADER,
        lambda w: with_header(w, hdr("RS256", "a1", b64=False)),
    ),
    Case("zip header", R.FORBIDDEN_HEADER, lambda w: with_header(w, hdr("RS256", "a1", zip="DEF"))),
    Case(
        "cty JWT nested",
        R.FORBIDDEN_HEADER,
        lambda w: with_header(w, hdr("RS256", "a1", cty="JWT")),
    ),
    # kid tricks
    *(
        Case(
            f"kid {kid!r:.40} ({len(repr(kid))})",
            R.BAD_KID,
            lambda w, kid=kid: with_header(w, hdr("RS256", kid)),
        )
        for kid in (
            "../../dev/null",
            "/etc/passwd",
            "kid\u0000",
            "a" * 129,
            "a" * 1000,
            "' OR 1=1 --",
            "..\\..\\keys",
            "a1/../a2",
            "",
            1,
            ["a1"],
            {"k": "a1"},
        )
    ),
    Case(
        "kid SQL-ish but printable",
        R.NO_KEY,
        lambda w: with_header(w, hdr("RS256", "1';DROP-TABLE-keys;--")),
    ),
    Case(
        "unknown kid, attacker key",
        R.NO_KEY,
        lambda w: make(hdr("RS256", "atk"), claims(), w.key("atk-rsa")),
    ),
    Case(
        "kid of issuer B's key on A",
        R.ALG_NOT_ALLOWED,
        lambda w: make(hdr("ES256", "b1"), claims(A), w.key("b1")),
    ),
    Case(
        "legit kid, attacker key",
        R.BAD_SIGNATURE,
        lambda w: make(hdr("RS256", "a1"), claims(), w.key("atk-rsa")),
    ),
    # audience, issuer, type, ID tokens
    Case("wrong aud", R.WRONG_AUDIENCE, lambda w: good(w, aud="https://other.example/api")),
    Case("aud list without ours", R.WRONG_AUDIENCE, lambda w: good(w, aud=["x", "y"])),
    Case("aud is the client id", R.WRONG_AUDIENCE, lambda w: good(w, aud="portal")),
    Case("aud missing", R.MISSING_CLAIM, lambda w: good(w, aud=DROP)),
    Case("aud not a string", R.WRONG_AUDIENCE, lambda w: good(w, aud=[AUD, 7])),
    Case("unknown iss", R.UNKNOWN_ISSUER, lambda w: good(w, iss="https://evil.example")),
    Case("iss with trailing slash", R.UNKNOWN_ISSUER, lambda w: good(w, iss=f"{A}/")),
    Case("iss upper case", R.UNKNOWN_ISSUER, lambda w: good(w, iss=A.upper())),
    Case("iss missing", R.UNKNOWN_ISSUER, lambda w: good(w, iss=DROP)),
    Case("iss as a list", R.UNKNOWN_ISSUER, lambda w: good(w, iss=[A])),
    Case(
        "typ JWT where at+jwt is required",
        R.BAD_TYPE,
        lambda w: make(hdr("RS256", "a1", typ="JWT"), claims(), w.key("a1")),
    ),
    Case(
        "typ missing where at+jwt is required",
        R.BAD_TYPE,
        lambda w: make(hdr("RS256", "a1", typ=None), claims(), w.key("a1")),
    ),
    Case(
        "typ dpop+jwt",
        R.BAD_TYPE,
        lambda w: make(hdr("RS256", "a1", typ="dpop+jwt"), claims(), w.key("a1")),
    ),
    Case("typ secevent+jwt", R.BAD_TYPE, id_token(B, "b1", "ES256", "secevent+jwt")),
    Case("typ not a string", R.BAD_TYPE, id_token(B, "b1", "ES256", 1)),
    Case("ID token (nonce) on A", R.BAD_TYPE, id_token(A, "a1", "RS256", "JWT", nonce="n")),
    Case("ID token (nonce) on B", R.ID_TOKEN, id_token(B, "b1", "ES256", "JWT", nonce="n")),
    Case("ID token (at_hash, untyped)", R.ID_TOKEN, id_token(B, "b1", "ES256", None, at_hash="x")),
    Case("ID token (c_hash)", R.ID_TOKEN, id_token(B, "b1", "ES256", "JWT", c_hash="x")),
    Case(
        "ID token (aud = client id)",
        R.WRONG_AUDIENCE,
        id_token(B, "b1", "ES256", "JWT", aud="portal", nonce="n"),
    ),
    # time
    Case("expired beyond leeway", R.EXPIRED, lambda w: good(w, exp=T - 31)),
    Case("expired at the leeway edge", R.EXPIRED, lambda w: good(w, exp=T - 30)),
    Case("exp missing", R.MISSING_CLAIM, lambda w: good(w, exp=DROP)),
    Case("exp a string", R.BAD_CLAIM, lambda w: good(w, exp=str(T + 300))),
    Case("exp a bool", R.BAD_CLAIM, lambda w: good(w, exp=True)),
    Case(
        "exp infinite",
        R.BAD_CLAIM,
        lambda w: make(
            hdr("RS256", "a1"), json.dumps(claims()).replace(str(T + 300), "1e400"), w.key("a1")
        ),
    ),
    Case("nbf in the future", R.NOT_YET_VALID, lambda w: good(w, nbf=T + 31)),
    Case("iat in the future", R.NOT_YET_VALID, lambda w: good(w, iat=T + 31)),
    # subject
    Case("sub missing", R.MISSING_CLAIM, lambda w: good(w, sub=DROP)),
    Case("sub a number", R.BAD_CLAIM, lambda w: good(w, sub=42)),
    Case("sub empty", R.BAD_CLAIM, lambda w: good(w, sub="")),
    Case("sub not a principal name", R.BAD_SUBJECT, lambda w: good(w, sub="alice bob")),
    # JSON and base64 tricks
    Case(
        "duplicate alg in header",
        R.MALFORMED,
        lambda w: with_header(w, '{"alg":"none","alg":"RS256","kid":"a1","typ":"at+jwt"}'),
    ),
    Case(
        "duplicate iss in payload",
        R.MALFORMED,
        lambda w: make(
            hdr("RS256", "a1"), json.dumps(claims())[:-1] + f', "iss": "{D}"}}', w.key("a1")
        ),
    ),
    Case(
        "duplicate sub in payload",
        R.MALFORMED,
        lambda w: make(
            hdr("RS256", "a1"), json.dumps(claims())[:-1] + ', "sub": "admin"}', w.key("a1")
        ),
    ),
    Case("header not JSON", R.MALFORMED, lambda w: replace_segment(good(w), 0, b64(b"alg=RS256"))),
    Case(
        "header a JSON array", R.MALFORMED, lambda w: replace_segment(good(w), 0, b64(b'["RS256"]'))
    ),
    Case(
        "header with NaN",
        R.MALFORMED,
        lambda w: replace_segment(
            good(w), 0, b64(b'{"alg":"RS256","kid":"a1","typ":"at+jwt","x":NaN}')
        ),
    ),
    Case(
        "payload a JSON array",
        R.MALFORMED,
        lambda w: make(hdr("RS256", "a1"), "[1, 2]", w.key("a1")),
    ),
    Case(
        "payload not UTF-8",
        R.MALFORMED,
        lambda w: make(hdr("RS256", "a1"), b"\xff\xfe{}", w.key("a1")),
    ),
    Case(
        "padding on the header",
        R.MALFORMED,
        lambda w: replace_segment(good(w), 0, good(w).split(".")[0] + "=="),
    ),
    Case(
        "padding on the signature",
        R.MALFORMED,
        lambda w: replace_segment(good(w), 2, good(w).split(".")[2] + "="),
    ),
    Case("standard base64 alphabet", R.MALFORMED, standard_alphabet),
    Case("non-canonical trailing bits", R.MALFORMED, noncanonical_bits),
    Case("space inside", R.MALFORMED, lambda w: good(w)[:40] + " " + good(w)[40:]),
    Case("four segments", R.MALFORMED, lambda w: good(w) + ".AAAA"),
    Case(
        "JSON serialization",
        R.MALFORMED,
        lambda w: json.dumps(
            {
                "payload": good(w).split(".")[1],
                "signatures": [
                    {"protected": good(w).split(".")[0], "signature": good(w).split(".")[2]}
                ],
            }
        ),
    ),
    Case("empty token", R.MALFORMED, lambda w: ""),
    Case("huge token", R.TOO_LARGE, lambda w: good(w, pad="x" * 9000)),
    # algorithm versus key type, and across issuers
    Case(
        "ES256 header with RSA kid",
        R.NO_KEY,
        lambda w: make(hdr("ES256", "e-rsa"), claims(E), w.key("e-ec")),
    ),
    Case(
        "RS256 header with EC kid",
        R.NO_KEY,
        lambda w: make(hdr("RS256", "e-ec"), claims(E), w.key("e-rsa")),
    ),
    Case(
        "PS256 with a key pinned to RS256",
        R.NO_KEY,
        lambda w: make(hdr("PS256", "a2"), claims(), w.key("a2")),
    ),
    Case(
        "RS256 header, PSS signature",
        R.BAD_SIGNATURE,
        lambda w: make(hdr("RS256", "a1"), claims(), w.key("a1"), alg="PS256"),
    ),
    Case(
        "alg lower case",
        R.ALG_NOT_ALLOWED,
        lambda w: make(hdr("rs256", "a1"), claims(), w.key("a1"), alg="RS256"),
    ),
    Case(
        "alg Ed25519 spelling",
        R.ALG_NOT_ALLOWED,
        lambda w: make(hdr("Ed25519", "c1"), claims(C), w.key("c1"), alg="EdDSA"),
    ),
    Case(
        "EdDSA on the RSA issuer",
        R.ALG_NOT_ALLOWED,
        lambda w: make(hdr("EdDSA", "c1"), claims(A), w.key("c1")),
    ),
    Case(
        "signed by D's key for A",
        R.NO_KEY,
        lambda w: make(hdr("RS256", "d1"), claims(A), w.key("d1")),
    ),
    Case(
        "signed by A's key for D",
        R.NO_KEY,
        lambda w: make(hdr("RS256", "a1"), claims(D), w.key("a1")),
    ),
    Case(
        "PS256 (allowed for A) on D",
        R.ALG_NOT_ALLOWED,
        lambda w: make(hdr("PS256", "d1"), claims(D), w.key("d1")),
    ),
    Case(
        "EdDSA (allowed for C) on B",
        R.ALG_NOT_ALLOWED,
        lambda w: make(hdr("EdDSA", "c1"), claims(B), w.key("c1")),
    ),
    # tampering after signing
    Case(
        "payload changed",
        R.BAD_SIGNATURE,
        lambda w: replace_segment(good(w), 1, good(w, sub="admin").split(".")[1]),
    ),
    Case(
        "header kid swapped",
        R.BAD_SIGNATURE,
        lambda w: replace_segment(good(w), 0, good(w, kid="a2").split(".")[0]),
    ),
)

CONTROLS: dict[str, Callable[[World], str]] = {
    "RS256": good,
    "RS256 pinned key": lambda w: good(w, kid="a2"),
    "PS256": lambda w: good(w, alg="PS256"),
    "ES256": lambda w: good(w, B, "ES256", "b1"),
    "EdDSA": lambda w: good(w, C, "EdDSA", "c1"),
    "EdDSA without kid": lambda w: make(hdr("EdDSA", None), claims(C), w.key("c1")),
    "RS256 on D": lambda w: good(w, D, "RS256", "d1"),
    "ES256 on E": lambda w: good(w, E, "ES256", "e-ec"),
    "RS256 on E": lambda w: good(w, E, "RS256", "e-rsa"),
    "typ application/at+jwt": lambda w: make(
        hdr("RS256", "a1", typ="application/AT+JWT"), claims(), w.key("a1")
    ),
    "untyped access token on B": id_token(B, "b1", "ES256", None),
    "expired within leeway": lambda w: good(w, exp=T - 29),
    "nbf within leeway": lambda w: good(w, nbf=T + 29, iat=T + 29),
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_forgery_is_refused_for_its_reason(world: World, case: Case) -> None:
    verifier, _ = world.verifier()
    token = case.build(world)
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(token)
    assert str(caught.value) == "authentication failed"  # opaque: says nothing about the check
    assert rejection_reason(caught.value) is case.reason


def test_forgery_suite_accepts_nothing_and_fetches_only_configured_urls(world: World) -> None:
    verifier, fetcher = world.verifier()
    accepted = [c.name for c in CASES if _accepted(verifier, c.build(world))]
    assert accepted == []
    assert len(CASES) == len({c.name for c in CASES}) == 117
    configured = {i.jwks_url for i in world.issuers}
    assert fetcher.calls, "the suite must have loaded keys"
    assert set(fetcher.calls) <= configured
    assert ATTACKER_URL not in fetcher.calls


def _accepted(verifier: JwtVerifier, token: str) -> bool:
    try:
        verifier.verify(token)
    except AuthenticationError:
        return False
    return True


@pytest.mark.parametrize("name", CONTROLS)
def test_positive_control_is_accepted(world: World, name: str) -> None:
    verifier, _ = world.verifier()
    verified = verifier.verify(CONTROLS[name](world))
    assert verified.principal.credential.id == "jti-1"
    assert verified.claims["aud"] == AUD


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_only_ever_fails_closed(text: str) -> None:
    verifier = JwtVerifier(
        [IssuerConfig(issuer=A, audiences=(AUD,), algorithms=("RS256",), jwks_url=f"{A}/jwks")],
        fetch_jwks=lambda url: b"{}",
        clock=lambda: NOW,
    )
    with pytest.raises(AuthenticationError):
        verifier.verify(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    extra=st.dictionaries(st.text(max_size=8), _JSON, max_size=4),
    changes=st.dictionaries(
        st.sampled_from(["iss", "aud", "sub", "exp", "nbf", "iat", "client_id", "typ"]),
        _JSON,
        max_size=3,
    ),
)
def test_arbitrary_headers_and_claims_never_escape_as_other_errors(
    world: World, extra: dict[str, Any], changes: dict[str, Any]
) -> None:
    verifier, _ = world.verifier()
    header = {**extra, "alg": "ES256", "kid": "b1", "typ": "at+jwt"}
    token = make(header, claims(B) | changes, world.key("b1"))
    refused = None
    try:
        verified = verifier.verify(token)
    except AuthenticationError as exc:
        refused = exc
    if refused is not None:
        assert rejection_reason(refused) is not None
    else:
        assert verified.issuer == B
        assert not {"jwk", "jku", "x5u", "x5c", "crit"} & set(extra)
