"""API keys: format, keyed digest, verification, rotation and revocation (pure rules).

A key is ``<prefix>_<key_id>_<secret>``, shown to its owner once:

* ``prefix``: ``sr`` by default, 1-16 lower-case letters/digits starting with a letter; it only
  makes leaked keys easy for secret scanners to recognise and is not part of the digest.
* ``key_id``: 12 characters of lower-case RFC 4648 base32 (``a-z2-7``), the top 60 bits of 8
  random bytes. A public lookup handle, not a secret (it may appear in logs and audit records).
* ``secret``: 43 characters of unpadded base64url, 32 random bytes (256 bits), canonical only.

Only ``HMAC-SHA256(pepper, DOMAIN || key_id || secret)`` is stored, with a server-side pepper of
at least 32 bytes kept outside the database, so a stolen database yields no usable key and
cannot be brute-forced offline without the pepper. Both fields have fixed lengths, so the
concatenation is unambiguous.

Invariants: parsing is strict (exact length, alphabets, canonical base64) and every refusal is
an opaque ``AuthenticationError`` whose ``__cause__`` is an ``ApiKeyRefusal`` naming the reason
for the server log. Digests are compared with ``hmac.compare_digest``. A revoked key (any
``revoked_at``) or an expired one (``expires_at <= now``) is refused on the very next request,
because every request is verified against the stored record. Randomness is injected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, NoReturn

from strongroom.core.identity.principal import check_principal_id
from strongroom.core.types import RandomBytes
from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

DEFAULT_PREFIX: Final = "sr"
DOMAIN: Final = b"strongroom/api-key/v1\x00"
MIN_PEPPER_BYTES: Final = 32
KEY_ID_RANDOM_BYTES: Final = 8
KEY_ID_LENGTH: Final = 12
SECRET_BYTES: Final = 32
SECRET_LENGTH: Final = 43
DIGEST_LENGTH: Final = 32
MAX_ROTATION_GRACE: Final = timedelta(days=30)

PREFIX_RE: Final = re.compile(r"[a-z][a-z0-9]{0,15}")
KEY_ID_RE: Final = re.compile(r"[a-z2-7]{12}")
SECRET_RE: Final = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
"""Exactly the unpadded base64url spellings of 32 bytes: 43 characters, the last of which
carries 4 bits and 2 zero bits (so its alphabet index is a multiple of 4)."""


class ApiKeyReason(StrEnum):
    """Why an API key was refused: for the server log only, never the client."""

    MALFORMED = "malformed"
    WRONG_KEY_ID = "wrong_key_id"
    DIGEST_MISMATCH = "digest_mismatch"  # a wrong secret (or pepper)
    REVOKED = "revoked"
    EXPIRED = "expired"


class ApiKeyRefusal(Exception):  # noqa: N818 - a reason carried on __cause__, not an error
    """The reason behind an ``AuthenticationError`` raised by this module."""

    def __init__(self, reason: ApiKeyReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _refuse(reason: ApiKeyReason) -> NoReturn:
    raise AuthenticationError from ApiKeyRefusal(reason)


def refusal_reason(error: AuthenticationError) -> ApiKeyReason | None:
    """The logged reason of a refusal raised by this module, or None for any other error."""
    cause = error.__cause__
    return cause.reason if isinstance(cause, ApiKeyRefusal) else None


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
        raise ConfigurationError(f"invalid API key prefix {prefix!r}")
    return prefix


def _check_pepper(pepper: bytes) -> None:
    if not isinstance(pepper, bytes) or len(pepper) < MIN_PEPPER_BYTES:
        raise ConfigurationError(f"the API key pepper must be at least {MIN_PEPPER_BYTES} bytes")


def _check_aware(name: str, value: datetime | None) -> None:
    if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
        raise InvalidInputError(f"{name} must be a timezone-aware datetime")


def _is_canonical_secret(secret: str) -> bool:
    return SECRET_RE.fullmatch(secret) is not None


def _encode_secret(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class IssuedApiKey:
    """A freshly issued key. ``token`` is shown to its owner once and never stored."""

    prefix: str
    key_id: str
    secret: str = field(repr=False)

    @property
    def token(self) -> str:
        return f"{self.prefix}_{self.key_id}_{self.secret}"


@dataclass(frozen=True)
class StoredApiKey:
    """What the credential store keeps for a key: never the secret, only its keyed digest."""

    key_id: str
    digest: bytes = field(repr=False)
    principal_id: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not KEY_ID_RE.fullmatch(self.key_id):
            raise InvalidInputError("invalid API key id")
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_LENGTH:
            raise InvalidInputError(f"an API key digest is {DIGEST_LENGTH} bytes")
        check_principal_id(self.principal_id)
        if self.created_at is None:
            raise InvalidInputError("created_at is required")
        for name in ("created_at", "expires_at", "revoked_at"):
            _check_aware(name, getattr(self, name))
        if self.expires_at is not None and self.expires_at < self.created_at:
            raise InvalidInputError("an API key cannot expire before it was created")


@dataclass(frozen=True)
class ApiKeyRotation:
    """The result of a rotation: the new key (shown once), its record, and the old record with
    its shortened expiry. The store must save both records in one transaction."""

    issued: IssuedApiKey
    new_record: StoredApiKey
    old_record: StoredApiKey


def _draw(random_bytes: RandomBytes, n: int) -> bytes:
    data = random_bytes(n)
    if not isinstance(data, bytes) or len(data) != n:
        raise ConfigurationError("the random source returned the wrong number of bytes")
    return data


def new_api_key(random_bytes: RandomBytes, prefix: str = DEFAULT_PREFIX) -> IssuedApiKey:
    """Issue a new key from 8 + 32 fresh random bytes (id first, then secret).

    The key id carries 60 random bits: the store must still refuse a duplicate id (and the
    caller then issues another), but collisions are negligible below billions of keys.
    """
    _check_prefix(prefix)
    id_bytes = _draw(random_bytes, KEY_ID_RANDOM_BYTES)
    key_id = base64.b32encode(id_bytes).decode("ascii")[:KEY_ID_LENGTH].lower()
    secret = _encode_secret(_draw(random_bytes, SECRET_BYTES))
    return IssuedApiKey(prefix=prefix, key_id=key_id, secret=secret)


def parse_api_key(text: str, *, prefix: str = DEFAULT_PREFIX) -> tuple[str, str]:
    """Split a presented key into ``(key_id, secret)``; anything malformed is refused.

    The key id contains no ``_`` and the prefix is checked, so splitting at the first two
    underscores is unambiguous even though the secret's alphabet contains ``_``.
    """
    _check_prefix(prefix)
    expected_length = len(prefix) + 1 + KEY_ID_LENGTH + 1 + SECRET_LENGTH
    if not isinstance(text, str) or len(text) != expected_length or not text.isascii():
        _refuse(ApiKeyReason.MALFORMED)
    parts = text.split("_", 2)
    if len(parts) != 3:  # noqa: PLR2004 - prefix, key id, secret
        _refuse(ApiKeyReason.MALFORMED)
    given_prefix, key_id, secret = parts
    if given_prefix != prefix or not KEY_ID_RE.fullmatch(key_id):
        _refuse(ApiKeyReason.MALFORMED)
    if not _is_canonical_secret(secret):
        _refuse(ApiKeyReason.MALFORMED)
    return key_id, secret


def api_key_digest(pepper: bytes, key_id: str, secret: str) -> bytes:
    """``HMAC-SHA256(pepper, DOMAIN || key_id || secret)``: what the store keeps for a key."""
    _check_pepper(pepper)
    if not KEY_ID_RE.fullmatch(key_id) or not _is_canonical_secret(secret):
        raise InvalidInputError("malformed API key id or secret")
    return _digest(pepper, key_id, secret)


class Pepper:
    """A pepper with its HMAC-SHA256 key schedule done once: what a long-lived verifier holds,
    so that each request only copies the keyed state (``verify_api_key`` takes either)."""

    __slots__ = ("_keyed",)

    def __init__(self, pepper: bytes) -> None:
        _check_pepper(pepper)
        self._keyed = hmac.new(pepper, digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "Pepper(<secret>)"

    def digest(self, key_id: str, secret: str) -> bytes:
        """``api_key_digest`` of an id and secret already checked (``parse_api_key``)."""
        mac = self._keyed.copy()
        mac.update(DOMAIN + key_id.encode("ascii") + secret.encode("ascii"))
        return mac.digest()


def _digest(pepper: bytes | Pepper, key_id: str, secret: str) -> bytes:
    return (pepper if isinstance(pepper, Pepper) else Pepper(pepper)).digest(key_id, secret)


def verify_api_key(
    pepper: bytes | Pepper,
    presented: str,
    stored: StoredApiKey,
    now: datetime,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> None:
    """Return if ``presented`` is the live key ``stored`` describes, else raise opaquely.

    The caller looked ``stored`` up by the key id of ``presented`` (``parse_api_key``) and
    answers a missing record with the same ``AuthenticationError``. The digest is always
    computed and compared in constant time before the record's state is consulted.
    """
    if not isinstance(pepper, Pepper):
        _check_pepper(pepper)
    _check_aware("now", now)
    if not isinstance(stored, StoredApiKey):
        raise InvalidInputError("stored must be a StoredApiKey")
    key_id, secret = parse_api_key(presented, prefix=prefix)
    same_id = hmac.compare_digest(key_id.encode("ascii"), stored.key_id.encode("ascii"))
    same_secret = hmac.compare_digest(_digest(pepper, key_id, secret), stored.digest)
    if not same_id:
        _refuse(ApiKeyReason.WRONG_KEY_ID)
    if not same_secret:
        _refuse(ApiKeyReason.DIGEST_MISMATCH)
    if stored.revoked_at is not None:
        _refuse(ApiKeyReason.REVOKED)
    if stored.expires_at is not None and stored.expires_at <= now:
        _refuse(ApiKeyReason.EXPIRED)


def api_key_record(
    issued: IssuedApiKey,
    *,
    pepper: bytes,
    principal_id: str,
    created_at: datetime,
    expires_at: datetime | None = None,
) -> StoredApiKey:
    """The record to store for ``issued``; ``expires_at`` must be after ``created_at``."""
    _check_aware("created_at", created_at)
    _check_aware("expires_at", expires_at)
    if expires_at is not None and expires_at <= created_at:
        raise InvalidInputError("an API key must expire after it is created")
    return StoredApiKey(
        key_id=issued.key_id,
        digest=api_key_digest(pepper, issued.key_id, issued.secret),
        principal_id=principal_id,
        created_at=created_at,
        expires_at=expires_at,
    )


def rotate_api_key(
    old: StoredApiKey,
    *,
    random_bytes: RandomBytes,
    pepper: bytes,
    now: datetime,
    grace: timedelta = timedelta(0),
    expires_at: datetime | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> ApiKeyRotation:
    """Issue a successor for ``old``'s principal and make ``old`` expire ``grace`` after now.

    ``grace`` of 0 ends the old key immediately (``expires_at == now`` is already expired);
    an old key that expires sooner keeps its earlier expiry, and a revoked one stays revoked.
    """
    _check_aware("now", now)
    if not isinstance(grace, timedelta) or not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
        raise InvalidInputError(f"the rotation grace period must be 0 to {MAX_ROTATION_GRACE}")
    if now < old.created_at:
        raise InvalidInputError("cannot rotate a key before the time it was created")
    issued = new_api_key(random_bytes, prefix)
    new_record = api_key_record(
        issued, pepper=pepper, principal_id=old.principal_id, created_at=now, expires_at=expires_at
    )
    old_end = now + grace
    if old.expires_at is not None and old.expires_at < old_end:
        old_end = old.expires_at
    return ApiKeyRotation(issued, new_record, replace(old, expires_at=old_end))


def revoke_api_key(record: StoredApiKey, now: datetime) -> StoredApiKey:
    """The record revoked at ``now`` (an earlier revocation time is kept)."""
    _check_aware("now", now)
    if record.revoked_at is not None:
        return record
    return replace(record, revoked_at=now)
