"""Argon2PasswordHasher: Argon2id round trip, opaque failures, NFKC, rehash, history, floors.

Most tests use the low-cost profile (``unsafe_test_profile=True``) so the file stays fast; one
test checks the production parameters end to end.
"""

from __future__ import annotations

import functools
import time
import unicodedata

import argon2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.adapters.identity.passwords import (
    DEFAULT_MEMORY_COST_KIB,
    DEFAULT_PARALLELISM,
    DEFAULT_TIME_COST,
    MAX_MEMORY_COST_KIB,
    Argon2PasswordHasher,
)
from strongroom.core.identity.passwords import MAX_PASSWORD_LENGTH, check_password_policy
from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

PASSWORD = "tangerine orbit canal"


def cheap(time_cost: int = 1, memory_cost_kib: int = 8) -> Argon2PasswordHasher:
    return Argon2PasswordHasher(
        time_cost=time_cost, memory_cost_kib=memory_cost_kib, unsafe_test_profile=True
    )


@pytest.fixture(scope="module")
def hasher() -> Argon2PasswordHasher:
    return cheap()


@pytest.fixture(scope="module")
def stored(hasher: Argon2PasswordHasher) -> str:
    return hasher.hash(PASSWORD)


def test_round_trip(hasher: Argon2PasswordHasher, stored: str) -> None:
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert PASSWORD not in stored
    hasher.verify(stored, PASSWORD)
    assert hasher.hash(PASSWORD) != stored  # fresh salt each time


def test_production_parameters_round_trip() -> None:
    hasher = Argon2PasswordHasher()
    params = argon2.extract_parameters(hasher.hash(PASSWORD))
    assert (params.type, params.time_cost, params.memory_cost, params.parallelism) == (
        argon2.Type.ID,
        DEFAULT_TIME_COST,
        DEFAULT_MEMORY_COST_KIB,
        DEFAULT_PARALLELISM,
    )
    assert (params.hash_len, params.salt_len) == (32, 16)
    stored = hasher.hash(PASSWORD)
    hasher.verify(stored, PASSWORD)
    with pytest.raises(AuthenticationError):
        hasher.verify(stored, PASSWORD + "!")


@pytest.mark.parametrize(
    "attempt",
    [PASSWORD + " ", PASSWORD.upper(), PASSWORD[:-1], "", "x" * (MAX_PASSWORD_LENGTH + 1)],
)
def test_wrong_password(hasher: Argon2PasswordHasher, stored: str, attempt: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        hasher.verify(stored, attempt)
    assert str(info.value) == "authentication failed"


@pytest.mark.parametrize("attempt", [None, b"tangerine orbit canal", 42, "bad \ud800 surrogate"])
def test_non_text_password_is_authentication_error(
    hasher: Argon2PasswordHasher, stored: str, attempt: object
) -> None:
    with pytest.raises(AuthenticationError):
        hasher.verify(stored, attempt)  # type: ignore[arg-type]


def _malformed(stored: str) -> list[object]:
    prefix, _, tag = stored.rpartition("$")
    return [
        "",
        "not a hash",
        "$argon2id$",
        stored[:-5],
        prefix + "$" + tag[:-1] + "!",
        stored.replace("$argon2id$", "$argon2i$"),
        stored.replace("$argon2id$", "$argon2d$"),
        stored.replace("v=19", "v=16"),
        stored.replace("m=8,", f"m={MAX_MEMORY_COST_KIB * 4},"),
        stored.replace("t=1,", "t=1000,"),
        stored.replace("p=1$", "p=255$"),
        stored + "\n",
        stored.replace("$argon2id$", "$ARGON2ID$"),
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        None,
        stored.encode(),
        12,
    ]


def test_malformed_stored_hash_is_authentication_error(
    hasher: Argon2PasswordHasher, stored: str
) -> None:
    cases = _malformed(stored)
    for bad in cases:
        with pytest.raises(AuthenticationError):
            hasher.verify(bad, PASSWORD)  # type: ignore[arg-type]
        with pytest.raises(AuthenticationError):
            hasher.needs_rehash(bad)  # type: ignore[arg-type]
    assert len(cases) == 17


@settings(max_examples=200, deadline=None)
@given(stored=st.text(max_size=200))
def test_arbitrary_stored_text_is_authentication_error(stored: str) -> None:
    hasher = cheap()
    with pytest.raises(AuthenticationError):
        hasher.verify(stored, PASSWORD)


def test_nfkc_equivalent_passwords_verify(hasher: Argon2PasswordHasher) -> None:
    # Full-width C and m, the fi ligature, a precomposed e-acute.
    composed = "\uff23af\u00e9 \uff4dountain \ufb01sh"
    decomposed = unicodedata.normalize("NFD", "Cafe\u0301 mountain fish")
    assert composed != decomposed
    stored = hasher.hash(composed)
    hasher.verify(stored, decomposed)
    hasher.verify(hasher.hash(decomposed), composed)
    with pytest.raises(AuthenticationError):
        hasher.verify(stored, "Cafe mountain fish")


def test_needs_rehash_after_parameter_change(hasher: Argon2PasswordHasher, stored: str) -> None:
    assert hasher.needs_rehash(stored) is False
    assert cheap(time_cost=2).needs_rehash(stored) is True
    assert cheap(memory_cost_kib=16).needs_rehash(stored) is True
    assert Argon2PasswordHasher().needs_rehash(stored) is True
    stronger = cheap(time_cost=2)
    stronger.verify(stored, PASSWORD)  # old hashes still verify after the change
    assert stronger.needs_rehash(stronger.hash(PASSWORD)) is False


def test_matches_any(hasher: Argon2PasswordHasher) -> None:
    history = [hasher.hash(f"old password number {n}") for n in range(4)]
    assert hasher.matches_any(history, "old password number 2") is True
    assert hasher.matches_any(history, "a brand new passphrase") is False
    assert hasher.matches_any([], "old password number 2") is False
    assert hasher.matches_any(["garbage", *history[:1]], "old password number 0") is True
    assert hasher.matches_any(["garbage"], "old password number 0") is False
    with pytest.raises(InvalidInputError):
        hasher.matches_any(history[0], "old password number 0")


def test_matches_any_drives_the_history_rule(hasher: Argon2PasswordHasher) -> None:
    history = [hasher.hash("ﬁrst old passphrase")]  # ligature: stored as NFKC "first ..."
    callback = functools.partial(hasher.matches_any, history)
    with pytest.raises(InvalidInputError, match="last 4"):
        check_password_policy("first old passphrase", username="al", previous_hashes_match=callback)
    check_password_policy("second new passphrase", username="al", previous_hashes_match=callback)


def test_dummy_verify_raises_like_a_wrong_password(hasher: Argon2PasswordHasher) -> None:
    with pytest.raises(AuthenticationError) as dummy:
        hasher.dummy_verify()
    with pytest.raises(AuthenticationError) as wrong:
        hasher.verify(hasher.hash(PASSWORD), "wrong password!")
    assert (type(dummy.value), str(dummy.value)) == (type(wrong.value), str(wrong.value))


def test_dummy_verify_costs_a_real_verification() -> None:
    # Relative, not absolute: a hasher 64 times costlier must make dummy_verify costlier too,
    # which fails if dummy_verify skips the hash or uses fixed cheap parameters.
    def cost(h: Argon2PasswordHasher) -> float:
        start = time.perf_counter()
        for _ in range(5):
            with pytest.raises(AuthenticationError):
                h.dummy_verify()
        return time.perf_counter() - start

    assert cost(cheap(time_cost=4, memory_cost_kib=2048)) > 4 * cost(cheap())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"time_cost": 2},
        {"memory_cost_kib": DEFAULT_MEMORY_COST_KIB - 1},
        {"parallelism": 0},
        {"time_cost": 17},
        {"memory_cost_kib": MAX_MEMORY_COST_KIB + 1},
        {"time_cost": True},
        {"time_cost": 3.0},
        {"unsafe_test_profile": 1},
    ],
)
def test_weaker_or_absurd_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Argon2PasswordHasher(**kwargs)  # type: ignore[arg-type]


def test_low_cost_only_with_unsafe_test_profile() -> None:
    with pytest.raises(ConfigurationError):
        Argon2PasswordHasher(time_cost=1, memory_cost_kib=8)
    assert cheap().memory_cost_kib == 8
    with pytest.raises(ConfigurationError):
        cheap(memory_cost_kib=7)


@pytest.mark.parametrize("bad", ["", None, "x" * (MAX_PASSWORD_LENGTH + 1), "bad \udfff"])
def test_hash_refuses_unhashable_input(hasher: Argon2PasswordHasher, bad: object) -> None:
    with pytest.raises(InvalidInputError):
        hasher.hash(bad)  # type: ignore[arg-type]
