"""Contract suite of the key-provider port (``core.crypto.keys.KeyProvider``).

Every provider (local keyring, the in-memory fake, any future Vault/OpenBao transit, AWS KMS or
PKCS#11 adapter) must pass the same tests. An adapter's test module subclasses the suite and
provides a factory of *independent* providers (each with its own fresh KEK) as a fixture, and a
way to lower a provider's minimum decryption version behind its back:

    class TestLocalKeyring(KeyProviderContract):
        @pytest.fixture
        def make_key_provider(self, tmp_path): ...  # () -> KeyProvider, a new one per call

        @pytest.fixture
        def force_min_decryption_version(self): ...  # (provider, version) -> None

Beyond the port docstring, the suite pins these behaviours so that all providers agree:
data keys are exactly 32 bytes (others: ``InvalidInputError``); an unknown key id, an unknown
version and a retired version raise ``KeyAccessError``; a wrapped key that was altered, or is
opened with another context or by another provider, raises ``KeyAccessError`` or
``IntegrityError`` and never returns bytes; versions start at 1 and grow by one per rotation;
``set_min_decryption_version`` refuses values below 1 or above the current version with
``InvalidInputError`` and silently keeps the higher minimum when asked to lower it.

Retirement is crypto-shredding, not a flag: once a version is retired its key material is gone
from the provider's state, so a wrapped key of that version stays unreadable even when the
minimum is forced down again (by someone editing the stored state, or by a bug).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from strongroom.core.crypto.keys import DATA_KEY_BYTES, KeyProvider, WrappedKey
from strongroom.errors import IntegrityError, InvalidInputError, KeyAccessError

REFUSED = (KeyAccessError, IntegrityError)
"""What an unwrap that must fail may raise (and nothing else)."""

CONTEXT = b"strongroom/test-context\x00model=fraud;version=3;path=model.onnx"

KeyProviderFactory = Callable[[], KeyProvider]
ForceMinimum = Callable[[KeyProvider, int], None]
"""Lowers a provider's minimum decryption version by editing its state, bypassing the API."""


def data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


class KeyProviderContract:
    """Subclass it and define the ``make_key_provider`` fixture."""

    @pytest.fixture
    def make_key_provider(self) -> KeyProviderFactory:
        raise NotImplementedError("the adapter's test class provides make_key_provider")

    @pytest.fixture
    def force_min_decryption_version(self) -> ForceMinimum:
        raise NotImplementedError("the adapter's test class provides force_min_decryption_version")

    @pytest.fixture
    def provider(self, make_key_provider: KeyProviderFactory) -> KeyProvider:
        return make_key_provider()

    # --- wrap / unwrap ---------------------------------------------------------------------------

    def test_key_id_is_a_non_empty_string(self, provider: KeyProvider) -> None:
        assert isinstance(provider.key_id, str)
        assert provider.key_id

    def test_fresh_provider_starts_at_version_one(self, provider: KeyProvider) -> None:
        assert provider.current_version() == 1
        assert [v.version for v in provider.versions()] == [1]

    def test_round_trip_under_the_current_version(self, provider: KeyProvider) -> None:
        key = data_key()
        wrapped = provider.wrap(key, CONTEXT)
        assert wrapped.key_id == provider.key_id
        assert wrapped.version == provider.current_version()
        assert key not in wrapped.ciphertext
        assert provider.unwrap(wrapped, CONTEXT) == key

    def test_wrapping_twice_gives_two_keys_that_both_open(self, provider: KeyProvider) -> None:
        key = data_key()
        first, second = provider.wrap(key, CONTEXT), provider.wrap(key, CONTEXT)
        assert provider.unwrap(first, CONTEXT) == provider.unwrap(second, CONTEXT) == key

    @pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
    def test_wrap_refuses_data_keys_of_other_lengths(
        self, provider: KeyProvider, length: int
    ) -> None:
        with pytest.raises(InvalidInputError):
            provider.wrap(os.urandom(length), CONTEXT)

    @pytest.mark.parametrize(
        "other", [b"", CONTEXT[:-1], CONTEXT + b"\x00", CONTEXT.replace(b"3", b"4")]
    )
    def test_other_context_is_refused(self, provider: KeyProvider, other: bytes) -> None:
        wrapped = provider.wrap(data_key(), CONTEXT)
        with pytest.raises(REFUSED):
            provider.unwrap(wrapped, other)

    def test_every_altered_byte_is_refused(self, provider: KeyProvider) -> None:
        wrapped = provider.wrap(data_key(), CONTEXT)
        for index in range(len(wrapped.ciphertext)):
            altered = bytearray(wrapped.ciphertext)
            altered[index] ^= 0x01
            with pytest.raises(REFUSED):
                provider.unwrap(dataclasses.replace(wrapped, ciphertext=bytes(altered)), CONTEXT)

    def test_truncated_or_extended_ciphertext_is_refused(self, provider: KeyProvider) -> None:
        wrapped = provider.wrap(data_key(), CONTEXT)
        text = wrapped.ciphertext
        for altered in (b"", text[:1], text[:-1], text + b"\x00", text + text):
            with pytest.raises(REFUSED):
                provider.unwrap(dataclasses.replace(wrapped, ciphertext=altered), CONTEXT)

    @pytest.mark.parametrize("version", [0, -1, 2, 3, 2**32])
    def test_unknown_version_is_a_key_access_error(
        self, provider: KeyProvider, version: int
    ) -> None:
        wrapped = provider.wrap(data_key(), CONTEXT)
        with pytest.raises(KeyAccessError):
            provider.unwrap(dataclasses.replace(wrapped, version=version), CONTEXT)

    def test_other_key_id_is_a_key_access_error(self, provider: KeyProvider) -> None:
        wrapped = provider.wrap(data_key(), CONTEXT)
        for key_id in ("", wrapped.key_id + "x", "other:" + wrapped.key_id):
            with pytest.raises(KeyAccessError):
                provider.unwrap(dataclasses.replace(wrapped, key_id=key_id), CONTEXT)

    def test_an_independent_provider_cannot_unwrap(
        self, make_key_provider: KeyProviderFactory
    ) -> None:
        first, second = make_key_provider(), make_key_provider()
        wrapped = first.wrap(data_key(), CONTEXT)
        with pytest.raises(REFUSED):
            second.unwrap(wrapped, CONTEXT)

    # --- rotation and retirement -----------------------------------------------------------------

    def test_rotate_makes_a_new_current_version(self, provider: KeyProvider) -> None:
        old_key = data_key()
        old = provider.wrap(old_key, CONTEXT)
        info = provider.rotate()
        assert info.version == old.version + 1 == provider.current_version()
        assert info.key_id == provider.key_id
        assert not info.retired
        new_key = data_key()
        new = provider.wrap(new_key, CONTEXT)
        assert new.version == info.version
        assert provider.unwrap(old, CONTEXT) == old_key
        assert provider.unwrap(new, CONTEXT) == new_key

    def test_versions_are_listed_in_order_with_aware_times(self, provider: KeyProvider) -> None:
        provider.rotate()
        provider.rotate()
        versions = provider.versions()
        assert [v.version for v in versions] == [1, 2, 3]
        assert all(v.key_id == provider.key_id and not v.retired for v in versions)
        assert all(v.created_at.utcoffset() is not None for v in versions)
        assert versions[0].created_at <= versions[1].created_at <= versions[2].created_at

    def test_retired_versions_no_longer_unwrap(self, provider: KeyProvider) -> None:
        old = provider.wrap(data_key(), CONTEXT)
        provider.rotate()
        key = data_key()
        provider.set_min_decryption_version(2)
        with pytest.raises(KeyAccessError):
            provider.unwrap(old, CONTEXT)
        assert provider.unwrap(provider.wrap(key, CONTEXT), CONTEXT) == key
        assert [(v.version, v.retired) for v in provider.versions()] == [(1, True), (2, False)]

    def test_minimum_version_never_lowers(self, provider: KeyProvider) -> None:
        old = provider.wrap(data_key(), CONTEXT)
        provider.rotate()
        provider.set_min_decryption_version(2)
        provider.set_min_decryption_version(1)
        with pytest.raises(KeyAccessError):
            provider.unwrap(old, CONTEXT)
        assert provider.versions()[0].retired

    def test_retired_key_material_is_gone_even_if_the_minimum_is_lowered(
        self, provider: KeyProvider, force_min_decryption_version: ForceMinimum
    ) -> None:
        old = provider.wrap(data_key(), CONTEXT)
        provider.rotate()
        middle = provider.wrap(data_key(), CONTEXT)
        provider.rotate()
        provider.set_min_decryption_version(3)
        force_min_decryption_version(provider, 1)
        for wrapped in (old, middle):
            with pytest.raises(KeyAccessError):
                provider.unwrap(wrapped, CONTEXT)
        assert [(v.version, v.retired) for v in provider.versions()] == [
            (1, True), (2, True), (3, False),
        ]  # fmt: skip
        key = data_key()
        assert provider.unwrap(provider.wrap(key, CONTEXT), CONTEXT) == key

    def test_retired_versions_keep_their_number_and_creation_time(
        self, provider: KeyProvider
    ) -> None:
        provider.rotate()
        before = provider.versions()
        provider.set_min_decryption_version(2)
        after = provider.versions()
        assert [(v.version, v.created_at) for v in after] == [
            (v.version, v.created_at) for v in before
        ]
        assert provider.rotate().version == 3

    @pytest.mark.parametrize("version", [0, -1, 3])
    def test_minimum_version_outside_the_versions_is_refused(
        self, provider: KeyProvider, version: int
    ) -> None:
        provider.rotate()
        with pytest.raises(InvalidInputError):
            provider.set_min_decryption_version(version)
        assert not any(v.retired for v in provider.versions())

    def test_the_current_version_can_be_the_minimum(self, provider: KeyProvider) -> None:
        provider.set_min_decryption_version(1)
        key = data_key()
        assert provider.unwrap(provider.wrap(key, CONTEXT), CONTEXT) == key

    def test_concurrent_wraps_and_unwraps_agree(self, provider: KeyProvider) -> None:
        def round_trip(_: int) -> bool:
            key = data_key()
            wrapped: WrappedKey = provider.wrap(key, CONTEXT)
            return provider.unwrap(wrapped, CONTEXT) == key

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert all(pool.map(round_trip, range(64)))
