"""The CLI as a user runs it: real processes, real exit codes, no tracebacks."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from conftest import cli, cli_json


@pytest.mark.slow
def test_push_promote_verify_rotate_export(instance: Path, tmp_path: Path):
    home = instance
    pushed = cli_json(
        home,
        "model",
        "push",
        "fraud",
        str(tmp_path / "model.onnx"),
        "--sign-key",
        str(tmp_path / "signer.pem"),
        "--owner",
        "risk",
    )
    assert pushed["version"] == 1 and pushed["signer"] == "team-a" and pushed["signed"]
    cli_json(
        home,
        "model",
        "push",
        "fraud",
        str(tmp_path / "model.onnx"),
        "--sign-key",
        str(tmp_path / "signer.pem"),
        "--owner",
        "risk",
    )
    cli(home, "model", "promote", "fraud", "1", "--to", "production", "--reason", "ok")
    cli(home, "model", "promote", "fraud", "2", "--to", "production", "--reason", "better")
    listed = cli_json(home, "model", "list", "fraud")
    assert [(v["version"], v["stage"]) for v in listed] == [(1, "archived"), (2, "production")]
    cli(home, "model", "rollback", "fraud", "--reason", "regression")
    shown = cli_json(home, "model", "show", "fraud")
    assert shown["version"] == 1 and shown["history"][-1]["kind"] == "rollback"

    rotated = cli_json(home, "keys", "rotate", "--retire-old")
    assert rotated == {
        "new_version": 2,
        "rewrapped": 2,
        "already_current": 0,
        "retired_below": 2,
        "retire_refused": None,
        "failures": [],
    }
    verified = cli_json(home, "model", "verify", "--all")
    assert [v["ok"] for v in verified] == [True, True]

    sig = tmp_path / "exported.sig"
    cli(home, "model", "export-signature", "fraud", "1", "--out", str(sig))
    import model_signing

    model_signing.verifying.Config().use_elliptic_key_verifier(
        public_key=tmp_path / "signer.pub.pem"
    ).verify(tmp_path / "model.onnx", sig)

    trail = cli_json(home, "audit", "tail", "-n", "50")
    actions = [(r["action"], r["outcome"]) for r in trail]
    assert actions[0] == ("principal.create", "allowed"), "init made the administrator"
    actions = actions[1:]
    assert actions[:7] == [
        ("model.push", "allowed"),
        ("model.push", "allowed"),
        ("model.promote", "allowed"),
        ("model.promote", "allowed"),
        ("model.rollback", "allowed"),
        ("key.rotate", "allowed"),
        ("audit.read", "allowed"),
    ], "one record per registry-changing command, in order"
    assert trail[1]["model_version"] == 1
    assert trail[1]["manifest_digest"] == pushed["manifest_digest"]

    gc = cli_json(home, "registry", "gc")
    assert gc == {"dry_run": True, "orphan_blobs": [], "temporaries_removed": 0, "too_young": 0}


@pytest.mark.slow
def test_errors_are_clear_and_mapped_to_exit_codes(instance: Path, tmp_path: Path, trained_model):
    home = instance
    evil = tmp_path / "model.pkl"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    refused = cli(home, "model", "push", "fraud", str(evil), "--owner", "x", expect=3)
    assert "input.unsupported_format" in refused.stderr and "skl2onnx" in refused.stderr

    unsigned = cli(
        home, "model", "push", "fraud", str(tmp_path / "model.onnx"), "--owner", "x", expect=6
    )
    assert "security.signature" in unsigned.stderr
    refused = cli_json(home, "audit", "tail", "-n", "5")
    assert [(r["action"], r["outcome"], r["reason"]) for r in refused[-3:-1]] == [
        ("model.push", "error", "input.unsupported_format"),
        ("model.push", "denied", "security.signature"),
    ], "refused commands are audited too"

    other = cli(
        home,
        "model",
        "push",
        "credit",
        str(tmp_path / "model.onnx"),
        "--owner",
        "x",
        "--sign-key",
        str(tmp_path / "signer.pem"),
        expect=6,
    )
    assert "security.signature" in other.stderr, "signer not allowed for credit*"

    usage = cli(home, "model", "promote", "fraud", "1", "--to", "bogus", "--reason", "x", expect=2)
    assert "--to" in usage.stderr

    missing = cli_json(home, "model", "show", "nope", expect=4)
    assert missing["error"]["code"] == "registry.not_found"

    cli(
        home,
        "model",
        "push",
        "fraud",
        str(tmp_path / "model.onnx"),
        "--sign-key",
        str(tmp_path / "signer.pem"),
        "--owner",
        "x",
    )
    blob = next(p for p in (home / "artifacts").rglob("*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0x10
    blob.write_bytes(bytes(data))
    tampered = cli(home, "model", "verify", "fraud", "1", expect=6)
    assert "security.integrity" in tampered.stderr

    no_config = cli(tmp_path / "empty", "model", "list", expect=7)
    assert "passphrase" in no_config.stderr


@pytest.mark.slow
def test_quickstart_runs_end_to_end_and_again(tmp_path: Path):
    from server_harness import free_port

    home = tmp_path / "qs"
    env = {"STRONGROOM_PORT": str(free_port())}
    first = cli_json(home, "quickstart", "--rows", "1000", "--no-serve", env=env)
    assert first["predictions_match_in_process_model"] is True
    assert first["served_over_https_match_in_process_model"] is True
    assert (home / "quickstart" / "api-key").stat().st_mode & 0o777 == 0o600
    assert (home / "secrets" / "admin-password").stat().st_mode & 0o777 == 0o600
    assert first["plaintext_found_in_artifact_store"] is False
    assert first["stage"] == "production" and first["version"] == 1
    second = cli_json(home, "quickstart", "--rows", "1000", "--seed", "8", "--no-serve", env=env)
    assert second["version"] == 2 and second["predictions_match_in_process_model"] is True
    assert second["served_over_https_match_in_process_model"] is True
    listed = cli_json(home, "model", "list", "fraud")
    assert [v["stage"] for v in listed] == ["archived", "production"]


@pytest.mark.slow
def test_edge_cases_get_mapped_errors_not_internal_ones(instance: Path, tmp_path: Path):
    home = instance
    again = cli(home, "init", expect=7)
    assert "already initialised" in again.stderr

    bad_sig = tmp_path / "bad.sig"
    bad_sig.write_bytes(b"\xff\xfe not utf-8")
    not_utf8 = cli(
        home,
        "model",
        "push",
        "fraud",
        str(tmp_path / "model.onnx"),
        "--signature",
        str(bad_sig),
        "--owner",
        "x",
        expect=3,
    )
    assert "not UTF-8" in not_utf8.stderr

    cli(home, "model", "show", "fraud", "99999999999999999999", expect=2)

    model_dir = tmp_path / "model-dir"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes((tmp_path / "model.onnx").read_bytes())
    (model_dir / "notes.md").symlink_to("/etc/passwd")
    linked = cli(
        home,
        "model",
        "push",
        "fraud",
        str(model_dir),
        "--owner",
        "x",
        "--sign-key",
        str(tmp_path / "signer.pem"),
        expect=3,
    )
    assert "symbolic link" in linked.stderr
    for result in (again, not_utf8, linked):
        assert "internal" not in result.stderr
