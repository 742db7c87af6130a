"""Unit tests of model signatures (core.crypto.signing) and the signature policy.

Keys are generated per test session; nothing here is committed key material.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pytest
import rfc8785

from strongroom.core.crypto import signing
from strongroom.core.crypto._primitives import (
    generate_p256_private_key_pem,
    public_key_fingerprint,
    public_pem_from_private,
)
from strongroom.core.crypto.signature_policy import SignaturePolicy, TrustedSigner
from strongroom.core.crypto.signing import (
    SignatureDetail,
    SignedResource,
    build_statement,
    check_files_match,
    sign_model,
    sign_payload,
    verify_bundle,
)
from strongroom.errors import ConfigurationError, InvalidInputError, SignatureError

FILES = {
    "model.onnx": hashlib.sha256(b"weights").hexdigest(),
    "config/labels.json": hashlib.sha256(b"labels").hexdigest(),
    "README.md": hashlib.sha256(b"readme").hexdigest(),
}


@pytest.fixture(scope="module")
def alice() -> bytes:
    return generate_p256_private_key_pem()


@pytest.fixture(scope="module")
def mallory() -> bytes:
    return generate_p256_private_key_pem()


@pytest.fixture(scope="module")
def bundle(alice: bytes) -> str:
    return sign_model(FILES, subject_name="fraud-detector", private_key_pem=alice)


def pub(private_pem: bytes) -> bytes:
    return public_pem_from_private(private_pem)


def edit(bundle_json: str, change: Callable[[dict[str, Any]], None]) -> str:
    doc = json.loads(bundle_json)
    change(doc)
    return json.dumps(doc)


def statement_of(bundle_json: str) -> dict[str, Any]:
    payload = json.loads(bundle_json)["dsseEnvelope"]["payload"]
    result: dict[str, Any] = json.loads(base64.b64decode(payload))
    return result


def signed(statement: dict[str, Any], key: bytes) -> str:
    return sign_payload(json.dumps(statement).encode(), private_key_pem=key)


def assert_rejected(bundle_json: str | bytes, keys: dict[str, bytes]) -> None:
    with pytest.raises(SignatureError) as info:
        verify_bundle(bundle_json, keys)
    assert str(info.value) == "signature verification failed"
    assert isinstance(info.value.__cause__, SignatureDetail)


# --- round trip ---------------------------------------------------------------------------------


def test_round_trip(alice: bytes, bundle: str) -> None:
    signer, statement = verify_bundle(bundle, {"alice": pub(alice)})
    assert signer == "alice"
    assert statement.subject_name == "fraud-detector"
    assert {r.name: r.sha256 for r in statement.resources} == FILES
    assert statement.key_fingerprint == public_key_fingerprint(pub(alice))
    assert not statement.single_file
    check_files_match(statement, FILES)


def test_bundle_layout_is_model_signing_s(alice: bytes, bundle: str) -> None:
    doc = json.loads(bundle)
    assert bundle == rfc8785.dumps(doc).decode()
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert doc["verificationMaterial"] == {
        "publicKey": {"hint": hashlib.sha256(pub(alice)).hexdigest()},
        "tlogEntries": [],
    }
    envelope = doc["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [""]
    statement = statement_of(bundle)
    digests = b"".join(bytes.fromhex(r["digest"]) for r in statement["predicate"]["resources"])
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(digests).hexdigest()
    assert statement["predicate"]["serialization"]["ignore_paths"] == [
        ".git",
        ".gitattributes",
        ".github",
        ".gitignore",
    ]


def test_pae_is_dsse_v1() -> None:
    assert signing.pae("t/y", b"ab c") == b"DSSEv1 3 t/y 4 ab c"


def test_resources_sorted_like_pathlib(alice: bytes) -> None:
    files = dict.fromkeys(("a-b/x", "a/x", "a.txt", "B", "a/b/c"), FILES["README.md"])
    statement = build_statement(files, subject_name="m")
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert names == [str(p) for p in sorted(PurePosixPath(n) for n in files)]
    assert names != sorted(files)  # component order differs from plain string order here


def test_payload_is_deterministic(alice: bytes) -> None:
    first = sign_model(FILES, subject_name="m", private_key_pem=alice)
    second = sign_model(dict(reversed(FILES.items())), subject_name="m", private_key_pem=alice)
    assert statement_of(first) == statement_of(second)
    assert (
        json.loads(first)["dsseEnvelope"]["payload"]
        == json.loads(second)["dsseEnvelope"]["payload"]
    )


def test_encrypted_private_key(alice: bytes) -> None:
    key = generate_p256_private_key_pem(b"pass phrase")
    bundle = sign_model(FILES, subject_name="m", private_key_pem=key, password=b"pass phrase")
    signer, _ = verify_bundle(bundle, {"k": public_pem_from_private(key, b"pass phrase")})
    assert signer == "k"


# --- single file --------------------------------------------------------------------------------


def test_single_file_uses_dot_and_matches_any_name(alice: bytes) -> None:
    digest = FILES["model.onnx"]
    bundle = sign_model(
        {"x.onnx": digest}, subject_name="x.onnx", private_key_pem=alice, single_file=True
    )
    _, statement = verify_bundle(bundle, {"alice": pub(alice)})
    assert statement.resources == (SignedResource(".", digest),)
    assert statement.single_file
    check_files_match(statement, {"renamed.onnx": digest})
    for files in ({"x.onnx": FILES["README.md"]}, {}, {"x.onnx": digest, "y": digest}):
        with pytest.raises(SignatureError):
            check_files_match(statement, files)


def test_directory_with_one_file_is_not_single_file(alice: bytes) -> None:
    bundle = sign_model({"m.onnx": FILES["model.onnx"]}, subject_name="d", private_key_pem=alice)
    _, statement = verify_bundle(bundle, {"alice": pub(alice)})
    assert not statement.single_file
    with pytest.raises(SignatureError):
        check_files_match(statement, {"other.onnx": FILES["model.onnx"]})


# --- keys ---------------------------------------------------------------------------------------


def test_wrong_key(bundle: str, mallory: bytes) -> None:
    assert_rejected(bundle, {"mallory": pub(mallory)})


def test_untrusted_key(bundle: str) -> None:
    assert_rejected(bundle, {})


def test_signed_by_other_key_with_forged_hint(alice: bytes, mallory: bytes) -> None:
    forged = sign_model(FILES, subject_name="m", private_key_pem=mallory)
    hint = public_key_fingerprint(pub(alice))
    forged = edit(forged, lambda d: d["verificationMaterial"]["publicKey"].update(hint=hint))
    assert_rejected(forged, {"alice": pub(alice)})


def test_without_hint_tries_each_trusted_key(alice: bytes, mallory: bytes, bundle: str) -> None:
    bare = edit(bundle, lambda d: d["verificationMaterial"]["publicKey"].pop("hint"))
    signer, _ = verify_bundle(bare, {"mallory": pub(mallory), "alice": pub(alice)})
    assert signer == "alice"
    assert_rejected(bare, {"mallory": pub(mallory)})


def test_invalid_trusted_keys_are_configuration_errors(alice: bytes, bundle: str) -> None:
    with pytest.raises(ConfigurationError):
        verify_bundle(bundle, {"bad": b"not a key"})
    with pytest.raises(ConfigurationError):
        verify_bundle(bundle, {"a": pub(alice), "b": pub(alice)})


# --- tampering ----------------------------------------------------------------------------------


def _flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def _positions(length: int) -> list[int]:
    return sorted({*range(0, length, max(1, length // 40)), length - 1})


@pytest.mark.parametrize("field", ["payload", "sig"])
def test_every_sampled_byte_mutation_is_rejected(alice: bytes, bundle: str, field: str) -> None:
    def at(d: dict[str, Any]) -> dict[str, Any]:
        envelope: dict[str, Any] = d["dsseEnvelope"]
        return envelope if field == "payload" else envelope["signatures"][0]

    raw = base64.b64decode(at(json.loads(bundle))[field])
    checked = 0
    for position in _positions(len(raw)):
        mutated = base64.b64encode(_flip(raw, position)).decode()
        assert_rejected(
            edit(bundle, lambda d, m=mutated: at(d).update({field: m})), {"a": pub(alice)}
        )
        checked += 1
    assert checked >= min(len(raw), 40)


@pytest.mark.parametrize("field", ["payload", "sig", "hint"])
def test_every_sampled_character_mutation_is_rejected(
    alice: bytes, bundle: str, field: str
) -> None:
    doc = json.loads(bundle)
    holders = {
        "payload": lambda d: d["dsseEnvelope"],
        "sig": lambda d: d["dsseEnvelope"]["signatures"][0],
        "hint": lambda d: d["verificationMaterial"]["publicKey"],
    }
    text: str = holders[field](doc)[field]
    for position in _positions(len(text)):
        for replacement in {"A", "f", "0", "+", "="} - {text[position]}:
            mutated = text[:position] + replacement + text[position + 1 :]
            assert_rejected(
                edit(bundle, lambda d, m=mutated: holders[field](d).update({field: m})),
                {"a": pub(alice)},
            )


def test_non_canonical_base64_is_rejected(alice: bytes) -> None:
    # Payload lengths of consecutive subject names cover every remainder mod 3; one is padded.
    bundles = [sign_model(FILES, subject_name=n, private_key_pem=alice) for n in ("m", "mm", "mmm")]
    bundle = next(b for b in bundles if json.loads(b)["dsseEnvelope"]["payload"].endswith("="))
    payload = json.loads(bundle)["dsseEnvelope"]["payload"]
    stripped = payload.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(stripped[-1]) ^ 1]  # same decoded bytes, other padding bits
    variant = stripped[:-1] + last + payload[len(stripped) :]
    assert variant != payload
    assert base64.b64decode(variant) == base64.b64decode(payload)
    changed = edit(bundle, lambda d: d["dsseEnvelope"].update(payload=variant))
    assert_rejected(changed, {"a": pub(alice)})


# --- envelope rules -----------------------------------------------------------------------------

ENVELOPE_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "media type": lambda d: d.update(mediaType="application/vnd.dev.sigstore.bundle.v0.2+json"),
    "payload type": lambda d: d["dsseEnvelope"].update(payloadType="application/json"),
    "two signatures": lambda d: d["dsseEnvelope"]["signatures"].append(
        d["dsseEnvelope"]["signatures"][0]
    ),
    "no signature": lambda d: d["dsseEnvelope"].update(signatures=[]),
    "keyid": lambda d: d["dsseEnvelope"]["signatures"][0].update(keyid="k1"),
    "tlog entries": lambda d: d["verificationMaterial"].update(tlogEntries=[{}]),
    "certificate": lambda d: d["verificationMaterial"].update(certificate={"rawBytes": "AA=="}),
    "null hint": lambda d: d["verificationMaterial"]["publicKey"].update(hint=None),
    "unknown field": lambda d: d.update(messageSignature={}),
    "no envelope": lambda d: d.pop("dsseEnvelope"),
}


@pytest.mark.parametrize("name", sorted(ENVELOPE_EDITS))
def test_envelope_rules(alice: bytes, bundle: str, name: str) -> None:
    changed = edit(bundle, ENVELOPE_EDITS[name])
    if changed == json.dumps(json.loads(bundle)):
        pytest.fail(f"edit {name!r} did not change the bundle")
    assert_rejected(changed, {"a": pub(alice)})


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"\xff\xfe{}",
        "{}".encode("utf-16"),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"mediaType": 1, "mediaType": 2}',
        b"NaN",
        "x" * (signing.MAX_BUNDLE_BYTES + 1),
        b" " * (signing.MAX_BUNDLE_BYTES + 1),
        "\ud800",
        b"1" * 5000,
    ],
    ids=lambda d: repr(d[:12]),
)
def test_garbage_is_rejected(alice: bytes, document: str | bytes) -> None:
    assert_rejected(document, {"a": pub(alice)})


def test_urlsafe_base64_is_rejected(alice: bytes) -> None:
    # "~~~" puts a 0x7E at a third byte somewhere: its low six bits encode as "+".
    bundle = sign_model(FILES, subject_name="model~~~", private_key_pem=alice)
    payload = json.loads(bundle)["dsseEnvelope"]["payload"]
    assert "+" in payload
    verify_bundle(bundle, {"a": pub(alice)})
    urlsafe = payload.replace("+", "-").replace("/", "_")
    changed = edit(bundle, lambda d: d["dsseEnvelope"].update(payload=urlsafe))
    assert_rejected(changed, {"a": pub(alice)})


def test_duplicate_key_in_bundle_is_rejected(alice: bytes, bundle: str) -> None:
    duplicated = bundle[:-1] + ',"mediaType":"' + json.loads(bundle)["mediaType"] + '"}'
    assert_rejected(duplicated, {"a": pub(alice)})


# --- statement rules (validly signed, still refused) --------------------------------------------


def _base() -> dict[str, Any]:
    return build_statement(FILES, subject_name="m")


def _set_names(statement: dict[str, Any], *names: str) -> None:
    digest = FILES["README.md"]
    resources = [{"name": n, "algorithm": "sha256", "digest": digest} for n in names]
    statement["predicate"]["resources"] = resources
    root = hashlib.sha256(bytes.fromhex(digest) * len(names)).hexdigest()
    statement["subject"][0]["digest"]["sha256"] = root


STATEMENT_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "type": lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"),
    "compat predicate": lambda s: s.update(predicateType="https://model_signing/Digests/v0.1"),
    "two subjects": lambda s: s.update(subject=s["subject"] * 2),
    "subject digest": lambda s: s["subject"][0]["digest"].update(sha256="0" * 64),
    "subject digest sha512": lambda s: s["subject"][0]["digest"].update(sha512="0" * 128),
    "empty subject name": lambda s: s["subject"][0].update(name=""),
    "extra statement field": lambda s: s.update(extra=1),
    "shards": lambda s: s["predicate"]["serialization"].update(method="shards", shard_size=10),
    "blake3": lambda s: s["predicate"]["serialization"].update(hash_type="blake3"),
    "symlinks not bool": lambda s: s["predicate"]["serialization"].update(allow_symlinks="false"),
    "ignore paths not list": lambda s: s["predicate"]["serialization"].update(ignore_paths=".git"),
    "no serialization": lambda s: s["predicate"].pop("serialization"),
    "no resources": _set_names,
    "algorithm": lambda s: s["predicate"]["resources"][0].update(algorithm="sha512"),
    "uppercase digest": lambda s: s["predicate"]["resources"][0].update(
        digest=FILES["README.md"].upper()
    ),
    "short digest": lambda s: s["predicate"]["resources"][0].update(digest="ab"),
    "extra resource field": lambda s: s["predicate"]["resources"][0].update(size=3),
    "duplicate names": lambda s: _set_names(s, "a", "a"),
    "dot with others": lambda s: _set_names(s, ".", "a"),
    **{
        f"path {bad!r}": lambda s, bad=bad: _set_names(s, bad)
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\b",
            "./a",
            "a//b",
            "a/",
            "",
            "C:x",
            "a\x00b",
            "a\nb",
            "..",
            "a/.",
            "x" * 2000,
            7,
        ]
    },
}


@pytest.mark.parametrize("name", sorted(STATEMENT_EDITS))
def test_statement_rules(alice: bytes, name: str) -> None:
    statement = _base()
    STATEMENT_EDITS[name](statement)
    assert statement != _base()
    assert_rejected(signed(statement, alice), {"a": pub(alice)})


def test_statement_base_and_unknown_predicate_fields_are_accepted(alice: bytes) -> None:
    statement = _base()
    statement["predicate"]["model_card"] = {"future": "extension"}
    _set_names(statement, "z", "a")  # any listed order, as long as the subject digest agrees
    _, verified = verify_bundle(signed(statement, alice), {"a": pub(alice)})
    assert [r.name for r in verified.resources] == ["z", "a"]


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"_type": 1, "_type": 2}', b"\xff"])
def test_payload_must_be_a_json_statement(alice: bytes, payload: bytes) -> None:
    assert_rejected(sign_payload(payload, private_key_pem=alice), {"a": pub(alice)})


def test_resource_count_is_bounded(alice: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = sign_model(FILES, subject_name="m", private_key_pem=alice)
    monkeypatch.setattr(signing, "MAX_RESOURCES", len(FILES) - 1)
    assert_rejected(bundle, {"a": pub(alice)})


# --- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        {**FILES, "extra.bin": FILES["README.md"]},
        {k: v for k, v in FILES.items() if k != "README.md"},
        {("readme.md" if k == "README.md" else k): v for k, v in FILES.items()},
        {**FILES, "model.onnx": FILES["README.md"]},
        {},
    ],
    ids=["extra", "missing", "renamed", "changed", "empty"],
)
def test_files_must_match_exactly(alice: bytes, bundle: str, files: dict[str, str]) -> None:
    _, statement = verify_bundle(bundle, {"a": pub(alice)})
    with pytest.raises(SignatureError) as info:
        check_files_match(statement, files)
    assert str(info.value) == "signature verification failed"
    assert isinstance(info.value.__cause__, SignatureDetail)


@pytest.mark.parametrize(
    ("files", "single_file"),
    [
        ({"../x": FILES["README.md"]}, False),
        ({"/abs": FILES["README.md"]}, False),
        ({".git/config": FILES["README.md"]}, False),
        ({"m": "XYZ"}, False),
        ({"m": FILES["README.md"].upper()}, False),
        ({}, False),
        (FILES, True),
    ],
)
def test_sign_model_refuses_bad_input(
    alice: bytes, files: dict[str, str], single_file: bool
) -> None:
    with pytest.raises(InvalidInputError):
        sign_model(files, subject_name="m", private_key_pem=alice, single_file=single_file)


def test_sign_model_refuses_bad_subject(alice: bytes) -> None:
    for subject in ("", "a\nb"):
        with pytest.raises(InvalidInputError):
            sign_model(FILES, subject_name=subject, private_key_pem=alice)


# --- policy -------------------------------------------------------------------------------------


def test_policy_accepts_covered_signer(alice: bytes, mallory: bytes, bundle: str) -> None:
    policy = SignaturePolicy(
        (
            TrustedSigner("mallory", pub(mallory), ("*",)),
            TrustedSigner("alice", pub(alice), ("fraud-*", "churn")),
        )
    )
    assert policy.check("fraud-detector", bundle, FILES) == "alice"
    churn = sign_model(FILES, subject_name="churn.onnx", private_key_pem=alice)
    assert policy.check("churn", churn, FILES) == "alice"


@pytest.mark.parametrize(
    ("subject", "model", "accepted"),
    [
        ("fraud-us", "fraud-us", True),
        ("fraud-us.onnx", "fraud-us", True),
        ("fraud-us.tar.gz", "fraud-us", True),
        ("fraud-us", "fraud-eu", False),
        ("fraud-us.onnx", "fraud-u", False),
        ("fraud-us.pkl", "fraud-us", False),
        ("fraud-us.onnx.onnx", "fraud-us", False),
        ("x/fraud-us", "fraud-us", False),
    ],
)
def test_policy_binds_the_signed_subject_to_the_model(
    alice: bytes, subject: str, model: str, accepted: bool
) -> None:
    """A bundle signed for one model cannot be replayed for another the signer may sign."""
    policy = SignaturePolicy((TrustedSigner("alice", pub(alice), ("fraud-*",)),))
    bundle = sign_model(FILES, subject_name=subject, private_key_pem=alice)
    if accepted:
        assert policy.check(model, bundle, FILES) == "alice"
    else:
        with pytest.raises(SignatureError):
            policy.check(model, bundle, FILES)


@pytest.mark.parametrize("model", ["churn-v2", "Fraud-x", "fraud"])
def test_policy_rejects_pattern_mismatch(alice: bytes, bundle: str, model: str) -> None:
    policy = SignaturePolicy((TrustedSigner("alice", pub(alice), ("fraud-*", "churn")),))
    with pytest.raises(SignatureError) as info:
        policy.check(model, bundle, FILES)
    assert str(info.value) == "signature verification failed"


def test_policy_rejects_unknown_key_and_wrong_files(
    alice: bytes, mallory: bytes, bundle: str
) -> None:
    with pytest.raises(SignatureError):
        SignaturePolicy((TrustedSigner("m", pub(mallory), ("*",)),)).check("x", bundle, FILES)
    with pytest.raises(SignatureError):
        SignaturePolicy((TrustedSigner("a", pub(alice), ("*",)),)).check("x", bundle, {})


def test_policy_unsigned(alice: bytes) -> None:
    strict = SignaturePolicy((TrustedSigner("a", pub(alice), ("*",)),))
    with pytest.raises(SignatureError, match="unsigned"):
        strict.check("m", None, FILES)
    lax = SignaturePolicy(strict.signers, unsafe_allow_unsigned=True)
    assert lax.check("m", None, FILES) is None
    with pytest.raises(SignatureError):
        lax.check("m", "{}", FILES)


@pytest.mark.parametrize(
    ("name", "pem", "patterns"),
    [
        ("", None, ("*",)),
        ("bad name", None, ("*",)),
        ("a", None, ()),
        ("a", None, ("Upper",)),
        ("a", None, ["*"]),
        ("a", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", ("*",)),
    ],
)
def test_trusted_signer_validation(
    alice: bytes, name: str, pem: bytes | None, patterns: Any
) -> None:
    with pytest.raises(ConfigurationError):
        TrustedSigner(name, pem or pub(alice), patterns)


def test_trusted_signer_normalizes_pem(alice: bytes) -> None:
    crlf = pub(alice).replace(b"\n", b"\r\n")
    assert TrustedSigner("a", crlf, ("*",)).public_key_pem == pub(alice)


def test_policy_rejects_ambiguous_signers(alice: bytes, mallory: bytes) -> None:
    with pytest.raises(ConfigurationError):
        SignaturePolicy(
            (TrustedSigner("a", pub(alice), ("*",)), TrustedSigner("a", pub(mallory), ("*",)))
        )
    with pytest.raises(ConfigurationError):
        SignaturePolicy(
            (TrustedSigner("a", pub(alice), ("*",)), TrustedSigner("b", pub(alice), ("*",)))
        )
