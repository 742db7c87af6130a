"""Wycheproof AES-GCM conformance of ``_primitives.Aead`` (256-bit keys, 96-bit IVs, 128-bit tags).

Every ``valid`` case must decrypt to ``msg`` and encrypt to ``ct || tag``; every ``invalid``
case must raise ``IntegrityError``. Other IV sizes are out of scope: Strongroom only ever uses
12-byte nonces, and ``Aead`` refuses any other length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from strongroom.core.crypto._primitives import Aead
from strongroom.errors import IntegrityError

pytestmark = pytest.mark.vectors


def load_cases(vectors_dir: Path) -> list[dict[str, Any]]:
    document = json.loads((vectors_dir / "wycheproof" / "aes_gcm_test.json").read_text("utf-8"))
    if document.get("algorithm") != "AES-GCM":
        raise ValueError("unexpected Wycheproof file")
    return [
        test
        for group in document["testGroups"]
        if (group["keySize"], group["ivSize"], group["tagSize"]) == (256, 96, 128)
        for test in group["tests"]
    ]


def test_aes_256_gcm_vectors(vectors_dir: Path) -> None:
    cases = load_cases(vectors_dir)
    outcomes = {"valid": 0, "invalid": 0}
    for case in cases:
        key, iv, aad, msg, ct, tag = (
            bytes.fromhex(case[name]) for name in ("key", "iv", "aad", "msg", "ct", "tag")
        )
        aead = Aead(key)
        if case["result"] == "valid":
            assert aead.open(iv, ct + tag, aad) == msg, case["tcId"]
            assert aead.seal(iv, msg, aad) == ct + tag, case["tcId"]
        elif case["result"] == "invalid":
            with pytest.raises(IntegrityError):
                aead.open(iv, ct + tag, aad)
        else:
            pytest.fail(f"unexpected result {case['result']!r} in case {case['tcId']}")
        outcomes[case["result"]] += 1
    assert outcomes["valid"] > 0
    assert outcomes["invalid"] > 0
    assert sum(outcomes.values()) == len(cases)
