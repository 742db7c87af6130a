"""``strongroom limits`` as an operator runs it: real processes, exit codes, one audit record per
change, and overrides that a server process of the instance then applies."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import cli, cli_json
from strongroom.bootstrap import guard as bootstrap_guard
from strongroom.config import load_settings
from strongroom.errors import RateLimitedError

pytestmark = pytest.mark.slow


def audit_records(home: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "registry.db") as db:
        rows = db.execute("SELECT canonical FROM audit_records ORDER BY seq").fetchall()
    return [json.loads(bytes(row[0])) for row in rows]


def test_overrides_are_set_shown_applied_and_cleared(instance: Path) -> None:
    home = instance
    cli(home, "principal", "add", "svc:batch", "--role", "predictor")
    before = len(audit_records(home))
    shown = cli_json(
        home, "limits", "set", "--principal", "svc:batch", "--rate", "0.001/3",
        "--quota", "500/day", "--max-concurrent", "4", "--deny-network", "10.0.0.0/8",
    )  # fmt: skip
    assert shown["policy"] == {
        "rate": {"per_second": 0.001, "burst": 3},
        "quota": {"limit": 500, "period": "day"},
        "max_concurrent": 4,
        "deny_networks": ["10.0.0.0/8"],
    }
    listed = cli_json(home, "limits", "show")
    assert [o["subject"] for o in listed["overrides"]] == ["svc:batch"]
    assert listed["defaults"]["principal"] == {"per_second": 1000.0, "burst": 2000}
    changes = audit_records(home)[before:]
    assert [(r["action"], r["resource"], r["outcome"]) for r in changes] == [
        ("principal.limits", "principal:svc:batch", "allowed")
    ]

    # A server process of this instance applies it: 3 requests, then 429.
    limits = bootstrap_guard.build_request_limits(load_settings(home=home))
    assert limits is not None
    limits.refresh()

    async def admit_four() -> list[bool]:
        outcomes = []
        for _ in range(4):
            try:
                await limits.admit("svc:batch", None, inference=False)
                outcomes.append(True)
            except RateLimitedError:
                outcomes.append(False)
        return outcomes

    assert asyncio.run(admit_four()) == [True, True, True, False]
    assert limits.max_concurrent("svc:batch") == 4
    assert limits.denied_networks("svc:batch") is not None

    cli(home, "limits", "clear", "--principal", "svc:batch")
    assert cli_json(home, "limits", "show")["overrides"] == []
    cli(home, "limits", "clear", "--principal", "svc:batch", expect=4)  # nothing to clear
    store = bootstrap_guard.build_guard_override_store(load_settings(home=home))
    assert store.list_overrides() == []


def test_bad_options_are_clear_errors(instance: Path) -> None:
    home = instance
    cli(home, "principal", "add", "svc:ok", "--role", "predictor")
    for args, code in (
        (("--principal", "svc:ok", "--rate", "fast"), 3),
        (("--principal", "svc:ok", "--rate", "0/5"), 3),
        (("--principal", "svc:ok", "--quota", "10/week"), 3),
        (("--principal", "svc:ok", "--deny-network", "10.0.0.1/8"), 3),
        (("--principal", "svc:ghost", "--rate", "1/1"), 4),
        (("--model", "nothing-here", "--rate", "1/1"), 4),
        (("--model", "fraud", "--deny-network", "10.0.0.0/8"), 3),
        (("--rate", "1/1"), 3),
    ):
        result = cli(home, "limits", "set", *args, expect=code)
        assert "Traceback" not in result.stderr
    assert cli_json(home, "limits", "show")["overrides"] == []
