"""``strongroom audit`` as an operator runs it: real processes, exit codes, a tampered table."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from conftest import cli, cli_json


def stored_rows(home: Path) -> list[bytes]:
    with sqlite3.connect(home / "registry.db") as db:
        rows = db.execute("SELECT canonical FROM audit_records ORDER BY seq").fetchall()
    return [bytes(row[0]) for row in rows]


@pytest.mark.slow
def test_audit_commands_from_init_to_a_tampered_table(instance: Path, tmp_path: Path) -> None:
    home = instance
    key = home / "secrets" / "audit-checkpoint.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "audit-checkpoints-external").stat().st_mode) == 0o700
    pushed = cli_json(
        home, "model", "push", "fraud", str(tmp_path / "model.onnx"),
        "--sign-key", str(tmp_path / "signer.pem"), "--owner", "risk",
    )  # fmt: skip
    assert isinstance(pushed, dict)
    assert pushed["version"] == 1  # the registry works beside the audit tables

    # init recorded the administrator it made (seq 0); the push wrote one record (seq 1) and,
    # on exit, a checkpoint to both sinks. Without the external
    # copy, nothing proves that the log was not truncated: exit 9, never "OK".
    external = home / "audit-checkpoints-external"
    for checkpoint in external.iterdir():
        checkpoint.unlink()
    unproven = cli_json(home, "audit", "verify", expect=9)
    assert isinstance(unproven, dict)
    assert (unproven["ok"], unproven["complete"], unproven["records_checked"]) == (True, False, 2)

    tail = cli_json(home, "audit", "tail", "-n", "5")
    assert isinstance(tail, list)
    admin, push, own = tail
    assert (admin["seq"], admin["action"], admin["resource"]) == (
        0,
        "principal.create",
        "user:admin",
    )
    assert (push["seq"], push["action"], push["outcome"]) == (1, "model.push", "allowed")
    assert (own["seq"], own["action"], own["details"]) == (
        2,
        "audit.read",
        {"operation": "tail", "n": 5},
    )
    assert own["principal"].startswith("cli:")

    verified = cli_json(home, "audit", "verify")
    assert isinstance(verified, dict)
    assert (verified["ok"], verified["complete"], verified["records_checked"]) == (True, True, 3)

    out = tmp_path / "audit.jsonl"
    cli(home, "audit", "export", "--out", str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes().splitlines() == stored_rows(home)  # canonical bytes, 4 records
    streamed = cli(home, "audit", "export", "--start", "3").stdout.splitlines()
    assert [json.loads(line)["details"]["operation"] for line in streamed] == ["export"] * 2
    cli(home, "audit", "export", "--out", str(out), expect=3)  # never overwrites

    with sqlite3.connect(home / "registry.db") as db:
        (row,) = db.execute("SELECT canonical FROM audit_records WHERE seq = 3").fetchone()
        forged = bytes(row).replace(b'"operation":"export"', b'"operation":"tail!!"')
        db.execute("UPDATE audit_records SET canonical = ? WHERE seq = 3", (forged,))
    failed = cli(home, "audit", "verify", expect=6)
    assert "at seq 3" in failed.stdout
    assert "checkpoint.root_mismatch" in failed.stdout
    report = cli_json(home, "audit", "verify", expect=6)
    assert isinstance(report, dict)
    assert (report["ok"], report["first_bad_seq"]) == (False, 3)
    refused = cli(home, "audit", "tail", expect=6)  # the writer will not extend a forged log
    assert "security.integrity" in refused.stderr
    assert len(stored_rows(home)) == 5
