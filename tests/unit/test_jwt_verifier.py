"""JwtVerifier behaviour besides forgeries: the verified-token cache, JWKS fetching and refresh,
the key-set policy, and the HTTPS fetcher (against real local servers on 127.0.0.1)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from strongroom.adapters.identity.jwks import (
    KeySet,
    b64url_decode,
    b64url_encode,
    https_jwks_fetcher,
    parse_compact,
    parse_json_object,
    verify_jws,
)
from strongroom.adapters.identity.jwt_verifier import JwtVerifier
from strongroom.core.identity.principal import PrincipalKind, Role
from strongroom.core.identity.tokens import IssuerConfig, RejectReason, rejection_reason
from strongroom.errors import AuthenticationError, ConfigurationError

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ISS = "https://idp.example"
URL = f"{ISS}/jwks"
AUD = "https://strongroom.example/api"


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Fetcher:
    keys: list[dict[str, Any]]
    calls: int = 0
    fail: bool = False
    urls: list[str] = field(default_factory=list)

    def __call__(self, url: str) -> bytes:
        self.calls += 1
        self.urls.append(url)
        if self.fail:
            raise OSError("connection refused")
        return json.dumps({"keys": self.keys}).encode()


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    return {**algorithm.to_jwk(public, as_dict=True), "kid": kid, **extra}


def token(key: Any, kid: str | None, *, exp: float = 300, **claims: Any) -> str:
    now = int(START.timestamp())
    payload = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + exp, **claims}
    headers = {"typ": "at+jwt"} | ({"kid": kid} if kid else {})
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def config(**changes: Any) -> IssuerConfig:
    base: dict[str, Any] = {
        "issuer": ISS,
        "audiences": (AUD,),
        "algorithms": ("ES256",),
        "jwks_url": URL,
    }
    return IssuerConfig(**(base | changes))


@dataclass
class Setup:
    k1: Any
    k2: Any
    clock: FakeClock
    fetcher: Fetcher
    verifier: JwtVerifier


def make_setup(*, issuer: IssuerConfig | None = None, **options: Any) -> Setup:
    k1, k2 = ec_key(), ec_key()
    clock, fetcher = FakeClock(), Fetcher([jwk(k1, "k1")])
    verifier = JwtVerifier([issuer or config()], fetch_jwks=fetcher, clock=clock, **options)
    return Setup(k1, k2, clock, fetcher, verifier)


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts real signature verifications by wrapping PyJWT's own check."""
    calls: list[str] = []
    original = jwt.api_jws.PyJWS._verify_signature

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append("verify")
        original(self, *args, **kwargs)

    monkeypatch.setattr(jwt.api_jws.PyJWS, "_verify_signature", counting)
    return calls


def reason(s: Setup, tok: str) -> RejectReason | None:
    with pytest.raises(AuthenticationError) as caught:
        s.verifier.verify(tok)
    return rejection_reason(caught.value)


# --- strict parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "segment",
    ["QQ=", "QQ==", "QR", "QUI=", "QUJ", "a+b/", "Q Q", "Q\nQ", "A", "Zm9v\u00e9", "Zm9v."],
)
def test_b64url_decode_refuses_every_non_canonical_spelling(segment: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(segment)


@given(st.binary(max_size=64))
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data


@given(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=12
    )
)
def test_b64url_decode_accepts_only_its_own_encoding(segment: str) -> None:
    try:
        data = b64url_decode(segment)
    except ValueError:
        return
    assert b64url_encode(data) == segment


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":1}}',
        b"[1]",
        b'"s"',
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b"\xff",
        b"{" * 5000,
        b'{"a":' + b"1" * 5000 + b"}",
    ],
)
def test_parse_json_object_refuses(text: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json_object(text)


def test_parse_compact_keeps_exact_bytes() -> None:
    jws = parse_compact(
        f"{b64url_encode(b'{}')}.{b64url_encode(b'payload')}.{b64url_encode(b'sig')}"
    )
    assert (dict(jws.header), jws.payload, jws.signature) == ({}, b"payload", b"sig")


# --- the verified-token cache ---------------------------------------------------------------------


def test_verified_token_is_served_from_cache(signature_checks: list[str]) -> None:
    s = make_setup()
    tok = token(s.k1, "k1")
    first = s.verifier.verify(tok)
    again = s.verifier.verify(tok)
    assert again is first
    assert len(signature_checks) == 1
    stats = s.verifier.stats()
    assert (stats.verifications, stats.cache_hits, stats.cached) == (1, 1, 1)
    assert first.principal.id == "user:alice"
    assert first.principal.credential.expires_at == START + timedelta(seconds=300)


def test_cached_token_is_refused_once_expired(signature_checks: list[str]) -> None:
    s = make_setup(issuer=config(leeway=timedelta(0)))
    tok = token(s.k1, "k1", exp=60)
    s.verifier.verify(tok)
    s.clock.advance(seconds=59)
    s.verifier.verify(tok)
    assert len(signature_checks) == 1  # still from the cache
    s.clock.advance(seconds=1)
    assert reason(s, tok) is RejectReason.EXPIRED
    assert len(signature_checks) == 2  # the cache no longer answered


def test_cache_entries_live_at_most_the_token_cache_ttl(signature_checks: list[str]) -> None:
    s = make_setup(token_cache_ttl=timedelta(minutes=5))
    tok = token(s.k1, "k1", exp=3600)
    s.verifier.verify(tok)
    s.clock.advance(minutes=4, seconds=59)
    s.verifier.verify(tok)
    assert len(signature_checks) == 1
    s.clock.advance(seconds=1)
    s.verifier.verify(tok)
    assert len(signature_checks) == 2


def test_cached_lookup_never_verifies(signature_checks: list[str]) -> None:
    s = make_setup()
    tok = token(s.k1, "k1", exp=60)
    assert s.verifier.cached(tok) is None
    assert (len(signature_checks), s.fetcher.calls) == (0, 0)
    verified = s.verifier.verify(tok)
    assert s.verifier.cached(tok) is verified
    assert s.verifier.cached(tok + "x") is None
    assert s.verifier.cached("x" * 10_000) is None
    s.clock.advance(seconds=60)
    assert s.verifier.cached(tok) is None
    assert len(signature_checks) == 1


def test_cache_is_a_bounded_lru(signature_checks: list[str]) -> None:
    s = make_setup(cache_size=2)
    t1, t2, t3 = (token(s.k1, "k1", jti=str(n)) for n in range(3))
    for tok in (t1, t2, t3):
        s.verifier.verify(tok)
    assert s.verifier.stats().cached == 2
    s.verifier.verify(t3)
    assert len(signature_checks) == 3
    s.verifier.verify(t1)  # evicted as least recently used
    assert len(signature_checks) == 4


def test_cache_size_zero_disables_the_cache(signature_checks: list[str]) -> None:
    s = make_setup(cache_size=0)
    tok = token(s.k1, "k1")
    s.verifier.verify(tok)
    s.verifier.verify(tok)
    assert len(signature_checks) == 2
    s.verifier.clear_cache()
    assert s.verifier.stats().cached == 0


def test_clear_cache_forces_reverification(signature_checks: list[str]) -> None:
    s = make_setup()
    tok = token(s.k1, "k1")
    s.verifier.verify(tok)
    s.verifier.clear_cache()
    s.verifier.verify(tok)
    assert len(signature_checks) == 2


# --- JWKS fetching and refresh --------------------------------------------------------------------


def test_unknown_kid_refreshes_once_and_is_rate_limited() -> None:
    s = make_setup()
    assert s.verifier.verify(token(s.k1, "k1"))
    assert s.fetcher.calls == 1
    s.clock.advance(seconds=30)
    unknown = [token(s.k2, f"new-{n}") for n in range(50)]
    assert reason(s, unknown[0]) is RejectReason.NO_KEY
    assert s.fetcher.calls == 2  # one refresh for the unknown kid
    for tok in unknown[1:]:
        assert reason(s, tok) is RejectReason.NO_KEY
    assert s.fetcher.calls == 2  # no fetch storm within min_refresh_interval
    s.fetcher.keys.append(jwk(s.k2, "new-7"))
    s.clock.advance(seconds=29)
    assert reason(s, unknown[7]) is RejectReason.NO_KEY
    assert s.fetcher.calls == 2
    s.clock.advance(seconds=1)
    assert s.verifier.verify(unknown[7]).key_id == "new-7"
    assert s.fetcher.calls == 3
    assert set(s.fetcher.urls) == {URL}


def test_token_without_kid_never_triggers_a_refresh() -> None:
    s = make_setup()
    assert s.verifier.verify(token(s.k1, None)).key_id is None  # the only key of the set
    s.clock.advance(minutes=1)
    assert reason(s, token(s.k2, None)) is RejectReason.BAD_SIGNATURE
    assert s.fetcher.calls == 1


def test_keys_are_refetched_after_the_jwks_ttl() -> None:
    s = make_setup(jwks_ttl=timedelta(minutes=10))
    s.verifier.verify(token(s.k1, "k1", exp=3600))
    s.clock.advance(minutes=9, seconds=59)
    s.verifier.verify(token(s.k1, "k1", exp=3600, jti="b"))
    assert s.fetcher.calls == 1
    s.clock.advance(seconds=1)
    s.verifier.verify(token(s.k1, "k1", exp=3600, jti="c"))
    assert s.fetcher.calls == 2


def test_a_key_removed_from_the_jwks_stops_cached_tokens() -> None:
    s = make_setup(jwks_ttl=timedelta(minutes=10), token_cache_ttl=timedelta(minutes=10))
    old = token(s.k1, "k1", exp=3600)
    s.verifier.verify(old)
    s.fetcher.keys = [jwk(s.k2, "k2")]  # the issuer rotated k1 out
    s.clock.advance(seconds=30)
    s.verifier.verify(token(s.k2, "k2"))  # unknown kid: refresh
    assert reason(s, old) is RejectReason.NO_KEY


def test_fetch_failure_fails_closed_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    s = make_setup()
    s.fetcher.fail = True
    tok = token(s.k1, "k1")
    assert reason(s, tok) is RejectReason.KEYS_UNAVAILABLE
    assert reason(s, tok) is RejectReason.KEYS_UNAVAILABLE
    assert s.fetcher.calls == 1
    assert "could not be loaded" in caplog.text
    s.fetcher.fail = False
    s.clock.advance(seconds=30)
    assert s.verifier.verify(tok).issuer == ISS


def test_failed_refresh_keeps_the_last_good_keys() -> None:
    s = make_setup(jwks_ttl=timedelta(minutes=10))
    s.verifier.verify(token(s.k1, "k1", exp=3600))
    s.fetcher.fail = True
    s.clock.advance(minutes=11)
    assert s.verifier.verify(token(s.k1, "k1", exp=3600, jti="later")).issuer == ISS
    assert s.fetcher.calls == 2


def test_prefetch_reports_issuers_whose_keys_failed() -> None:
    s = make_setup()
    assert s.verifier.prefetch() == ()
    failing = make_setup()
    failing.fetcher.fail = True
    assert failing.verifier.prefetch() == (ISS,)


def test_inline_key_sets_are_never_fetched() -> None:
    k1 = ec_key()
    fetcher = Fetcher([])
    issuer = IssuerConfig(
        issuer=ISS, audiences=(AUD,), algorithms=("ES256",), jwks={"keys": [jwk(k1, "k1")]}
    )
    verifier = JwtVerifier([issuer], fetch_jwks=fetcher, clock=FakeClock())
    verifier.verify(token(k1, "k1"))
    with pytest.raises(AuthenticationError):
        verifier.verify(token(ec_key(), "other"))
    assert fetcher.calls == 0


# --- principals ----------------------------------------------------------------------------------


def test_principals_and_roles_follow_the_issuer_mapping() -> None:
    issuer = config(
        subject_prefix="corp:",
        role_claim=("realm_access", "roles"),
        role_map={"ml-predict": Role.PREDICTOR, "ml-audit": Role.AUDITOR},
    )
    s = make_setup(issuer=issuer)
    roles = {"roles": ["ml-predict", "unrelated", "admin"]}
    user = s.verifier.verify(token(s.k1, "k1", realm_access=roles)).principal
    assert (user.id, user.kind, user.roles) == (
        "user:corp:alice",
        PrincipalKind.USER,
        frozenset({Role.PREDICTOR}),
    )
    svc = s.verifier.verify(token(s.k1, "k1", sub="batch", client_id="batch")).principal
    assert (svc.id, svc.kind, svc.roles) == ("svc:corp:batch", PrincipalKind.SERVICE, frozenset())


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"min_refresh_interval": timedelta(0)},
        {"min_refresh_interval": timedelta(hours=1)},  # longer than jwks_ttl
        {"jwks_ttl": timedelta(days=2)},
        {"token_cache_ttl": timedelta(hours=1)},
        {"cache_size": -1},
        {"cache_size": True},
    ],
)
def test_unsafe_verifier_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        JwtVerifier([config()], fetch_jwks=Fetcher([]), clock=FakeClock(), **options)


def test_issuers_must_be_distinct_in_name_and_subject_prefix() -> None:
    other = config(issuer="https://other.example", jwks_url="https://other.example/jwks")
    with pytest.raises(ConfigurationError, match="same issuer"):
        JwtVerifier([config(), config()], fetch_jwks=Fetcher([]), clock=FakeClock())
    with pytest.raises(ConfigurationError, match="subject_prefix"):
        JwtVerifier([config(), other], fetch_jwks=Fetcher([]), clock=FakeClock())
    both = JwtVerifier(
        [config(), config(issuer="https://other.example", subject_prefix="other:")],
        fetch_jwks=Fetcher([]),
        clock=FakeClock(),
    )
    assert both.stats().jwks_fetches == 0
    with pytest.raises(ConfigurationError):
        JwtVerifier([], fetch_jwks=Fetcher([]), clock=FakeClock())


def test_an_inline_key_set_with_private_material_is_a_configuration_error() -> None:
    key = ec_key()
    private = {**jwk(key, "k1"), "d": "AAAA"}
    with pytest.raises(ConfigurationError):
        JwtVerifier(
            [
                IssuerConfig(
                    issuer=ISS, audiences=(AUD,), algorithms=("ES256",), jwks={"keys": [private]}
                )
            ],
            fetch_jwks=Fetcher([]),
            clock=FakeClock(),
        )


# --- the key-set policy ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys() -> dict[str, Any]:
    return {
        "ok": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "small": rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 - the weak key under test
    }


def test_key_set_policy_keeps_only_sound_signing_keys(rsa_keys: dict[str, Any]) -> None:
    good_ec = jwk(ec_key(), "ec")
    off_curve = {**jwk(ec_key(), "off"), "y": good_ec["x"]}
    entries = [
        good_ec,
        jwk(rsa_keys["ok"], "rsa"),
        jwk(rsa_keys["ok"], "rsa-pinned", alg="RS256"),
        jwk(rsa_keys["small"], "small"),
        {**jwk(rsa_keys["ok"], "e1"), "e": "AQ"},
        {**jwk(rsa_keys["ok"], "e2"), "e": "Ag"},
        jwk(ec_key(), "enc", use="enc"),
        jwk(ec_key(), "sign-only", key_ops=["sign"]),
        jwk(ec_key(), "dup"),
        jwk(ec_key(), "dup"),
        off_curve,
        {"kty": "OKP", "crv": "X25519", "x": good_ec["x"], "kid": "x25519"},
        {"kty": "EC", "crv": "P-256", "kid": "missing-y", "x": good_ec["x"]},
        {"kty": "RSA", "kid": "kid-not-str", "n": "AQAB", "e": "AQAB"},
    ]
    keys = KeySet.from_jwks({"keys": entries}, ("ES256", "RS256", "PS256"))
    usable = sorted((k.kid or "", k.alg) for k in keys._keys)
    assert usable == [
        ("ec", "ES256"),
        ("rsa", "PS256"),
        ("rsa", "RS256"),
        ("rsa-pinned", "RS256"),
    ]
    assert keys.find("ES256", "ec") is not None
    assert keys.find("ES256", None) is not None  # the only ES256 key
    assert keys.find("RS256", None) is None  # two RS256 keys: ambiguous without kid
    assert keys.find("PS256", "rsa-pinned") is None


@pytest.mark.parametrize(
    "jwks",
    [
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]},
        {"keys": []},
        {"keys": "nope"},
        {"keys": [1]},
        {
            "keys": [
                {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": str(i)}
                for i in range(101)
            ]
        },
        {},
    ],
)
def test_unacceptable_key_sets_are_refused_whole(jwks: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        KeySet.from_jwks(jwks, ("ES256",))


def test_a_key_set_leaking_a_private_key_is_refused_whole() -> None:
    key = ec_key()
    private = ECAlgorithm.to_jwk(key, as_dict=True)
    with pytest.raises(ValueError, match="private"):
        KeySet.from_jwks({"keys": [jwk(ec_key(), "fine"), private]}, ("ES256",))
    with pytest.raises(ValueError):
        KeySet.from_jwks(b'{"keys": [], "keys": []}', ("ES256",))


def test_verify_jws_uses_the_same_policy() -> None:
    key = ec_key()
    keys = KeySet.from_jwks({"keys": [jwk(key, "k")]}, ("ES256",))
    tok = jwt.encode({"any": "payload"}, key, algorithm="ES256", headers={"kid": "k"})
    assert json.loads(verify_jws(tok, keys, algorithms=("ES256",))) == {"any": "payload"}
    with pytest.raises(AuthenticationError) as caught:
        verify_jws(tok, keys, algorithms=("RS256",))
    assert rejection_reason(caught.value) is RejectReason.ALG_NOT_ALLOWED


# --- the HTTPS fetcher ---------------------------------------------------------------------------


JWKS_BODY = json.dumps({"keys": []}).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    requested: list[str]

    def do_GET(self) -> None:
        type(self).requested.append(self.path)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/jwks")
            self.end_headers()
            return
        body = b"x" * 5000 if self.path == "/big" else JWKS_BODY
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        return


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, *_args: Any) -> None:
        return  # a refused TLS handshake is the expected outcome of one test


@dataclass
class Server:
    base: str
    requested: list[str]


def _serve(context: ssl.SSLContext | None, host: str) -> Iterator[Server]:
    handler = type("Handler", (_Handler,), {"requested": []})
    server = _QuietServer(("127.0.0.1", 0), handler)
    if context is not None:
        # Handshake in the handler thread, where a failed one is closed and ignored.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    scheme = "https" if context else "http"
    try:
        yield Server(f"{scheme}://{host}:{server.server_address[1]}", handler.requested)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def http_server(no_proxy: None) -> Iterator[Server]:
    yield from _serve(None, "127.0.0.1")


@pytest.fixture
def tls_server(tmp_path: Path, no_proxy: None) -> Iterator[tuple[Server, Path]]:
    key = ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(hours=1))
        .not_valid_after(datetime.now(UTC) + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    for server in _serve(context, "127.0.0.1"):
        yield server, cert_path


def test_fetcher_refuses_plain_http_and_unlisted_urls(http_server: Server) -> None:
    with pytest.raises(ValueError, match="refusing"):
        https_jwks_fetcher()(f"{http_server.base}/jwks")
    listed = https_jwks_fetcher(allowed_urls=[f"{http_server.base}/jwks"], allow_http=True)
    assert listed(f"{http_server.base}/jwks") == JWKS_BODY
    with pytest.raises(ValueError, match="refusing"):
        listed(f"{http_server.base}/other")
    assert http_server.requested == ["/jwks"]


def test_fetcher_follows_no_redirect(http_server: Server) -> None:
    fetch = https_jwks_fetcher(allow_http=True)
    with pytest.raises(OSError, match="HTTP 302"):
        fetch(f"{http_server.base}/redirect")
    assert http_server.requested == ["/redirect"]


def test_fetcher_caps_the_size(http_server: Server) -> None:
    with pytest.raises(ValueError, match="larger"):
        https_jwks_fetcher(max_bytes=4096, allow_http=True)(f"{http_server.base}/big")
    assert https_jwks_fetcher(max_bytes=5000, allow_http=True)(f"{http_server.base}/big")


def test_fetcher_verifies_tls(tls_server: tuple[Server, Path]) -> None:
    server, cert_path = tls_server
    with pytest.raises(urllib.error.URLError) as caught:
        https_jwks_fetcher()(f"{server.base}/jwks")
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)
    trusting = https_jwks_fetcher(cafile=str(cert_path))
    assert trusting(f"{server.base}/jwks") == JWKS_BODY


@pytest.mark.parametrize("options", [{"timeout_s": 0}, {"timeout_s": 61}, {"max_bytes": 0}])
def test_fetcher_options_are_bounded(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        https_jwks_fetcher(**options)


def test_a_slow_jwks_server_delays_only_its_own_issuer() -> None:
    """Issuer A's JWKS fetch hangs; issuer B's tokens (keys loaded) and A's tokens whose keys
    are merely stale keep verifying meanwhile instead of queueing behind the fetch."""
    key_a, key_b = ec_key(), ec_key()
    other = "https://other.example"
    clock = FakeClock()
    release, fetching = threading.Event(), threading.Event()
    calls: list[str] = []

    def fetch(url: str) -> bytes:
        calls.append(url)
        if len(calls) > 1:  # the refresh after the ttl: hang until released
            fetching.set()
            release.wait(timeout=30)
        return json.dumps({"keys": [jwk(key_a, "a1")]}).encode()

    issuer_b = config(
        issuer=other, jwks_url=None, jwks={"keys": [jwk(key_b, "b1")]}, subject_prefix="other:"
    )
    verifier = JwtVerifier([config(), issuer_b], fetch_jwks=fetch, clock=clock, cache_size=0)
    verifier.verify(token(key_a, "a1", exp=3600))  # first fetch of A's keys
    clock.advance(minutes=11)  # A's keys are now stale: the next use refreshes them
    refresher = threading.Thread(target=verifier.verify, args=(token(key_a, "a1", exp=3600),))
    refresher.start()
    try:
        assert fetching.wait(timeout=10), "the refresh did not start"
        b_token = token(key_b, "b1", exp=3600, iss=other)
        assert verifier.verify(b_token).principal.id == "user:other:alice"
        assert verifier.verify(token(key_a, "a1", exp=3600)).issuer == ISS, (
            "stale keys keep serving"
        )
        assert refresher.is_alive(), "the slow fetch was still running throughout"
    finally:
        release.set()
        refresher.join(timeout=10)
    assert not refresher.is_alive()
    assert calls == [URL, URL]
