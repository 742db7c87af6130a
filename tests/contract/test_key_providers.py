"""The KeyProvider contract on every implementation: the in-memory fake and the local keyring.

``force_min_decryption_version`` edits each provider's state behind its API (private access is
the point): the contract then checks that retired keys are really gone.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.adapters.kms.local_keyring import LocalKeyring
from strongroom.core.crypto.keys import KeyProvider
from strongroom.core.crypto.sealing import MIN_SCRYPT_N
from strongroom.core.types import Clock
from strongroom.testing.contracts.keys import (
    ForceMinimum,
    KeyProviderContract,
    KeyProviderFactory,
)
from strongroom.testing.fake_keys import FakeKeyProvider


def make_clock() -> Clock:
    """A clock that moves one second per reading: versions get distinct, ordered times."""
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ticks = itertools.count()
    return lambda: start + timedelta(seconds=next(ticks))


class TestFakeKeyProvider(KeyProviderContract):
    @pytest.fixture
    def make_key_provider(self) -> KeyProviderFactory:
        return lambda: FakeKeyProvider(clock=make_clock())

    @pytest.fixture
    def force_min_decryption_version(self) -> ForceMinimum:
        def force(provider: KeyProvider, version: int) -> None:
            if not isinstance(provider, FakeKeyProvider):
                raise TypeError(provider)
            provider._min_version = version

        return force


def _passphrase(directory: Path) -> bytes:
    """Each contract keyring's passphrase, random but recoverable from its directory name."""
    return b"contract-test-passphrase-" + directory.name.encode()


class TestLocalKeyring(KeyProviderContract):
    @pytest.fixture
    def make_key_provider(self, tmp_path: Path) -> KeyProviderFactory:
        counter = itertools.count()

        def make() -> LocalKeyring:
            directory = tmp_path / f"keyring-{next(counter)}-{os.urandom(8).hex()}"
            directory.mkdir()
            return LocalKeyring.create(
                directory / "keyring.json",
                _passphrase(directory),
                clock=make_clock(),
                random_bytes=os.urandom,
                scrypt_n=MIN_SCRYPT_N,
            )

        return make

    @pytest.fixture
    def force_min_decryption_version(self) -> ForceMinimum:
        def force(provider: KeyProvider, version: int) -> None:
            """Open the sealed file with the passphrase through the keyring's own open path,
            check no key bytes remain for retired versions, then lower the in-memory minimum."""
            if not isinstance(provider, LocalKeyring):
                raise TypeError(provider)
            path = provider._path
            reader = LocalKeyring.open(
                path, _passphrase(path.parent), clock=make_clock(), random_bytes=os.urandom
            )
            payload = json.loads(reader._open_sealed(json.loads(path.read_bytes())))
            minimum = payload["min_decryption_version"]
            for entry in payload["versions"]:
                assert ("key" in entry) is (entry["version"] >= minimum), entry
            for old, entry in provider._state.versions.items():
                assert (entry.key is None) is (old < minimum)
            provider._state = dataclasses.replace(provider._state, min_decryption_version=version)

        return force
