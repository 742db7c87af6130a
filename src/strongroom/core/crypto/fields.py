"""Sealed fields: small secrets kept in a database row, encrypted and bound to their row.

TOTP secrets must be usable by the server (it computes codes), so they cannot be hashed like
passwords; they are sealed instead, with a key derived from the server secret
(``ServerKeys.totp_sealing``) that never enters the database. A stolen database therefore yields
no second factor.

Format (version 1): ``0x01 || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)``,
a fresh random nonce per seal (``SealingKey``). The AAD is
``"strongroom/sealed-field/v1\\0" || u16 len || purpose || u16 len || owner`` (UTF-8), so a sealed
value copied to another user's row, or into a column of another purpose, fails to open.

Invariants: opening with the wrong key, purpose or owner, or altered, truncated or unknown-version
bytes raises the opaque ``IntegrityError`` and nothing else; the key is never exposed (no repr).
"""

from __future__ import annotations

import struct
from typing import Final

from strongroom.core.crypto.sealing import SEALED_OVERHEAD, SealingKey
from strongroom.core.types import RandomBytes
from strongroom.errors import IntegrityError, InvalidInputError

FORMAT_VERSION: Final = 1
_VERSION_BYTE: Final = bytes([FORMAT_VERSION])
_DOMAIN: Final = b"strongroom/sealed-field/v1\x00"
_MAX_LABEL_BYTES: Final = 1024
MAX_PLAINTEXT_BYTES: Final = 4096


def _label(name: str, value: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"the sealed field's {name} must be text")
    encoded = value.encode("utf-8")
    if not encoded or len(encoded) > _MAX_LABEL_BYTES:
        raise InvalidInputError(f"the sealed field's {name} must be 1 to {_MAX_LABEL_BYTES} bytes")
    return struct.pack(">H", len(encoded)) + encoded


def field_aad(purpose: str, owner: str) -> bytes:
    """The AAD binding a sealed value to its purpose (e.g. ``totp``) and owner (a principal id)."""
    return _DOMAIN + _label("purpose", purpose) + _label("owner", owner)


class FieldSealer:
    """Seals and opens small values under one 256-bit key (e.g. ``ServerKeys.totp_sealing``)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = SealingKey(key)

    def __repr__(self) -> str:
        return "FieldSealer(<key>)"

    def seal(
        self, plaintext: bytes, *, purpose: str, owner: str, random_bytes: RandomBytes
    ) -> bytes:
        """``plaintext`` sealed for ``(purpose, owner)`` with a fresh nonce."""
        if not isinstance(plaintext, bytes) or len(plaintext) > MAX_PLAINTEXT_BYTES:
            raise InvalidInputError(f"a sealed field holds at most {MAX_PLAINTEXT_BYTES} bytes")
        aad = field_aad(purpose, owner)
        return _VERSION_BYTE + self._key.seal(plaintext, aad=aad, random_bytes=random_bytes)

    def open(self, sealed: bytes, *, purpose: str, owner: str) -> bytes:
        """The plaintext, or ``IntegrityError`` (wrong key, purpose, owner or altered bytes)."""
        aad = field_aad(purpose, owner)
        if not isinstance(sealed, bytes) or len(sealed) < 1 + SEALED_OVERHEAD:
            raise IntegrityError
        if sealed[:1] != _VERSION_BYTE:
            raise IntegrityError
        return self._key.open(sealed[1:], aad=aad)
