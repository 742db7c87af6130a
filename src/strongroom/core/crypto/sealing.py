"""Sealing of small secrets: AES-256-GCM under a raw key or a passphrase-derived (scrypt) key.

This is the non-hazmat face of ``_primitives`` for the key providers: the local keyring seals its
list of KEK versions under a key derived from the operator's passphrase, and key providers that
hold raw KEKs in memory (the local keyring, ``testing.fake_keys``) wrap data keys with
``SealingKey`` and ``key_wrap_aad``, so that both keep exactly the same semantics.

Invariants:

* A sealed secret is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``; the nonce is fresh
  from the injected ``RandomBytes`` for every seal. Sealed secrets are small (keys, key lists):
  random 96-bit nonces are safe far beyond the number of seals a keyring ever makes.
* Opening with the wrong key, the wrong AAD or altered bytes raises ``IntegrityError`` and
  nothing else; callers that must report a *key* problem (wrong passphrase) translate it.
* scrypt parameters are validated on the way in, from code or from a file alike: weaker than
  ``MIN_SCRYPT_N`` / ``r = 8`` is refused (no silent downgrade by editing a file), and absurdly
  large values are refused too (a tampered file must not exhaust memory).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from strongroom.core.crypto._primitives import (
    AES_KEY_BYTES,
    GCM_NONCE_BYTES,
    GCM_TAG_BYTES,
    Aead,
    scrypt_derive,
)
from strongroom.core.types import RandomBytes
from strongroom.errors import ConfigurationError, IntegrityError, InvalidInputError

SEALED_OVERHEAD: Final = GCM_NONCE_BYTES + GCM_TAG_BYTES
"""Bytes a sealed secret adds to its plaintext (nonce + tag)."""

DEFAULT_SCRYPT_N: Final = 2**15
MIN_SCRYPT_N: Final = 2**14
"""Floor of the scrypt cost: 16 MiB of memory with r=8. Tests use it to stay fast."""
MAX_SCRYPT_N: Final = 2**20
SCRYPT_R: Final = 8
MAX_SCRYPT_P: Final = 16
SCRYPT_SALT_BYTES: Final = 16
MIN_PASSPHRASE_BYTES: Final = 12

_WRAP_DOMAIN: Final = b"strongroom/kek-wrap/v1\x00"
_MAX_KEY_ID_BYTES: Final = 1024
_U32_MAX: Final = 2**32 - 1


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost parameters and salt; checked against the floor and a ceiling on creation."""

    salt: bytes
    n: int = DEFAULT_SCRYPT_N
    r: int = SCRYPT_R
    p: int = 1

    def __post_init__(self) -> None:
        for value in (self.n, self.r, self.p):
            if type(value) is not int:
                raise ConfigurationError("scrypt parameters must be integers")
        if len(self.salt) != SCRYPT_SALT_BYTES:
            raise ConfigurationError(f"scrypt salt must be {SCRYPT_SALT_BYTES} bytes")
        if self.n & (self.n - 1) or not MIN_SCRYPT_N <= self.n <= MAX_SCRYPT_N:
            raise ConfigurationError(
                "scrypt n must be a power of two between 2**14 and 2**20",
                hint="parameters below the floor are refused; re-create the keyring",
            )
        if self.r != SCRYPT_R or not 1 <= self.p <= MAX_SCRYPT_P:
            raise ConfigurationError(f"scrypt needs r = {SCRYPT_R} and 1 <= p <= {MAX_SCRYPT_P}")

    @classmethod
    def generate(cls, random_bytes: RandomBytes, *, n: int = DEFAULT_SCRYPT_N) -> ScryptParams:
        """Fresh parameters with a random salt (for a new keyring)."""
        return cls(salt=random_bytes(SCRYPT_SALT_BYTES), n=n)


class SealingKey:
    """A 256-bit AES-GCM key that seals and opens small secrets; never exposes the key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != AES_KEY_BYTES:
            raise InvalidInputError(f"a sealing key is {AES_KEY_BYTES} bytes")
        self._aead = Aead(key)

    @classmethod
    def from_passphrase(cls, passphrase: bytes, params: ScryptParams) -> SealingKey:
        """Derive the key with scrypt (tens of milliseconds at the default cost, on purpose)."""
        check_passphrase(passphrase)
        return cls(scrypt_derive(passphrase, params.salt, n=params.n, r=params.r, p=params.p))

    def seal(self, plaintext: bytes, *, aad: bytes, random_bytes: RandomBytes) -> bytes:
        nonce = random_bytes(GCM_NONCE_BYTES)
        if len(nonce) != GCM_NONCE_BYTES:
            raise ValueError("random_bytes returned the wrong number of bytes")
        return nonce + self._aead.seal(nonce, plaintext, aad)

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        """The plaintext, or ``IntegrityError`` (wrong key, wrong AAD, altered or short bytes)."""
        if len(sealed) < SEALED_OVERHEAD:
            raise IntegrityError
        view = memoryview(sealed)
        return self._aead.open(bytes(view[:GCM_NONCE_BYTES]), view[GCM_NONCE_BYTES:], aad)


def check_passphrase(passphrase: bytes) -> None:
    """Refuse passphrases too short to be one (there is never a default passphrase)."""
    if not isinstance(passphrase, bytes) or len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise ConfigurationError(
            f"the keyring passphrase must be at least {MIN_PASSPHRASE_BYTES} bytes",
            hint="set it from a secret (environment variable or file); there is no default",
        )


def key_wrap_aad(key_id: str, version: int, context: bytes) -> bytes:
    """AAD that binds a wrapped data key to its KEK name, KEK version and artifact context.

    Length-prefixed fields after a domain string, so no two distinct triples share an encoding;
    a wrapped key moved to another artifact, version or KEK fails to open.
    """
    key_id_bytes = key_id.encode("utf-8")
    if not key_id_bytes or len(key_id_bytes) > _MAX_KEY_ID_BYTES:
        raise InvalidInputError("invalid key id")
    if type(version) is not int or not 1 <= version <= _U32_MAX:
        raise InvalidInputError("invalid key version")
    return b"".join(
        (
            _WRAP_DOMAIN,
            struct.pack(">H", len(key_id_bytes)),
            key_id_bytes,
            struct.pack(">I", version),
            context,
        )
    )
