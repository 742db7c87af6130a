"""Model signatures in the OpenSSF model-signing format (``model_signing`` v1.x, elliptic keys).

A signature is a sigstore bundle (v0.3 JSON) holding a DSSE envelope whose payload is an in-toto
Statement v1 with the ``https://model_signing/signature/v1.0`` predicate: one resource (name,
SHA-256) per model file, and a subject digest over the resources. ``docs/formats/signature-v1.md``
is the normative description; this module is its only implementation.

Invariants:

* Pure: no I/O, no clock, no randomness of its own (ECDSA nonces come from the primitive). Callers
  hash the files and say whether the model was a single file; this module never reads a path.
* ``verify_bundle`` either returns a statement whose every field was checked, or raises
  ``SignatureError`` with the default, opaque message. The reason is a ``SignatureDetail`` kept
  on ``__cause__`` for server logs only, so the caller learns nothing about *which* check failed.
* Parsing is strict and bounded: size and resource-count limits, no duplicate JSON keys, no
  unknown fields outside the predicate, canonical base64 only, resource names that cannot climb
  out of a model directory. Anything the format allows but Strongroom does not check (transparency
  log entries, certificates, shard serialization, the v0.1 compat predicate) is refused.
* A produced bundle verifies with ``model_signing``'s elliptic-key verifier, and bundles made by
  its elliptic-key signer verify here (checked by ``tests/integration``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import rfc8785

from strongroom.core.crypto._primitives import (
    ecdsa_p256_sign,
    ecdsa_p256_verify,
    generate_p256_private_key_pem,
    public_key_fingerprint,
    public_pem_from_private,
)
from strongroom.errors import ConfigurationError, InvalidInputError, SignatureError

BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://model_signing/signature/v1.0"
SINGLE_FILE_RESOURCE: Final = "."
"""The resource name ``model_signing`` gives the only file of a model that *is* one file."""
SIGNED_IGNORE_PATHS: Final = (".git", ".gitattributes", ".github", ".gitignore")
"""What we record as ``ignore_paths``: the paths ``model_signing`` always skips when hashing."""

MAX_BUNDLE_BYTES: Final = 1024 * 1024
MAX_RESOURCES: Final = 10_000
MAX_NAME_CHARS: Final = 1024
MAX_IGNORE_PATHS: Final = 256

_HEX64 = re.compile(r"[0-9a-f]{64}")
_EMPTY: AbstractSet[str] = frozenset()


class SignatureDetail(Exception):  # noqa: N818 - a reason for logs, not an error callers catch
    """Why verification failed. Only ever found on ``SignatureError.__cause__``: log, never show."""


@dataclass(frozen=True)
class SignedResource:
    """One signed file: its relative POSIX path (or ``"."``) and lowercase SHA-256 hex."""

    name: str
    sha256: str


@dataclass(frozen=True)
class VerifiedStatement:
    """A statement whose signature and every field verified; ``key_fingerprint`` is the hint."""

    subject_name: str
    resources: tuple[SignedResource, ...]
    key_fingerprint: str

    @property
    def single_file(self) -> bool:
        """True when the signature covers a model that was one file (resource ``"."``)."""
        return len(self.resources) == 1 and self.resources[0].name == SINGLE_FILE_RESOURCE


# --- signing ------------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign_model(
    files: Mapping[str, str],
    *,
    subject_name: str,
    private_key_pem: bytes,
    password: bytes | None = None,
    single_file: bool = False,
) -> str:
    """Sign a model given as ``{relative posix path: sha256 hex}``; returns the bundle JSON.

    ``single_file`` is the caller's knowledge that the upload was one bare file rather than a
    directory holding one file: only then is the resource named ``"."``, which is what
    ``model_signing verify <file>`` expects. ``subject_name`` is informational (model_signing
    uses the file or directory name); it is signed but never matched against anything.
    """
    statement = build_statement(files, subject_name=subject_name, single_file=single_file)
    return sign_payload(
        bytes(rfc8785.dumps(statement)), private_key_pem=private_key_pem, password=password
    )


def build_statement(
    files: Mapping[str, str], *, subject_name: str, single_file: bool = False
) -> dict[str, Any]:
    """The in-toto statement for ``files``, exactly as model_signing lays it out."""
    _require_input(not _text_problem(subject_name), "invalid subject name")
    _require_input(len(files) <= MAX_RESOURCES, "too many files to sign")
    for name, digest in files.items():
        _require_input(
            isinstance(digest, str) and bool(_HEX64.fullmatch(digest)),
            f"file {name!r}: the digest must be 64 lowercase hex digits (SHA-256)",
        )
        _require_input(single_file or not _name_problem(name), f"unsafe file name {name!r}")
    if single_file:
        _require_input(len(files) == 1, "a single-file model has exactly one file")
        resources = [SignedResource(SINGLE_FILE_RESOURCE, next(iter(files.values())))]
    else:
        _require_input(bool(files), "a model needs at least one file")
        ignored = [n for n in files if n.split("/", 1)[0] in SIGNED_IGNORE_PATHS]
        _require_input(
            not ignored, "git metadata files cannot be signed (model_signing skips them)"
        )
        # model_signing sorts pathlib paths, i.e. by path components, not by the raw string.
        resources = [SignedResource(n, files[n]) for n in sorted(files, key=lambda n: n.split("/"))]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": _root_digest(resources)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": list(SIGNED_IGNORE_PATHS),
            },
            "resources": [
                {"name": r.name, "algorithm": "sha256", "digest": r.sha256} for r in resources
            ],
        },
    }


def sign_payload(payload: bytes, *, private_key_pem: bytes, password: bytes | None = None) -> str:
    """Wrap any in-toto payload in a signed DSSE envelope inside a sigstore bundle (JSON text).

    Low level: it signs whatever it is given. ``sign_model`` is the way to sign a model.
    """
    signature = ecdsa_p256_sign(private_key_pem, pae(PAYLOAD_TYPE, payload), password)
    hint = public_key_fingerprint(public_pem_from_private(private_key_pem, password))
    bundle: dict[str, Any] = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }
    return bytes(rfc8785.dumps(bundle)).decode("utf-8")


# --- verification -------------------------------------------------------------------------------


def verify_bundle(
    bundle_json: str | bytes, trusted_keys: Mapping[str, bytes]
) -> tuple[str, VerifiedStatement]:
    """Verify a bundle against ``{signer name: public key PEM}``; return (signer, statement).

    The signer is chosen by the bundle's ``publicKey.hint`` (SHA-256 of the SPKI PEM) when there
    is one, else each trusted key is tried in name order. Raises ``SignatureError`` on any
    failure, and ``ConfigurationError`` when ``trusted_keys`` itself is invalid.
    """
    keys = _fingerprint_keys(trusted_keys)
    try:
        hint, payload, signature = _parse_bundle(bundle_json)
        signer, fingerprint = _authenticate(hint, payload, signature, keys)
        subject_name, resources = _parse_statement(payload)
    except SignatureDetail as exc:
        raise SignatureError from exc
    return signer, VerifiedStatement(subject_name, resources, fingerprint)


def check_files_match(statement: VerifiedStatement, files: Mapping[str, str]) -> None:
    """Raise ``SignatureError`` unless the signed resources are exactly ``files``.

    A single-file signature (one resource ``"."``) matches any one-file mapping with that digest,
    whatever the file is called, because model_signing does not record the file's name.
    """
    if statement.single_file:
        digests = list(files.values())
        if len(digests) != 1 or digests[0] != statement.resources[0].sha256:
            _fail(f"single-file signature does not match {len(files)} file(s)")
        return
    signed = {r.name: r.sha256 for r in statement.resources}
    if dict(files) != signed:
        missing = len(signed.keys() - files.keys())
        extra = len(files.keys() - signed.keys())
        changed = sum(1 for n in signed.keys() & files.keys() if signed[n] != files[n])
        _fail(f"files differ from signature: {missing} missing, {extra} extra, {changed} changed")


def _fingerprint_keys(trusted_keys: Mapping[str, bytes]) -> dict[str, tuple[str, bytes]]:
    """``{fingerprint: (signer, pem)}``; a key trusted under two names is a configuration error."""
    keys: dict[str, tuple[str, bytes]] = {}
    for name in sorted(trusted_keys):
        try:
            fingerprint = public_key_fingerprint(trusted_keys[name])
        except InvalidInputError as exc:
            raise ConfigurationError(f"trusted key {name!r} is not a P-256 public key") from exc
        if fingerprint in keys:
            raise ConfigurationError(f"signers {keys[fingerprint][0]!r} and {name!r} share a key")
        keys[fingerprint] = (name, trusted_keys[name])
    return keys


def _authenticate(
    hint: str | None, payload: bytes, signature: bytes, keys: Mapping[str, tuple[str, bytes]]
) -> tuple[str, str]:
    """Return (signer, fingerprint) of the trusted key whose signature over the PAE verifies."""
    if hint is not None and hint not in keys:
        _reject("hint names no trusted key")
    candidates = [hint] if hint is not None else list(keys)
    message = pae(PAYLOAD_TYPE, payload)
    for fingerprint in candidates:
        signer, pem = keys[fingerprint]
        try:
            ecdsa_p256_verify(pem, signature, message)
        except SignatureError:
            continue
        return signer, fingerprint
    raise SignatureDetail("no trusted key verifies the signature")


def _parse_bundle(bundle_json: str | bytes) -> tuple[str | None, bytes, bytes]:
    """Return (hint or None, payload bytes, DER signature) from the bundle's strict JSON."""
    required = {"mediaType", "verificationMaterial", "dsseEnvelope"}
    bundle = _object(_loads(bundle_json), "bundle", required, _EMPTY)
    _equal(bundle["mediaType"], BUNDLE_MEDIA_TYPE, "mediaType")
    material = _object(
        bundle["verificationMaterial"], "verificationMaterial", {"publicKey"}, {"tlogEntries"}
    )
    if material.get("tlogEntries", []) != []:
        _reject("transparency log entries are not supported")
    # rawBytes/keyDetails: written by older model_signing releases; unsigned, so ignored.
    key = _object(material["publicKey"], "publicKey", _EMPTY, {"hint", "rawBytes", "keyDetails"})
    hint = key.get("hint")
    if "hint" in key and not (isinstance(hint, str) and _HEX64.fullmatch(hint)):
        _reject("malformed publicKey.hint")
    envelope = _object(
        bundle["dsseEnvelope"], "dsseEnvelope", {"payload", "payloadType", "signatures"}, _EMPTY
    )
    _equal(envelope["payloadType"], PAYLOAD_TYPE, "payloadType")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or len(signatures) != 1:
        _reject("exactly one DSSE signature is required")
    entry = _object(signatures[0], "signature", {"sig"}, {"keyid"})
    if entry.get("keyid", "") != "":
        _reject("DSSE keyid must be empty")
    return hint, _b64(envelope["payload"], "payload"), _b64(entry["sig"], "sig")


def _parse_statement(payload: bytes) -> tuple[str, tuple[SignedResource, ...]]:
    """Check the in-toto statement field by field; return (subject name, resources)."""
    required = {"_type", "subject", "predicateType", "predicate"}
    statement = _object(_loads(payload), "statement", required, _EMPTY)
    _equal(statement["_type"], STATEMENT_TYPE, "_type")
    _equal(statement["predicateType"], PREDICATE_TYPE, "predicateType")
    subjects = statement["subject"]
    if not isinstance(subjects, list) or len(subjects) != 1:
        _reject("exactly one subject is required")
    subject = _object(subjects[0], "subject", {"name", "digest"}, _EMPTY)
    subject_name = subject["name"]
    if not isinstance(subject_name, str) or _text_problem(subject_name):
        _reject("malformed subject name")
    subject_digest = _object(subject["digest"], "subject digest", {"sha256"}, _EMPTY)["sha256"]
    # Unknown predicate fields are ignored, as the v1.0 predicate requires of verifiers.
    predicate = _object(statement["predicate"], "predicate", {"serialization", "resources"}, None)
    _check_serialization(predicate["serialization"])
    resources = _parse_resources(predicate["resources"])
    if subject_digest != _root_digest(resources):
        _reject("subject digest does not match the resources")
    return subject_name, resources


def _check_serialization(value: object) -> None:
    required = {"method", "hash_type", "allow_symlinks"}
    serialization = _object(value, "serialization", required, {"ignore_paths"})
    _equal(serialization["method"], "files", "serialization method")
    _equal(serialization["hash_type"], "sha256", "hash_type")
    if not isinstance(serialization["allow_symlinks"], bool):
        _reject("allow_symlinks must be a boolean")
    ignored = serialization.get("ignore_paths", [])
    if not isinstance(ignored, list) or len(ignored) > MAX_IGNORE_PATHS:
        _reject("malformed ignore_paths")
    if not all(isinstance(p, str) and not _text_problem(p) for p in ignored):
        _reject("malformed ignore_paths entry")


def _parse_resources(value: object) -> tuple[SignedResource, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RESOURCES:
        _reject("resources must be a non-empty, bounded list")
    resources: list[SignedResource] = []
    for item in value:
        raw = _object(item, "resource", {"name", "algorithm", "digest"}, _EMPTY)
        _equal(raw["algorithm"], "sha256", "resource algorithm")
        name, digest = raw["name"], raw["digest"]
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            _reject("malformed resource digest")
        lone_dot = name == SINGLE_FILE_RESOURCE and len(value) == 1
        if not lone_dot and (not isinstance(name, str) or _name_problem(name)):
            _reject("unsafe resource name")
        resources.append(SignedResource(name, digest))
    if len({r.name for r in resources}) != len(resources):
        _reject("duplicate resource names")
    return tuple(resources)


# --- helpers ------------------------------------------------------------------------------------


def _root_digest(resources: Sequence[SignedResource]) -> str:
    """SHA-256 over the raw resource digests, in listed order (model_signing's subject digest)."""
    hasher = hashlib.sha256()
    for resource in resources:
        hasher.update(bytes.fromhex(resource.sha256))
    return hasher.hexdigest()


def _text_problem(text: str) -> bool:
    """True for empty, oversized, control-character or non-UTF-8-encodable text."""
    if not text or len(text) > MAX_NAME_CHARS:
        return True
    return any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in text)  # noqa: PLR2004 - C0, DEL and surrogates


def _name_problem(name: str) -> bool:
    """True unless ``name`` is a plain relative POSIX path that stays inside the model."""
    if _text_problem(name) or "\\" in name or ":" in name or name.startswith("/"):
        return True
    return any(part in {"", ".", ".."} for part in name.split("/"))


def _loads(document: str | bytes) -> Any:
    """Strict, bounded JSON: UTF-8 only, no duplicate keys, no NaN/Infinity."""
    if len(document) > MAX_BUNDLE_BYTES:
        _reject("document too large")
    try:
        data = document.encode("utf-8") if isinstance(document, str) else document
        if len(data) > MAX_BUNDLE_BYTES:
            _reject("document too large")
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeError are ValueErrors
        raise SignatureDetail("malformed JSON") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate JSON key")
    return result


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"JSON constant {name} is not allowed")


def _object(
    value: object, what: str, required: AbstractSet[str], optional: AbstractSet[str] | None
) -> dict[str, Any]:
    """``value`` as a JSON object with every ``required`` key and, unless ``optional`` is None,
    no keys beyond ``required | optional``."""
    if not isinstance(value, dict):
        _reject(f"{what} must be an object")
    if not required <= value.keys():
        _reject(f"{what} lacks required fields")
    if optional is not None and not value.keys() <= required | optional:
        _reject(f"{what} has unknown fields")
    return value


def _b64(value: object, what: str) -> bytes:
    """Standard, padded, canonical base64 (so that no two strings decode to the same bytes)."""
    if not isinstance(value, str):
        _reject(f"{what} must be a base64 string")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureDetail(f"{what} is not base64") from exc
    if base64.b64encode(decoded).decode("ascii") != value:
        _reject(f"{what} is not canonical base64")
    return decoded


def _equal(value: object, expected: str, what: str) -> None:
    if not isinstance(value, str) or value != expected:
        _reject(f"unexpected {what}")


def _reject(detail: str) -> NoReturn:
    """Fail a parsing step; ``verify_bundle`` turns it into an opaque ``SignatureError``."""
    raise SignatureDetail(detail)


def _fail(detail: str) -> NoReturn:
    raise SignatureError from SignatureDetail(detail)


def _require_input(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInputError(message)


def generate_signing_key(password: bytes | None = None) -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key pair: (PKCS#8 private PEM, SPKI public PEM)."""
    private_pem = generate_p256_private_key_pem(password)
    return private_pem, public_pem_from_private(private_pem, password)
