"""The auditor's API: queries and verification, auditor-only, each read audited exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from admin_harness import Actors, LiveApp, User, bearer, live_app, make_instance

from conftest import SignerKeys
from strongroom.core.identity.principal import Role
from strongroom.entrypoints.http import schemas


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, signer: SignerKeys) -> Iterator[LiveApp]:
    with live_app(make_instance(tmp_path_factory.mktemp("audit"), signer)) as app:
        yield app


@pytest.fixture(scope="module")
def actors(live: LiveApp) -> Actors:
    return Actors(live)


@pytest.fixture(scope="module")
def auditor(actors: Actors) -> User:
    return actors.fresh("ada", Role.AUDITOR)


def _all_records(live: LiveApp, auditor: User, **params: Any) -> list[dict[str, Any]]:
    """Every record matching ``params``, page by page (``next_after_seq``)."""
    assert auditor.token is not None
    records: list[dict[str, Any]] = []
    after = -1
    while True:
        query = {**params, "after_seq": after, "limit": 50}
        response = live.get("/v1/audit/records", params=query, headers=bearer(auditor.token))
        assert response.status_code == 200, response.text
        page = schemas.AuditRecordsPage.model_validate_json(response.content)
        records += [r.model_dump() for r in page.records]
        if page.next_after_seq is None:
            return records
        after = page.next_after_seq


def test_reading_the_log_is_audited_exactly_once(live: LiveApp, auditor: User) -> None:
    assert auditor.token is not None
    read = live.get(
        "/v1/audit/records",
        params={"action": "auth.login"},
        headers={**bearer(auditor.token), "x-request-id": "audit-read-once"},
    )
    assert read.status_code == 200, read.text
    logins = schemas.AuditRecordsPage.model_validate_json(read.content).records
    assert any(r.principal == auditor.id and r.outcome == "allowed" for r in logins)

    mine = [r for r in _all_records(live, auditor) if r["request_id"] == "audit-read-once"]
    assert len(mine) == 1
    (record,) = mine
    assert record["action"] == "audit.read"
    assert record["principal"] == auditor.id
    assert record["outcome"] == "allowed"
    assert record["details"]["read.operation"] == "query"
    assert record["details"]["read.action"] == "auth.login"
    assert record["details"]["status"] == 200


def test_failed_logins_name_the_user(live: LiveApp, auditor: User) -> None:
    response = live.post("/v1/auth/login", json={"user": "ghost", "password": "x" * 12})
    assert response.status_code == 401
    request_id = response.headers["x-request-id"]
    denied = _all_records(live, auditor, action="auth.login", outcome="denied")
    (record,) = [r for r in denied if r["request_id"] == request_id]
    assert record["principal"] == "user:ghost"
    assert record["reason"] == "auth.unauthenticated"
    assert all(r["outcome"] == "denied" for r in denied)


def test_only_auditors_read_and_refusals_are_recorded(
    live: LiveApp, actors: Actors, auditor: User
) -> None:
    admin = actors.fresh("root", Role.ADMIN)
    assert admin.token is not None
    for path in ("/v1/audit/records", "/v1/audit/verify"):
        refused = live.get(path, headers={**bearer(admin.token), "x-request-id": "nosy-admin"})
        assert refused.status_code == 403
    records = [r for r in _all_records(live, auditor) if r["request_id"] == "nosy-admin"]
    assert [(r["action"], r["outcome"]) for r in records] == [
        ("audit.read", "denied"),
        ("audit.verify", "denied"),
    ]


def test_verify_reports_the_log(live: LiveApp, auditor: User) -> None:
    assert auditor.token is not None
    response = live.get(
        "/v1/audit/verify", headers={**bearer(auditor.token), "x-request-id": "verify-1"}
    )
    assert response.status_code == 200, response.text
    report = schemas.AuditVerificationOut.model_validate_json(response.content)
    assert report.ok
    assert report.problem is None
    assert report.records_checked > 0
    (record,) = [r for r in _all_records(live, auditor) if r["request_id"] == "verify-1"]
    assert record["details"]["ok"] is True
    assert record["details"]["records_checked"] == report.records_checked


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=100000",
        "since=2026-01-01T00:00:00",
        "outcome=maybe",
        "colour=red",
        "action=a&action=b",
        "after_seq=-2",
    ],
)
def test_bad_queries_are_refused(live: LiveApp, auditor: User, query: str) -> None:
    assert auditor.token is not None
    response = live.get(f"/v1/audit/records?{query}", headers=bearer(auditor.token))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "input.invalid"
