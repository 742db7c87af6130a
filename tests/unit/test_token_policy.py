"""The pure token policy: issuer configuration, header and claim checks, principal mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.identity.principal import CredentialKind, PrincipalKind, Role
from strongroom.core.identity.tokens import (
    ALGORITHM_KEY_TYPES,
    IssuerConfig,
    RejectReason,
    SubjectKind,
    TokenType,
    check_claims,
    check_header,
    is_safe_kid,
    principal_from_claims,
    rejection_reason,
    token_type_of,
)
from strongroom.errors import (
    AuthenticationError,
    ConfigurationError,
    ForbiddenError,
    InvalidInputError,
)

R = RejectReason
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
ISS = "https://idp.example/realms/main"
AUD = "https://strongroom.example/api"
JWKS = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}]}


def config(**changes: Any) -> IssuerConfig:
    base: dict[str, Any] = {
        "issuer": ISS,
        "audiences": (AUD,),
        "algorithms": ("RS256",),
        "jwks_url": f"{ISS}/certs",
    }
    return IssuerConfig(**(base | changes))


def claims(**changes: Any) -> dict[str, Any]:
    base = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": T + 60, "iat": T, "nbf": T}
    return {k: v for k, v in (base | changes).items() if v is not None}


def reason_of(call: Any) -> RejectReason | None:
    with pytest.raises(AuthenticationError) as caught:
        call()
    assert str(caught.value) == "authentication failed"
    return rejection_reason(caught.value)


# --- IssuerConfig ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"leeway": timedelta(seconds=61)},
        {"leeway": timedelta(seconds=-1)},
        {"leeway": 30},
        {"algorithms": ("HS256",)},
        {"algorithms": ("hs512",)},
        {"algorithms": ("none",)},
        {"algorithms": ("ES256K",)},
        {"algorithms": ()},
        {"algorithms": ("RS256", "RS256")},
        {"algorithms": ["RS256"]},
        {"jwks_url": "http://idp.example/certs"},
        {"jwks_url": "https://user:pw@idp.example/certs"},
        {"jwks_url": "https://idp.example/certs#frag"},
        {"jwks_url": "file:///etc/jwks.json"},
        {"jwks_url": "https:///no-host"},
        {"jwks": JWKS},  # and jwks_url: both
        {"jwks_url": None},  # neither
        {"jwks_url": None, "jwks": {"keys": []}},
        {"jwks_url": None, "jwks": {"keys": [{"x": float("nan")}]}},
        {"issuer": "http://idp.example"},
        {"issuer": "idp.example"},
        {"issuer": ""},
        {"audiences": ()},
        {"audiences": (AUD, AUD)},
        {"audiences": (AUD, "")},
        {"token_types": frozenset()},
        {"token_types": frozenset({"at+jwt"})},
        {"token_types": {TokenType.ACCESS}},
        {"required_claims": ("has space",)},
        {"subject_prefix": "Corp:"},
        {"subject_prefix": "corp"},
        {"subject_prefix": ":"},
        {"subject_kind": "user"},
        {"role_map": {"x": Role.ADMIN}},
        {"role_claim": ("roles",), "role_map": {"x": "admin"}},
        {"role_claim": ("roles",), "role_map": {"": Role.ADMIN}},
        {"mfa_amr_values": ["mfa"]},
        {"unsafe_http_jwks": 1},
    ],
)
def test_unsafe_or_malformed_issuer_settings_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        config(**changes)


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "hs256"])
def test_hmac_is_refused_with_the_reason(alg: str) -> None:
    with pytest.raises(ConfigurationError, match="HMAC is never allowed") as caught:
        config(algorithms=("RS256", alg))
    assert caught.value.hint is not None and "confusion" in caught.value.hint


def test_accepted_issuer_settings() -> None:
    assert config(leeway=timedelta(seconds=60)).leeway == timedelta(seconds=60)
    assert config(leeway=timedelta(0)).all_required_claims == ("exp", "iss", "aud", "sub")
    assert config(required_claims=("jti", "exp")).all_required_claims[-1] == "jti"
    dev = config(
        issuer="http://localhost:8080",
        jwks_url="http://localhost:8080/certs",
        unsafe_http_jwks=True,
    )
    assert dev.jwks_url == "http://localhost:8080/certs"
    assert set(config(algorithms=tuple(ALGORITHM_KEY_TYPES)).algorithms) == {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }


def test_inline_key_sets_and_role_maps_are_private_copies() -> None:
    jwks = {"keys": [dict(JWKS["keys"][0])]}
    role_map = {"ml": Role.PREDICTOR}
    frozen = config(jwks_url=None, jwks=jwks, role_claim=("roles",), role_map=role_map)
    jwks["keys"].clear()
    role_map["ml"] = Role.ADMIN
    assert frozen.jwks is not None and len(frozen.jwks["keys"]) == 1
    assert frozen.role_map["ml"] is Role.PREDICTOR
    with pytest.raises(TypeError):
        frozen.role_map["x"] = Role.ADMIN  # type: ignore[index]


# --- header ---------------------------------------------------------------------------------------


def header_reason(header: dict[str, Any], **options: Any) -> RejectReason | None:
    kwargs = {"algorithms": ("RS256",), "token_types": frozenset({TokenType.ACCESS})} | options
    return reason_of(lambda: check_header(header, **kwargs))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"typ": "at+jwt"}, R.MALFORMED),
        ({"alg": 256, "typ": "at+jwt"}, R.MALFORMED),
        ({"alg": "", "typ": "at+jwt"}, R.MALFORMED),
        *(({"alg": a, "typ": "at+jwt"}, R.ALG_NONE) for a in ("none", "NONE", "nOnE", " none")),
        *(
            ({"alg": "RS256", "typ": "at+jwt", p: "x"}, R.FORBIDDEN_HEADER)
            for p in ("jwk", "jku", "x5u", "x5c", "crit", "b64", "zip", "enc", "cty")
        ),
        ({"alg": "RS256", "typ": "at+jwt", "crit": []}, R.FORBIDDEN_HEADER),
        ({"alg": "HS256", "typ": "at+jwt"}, R.ALG_NOT_ALLOWED),
        ({"alg": "PS256", "typ": "at+jwt"}, R.ALG_NOT_ALLOWED),
        ({"alg": "rs256", "typ": "at+jwt"}, R.ALG_NOT_ALLOWED),
        ({"alg": "RS256", "typ": "at+jwt", "kid": "../x"}, R.BAD_KID),
        ({"alg": "RS256", "typ": "at+jwt", "kid": 7}, R.BAD_KID),
        ({"alg": "RS256", "typ": "JWT"}, R.BAD_TYPE),
        ({"alg": "RS256"}, R.BAD_TYPE),
        ({"alg": "RS256", "typ": "at+jwt+x"}, R.BAD_TYPE),
        ({"alg": "RS256", "typ": ["at+jwt"]}, R.BAD_TYPE),
    ],
)
def test_header_refusals(header: dict[str, Any], expected: RejectReason) -> None:
    assert header_reason(header) is expected


def test_alg_must_be_both_pinned_and_supported() -> None:
    assert header_reason({"alg": "HS256", "typ": "at+jwt"}, algorithms=("HS256",)) is (
        R.ALG_NOT_ALLOWED
    )


def test_accepted_headers() -> None:
    both = frozenset(TokenType)
    info = check_header(
        {"alg": "RS256", "kid": "k-1", "typ": "application/AT+JWT", "x5t": "thumb"},
        algorithms=("RS256",),
        token_types=both,
    )
    assert (info.alg, info.kid, info.token_type) == ("RS256", "k-1", TokenType.ACCESS)
    untyped = check_header({"alg": "RS256"}, algorithms=("RS256",), token_types=both)
    assert untyped.token_type is TokenType.GENERIC


@pytest.mark.parametrize(
    ("typ", "expected"),
    [
        (None, TokenType.GENERIC),
        ("JWT", TokenType.GENERIC),
        ("jwt", TokenType.GENERIC),
        ("application/jwt", TokenType.GENERIC),
        ("at+jwt", TokenType.ACCESS),
        ("AT+JWT", TokenType.ACCESS),
        ("application/at+jwt", TokenType.ACCESS),
        ("application/application/at+jwt", None),
        ("dpop+jwt", None),
        ("", None),
        (1, None),
    ],
)
def test_token_type_of(typ: object, expected: TokenType | None) -> None:
    assert token_type_of(typ) is expected


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=200), st.integers(), st.none()))
def test_safe_kids_are_short_printable_and_pathless(kid: object) -> None:
    if is_safe_kid(kid):
        assert isinstance(kid, str)
        assert 0 < len(kid) <= 128
        assert all("\x21" <= c <= "\x7e" for c in kid)
        assert "/" not in kid and "\\" not in kid and ".." not in kid


# --- claims ---------------------------------------------------------------------------------------


def claims_reason(
    cfg: IssuerConfig, body: dict[str, Any], typ: TokenType = TokenType.ACCESS
) -> Any:
    return reason_of(lambda: check_claims(cfg, body, token_type=typ, now=NOW))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"exp": T - 30}, R.EXPIRED),
        ({"exp": T - 31.5}, R.EXPIRED),
        ({"nbf": T + 31}, R.NOT_YET_VALID),
        ({"iat": T + 30.5}, R.NOT_YET_VALID),
        ({"exp": "later"}, R.BAD_CLAIM),
        ({"exp": False}, R.BAD_CLAIM),
        ({"exp": float("inf")}, R.BAD_CLAIM),
        ({"exp": 10**20}, R.BAD_CLAIM),
        ({"nbf": -1}, R.BAD_CLAIM),
        ({"iss": f"{ISS}/"}, R.WRONG_ISSUER),
        ({"aud": "https://other.example"}, R.WRONG_AUDIENCE),
        ({"aud": []}, R.BAD_CLAIM),
        ({"aud": [AUD, 1]}, R.BAD_CLAIM),
        ({"aud": ["x"] * 64 + [AUD]}, R.BAD_CLAIM),
        ({"aud": {"x": AUD}}, R.BAD_CLAIM),
        ({"sub": ""}, R.BAD_CLAIM),
        ({"sub": "x" * 513}, R.BAD_CLAIM),
        ({"sub": ["alice"]}, R.BAD_CLAIM),
        ({"client_id": 5}, R.BAD_CLAIM),
    ],
)
def test_claim_refusals(changes: dict[str, Any], expected: RejectReason) -> None:
    assert claims_reason(config(), claims(**changes)) is expected


@pytest.mark.parametrize("name", ["exp", "iss", "aud", "sub", "jti"])
def test_required_claims(name: str) -> None:
    body = claims(jti="j")
    del body[name]
    assert claims_reason(config(required_claims=("jti",)), body) is R.MISSING_CLAIM


def test_leeway_edges_are_accepted() -> None:
    cfg = config()
    edge = claims(exp=T - 29, nbf=T + 30, iat=T + 30)
    assert check_claims(cfg, edge, token_type=TokenType.ACCESS, now=NOW) == (
        NOW - timedelta(seconds=29)
    )
    strict = config(leeway=timedelta(0))
    assert claims_reason(strict, claims(exp=T)) is R.EXPIRED
    assert claims_reason(strict, claims(nbf=T + 1)) is R.NOT_YET_VALID
    expiry = check_claims(strict, claims(exp=T + 0.5), token_type=TokenType.ACCESS, now=NOW)
    assert expiry == NOW + timedelta(seconds=0.5)
    assert check_claims(cfg, claims(aud=["x", AUD]), token_type=TokenType.ACCESS, now=NOW)


@pytest.mark.parametrize("marker", ["nonce", "at_hash", "c_hash", "s_hash"])
def test_id_token_claims_refuse_generic_tokens_only(marker: str) -> None:
    cfg = config(token_types=frozenset(TokenType))
    body = claims(**{marker: "x"})
    assert claims_reason(cfg, body, TokenType.GENERIC) is R.ID_TOKEN
    assert check_claims(cfg, body, token_type=TokenType.ACCESS, now=NOW)


def test_now_must_be_aware() -> None:
    with pytest.raises(InvalidInputError):
        check_claims(config(), claims(), token_type=TokenType.ACCESS, now=NOW.replace(tzinfo=None))


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["iss", "aud", "sub", "exp", "nbf", "iat", "client_id", "nonce"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=5),
            st.lists(st.text(max_size=5), max_size=3),
        ),
    )
)
def test_claim_checks_fail_closed_on_any_input(changes: dict[str, Any]) -> None:
    body = claims() | changes
    refused: AuthenticationError | None = None
    try:
        expiry = check_claims(config(), body, token_type=TokenType.GENERIC, now=NOW)
    except AuthenticationError as exc:
        refused = exc
    if refused is not None:
        assert rejection_reason(refused) is not None
    else:
        assert body["iss"] == ISS
        assert expiry > NOW - timedelta(seconds=30)


# --- principals -----------------------------------------------------------------------------------


def principal(cfg: IssuerConfig, **changes: Any) -> Any:
    return principal_from_claims(cfg, claims(**changes), now=NOW, fallback_credential_id="fb")


@pytest.mark.parametrize(
    ("kind", "changes", "expected_id", "expected_kind"),
    [
        (SubjectKind.AUTO, {}, "user:alice", PrincipalKind.USER),
        (SubjectKind.AUTO, {"client_id": "portal"}, "user:alice", PrincipalKind.USER),
        (SubjectKind.AUTO, {"sub": "ci", "client_id": "ci"}, "svc:ci", PrincipalKind.SERVICE),
        (SubjectKind.USER, {"sub": "ci", "client_id": "ci"}, "user:ci", PrincipalKind.USER),
        (SubjectKind.SERVICE, {"client_id": "portal"}, "svc:portal", PrincipalKind.SERVICE),
        (SubjectKind.SERVICE, {}, "svc:alice", PrincipalKind.SERVICE),
        (SubjectKind.AUTO, {"sub": "auth0|5f2a"}, "user:auth0|5f2a", PrincipalKind.USER),
    ],
)
def test_subject_mapping(
    kind: SubjectKind, changes: dict[str, Any], expected_id: str, expected_kind: PrincipalKind
) -> None:
    result = principal(config(subject_kind=kind), **changes)
    assert (result.id, result.kind) == (expected_id, expected_kind)
    assert result.credential.kind is CredentialKind.JWT
    assert result.credential.expires_at == NOW + timedelta(seconds=60)
    assert (result.grants, result.networks, result.disabled) == ((), (), False)


def test_subject_prefix_and_invalid_subjects() -> None:
    assert principal(config(subject_prefix="corp:")).id == "user:corp:alice"
    for sub in ("alice bob", "-alice", "x" * 129, "ali/ce"):
        assert reason_of(lambda sub=sub: principal(config(), sub=sub)) is R.BAD_SUBJECT


def test_a_subject_cannot_impersonate_another_issuers_prefix() -> None:
    """Issuer B (prefix "corp:") has user "alice"; issuer A (no prefix) must not be able to
    mint the same principal id with sub "corp:alice" (or client_id "corp:svc")."""
    assert principal(config(subject_prefix="corp:"), sub="alice").id == "user:corp:alice"
    for sub in ("corp:alice", "corp:", ":alice", "a:b:c"):
        assert reason_of(lambda sub=sub: principal(config(), sub=sub)) is R.BAD_SUBJECT
    service = config(subject_kind=SubjectKind.SERVICE)
    assert (
        reason_of(lambda: principal(service, sub="corp:svc", client_id="corp:svc")) is R.BAD_SUBJECT
    )


def test_roles_come_only_through_the_closed_map() -> None:
    cfg = config(
        role_claim=("realm_access", "roles"),
        role_map={"ml-predict": Role.PREDICTOR, "ml-deploy": Role.DEPLOYER},
    )
    nested = {"roles": ["ml-predict", "admin", "ml-deploy", "model-owner"]}
    assert principal(cfg, realm_access=nested).roles == {Role.PREDICTOR, Role.DEPLOYER}
    assert principal(cfg, realm_access={"roles": "ml-predict other"}).roles == {Role.PREDICTOR}
    assert principal(cfg).roles == frozenset()
    assert principal(cfg, realm_access="flat").roles == frozenset()
    assert principal(config(), roles=["admin"]).roles == frozenset()  # no role claim configured
    for bad in ({"roles": 5}, {"roles": [1]}, {"roles": ["x"] * 257}):
        assert reason_of(lambda bad=bad: principal(cfg, realm_access=bad)) is R.BAD_CLAIM


def test_mfa_time_only_from_trusted_amr_for_users() -> None:
    mfa = {"amr": ["pwd", "mfa"], "auth_time": T - 120}
    assert principal(config(), **mfa).mfa_at == NOW - timedelta(minutes=2)
    assert principal(config(), amr=["pwd"], auth_time=T).mfa_at is None
    assert principal(config(), amr="mfa", auth_time=T).mfa_at is None
    assert principal(config(), amr=["mfa"]).mfa_at is None
    assert principal(config(), amr=["mfa"], auth_time=True).mfa_at is None
    assert principal(config(), amr=["mfa"], auth_time=T + 31).mfa_at is None
    assert principal(config(mfa_amr_values=()), **mfa).mfa_at is None
    assert principal(config(mfa_amr_values=("hwk",)), amr=["hwk"], auth_time=T).mfa_at == NOW
    service = principal(config(), sub="ci", client_id="ci", **mfa)
    assert service.kind is PrincipalKind.SERVICE and service.mfa_at is None


def test_credential_id_is_the_jti_when_printable() -> None:
    assert principal(config(), jti="abc-123").credential.id == "abc-123"
    assert principal(config(), jti="has space").credential.id == "fb"
    assert principal(config(), jti=7).credential.id == "fb"
    assert principal(config()).credential.id == "fb"


def test_rejection_reason_ignores_foreign_errors() -> None:
    assert rejection_reason(AuthenticationError()) is None
    assert rejection_reason(ForbiddenError()) is None
