"""The admin API's registry routes, sessions and request rules, against the real app.

One initialised instance (SQLite, local keyring, audit log) per module, served in process by
``admin_harness.LiveApp``; each test uses its own principals and model names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from admin_harness import (
    Actors,
    LiveApp,
    bearer,
    live_app,
    make_instance,
    problem_without_id,
    publish_signed,
    totp_code,
)

from conftest import SignerKeys, TrainedModel
from strongroom.core.identity.principal import Grant, Role
from strongroom.entrypoints.http import schemas
from strongroom.services.signing import sign_files

MAX_BODY = 4096
MAX_UPLOAD = 256 * 1024


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, signer: SignerKeys) -> Iterator[LiveApp]:
    home = make_instance(tmp_path_factory.mktemp("admin"), signer)
    with live_app(home, max_body_bytes=MAX_BODY, max_upload_bytes=MAX_UPLOAD) as app:
        yield app


@pytest.fixture(scope="module")
def actors(live: LiveApp) -> Actors:
    return Actors(live)


@pytest.fixture(scope="module")
def deployer_session(actors: Actors) -> str:
    """A deployer's session with fresh MFA (valid for the module's few minutes)."""
    token = actors.fresh("strict-deployer", Role.DEPLOYER).token
    assert token is not None
    return token


def _upload(model: str, onnx: bytes, signer: SignerKeys | None, **extra: Any) -> dict[str, Any]:
    files: dict[str, Any] = {"artifact": ("model.onnx", onnx, "application/octet-stream")}
    if signer is not None:
        bundle = sign_files(
            {"model.onnx": onnx},
            subject_name=model,
            private_key_pem=signer.private_pem,
            single_file=True,
        )
        files["signature"] = ("bundle.json", bundle.encode(), "application/json")
    for name, value in extra.items():
        files[name] = (None, value)
    return files


# --- authentication and authorization answers ---------------------------------------------------


def test_every_unauthenticated_request_gets_the_same_401(live: LiveApp, actors: Actors) -> None:
    key = actors.service("revoked-one", Role.PREDICTOR)
    live.parts.identity.revoke_api_key(key.split("_")[1])
    variants = [
        {},
        bearer("sr_not-a-key"),
        bearer("sr_aaaaaaaaaaaa_" + "A" * 43),
        bearer(key),
        {"authorization": "Basic dXNlcjpwYXNz"},
        bearer("srs_aaaaaaaaaaaa_" + "A" * 43),
        bearer("a.b.c"),
    ]
    answers = [live.get("/v1/models", headers=headers) for headers in variants]
    assert {r.status_code for r in answers} == {401}
    bodies = [problem_without_id(r) for r in answers]
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["code"] == "auth.unauthenticated"
    assert {r.headers["www-authenticate"] for r in answers} == {'Bearer realm="strongroom"'}


def test_every_refusal_gets_the_same_403(live: LiveApp, actors: Actors) -> None:
    predictor = actors.service("no-promote", Role.PREDICTOR)
    outsider = actors.service("outsider", Role.DEPLOYER, networks=["10.0.0.0/8"])
    disabled = actors.service("disabled-one", Role.DEPLOYER)
    live.parts.identity.update_principal("svc:disabled-one", disabled=True)
    service_deployer = actors.service("deploy-bot", Role.DEPLOYER)  # services cannot step up
    body = {"to": "production", "reason": "release"}
    answers = [
        live.post("/v1/models/fraud/versions/1/promote", json=body, headers=bearer(token))
        for token in (predictor, outsider, disabled, service_deployer)
    ]
    answers += [live.get("/v1/models", headers=bearer(t)) for t in (outsider, disabled)]
    assert {r.status_code for r in answers} == {403}
    bodies = [problem_without_id(r) for r in answers]
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["code"] == "auth.forbidden"


# --- registry -------------------------------------------------------------------------------------


def test_publish_list_and_show(
    live: LiveApp, actors: Actors, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    owner = actors.service("ci-owner", Role.MODEL_OWNER)
    card = json.dumps({"owner": "risk", "description": "fraud scores"})
    response = live.post(
        "/v1/models/fraud-pub/versions",
        files=_upload("fraud-pub", trained_model.onnx, signer, card=card),
        headers=bearer(owner),
    )
    assert response.status_code == 201, response.text
    published = schemas.PublishResult.model_validate_json(response.content)
    assert published.signer == "team-a"
    assert published.version.version == 1
    assert published.version.card.owner == "risk"
    assert response.headers["location"] == "/v1/models/fraud-pub/versions/1"

    listed = schemas.ModelList.model_validate_json(
        live.get("/v1/models", headers=bearer(owner)).content
    )
    assert "fraud-pub" in {m.name for m in listed.models}
    detail = live.get("/v1/models/fraud-pub", headers=bearer(owner))
    assert detail.status_code == 200
    assert [
        v.version for v in schemas.ModelDetail.model_validate_json(detail.content).versions
    ] == [1]
    version = live.get("/v1/models/fraud-pub/versions/1", headers=bearer(owner))
    shown = schemas.VersionDetail.model_validate_json(version.content)
    assert shown.manifest_digest == published.version.manifest_digest
    assert live.get("/v1/models/fraud-pub/versions/9", headers=bearer(owner)).status_code == 404
    assert live.get("/v1/models/fraud-pub/versions/01", headers=bearer(owner)).status_code == 400


def test_model_list_shows_only_permitted_models(
    live: LiveApp, actors: Actors, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    for name in ("fraud-list-a", "fraud-list-b"):
        publish_signed(live.parts, signer, name, trained_model.onnx)
    scoped = actors.service("scoped", grants=(Grant(Role.PREDICTOR, "fraud-list-b*"),))
    listed = live.get("/v1/models", headers=bearer(scoped))
    assert [m["name"] for m in listed.json()["models"]] == ["fraud-list-b"]
    assert live.get("/v1/models/fraud-list-a", headers=bearer(scoped)).status_code == 403
    assert live.get("/v1/models/fraud-list-b", headers=bearer(scoped)).status_code == 200


def test_upload_refusals(
    live: LiveApp, actors: Actors, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    owner = actors.service("ci-owner-2", Role.MODEL_OWNER)
    url = "/v1/models/fraud-up/versions"
    unsigned = live.post(
        url, files=_upload("fraud-up", trained_model.onnx, None), headers=bearer(owner)
    )
    assert unsigned.status_code == 422
    assert unsigned.json()["code"] == "security.signature"
    unknown = live.post(
        url, files=_upload("fraud-up", trained_model.onnx, signer, extra="x"), headers=bearer(owner)
    )
    assert unknown.status_code == 400
    oversized = live.post(
        url, files=_upload("fraud-up", b"\0" * (MAX_UPLOAD + 1), None), headers=bearer(owner)
    )
    assert oversized.status_code == 413
    not_multipart = live.post(url, json={"artifact": "x"}, headers=bearer(owner))
    assert not_multipart.status_code == 415
    missing = live.post(url, files={"card": (None, "{}")}, headers=bearer(owner))
    assert missing.status_code == 400
    assert not list((live.parts.settings.home / "uploads").iterdir())  # temporaries removed


# --- stage changes and MFA ------------------------------------------------------------------------


def test_promote_needs_a_fresh_step_up_and_swaps_the_served_version(
    live: LiveApp, actors: Actors, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    for _ in range(2):
        publish_signed(live.parts, signer, "fraud-mfa", trained_model.onnx)
    predictor = actors.service("mfa-caller", Role.PREDICTOR)
    deployer = actors.user("dana", Role.DEPLOYER)
    session = actors.login(deployer)  # password only: the TOTP secret is not confirmed yet
    promote = "/v1/models/fraud-mfa/versions/{}/promote"
    body = {"to": "production", "reason": "release 1"}

    stale = live.post(promote.format(1), json=body, headers=bearer(session))
    assert stale.status_code == 401
    assert stale.json()["code"] == "auth.mfa_required"
    assert 'error="insufficient_user_authentication"' in stale.headers["www-authenticate"]

    stepped = live.post(
        "/v1/auth/step-up", json={"totp": totp_code(deployer.secret)}, headers=bearer(session)
    )
    assert stepped.status_code == 200, stepped.text
    assert schemas.StepUpOut.model_validate_json(stepped.content).mfa_at is not None

    first = live.post(promote.format(1), json=body, headers=bearer(session))
    assert first.status_code == 200, first.text
    assert live.get("/v2/models/fraud-mfa", headers=bearer(predictor)).json()["versions"] == ["1"]
    second = live.post(promote.format(2), json=body, headers=bearer(session))
    events = schemas.StageChange.model_validate_json(second.content).events
    assert [(e.version, e.to_stage) for e in events] == [(1, "archived"), (2, "production")]
    assert live.get("/v2/models/fraud-mfa", headers=bearer(predictor)).json()["versions"] == ["2"]

    back = live.post(
        "/v1/models/fraud-mfa/rollback", json={"reason": "bad scores"}, headers=bearer(session)
    )
    assert back.status_code == 200, back.text
    assert live.get("/v2/models/fraud-mfa", headers=bearer(predictor)).json()["versions"] == ["1"]
    again = live.post(promote.format(1), json=body, headers=bearer(session))
    assert again.status_code == 409


# --- request body rules ---------------------------------------------------------------------------


SECRET_VALUE = "do-not-echo-Zq81"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"to": "production", "reason": "r", "force": true}', "force: Extra inputs"),
        ('{"to": "production", "reason": NaN}', "reason"),
        ('{"to": "production", "reason": "r", "x": Infinity}', "x: Extra inputs"),
        ('{"to": "production", "reason": 1e999}', "reason"),
        ('{"to": "nowhere", "reason": "r"}', "to: Input should be"),
        ('{"to": "production"}', "reason: Field required"),
        ('{"to": "production", "reason": 7}', "reason: Input should be a valid string"),
        ("[1, 2", "Invalid JSON"),
        (f'{{"to": "{SECRET_VALUE}", "reason": "r"}}', "to:"),
    ],
)
def test_json_bodies_are_strict(
    live: LiveApp, deployer_session: str, body: str, fragment: str
) -> None:
    response = live.post(
        "/v1/models/fraud/versions/1/promote",
        content=body.encode(),
        headers={**bearer(deployer_session), "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["code"] == "input.invalid"
    assert fragment in problem["detail"]
    assert SECRET_VALUE not in response.text


def test_media_type_and_size_limits(live: LiveApp) -> None:
    login = "/v1/auth/login"
    as_text = live.post(login, content=b"{}", headers={"content-type": "text/plain"})
    assert as_text.status_code == 415
    assert as_text.json()["code"] == "input.unsupported_media_type"
    latin = live.post(
        login, content=b"{}", headers={"content-type": "application/json; charset=latin-1"}
    )
    assert latin.status_code == 415
    huge = live.post(
        login, content=b" " * (MAX_BODY + 1), headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413
    assert huge.json()["code"] == "input.too_large"


# --- sessions -------------------------------------------------------------------------------------


def test_login_failures_are_one_401_and_logout_ends_the_session(
    live: LiveApp, actors: Actors
) -> None:
    user = actors.user("lena", Role.AUDITOR)
    wrong = live.post("/v1/auth/login", json={"user": "lena", "password": "not the password"})
    unknown = live.post("/v1/auth/login", json={"user": "nobody", "password": "whatever-12345"})
    assert wrong.status_code == unknown.status_code == 401
    assert problem_without_id(wrong) == problem_without_id(unknown)
    token = actors.login(user, totp=totp_code(user.secret))
    assert token.startswith("srs_")
    assert live.get("/v1/audit/verify", headers=bearer(token)).status_code == 200
    assert live.post("/v1/auth/logout", headers=bearer(token)).status_code == 204
    assert live.get("/v1/audit/verify", headers=bearer(token)).status_code == 401
    key = actors.service("no-session", Role.PREDICTOR)
    assert live.post("/v1/auth/logout", headers=bearer(key)).status_code == 403
