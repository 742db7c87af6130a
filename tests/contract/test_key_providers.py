"""The KeyProvider contract on every implementation: the in-memory fake and the local keyring."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.adapters.kms.local_keyring import LocalKeyring
from strongroom.core.crypto.sealing import MIN_SCRYPT_N
from strongroom.core.types import Clock
from strongroom.testing.contracts.keys import KeyProviderContract, KeyProviderFactory
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


class TestLocalKeyring(KeyProviderContract):
    @pytest.fixture
    def make_key_provider(self, tmp_path: Path) -> KeyProviderFactory:
        counter = itertools.count()

        def make() -> LocalKeyring:
            directory = tmp_path / f"keyring-{next(counter)}"
            directory.mkdir()
            return LocalKeyring.create(
                directory / "keyring.json",
                b"contract-test-passphrase-" + os.urandom(8).hex().encode(),
                clock=make_clock(),
                random_bytes=os.urandom,
                scrypt_n=MIN_SCRYPT_N,
            )

        return make
