"""One server secret, many keys: HKDF-SHA256 with a distinct label per purpose.

The server keeps a single random secret (``<home>/secrets/server.key``, or a mounted secret) and
derives from it every symmetric key it needs: the API-key and session peppers, the audit
input-HMAC key, the key that seals TOTP secrets at rest, and the seed of its own token-signing
Ed25519 key. Keys for different purposes are independent (HKDF with distinct ``info``), so one
leaking through a bug in its use reveals nothing about the others or the secret.

Invariants: the secret is at least 32 bytes; a label is one of ``Purpose``; derivation is
deterministic, so every worker process and replica given the same secret derives the same keys.
Changing the secret changes every derived key: issued API keys, sessions, access tokens and TOTP
enrolments stop working, and the audit input hashes of old and new records no longer compare.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from strongroom.core.crypto._primitives import hkdf_sha256
from strongroom.errors import ConfigurationError

MIN_SECRET_BYTES: Final = 32
KEY_BYTES: Final = 32
_SALT: Final = b"strongroom/server-secret/v1"
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]{64,256}")
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]{43,344}={0,2}")


class Purpose(StrEnum):
    API_KEY_PEPPER = "api-key-pepper"
    SESSION_PEPPER = "session-pepper"
    AUDIT_INPUT_HMAC = "audit-input-hmac"
    TOTP_SEALING = "totp-sealing"
    TOKEN_SIGNING = "token-signing-ed25519"  # noqa: S105 - a label, not a secret  # nosec B105


def parse_server_secret(text: str) -> bytes:
    """Decode the secret's text form (hex, or base64url with or without padding)."""
    value = text.strip()
    try:
        if _HEX_RE.fullmatch(value):
            raw = bytes.fromhex(value)
        elif _B64URL_RE.fullmatch(value):
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        else:
            raw = b""
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            "the server secret must be at least 32 random bytes, as hex or base64url",
            hint="generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return raw


def format_server_secret(raw: bytes) -> str:
    """The text form ``parse_server_secret`` reads (unpadded base64url)."""
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError("the server secret must be at least 32 bytes")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """Every key derived from the server secret; build with ``derive_server_keys``."""

    api_key_pepper: bytes = field(repr=False)
    session_pepper: bytes = field(repr=False)
    audit_input_hmac: bytes = field(repr=False)
    totp_sealing: bytes = field(repr=False)
    token_signing_seed: bytes = field(repr=False)


def derive_key(secret: bytes, purpose: Purpose, length: int = KEY_BYTES) -> bytes:
    if not isinstance(purpose, Purpose):
        raise TypeError("purpose must be a Purpose")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError("the server secret must be at least 32 bytes")
    return hkdf_sha256(secret, salt=_SALT, info=purpose.value.encode("ascii"), length=length)


def derive_server_keys(secret: bytes) -> ServerKeys:
    return ServerKeys(
        api_key_pepper=derive_key(secret, Purpose.API_KEY_PEPPER),
        session_pepper=derive_key(secret, Purpose.SESSION_PEPPER),
        audit_input_hmac=derive_key(secret, Purpose.AUDIT_INPUT_HMAC),
        totp_sealing=derive_key(secret, Purpose.TOTP_SEALING),
        token_signing_seed=derive_key(secret, Purpose.TOKEN_SIGNING),
    )
