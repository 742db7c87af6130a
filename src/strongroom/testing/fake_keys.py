"""``FakeKeyProvider``: an in-memory ``KeyProvider`` with the local keyring's exact semantics.

It wraps for real (AES-256-GCM through ``core.crypto.sealing``, the same wrap format and AAD as
``adapters.kms.local_keyring``), so tests that tamper with wrapped keys or contexts see the same
failures as production. Nothing is persisted. It passes ``testing.contracts.keys``.

Retiring a version erases its KEK from the dict (keeping its creation and retirement times), as
the local keyring erases it from its file: a retired version cannot come back, even if the
minimum decryption version were lowered.

Errors, as for every provider: an unknown key id, an unknown version or a retired version raise
``KeyAccessError``; a wrapped key that does not open (altered bytes, other context) raises
``IntegrityError``.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

from strongroom.core.crypto.keys import DATA_KEY_BYTES, KeyVersionInfo, WrappedKey
from strongroom.core.crypto.sealing import SealingKey, key_wrap_aad
from strongroom.core.types import Clock, RandomBytes
from strongroom.errors import InvalidInputError, KeyAccessError


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FakeKeyProvider:
    """KEK versions held in a dict; thread-safe like the real providers."""

    def __init__(
        self,
        *,
        key_id: str = "fake:default",
        random_bytes: RandomBytes = os.urandom,
        clock: Clock = _utc_now,
    ) -> None:
        if not key_id:
            raise InvalidInputError("key id must not be empty")
        self._key_id = key_id
        self._random = random_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[int, SealingKey] = {}
        self._created: dict[int, datetime] = {}
        self._retired_at: dict[int, datetime] = {}
        self._min_version = 1
        self.rotate()

    @property
    def key_id(self) -> str:
        return self._key_id

    def current_version(self) -> int:
        with self._lock:
            return max(self._created)

    def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        if len(data_key) != DATA_KEY_BYTES:
            raise InvalidInputError(f"data keys are {DATA_KEY_BYTES} bytes")
        with self._lock:
            version = max(self._created)
            kek = self._keys[version]
        aad = key_wrap_aad(self._key_id, version, context)
        return WrappedKey(
            self._key_id, version, kek.seal(data_key, aad=aad, random_bytes=self._random)
        )

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        with self._lock:
            kek = self._keys.get(wrapped.version) if wrapped.key_id == self._key_id else None
            retired = wrapped.version < self._min_version
        if kek is None or retired:
            raise KeyAccessError
        return kek.open(
            wrapped.ciphertext, aad=key_wrap_aad(self._key_id, wrapped.version, context)
        )

    def rotate(self) -> KeyVersionInfo:
        with self._lock:
            version = max(self._created, default=0) + 1
            self._keys[version] = SealingKey(self._random(DATA_KEY_BYTES))
            self._created[version] = self._clock()
            return self._info(version)

    def versions(self) -> list[KeyVersionInfo]:
        with self._lock:
            return [self._info(version) for version in sorted(self._created)]

    def set_min_decryption_version(self, version: int) -> None:
        """Retire versions below ``version``: their KEKs are dropped, not just refused."""
        with self._lock:
            if type(version) is not int or not 1 <= version <= max(self._created):
                raise InvalidInputError("minimum decryption version must be an existing version")
            for old in [v for v in self._keys if v < version]:
                del self._keys[old]
                self._retired_at[old] = self._clock()
            self._min_version = max(self._min_version, version)

    def _info(self, version: int) -> KeyVersionInfo:
        return KeyVersionInfo(
            key_id=self._key_id,
            version=version,
            created_at=self._created[version],
            retired=version not in self._keys,
        )
