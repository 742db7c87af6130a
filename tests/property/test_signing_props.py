"""Property tests of the signature bundle parser and verifier (core.crypto.signing).

Whatever the input (random bytes, random JSON, a valid bundle with a byte or a field changed, or
a validly signed statement full of hostile names), ``verify_bundle`` either raises
``SignatureError`` or returns exactly what the untouched bundle verifies to; nothing else escapes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.core.crypto._primitives import (
    generate_p256_private_key_pem,
    public_pem_from_private,
)
from strongroom.core.crypto.signing import (
    SIGNED_IGNORE_PATHS,
    VerifiedStatement,
    build_statement,
    check_files_match,
    sign_model,
    sign_payload,
    verify_bundle,
)
from strongroom.errors import SignatureError

FILES = {
    "model.onnx": hashlib.sha256(b"m").hexdigest(),
    "a/b.json": hashlib.sha256(b"b").hexdigest(),
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
hex_digests = st.binary(min_size=32, max_size=32).map(bytes.hex)
components = st.text(alphabet="abcXYZ019._-~ é", min_size=1, max_size=8).filter(
    lambda c: c not in {".", ".."}
)
safe_paths = (
    st.lists(components, min_size=1, max_size=4)
    .map("/".join)
    .filter(lambda p: p.split("/", 1)[0] not in SIGNED_IGNORE_PATHS)
)


@pytest.fixture(scope="module")
def key() -> bytes:
    return generate_p256_private_key_pem()


@pytest.fixture(scope="module")
def trusted(key: bytes) -> dict[str, bytes]:
    return {"alice": public_pem_from_private(key)}


@pytest.fixture(scope="module")
def bundle(key: bytes) -> str:
    return sign_model(FILES, subject_name="fraud", private_key_pem=key)


@pytest.fixture(scope="module")
def expected(bundle: str, trusted: dict[str, bytes]) -> tuple[str, VerifiedStatement]:
    return verify_bundle(bundle, trusted)


def _rejects_or_same(
    document: str | bytes, trusted: dict[str, bytes], expected: tuple[str, VerifiedStatement]
) -> None:
    try:
        result = verify_bundle(document, trusted)
    except SignatureError as exc:
        message = str(exc)
    else:
        assert result == expected
        return
    assert message == "signature verification failed"


@given(data=st.binary(max_size=4096))
def test_random_bytes_are_rejected(trusted: dict[str, bytes], data: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_bundle(data, trusted)


@given(text=st.text(max_size=2048))
def test_random_text_is_rejected(trusted: dict[str, bytes], text: str) -> None:
    with pytest.raises(SignatureError):
        verify_bundle(text, trusted)


@given(value=json_values)
def test_random_json_is_rejected(trusted: dict[str, bytes], value: Any) -> None:
    with pytest.raises(SignatureError):
        verify_bundle(json.dumps(value), trusted)


@given(
    media=st.sampled_from(["application/vnd.dev.sigstore.bundle.v0.3+json", "x"]),
    payload=st.binary(max_size=256).map(lambda b: base64.b64encode(b).decode()),
    sig=st.text(max_size=100) | st.binary(max_size=80).map(bytes.hex),
    hint=st.none() | hex_digests | st.text(max_size=70),
    extra=json_values,
)
def test_bundle_shaped_garbage_is_rejected(
    trusted: dict[str, bytes],
    *,
    media: str,
    payload: str,
    sig: str,
    hint: str | None,
    extra: Any,
) -> None:
    public_key: dict[str, Any] = {} if hint is None else {"hint": hint}
    document = {
        "mediaType": media,
        "verificationMaterial": {"publicKey": public_key, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": payload,
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": sig, "keyid": extra}],
        },
    }
    with pytest.raises(SignatureError):
        verify_bundle(json.dumps(document), trusted)


@given(data=st.data())
def test_byte_mutations(
    bundle: str, trusted: dict[str, bytes], expected: tuple[str, VerifiedStatement], data: Any
) -> None:
    raw = bundle.encode()
    position = data.draw(st.integers(0, len(raw) - 1))
    change = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    byte = data.draw(st.binary(min_size=1, max_size=1))
    tail = raw[position + 1 :] if change != "insert" else raw[position:]
    mutated = raw[:position] + (b"" if change == "delete" else byte) + tail
    _rejects_or_same(mutated, trusted, expected)


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))] + [path]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))] + [path]
    return [path]


@given(data=st.data(), replacement=json_values)
def test_field_replacements(
    bundle: str,
    trusted: dict[str, bytes],
    expected: tuple[str, VerifiedStatement],
    data: Any,
    replacement: Any,
) -> None:
    document = json.loads(bundle)
    path = data.draw(st.sampled_from([p for p in _leaves(document) if p]))
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = replacement
    _rejects_or_same(json.dumps(document), trusted, expected)


@given(names=st.lists(st.text(max_size=12), min_size=1, max_size=5), digest=hex_digests)
def test_accepted_names_are_always_safe(
    key: bytes, trusted: dict[str, bytes], names: list[str], digest: str
) -> None:
    statement = build_statement({"x": digest}, subject_name="m")
    statement["predicate"]["resources"] = [
        {"name": n, "algorithm": "sha256", "digest": digest} for n in names
    ]
    root = hashlib.sha256(bytes.fromhex(digest) * len(names)).hexdigest()
    statement["subject"][0]["digest"]["sha256"] = root
    payload = json.dumps(statement).encode()  # ASCII: lone surrogates are escaped, not dropped
    try:
        _, verified = verify_bundle(sign_payload(payload, private_key_pem=key), trusted)
    except SignatureError:
        return
    accepted = [r.name for r in verified.resources]
    assert len(set(accepted)) == len(accepted)
    if verified.single_file:
        return
    for name in accepted:
        path = PurePosixPath(name)
        assert not path.is_absolute()
        assert ".." not in path.parts
        assert "\\" not in name
        assert str(path) == name  # no "./", "//" or trailing "/" aliases


@given(files=st.dictionaries(safe_paths, hex_digests, min_size=1, max_size=8), subject=components)
def test_round_trip(
    key: bytes, trusted: dict[str, bytes], files: dict[str, str], subject: str
) -> None:
    signer, statement = verify_bundle(
        sign_model(files, subject_name=subject, private_key_pem=key), trusted
    )
    assert signer == "alice"
    assert statement.subject_name == subject
    check_files_match(statement, files)
