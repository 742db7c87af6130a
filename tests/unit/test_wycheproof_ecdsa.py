"""Wycheproof ECDSA P-256/SHA-256 (DER) conformance of ``_primitives.ecdsa_p256_verify``.

Every ``valid`` case must verify, every ``invalid`` case must raise ``SignatureError``, and an
``acceptable`` case may go either way but must not raise anything else. The vectors are read from
``../shared/vectors/wycheproof`` (never copied into the repository).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import pytest

from strongroom.core.crypto._primitives import ecdsa_p256_verify, public_pem_normalized
from strongroom.errors import SignatureError

pytestmark = pytest.mark.vectors

VECTOR_FILE = "ecdsa_secp256r1_sha256_test.json"


def _outcome(public_pem: bytes, signature: bytes, message: bytes) -> str:
    try:
        ecdsa_p256_verify(public_pem, signature, message)
    except SignatureError:
        return "rejected"
    return "verified"


def test_wycheproof_ecdsa_p256_sha256_der(vectors_dir: Path) -> None:
    suite = json.loads((vectors_dir / "wycheproof" / VECTOR_FILE).read_text(encoding="utf-8"))
    assert suite["algorithm"] == "ECDSA"
    counts: Counter[str] = Counter()
    failures: list[str] = []
    for group in suite["testGroups"]:
        assert group["type"] == "EcdsaVerify"
        assert group["publicKey"]["curve"] == "secp256r1"
        assert group["sha"] == "SHA-256"
        public_pem = group["publicKeyPem"].encode("ascii")
        der = base64.b64decode("".join(public_pem.decode().splitlines()[1:-1]))
        assert der == bytes.fromhex(group["publicKeyDer"])
        assert der.endswith(bytes.fromhex(group["publicKey"]["uncompressed"]))
        public_pem_normalized(public_pem)  # every group key is a valid P-256 point
        for case in group["tests"]:
            outcome = _outcome(public_pem, bytes.fromhex(case["sig"]), bytes.fromhex(case["msg"]))
            expected = {"valid": {"verified"}, "invalid": {"rejected"}}.get(
                case["result"], {"verified", "rejected"}
            )
            if outcome not in expected:
                failures.append(f"tcId {case['tcId']} ({case['comment']}): {outcome}")
            counts[case["result"]] += 1
    assert not failures, failures
    assert sum(counts.values()) == suite["numberOfTests"]
    assert counts["valid"] > 0
    assert counts["invalid"] > 0
