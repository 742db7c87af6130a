"""The key-provider port: wrap and unwrap per-artifact data keys with key-encryption keys (KEKs).

A KEK never leaves its provider (local sealed keyring, Vault/OpenBao transit, AWS KMS, PKCS#11
HSM). Strongroom only ever sees data keys, one per artifact, and hands the provider a *context*
(the canonical bytes of the artifact's identity) that the provider must bind to the wrapping, so
that a wrapped key copied to another artifact does not unwrap.

Invariants every adapter keeps (checked by ``strongroom.testing.contracts``):

* ``unwrap(wrap(k, ctx), ctx) == k``; any change to the wrapped bytes, the key version or ``ctx``
  raises ``KeyAccessError`` (or ``IntegrityError``), never returns other bytes.
* ``rotate()`` creates a new version that becomes current for wrapping; older versions keep
  unwrapping until they are retired with ``set_min_decryption_version``.
* Unwrapping with a retired version raises ``KeyAccessError``. Where the provider holds the key
  material itself (the local keyring), retiring a version erases it (crypto-shredding).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

DATA_KEY_BYTES = 32
"""AES-256 data keys."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key as stored: which KEK (``key_id``, ``version``) wrapped it, and the ciphertext."""

    key_id: str
    version: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class KeyVersionInfo:
    key_id: str
    version: int
    created_at: datetime
    retired: bool
    """True when ``version`` is below the minimum decryption version: it no longer unwraps
    (and its key material is erased where the provider can erase it)."""


class KeyProvider(Protocol):
    """Port implemented by ``adapters.kms.*`` and by ``testing.fake_keys.FakeKeyProvider``."""

    @property
    def key_id(self) -> str:
        """Name of the KEK this provider wraps with (e.g. ``"local:default"``)."""
        ...

    def current_version(self) -> int: ...

    def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        """Wrap ``data_key`` with the current KEK version, bound to ``context``."""
        ...

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        """Return the data key, or raise ``KeyAccessError`` / ``IntegrityError``."""
        ...

    def rotate(self) -> KeyVersionInfo:
        """Create a new KEK version and make it current for wrapping."""
        ...

    def versions(self) -> list[KeyVersionInfo]: ...

    def set_min_decryption_version(self, version: int) -> None:
        """Retire every version below ``version``: they no longer unwrap. Never lowers it."""
        ...
