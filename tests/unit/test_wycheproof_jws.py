"""Wycheproof JWS and JWK vectors against the JWS verification that ``JwtVerifier`` is built on.

For every test case the group's public key set (or, for HMAC groups, its symmetric key set) is
loaded with ``KeySet.from_jwks`` allowing *every* algorithm Strongroom supports (more permissive
than any real issuer), and the token goes through ``verify_jws``: strict parsing, the header
policy, key selection and PyJWT's signature check. Rules:

* no ``invalid`` case is ever accepted, and many are exercised (0 invalid accepted);
* every ``valid`` case whose algorithm Strongroom supports, whose key set holds no secret
  material and whose key does not pin a different ``alg`` must verify. Other valid cases (HMAC,
  a PS256 key used for PS384, an ``ES521`` key) may be refused by policy; they are counted.

The vector payloads are not JWT claims, so the full ``JwtVerifier`` (configured with the vector's
key set inline) is also run and must refuse every invalid case too; that layer refuses them
before any signature check, so the primitive-level run above is the one that tests signatures.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from strongroom.adapters.identity.jwks import KeySet, verify_jws
from strongroom.adapters.identity.jwt_verifier import JwtVerifier
from strongroom.core.identity.tokens import ALGORITHM_KEY_TYPES, IssuerConfig, rejection_reason
from strongroom.errors import AuthenticationError, ConfigurationError

pytestmark = pytest.mark.vectors

FILES = ("json_web_signature_test.json", "json_web_key_test.json")
SUPPORTED = tuple(ALGORITHM_KEY_TYPES)
SECRET_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def _key_set(group: dict[str, Any]) -> dict[str, Any]:
    keys = group.get("public") or group["private"]
    return keys if "keys" in keys else {"keys": [keys]}


def _token(case: dict[str, Any]) -> str:
    jws = case["jws"]
    return jws if isinstance(jws, str) else json.dumps(jws)


def _header_alg(token: str) -> str | None:
    """The header's ``alg``, decoded leniently (the oracle must not share the parser)."""
    try:
        segment = token.split(".", maxsplit=1)[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:
        return None
    alg = header.get("alg") if isinstance(header, dict) else None
    return alg if isinstance(alg, str) else None


def _must_verify(case: dict[str, Any], jwks: dict[str, Any], token: str) -> bool:
    alg = _header_alg(token)
    keys = jwks["keys"]
    return (
        case["result"] == "valid"
        and alg in SUPPORTED
        and not any(SECRET_MEMBERS & set(k) for k in keys)
        and all(k.get("alg") in {None, alg} for k in keys)
    )


def _primitive_accepts(jwks: dict[str, Any], token: str) -> bool:
    try:
        keys = KeySet.from_jwks(jwks, SUPPORTED)
    except ValueError:
        return False
    try:
        verify_jws(token, keys, algorithms=SUPPORTED)
    except AuthenticationError as exc:
        if rejection_reason(exc) is None:
            raise AssertionError("refused without a logged reason") from exc
        return False
    return True


def _verifier_accepts(jwks: dict[str, Any], token: str) -> bool:
    try:
        issuer = IssuerConfig(
            issuer="https://vectors.example", audiences=("x",), algorithms=SUPPORTED, jwks=jwks
        )
        verifier = JwtVerifier([issuer], fetch_jwks=_no_fetch, clock=_no_clock)
    except ConfigurationError:
        return False
    try:
        verifier.verify(token)
    except AuthenticationError:
        return False
    return True


def _no_fetch(url: str) -> bytes:
    raise AssertionError(f"inline key sets are never fetched ({url})")


def _no_clock() -> Any:
    from datetime import UTC, datetime

    return datetime(2025, 6, 1, tzinfo=UTC)


def test_wycheproof_jws_and_jwk_vectors(vectors_dir: Path) -> None:
    counts: Counter[str] = Counter()
    wrongly_accepted: list[str] = []
    wrongly_refused: list[str] = []
    for name in FILES:
        suite = json.loads((vectors_dir / "wycheproof" / name).read_text(encoding="utf-8"))
        seen = 0
        for group in suite["testGroups"]:
            jwks = _key_set(group)
            for case in group["tests"]:
                seen += 1
                token, label = _token(case), f"{name}#{case['tcId']} {case['comment']}"
                accepted = _primitive_accepts(jwks, token)
                counts[f"{case['result']} {'accepted' if accepted else 'refused'}"] += 1
                if case["result"] == "invalid":
                    supported = _header_alg(token) in SUPPORTED
                    counts[f"invalid with supported alg {'yes' if supported else 'no'}"] += 1
                    if accepted or _verifier_accepts(jwks, token):
                        wrongly_accepted.append(label)
                elif _must_verify(case, jwks, token) and not accepted:
                    wrongly_refused.append(label)
        assert seen == suite["numberOfTests"]
    print(dict(sorted(counts.items())))
    assert wrongly_accepted == []
    assert wrongly_refused == []
    assert counts["invalid refused"] > 250
    assert counts["invalid with supported alg yes"] > 200
    assert counts["valid accepted"] >= 30
