"""``strongroom principal`` and ``strongroom apikey`` as an operator runs them: real processes,
exit codes, one audit record per change and no secret in it, and revocation that reaches a
server process (here: this test process) on its very next request."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pyotp
import pytest

from conftest import cli, cli_json
from strongroom import bootstrap
from strongroom.config import load_settings
from strongroom.errors import AuthenticationError
from strongroom.services.identity import IdentityService, refusal_reason

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple 42"


def audit_records(home: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "registry.db") as db:
        rows = db.execute("SELECT canonical FROM audit_records ORDER BY seq").fetchall()
    return [json.loads(bytes(row[0])) for row in rows]


def server_side(home: Path) -> IdentityService:
    """The identity service as a server process of this instance builds it."""
    settings = load_settings(home=home)
    return bootstrap.build_identity_service(settings, bootstrap.server_keys(settings))


def test_principals_are_added_updated_and_shown(instance: Path) -> None:
    home = instance
    before = len(audit_records(home))  # init's own records (it creates user:admin)
    added = cli_json(
        home, "principal", "add", "svc:scoring", "--role", "predictor",
        "--grant", "model-owner:fraud-*", "--network", "10.0.0.0/8",
        "--description", "scoring service",
    )  # fmt: skip
    assert added["roles"] == ["predictor"]
    assert added["grants"] == ["model-owner:fraud-*"]
    assert added["networks"] == ["10.0.0.0/8"]
    updated = cli_json(
        home, "principal", "update", "svc:scoring", "--role", "auditor", "--role", "predictor",
        "--clear-networks", "--disable",
    )  # fmt: skip
    assert updated["roles"] == ["auditor", "predictor"]
    assert updated["networks"] == []
    assert updated["disabled"] is True
    assert updated["grants"] == ["model-owner:fraud-*"]
    enabled = cli_json(home, "principal", "update", "svc:scoring", "--enable", "--clear-grants")
    assert (enabled["disabled"], enabled["grants"]) == (False, [])
    listed = cli_json(home, "principal", "list")
    assert [p["id"] for p in listed] == ["svc:scoring", "user:admin"]
    shown = cli_json(home, "principal", "show", "svc:scoring")
    assert (shown["api_keys"], shown["certificates"]) == ([], [])
    assert "svc:scoring" in cli(home, "principal", "list").stdout

    mine = audit_records(home)[before:]
    actions = [(r["action"], r["resource"], r["outcome"]) for r in mine]
    assert actions == [
        ("principal.create", "svc:scoring", "allowed"),
        ("principal.update", "svc:scoring", "allowed"),
        ("principal.update", "svc:scoring", "allowed"),
    ]
    assert mine[1]["details"]["roles"] == "auditor,predictor"


def test_refusals_have_stable_exit_codes_and_are_audited(instance: Path) -> None:
    home = instance
    before = len(audit_records(home))
    cli(home, "principal", "add", "user:alice")
    duplicate = cli_json(home, "principal", "add", "user:alice", expect=5)
    assert duplicate["error"]["code"] == "registry.conflict"
    cli(home, "principal", "show", "user:ghost", expect=4)
    cli(home, "principal", "add", "alice", expect=3)
    cli(home, "principal", "add", "svc:x", "--grant", "predictor", expect=3)
    cli(home, "principal", "add", "svc:x", "--role", "root", expect=2)  # not a Role: usage
    cli(home, "principal", "update", "user:alice", "--role", "admin", "--clear-roles", expect=3)
    outcomes = [(r["action"], r["outcome"], r.get("reason")) for r in audit_records(home)[before:]]
    assert outcomes[:2] == [
        ("principal.create", "allowed", None),
        ("principal.create", "error", "registry.conflict"),
    ]


def test_api_keys_are_shown_once_and_revoked_on_the_next_request(instance: Path) -> None:
    home = instance
    cli(home, "principal", "add", "svc:scoring", "--role", "predictor")
    issued = cli_json(home, "apikey", "issue", "svc:scoring", "--expires-in-days", "30")
    token = issued["token"]
    assert token.startswith(f"sr_{issued['key_id']}_")
    assert issued["expires_at"] is not None

    server = server_side(home)  # a server process with a warm cache
    assert server.authenticate_api_key(token).id == "svc:scoring"
    assert server.authenticate_api_key(token).id == "svc:scoring"

    rotated = cli_json(home, "apikey", "rotate", issued["key_id"], "--grace-minutes", "5")
    assert server.authenticate_api_key(token).id == "svc:scoring"  # within the grace period
    assert server.authenticate_api_key(rotated["token"]).id == "svc:scoring"
    human = cli(home, "apikey", "issue", "svc:scoring").stdout
    assert "shown once" in human

    cli_json(home, "apikey", "revoke", rotated["key_id"])
    with pytest.raises(AuthenticationError) as caught:
        server.authenticate_api_key(rotated["token"])
    assert refusal_reason(caught.value) == "revoked"

    keys = cli_json(home, "apikey", "list", "svc:scoring")
    assert len(keys) == 3
    assert all("token" not in key for key in keys)
    assert [k["revoked_at"] is not None for k in keys].count(True) == 1
    cli(home, "apikey", "revoke", "aaaaaaaaaaaa", expect=4)

    stored = (home / "registry.db").read_bytes()
    audit_text = json.dumps(audit_records(home))
    for secret in (token, rotated["token"]):
        assert secret.split("_", 2)[2] not in audit_text
        assert secret.split("_", 2)[2].encode() not in stored
    assert issued["key_id"] in audit_text


def test_passwords_and_totp_enrolment(instance: Path, tmp_path: Path) -> None:
    home = instance
    before = len(audit_records(home))
    cli(home, "principal", "add", "user:alice", "--role", "deployer")
    weak = tmp_path / "weak"
    weak.write_text("short\n")
    cli(home, "principal", "passwd", "user:alice", "--password-file", str(weak), expect=3)
    strong = tmp_path / "strong"
    strong.write_text(PASSWORD + "\n")
    cli_json(home, "principal", "passwd", "user:alice", "--password-file", str(strong))
    cli(home, "principal", "passwd", "svc:none", "--password-file", str(strong), expect=4)
    enrolled = cli_json(home, "principal", "totp-enroll", "user:alice")
    assert enrolled["provisioning_uri"].startswith("otpauth://totp/Strongroom:alice?")

    server = server_side(home)
    code = pyotp.TOTP(enrolled["secret"]).now()
    _token, session, principal = server.login("user:alice", PASSWORD, code)
    assert session.mfa_at is not None
    assert principal.mfa_at == session.mfa_at

    audit_text = json.dumps(audit_records(home))
    assert enrolled["secret"] not in audit_text
    assert PASSWORD not in audit_text
    assert enrolled["secret"].encode() not in (home / "registry.db").read_bytes()
    actions = [r["action"] for r in audit_records(home)[before:]]
    assert actions == [
        "principal.create",
        "principal.set_password",
        "principal.set_password",
        "principal.set_password",
        "principal.enroll_totp",
    ]


def test_certificates_are_bound_and_unbound(instance: Path) -> None:
    home = instance
    cli(home, "principal", "add", "svc:batch", "--role", "predictor")
    fingerprint = "ab" * 32
    colons = ":".join(["AB"] * 32)
    bound = cli_json(home, "principal", "bind-cert", "svc:batch", colons)
    assert bound["fingerprint"] == fingerprint
    server = server_side(home)
    assert server.authenticate_certificate(fingerprint).id == "svc:batch"
    cli(home, "principal", "bind-cert", "svc:batch", fingerprint, expect=5)
    cli(home, "principal", "unbind-cert", fingerprint)
    with pytest.raises(AuthenticationError):
        server.authenticate_certificate(fingerprint)
    cli(home, "principal", "bind-cert", "svc:batch", "not-a-fingerprint", expect=3)


def test_initialise_identity_is_idempotent(instance: Path) -> None:
    settings = load_settings(home=instance)
    epoch = instance / "run" / "credential-epoch"
    counter = epoch.read_bytes()  # init made it (and bumped it while creating the admin)
    assert len(counter) == 8
    bootstrap.initialise_identity(settings)
    bootstrap.initialise_identity(settings)
    assert (epoch.stat().st_mode & 0o777) == 0o600
    assert epoch.read_bytes() == counter
    assert [p.id for p in server_side(instance).list_principals()] == ["user:admin"]
