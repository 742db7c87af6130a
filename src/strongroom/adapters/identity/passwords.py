"""Password hashing with Argon2id (RFC 9106), for human login to the admin API and dashboard.

The policy (length, deny list, history, lockout) is pure and lives in
``strongroom.core.identity.passwords``; this adapter only hashes and verifies, with argon2-cffi.

Parameters (``DEFAULT_*``, also the floor: weaker ones raise ``ConfigurationError``):

* Argon2id, version 0x13, 16-byte random salt, 32-byte tag: RFC 9106 section 4 recommends
  Argon2id, a 128-bit salt and a 256-bit tag.
* ``time_cost=3``, ``memory_cost=64 MiB``: the memory and passes of RFC 9106's second
  recommended option (for memory-constrained settings), and well above OWASP's Password Storage
  Cheat Sheet minimum for Argon2id (19 MiB, t=2, p=1) and its equivalent t=3 row (12 MiB).
* ``parallelism=1``: RFC 9106 uses 4 lanes. Lanes split the same memory, so an attacker's cost
  per guess (memory x passes) is unchanged; one lane keeps a login on one core, so concurrent
  logins cannot take every core of the server.

Invariants:

* What is hashed and verified is always ``normalize_password(password)`` (NFKC) as UTF-8.
* ``verify`` raises ``AuthenticationError`` and nothing else for any bad input: wrong password,
  non-text, lone surrogates, an over-long password, a stored hash that is malformed, not
  Argon2id v19, or whose parameters exceed ``MAX_*`` (so a tampered row cannot make a login
  allocate gigabytes).
* ``dummy_verify`` costs the same as a real verification and always raises, so a login for an
  unknown user takes as long and fails the same way as a wrong password (no user enumeration).
* The low-cost profile used by the test suite is reachable only with ``unsafe_test_profile=True``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Final, NoReturn

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from strongroom.core.identity.passwords import MAX_PASSWORD_LENGTH, normalize_password
from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

DEFAULT_TIME_COST: Final = 3
DEFAULT_MEMORY_COST_KIB: Final = 64 * 1024
DEFAULT_PARALLELISM: Final = 1
HASH_LEN: Final = 32
SALT_LEN: Final = 16
ARGON2_VERSION: Final = 0x13

MAX_TIME_COST: Final = 16
MAX_MEMORY_COST_KIB: Final = 1024 * 1024
MAX_PARALLELISM: Final = 16
"""Ceilings for configured *and* stored parameters: a stored hash beyond them is refused."""

UNSAFE_TEST_MIN_MEMORY_KIB: Final = 8
_DUMMY_CANDIDATE: Final = "strongroom/dummy-verify"
_PHC_RE: Final = re.compile(
    r"\$argon2id\$v=[0-9]{1,3}\$m=[0-9]{1,10},t=[0-9]{1,10},p=[0-9]{1,3}"
    r"\$[A-Za-z0-9+/]{22,88}\$[A-Za-z0-9+/]{43,88}"
)
"""Argon2id in PHC string form with unpadded standard base64 salt and tag (16-64 bytes)."""


def _check_cost(name: str, value: object, floor: int, ceiling: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not floor <= value <= ceiling:
        raise ConfigurationError(f"argon2 {name} must be an integer from {floor} to {ceiling}")
    return value


def _encode_candidate(password: object) -> bytes:
    """The bytes to verify, or ``AuthenticationError`` for input no stored password can match."""
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
        raise AuthenticationError
    try:
        return normalize_password(password).encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise AuthenticationError from exc


class Argon2PasswordHasher:
    """Hashes and verifies passwords with Argon2id at or above the parameters documented above.

    ``unsafe_test_profile=True`` lifts the floors (down to argon2's own minimum) so that tests
    stay fast; never set it outside tests. The ceilings always apply.
    """

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost_kib: int = DEFAULT_MEMORY_COST_KIB,
        parallelism: int = DEFAULT_PARALLELISM,
        unsafe_test_profile: bool = False,
    ) -> None:
        if not isinstance(unsafe_test_profile, bool):
            raise ConfigurationError("unsafe_test_profile must be a boolean")
        weak = unsafe_test_profile
        self.time_cost = _check_cost(
            "time_cost", time_cost, 1 if weak else DEFAULT_TIME_COST, MAX_TIME_COST
        )
        self.parallelism = _check_cost(
            "parallelism", parallelism, DEFAULT_PARALLELISM, MAX_PARALLELISM
        )
        memory_floor = UNSAFE_TEST_MIN_MEMORY_KIB * parallelism if weak else DEFAULT_MEMORY_COST_KIB
        self.memory_cost_kib = _check_cost(
            "memory_cost_kib", memory_cost_kib, memory_floor, MAX_MEMORY_COST_KIB
        )
        self._hasher = argon2.PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_cost_kib,
            parallelism=self.parallelism,
            hash_len=HASH_LEN,
            salt_len=SALT_LEN,
            type=argon2.Type.ID,
        )
        # Made with this hasher's own parameters, so that dummy_verify costs what verify costs.
        self._dummy_hash = self._hasher.hash(secrets.token_bytes(32))

    def hash(self, password: str) -> str:
        """The PHC-format Argon2id hash of ``normalize_password(password)``, with a fresh salt.

        Run ``check_password_policy`` first; this only refuses what cannot be hashed at all.
        """
        if not isinstance(password, str) or not password:
            raise InvalidInputError("the password must be non-empty text")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidInputError(
                f"the password must be at most {MAX_PASSWORD_LENGTH} characters"
            )
        try:
            encoded = normalize_password(password).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError("the password must be valid Unicode text") from exc
        return self._hasher.hash(encoded)

    def verify(self, stored_hash: str, password: str) -> None:
        """Return if ``password`` matches ``stored_hash``; raise ``AuthenticationError`` otherwise.

        Call ``LockoutPolicy.check_not_locked`` before, ``needs_rehash`` after a success.
        """
        candidate = _encode_candidate(password)
        self._check_stored(stored_hash)
        try:
            self._hasher.verify(stored_hash, candidate)
        except (VerificationError, InvalidHashError) as exc:
            raise AuthenticationError from exc

    def dummy_verify(self) -> NoReturn:
        """Spend one verification's time and raise ``AuthenticationError``: for unknown users.

        The login path calls it when no user (or no password) exists for the name given, so that
        the answer and its timing are those of a wrong password.
        """
        self.verify(self._dummy_hash, _DUMMY_CANDIDATE)
        raise AuthenticationError  # unreachable unless 256 random bits were guessed

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether a hash that just verified was made with other parameters than this hasher's.

        After a successful ``verify``, store ``hash(password)`` when this is true, so that hashes
        follow the configuration upward. A malformed hash raises ``AuthenticationError``.
        """
        self._check_stored(stored_hash)
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError) as exc:
            raise AuthenticationError from exc

    def matches_any(self, previous_hashes: Iterable[str], password: str) -> bool:
        """Whether ``password`` verifies against any of ``previous_hashes`` (the history rule).

        Pass ``functools.partial(hasher.matches_any, last_four_hashes)`` to
        ``check_password_policy`` as ``previous_hashes_match``. A malformed old hash matches
        nothing: it must not stop its owner from choosing a new password.
        """
        if isinstance(previous_hashes, str):
            raise InvalidInputError("previous_hashes must be a collection of hashes, not one")
        matched = False
        for stored in previous_hashes:
            try:
                self.verify(stored, password)
            except AuthenticationError:
                continue
            matched = True
        return matched

    @staticmethod
    def _check_stored(stored_hash: object) -> None:
        """Refuse hashes that are not Argon2id v19 within the ceilings, before any hashing."""
        if not isinstance(stored_hash, str) or not _PHC_RE.fullmatch(stored_hash):
            raise AuthenticationError
        try:
            params = argon2.extract_parameters(stored_hash)
        except (InvalidHashError, ValueError) as exc:
            raise AuthenticationError from exc
        if (
            params.version != ARGON2_VERSION
            or not 1 <= params.time_cost <= MAX_TIME_COST
            or not 1 <= params.parallelism <= MAX_PARALLELISM
            or not UNSAFE_TEST_MIN_MEMORY_KIB * params.parallelism
            <= params.memory_cost
            <= MAX_MEMORY_COST_KIB
            or params.hash_len < HASH_LEN
            or params.salt_len < SALT_LEN
        ):
            raise AuthenticationError
