"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519, as Go's sumdb/note makes them.

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
``— <key name> <base64(4-byte key ID || signature)>``. Strongroom signs its audit checkpoints
this way, so that any tool of the transparency-log ecosystem (Go's ``note`` package, witnesses)
can check them. ``docs/formats/checkpoint-v1.md`` is the normative description.

Keys travel in Go's text forms: a *verifier key* ``<name>+<8 hex key ID>+<base64(0x01 || public
key)>`` (safe to publish) and a *signer key* ``PRIVATE+KEY+<name>+<key ID>+<base64(0x01 ||
seed)>`` (a secret). The key ID is the first four bytes of ``SHA-256(name || "\\n" || 0x01 ||
public key)``.

Invariants:

* Pure: no I/O; a new key's seed comes from the caller's ``RandomBytes``; Ed25519 signing is
  deterministic, so the same key and text always give the same note.
* ``open_note`` returns only if at least one signature by a trusted key verifies. As the spec
  requires, signatures by unknown keys are ignored, and any signature that names a trusted key
  (name *and* key ID) must verify or the whole note is refused. Every refusal is an opaque
  ``SignatureError``; the reason is a ``NoteDetail`` on ``__cause__``, for server logs only.
* Parsing is strict, and stricter than Go where Go is lax: at most 64 KiB and 100 signatures,
  no ASCII control character but newline, canonical base64 only, lowercase hex key IDs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn

from strongroom.core.crypto._primitives import (
    ED25519_KEY_BYTES,
    ed25519_public_from_private,
    ed25519_sign,
    ed25519_verify,
)
from strongroom.core.types import RandomBytes
from strongroom.errors import ConfigurationError, InvalidInputError, SignatureError

ALG_ED25519: Final = 0x01
"""Signature type byte of Ed25519 in signed notes."""
MAX_NOTE_BYTES: Final = 64 * 1024
MAX_SIGNATURES: Final = 100
MAX_NAME_CHARS: Final = 256
SIGNATURE_PREFIX: Final = "\u2014 "
"""Em dash (U+2014) and a space: how every signature line starts."""
_SKEY_PREFIX: Final = "PRIVATE+KEY+"
_KEY_ID_BYTES: Final = 4
_KEY_ID_HEX: Final = re.compile(r"[0-9a-f]{8}")


class NoteDetail(Exception):  # noqa: N818 - a reason for logs, not an error callers catch
    """Why a note was refused. Only ever found on ``SignatureError.__cause__``: log, never show."""


def _fail(detail: str) -> NoReturn:
    raise SignatureError from NoteDetail(detail)


def is_valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode space, no ``+``, no control character, at most 256 characters."""
    return (
        0 < len(name) <= MAX_NAME_CHARS
        and "+" not in name
        and not any(c.isspace() or c < " " or "\ud800" <= c <= "\udfff" for c in name)
    )


def key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> int:
    """``SHA-256(name || 0x0A || alg || public key)[:4]`` read as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:_KEY_ID_BYTES], "big")


def b64decode_canonical(text: str) -> bytes:
    """Standard base64 with padding, refusing any other spelling of the same bytes."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("not base64") from exc
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return data


def _parse_key_text(name: str, hash_hex: str, key_b64: str) -> tuple[int, bytes]:
    """Shared checks of the vkey and skey forms; returns (key ID, 32 key bytes after 0x01)."""
    if not is_valid_key_name(name) or not _KEY_ID_HEX.fullmatch(hash_hex):
        raise ValueError("malformed key name or key ID")
    claimed = int(hash_hex, 16)
    key = b64decode_canonical(key_b64)
    if len(key) != 1 + ED25519_KEY_BYTES or key[0] != ALG_ED25519:
        raise ValueError("not an Ed25519 key")
    return claimed, key[1:]


# --- verifiers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted Ed25519 note key: its name and 32-byte public key."""

    name: str
    public_key: bytes
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise InvalidInputError("a note key name is non-empty, without spaces or '+'")
        if len(self.public_key) != ED25519_KEY_BYTES:
            raise InvalidInputError("an Ed25519 public key is 32 bytes")
        object.__setattr__(self, "key_id", key_id(self.name, self.public_key))

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<key ID hex>+<base64(0x01 || public key)>`` (Go's verifier key)."""
        name, _, rest = vkey.partition("+")
        hash_hex, _, key_b64 = rest.partition("+")
        try:
            claimed, public_key = _parse_key_text(name, hash_hex, key_b64)
        except ValueError as exc:
            raise InvalidInputError("malformed note verifier key") from exc
        verifier = cls(name, public_key)
        if verifier.key_id != claimed:
            raise InvalidInputError("note verifier key ID does not match its key")
        return verifier

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise ``SignatureError`` unless ``signature`` is this key's over ``message``."""
        ed25519_verify(self.public_key, signature, message)


# --- signers --------------------------------------------------------------------------------------


class NoteSigner:
    """An Ed25519 note signing key. Holds a secret: never logged, never in ``repr``."""

    __slots__ = ("_private_key", "_verifier")

    def __init__(self, name: str, private_key_raw: bytes) -> None:
        if len(private_key_raw) != ED25519_KEY_BYTES:
            raise InvalidInputError("an Ed25519 private key is a 32-byte seed")
        self._private_key = bytes(private_key_raw)
        self._verifier = NoteVerifier(name, ed25519_public_from_private(self._private_key))

    @classmethod
    def generate(cls, name: str, random_bytes: RandomBytes) -> NoteSigner:
        """A new key: an Ed25519 private key is 32 random bytes (RFC 8032 seed)."""
        return cls(name, random_bytes(ED25519_KEY_BYTES))

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 || seed)>`` (Go's signer key)."""
        if not skey.startswith(_SKEY_PREFIX):
            raise InvalidInputError("malformed note signer key")
        name, _, rest = skey.removeprefix(_SKEY_PREFIX).partition("+")
        hash_hex, _, key_b64 = rest.partition("+")
        try:
            claimed, seed = _parse_key_text(name, hash_hex, key_b64)
        except ValueError as exc:
            raise InvalidInputError("malformed note signer key") from exc
        signer = cls(name, seed)
        if signer.key_id != claimed:
            raise InvalidInputError("note signer key ID does not match its key")
        return signer

    def to_skey(self) -> str:
        """The secret signer key text, for a key file readable only by the server."""
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self._private_key).decode("ascii")
        return f"{_SKEY_PREFIX}{self.name}+{self.key_id:08x}+{encoded}"

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    @property
    def verifier(self) -> NoteVerifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        return ed25519_sign(self._private_key, message)

    def __repr__(self) -> str:
        return f"NoteSigner({self._verifier.vkey!r})"


# --- notes ----------------------------------------------------------------------------------------


def _check_characters(text: str) -> None:
    """At most 64 KiB of valid UTF-8 (no lone surrogate), no ASCII control but newline."""
    if len(text) > MAX_NOTE_BYTES:
        _fail("note too large")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        _fail("not valid UTF-8")
    if size > MAX_NOTE_BYTES:
        _fail("note too large")
    if any(c < " " and c != "\n" for c in text):
        _fail("control character")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """``text`` (non-empty, ending in a newline), a blank line, one signature line per signer."""
    if not signers or not text.endswith("\n"):
        raise ValueError("a note needs a signer and text that ends with a newline")
    try:
        _check_characters(text)
    except SignatureError as exc:
        raise ValueError("note text has a control character or is too large") from exc
    message = text.encode("utf-8")
    lines = []
    for signer in signers:
        blob = signer.key_id.to_bytes(_KEY_ID_BYTES, "big") + signer.sign(message)
        lines.append(f"{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(blob).decode('ascii')}\n")
    return text + "\n" + "".join(lines)


@dataclass(frozen=True, slots=True)
class OpenedNote:
    text: str
    """The signed text, final newline included."""
    verified_by: tuple[NoteVerifier, ...]
    """The trusted keys whose signatures verified, in note order."""


def _verifier_index(verifiers: Iterable[NoteVerifier]) -> dict[tuple[str, int], NoteVerifier]:
    index: dict[tuple[str, int], NoteVerifier] = {}
    for verifier in verifiers:
        known = index.setdefault((verifier.name, verifier.key_id), verifier)
        if known != verifier:
            raise ConfigurationError(f"two trusted note keys share name and ID: {verifier.name}")
    return index


def _signature_line(line: str) -> tuple[str, int, bytes]:
    if not line.startswith(SIGNATURE_PREFIX):
        _fail("not a signature line")
    name, space, blob_b64 = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
    if not space or not is_valid_key_name(name):
        _fail("bad key name")
    try:
        blob = b64decode_canonical(blob_b64)
    except ValueError:
        _fail("bad signature encoding")
    if len(blob) <= _KEY_ID_BYTES:
        _fail("signature too short")
    return name, int.from_bytes(blob[:_KEY_ID_BYTES], "big"), blob[_KEY_ID_BYTES:]


def open_note(note: str | bytes, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Check ``note`` against the trusted ``verifiers``; ``SignatureError`` unless one verifies."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            _fail("note too large")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            _fail("not valid UTF-8")
    _check_characters(note)
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        _fail("no signature block")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block.removesuffix("\n").split("\n")
    if not block or len(lines) > MAX_SIGNATURES:
        _fail("no signatures or too many")
    index = _verifier_index(verifiers)
    message = text.encode("utf-8")
    verified: list[NoteVerifier] = []
    for line in lines:
        name, claimed_id, signature = _signature_line(line)
        verifier = index.get((name, claimed_id))
        if verifier is None:
            continue  # unknown keys are ignored, as the spec requires
        verifier.verify(message, signature)  # a trusted key's bad signature refuses the note
        if verifier not in verified:
            verified.append(verifier)
    if not verified:
        _fail("no trusted signature")
    return OpenedNote(text=text, verified_by=tuple(verified))
