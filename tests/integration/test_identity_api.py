"""Principals, API keys, certificates, passwords and the token endpoint through the admin API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from admin_harness import (
    PASSWORD,
    Actors,
    LiveApp,
    User,
    bearer,
    live_app,
    make_instance,
    totp_code,
)

from conftest import SignerKeys
from strongroom.core.identity.principal import Role
from strongroom.entrypoints.http import schemas

FINGERPRINT = "ab" * 32
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, signer: SignerKeys) -> Iterator[LiveApp]:
    with live_app(make_instance(tmp_path_factory.mktemp("identity"), signer)) as app:
        yield app


@pytest.fixture(scope="module")
def actors(live: LiveApp) -> Actors:
    return Actors(live)


@pytest.fixture(scope="module")
def admin(actors: Actors) -> User:
    return actors.fresh("root", Role.ADMIN)


@pytest.fixture(scope="module")
def token_client(actors: Actors) -> str:
    return actors.service("token-client", Role.PREDICTOR)


def _auth(user: User) -> dict[str, str]:
    assert user.token is not None
    return bearer(user.token)


def test_principals_create_read_update(live: LiveApp, admin: User) -> None:
    body = {
        "id": "svc:scoring",
        "roles": ["predictor"],
        "grants": [{"role": "model-owner", "pattern": "fraud-*"}],
        "networks": ["10.0.0.0/8"],
        "description": "scoring service",
    }
    created = live.post("/v1/principals", json=body, headers=_auth(admin))
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/principals/svc:scoring"
    record = schemas.PrincipalOut.model_validate_json(created.content)
    assert record.kind == "service"
    assert record.networks == ["10.0.0.0/8"]
    assert live.post("/v1/principals", json=body, headers=_auth(admin)).status_code == 409

    listed = schemas.PrincipalList.model_validate_json(
        live.get("/v1/principals", headers=_auth(admin)).content
    )
    assert {"svc:scoring", "user:root"} <= {p.id for p in listed.principals}
    patched = live.request(
        "PATCH",
        "/v1/principals/svc:scoring",
        json={"roles": ["predictor", "model-owner"], "disabled": True},
        headers=_auth(admin),
    )
    assert patched.status_code == 200, patched.text
    assert schemas.PrincipalOut.model_validate_json(patched.content).disabled is True
    shown = live.get("/v1/principals/svc:scoring", headers=_auth(admin)).json()
    assert shown["roles"] == ["model-owner", "predictor"]
    assert shown["grants"] == [{"role": "model-owner", "pattern": "fraud-*"}]
    assert live.get("/v1/principals/svc:nobody", headers=_auth(admin)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"id": "root", "roles": []},
        {"id": "svc:x", "roles": ["superuser"]},
        {"id": "svc:x", "networks": ["10.0.0.1/8"]},
        {"id": "svc:x", "grants": [{"role": "predictor", "pattern": "Fraud"}]},
        {"id": "svc:x", "disabled": False},
    ],
)
def test_invalid_principals_are_refused(
    live: LiveApp, admin: User, body: dict[str, object]
) -> None:
    response = live.post("/v1/principals", json=body, headers=_auth(admin))
    assert response.status_code == 400, response.text


def test_empty_patch_is_refused(live: LiveApp, admin: User) -> None:
    response = live.request("PATCH", "/v1/principals/user:root", json={}, headers=_auth(admin))
    assert response.status_code == 400
    assert "at least one" in response.json()["detail"]


def test_principal_management_needs_admin_and_fresh_mfa(live: LiveApp, actors: Actors) -> None:
    auditor = actors.fresh("audrey", Role.AUDITOR)
    assert live.get("/v1/principals", headers=_auth(auditor)).status_code == 200
    refused = live.post("/v1/principals", json={"id": "svc:y"}, headers=_auth(auditor))
    assert refused.status_code == 403
    stale_admin = actors.user("stale-admin", Role.ADMIN)
    actors.login(stale_admin)
    challenged = live.post("/v1/principals", json={"id": "svc:y"}, headers=_auth(stale_admin))
    assert challenged.status_code == 401
    assert challenged.json()["code"] == "auth.mfa_required"


def test_api_key_lifecycle_and_revocation_on_the_next_request(
    live: LiveApp, actors: Actors, admin: User
) -> None:
    actors.service("keyed", Role.PREDICTOR)
    issued = live.post("/v1/principals/svc:keyed/api-keys", json={}, headers=_auth(admin))
    assert issued.status_code == 201, issued.text
    key = schemas.IssuedApiKeyOut.model_validate_json(issued.content)
    assert key.token.startswith(f"sr_{key.key.key_id}_")
    assert live.get("/v2", headers=bearer(key.token)).status_code == 200

    listed = live.get("/v1/principals/svc:keyed/api-keys", headers=_auth(admin))
    assert key.key.key_id in {k["key_id"] for k in listed.json()["keys"]}
    assert key.token.split("_")[2] not in listed.text  # the secret is never shown again

    rotated = live.post(
        f"/v1/api-keys/{key.key.key_id}/rotate", json={"grace_seconds": 0}, headers=_auth(admin)
    )
    assert rotated.status_code == 201, rotated.text
    successor = schemas.RotatedApiKeyOut.model_validate_json(rotated.content)
    assert live.get("/v2", headers=bearer(key.token)).status_code == 401
    assert live.get("/v2", headers=bearer(successor.token)).status_code == 200

    revoked = live.request("DELETE", f"/v1/api-keys/{successor.key.key_id}", headers=_auth(admin))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert live.get("/v2", headers=bearer(successor.token)).status_code == 401
    assert (
        live.request("DELETE", "/v1/api-keys/aaaaaaaaaaaa", headers=_auth(admin)).status_code == 404
    )
    assert live.request("DELETE", "/v1/api-keys/NOT-A-KEY", headers=_auth(admin)).status_code == 400


def test_certificate_binding(live: LiveApp, actors: Actors, admin: User) -> None:
    actors.service("mtls-client", Role.PREDICTOR)
    actors.service("other-client", Role.PREDICTOR)
    url = f"/v1/principals/svc:mtls-client/certificates/{FINGERPRINT}"
    first = live.request("PUT", url, headers=_auth(admin))
    assert first.status_code == 201, first.text
    assert schemas.CertificateOut.model_validate_json(first.content).fingerprint == FINGERPRINT
    as_openssl_prints_it = url.replace(FINGERPRINT, ":".join(["AB"] * 32))
    assert live.request("PUT", as_openssl_prints_it, headers=_auth(admin)).status_code == 200
    other = f"/v1/principals/svc:other-client/certificates/{FINGERPRINT}"
    assert live.request("PUT", other, headers=_auth(admin)).status_code == 409
    assert live.request("DELETE", other, headers=_auth(admin)).status_code == 404
    assert live.request("DELETE", url, headers=_auth(admin)).status_code == 204
    assert live.request("DELETE", url, headers=_auth(admin)).status_code == 404


def test_password_reset_by_admin_and_by_the_user(
    live: LiveApp, actors: Actors, admin: User
) -> None:
    user = actors.fresh("pat", Role.AUDITOR)
    new_password = "a much better passphrase 42"
    weak = live.request(
        "PUT", "/v1/principals/user:pat/password", json={"password": "short"}, headers=_auth(user)
    )
    assert weak.status_code == 400
    own = live.request(
        "PUT",
        "/v1/principals/user:pat/password",
        json={"password": new_password},
        headers=_auth(user),
    )
    assert own.status_code == 204, own.text
    assert live.get("/v1/audit/verify", headers=_auth(user)).status_code == 401  # sessions ended
    login = {"user": "pat", "password": new_password, "totp": totp_code(user.secret, 1)}
    assert live.post("/v1/auth/login", json=login).status_code == 200

    other = actors.fresh("quinn", Role.AUDITOR)
    target = actors.user("rita", Role.AUDITOR)  # TOTP not confirmed: a password login works
    url = f"/v1/principals/{target.id}/password"
    reset_password = "an admin chose this one 7"
    refused = live.request("PUT", url, json={"password": reset_password}, headers=_auth(other))
    assert refused.status_code == 403
    reset = live.request("PUT", url, json={"password": reset_password}, headers=_auth(admin))
    assert reset.status_code == 204, reset.text
    old = live.post("/v1/auth/login", json={"user": "rita", "password": PASSWORD})
    assert old.status_code == 401
    new = live.post("/v1/auth/login", json={"user": "rita", "password": reset_password})
    assert new.status_code == 200


def test_client_credentials_grant(live: LiveApp, actors: Actors) -> None:
    key = actors.service("batch", Role.PREDICTOR)
    answer = live.post(
        "/v1/oauth/token",
        content=b"grant_type=client_credentials&scope=predict",
        headers={**FORM, **bearer(key)},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    token = schemas.TokenOut.model_validate_json(answer.content)
    assert token.token_type == "Bearer"
    assert token.scope == "predict"
    plain = live.post(
        "/v1/oauth/token", content=b"grant_type=client_credentials", headers={**FORM, **bearer(key)}
    )
    assert "scope" not in plain.json()
    assert token.expires_in == live.parts.settings.access_token_ttl_s
    assert live.get("/v2", headers=bearer(token.access_token)).status_code == 200

    header = json.loads(base64.urlsafe_b64decode(token.access_token.split(".")[0] + "=="))
    jwks = schemas.JwkSet.model_validate_json(live.get("/.well-known/jwks.json").content)
    assert header["kid"] in {k.kid for k in jwks.keys}

    renewed = live.post(
        "/v1/oauth/token",
        content=b"grant_type=client_credentials",
        headers={**FORM, **bearer(token.access_token)},
    )
    assert renewed.status_code == 403


@pytest.mark.parametrize(
    ("form", "code"),
    [
        (b"grant_type=password", "oauth.unsupported_grant_type"),
        (b"scope=x", "oauth.invalid_request"),
        (b"grant_type=client_credentials&grant_type=client_credentials", "oauth.invalid_request"),
        (b"grant_type=client_credentials&client_id=someone-else", "oauth.invalid_request"),
        (b'grant_type=client_credentials&scope=a"b', "oauth.invalid_scope"),
        (b"grant_type", "oauth.invalid_request"),
    ],
)
def test_token_request_errors(live: LiveApp, token_client: str, form: bytes, code: str) -> None:
    answer = live.post("/v1/oauth/token", content=form, headers={**FORM, **bearer(token_client)})
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == code


def test_only_services_get_tokens(live: LiveApp, actors: Actors) -> None:
    user = actors.fresh("ursula", Role.PREDICTOR)
    answer = live.post(
        "/v1/oauth/token", content=b"grant_type=client_credentials", headers={**FORM, **_auth(user)}
    )
    assert answer.status_code == 403
    key = actors.service("json-client", Role.PREDICTOR)
    as_json = live.post(
        "/v1/oauth/token", json={"grant_type": "client_credentials"}, headers=bearer(key)
    )
    assert as_json.status_code == 415
