"""Password policy and account lockout: the pure rules (hashing is an adapter's job).

Policy (NIST SP 800-63B style, plus the issue's history rule). ``check_password_policy`` raises
``InvalidInputError`` with a message meant for the person choosing the password; it is not an
authentication oracle (it runs when a password is *set*, by its owner or an admin). Rules:

* Unicode NFKC normalisation first (``normalize_password``); the hashing adapter must hash the
  normalised form too, so that the same password typed on another keyboard still verifies.
* At least 12 and at most 1,024 code points; no control characters or lone surrogates.
* Not equal to the username (ignoring case), not on a small built-in deny list of the most common
  passwords long enough to pass the length rule, and not one of the last 4 passwords (the caller
  passes a callback that checks the normalised candidate against the last 4 stored hashes).
* No composition rules (upper/lower/digit/symbol) and no periodic expiry: they push users to
  predictable patterns and do not make passwords stronger.

Lockout (PCI DSS 8.3.4): ``LockoutPolicy`` is a pure state machine over ``LockoutState``. After
``max_failures`` consecutive failures (10) the account is locked for ``lock_duration`` (30
minutes); failures during a lock do not extend it; a success resets the count; after the lock
ends counting starts afresh. The policy refuses settings weaker than those defaults.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024
HISTORY_DEPTH: Final = 4
"""How many previous passwords a new one must differ from (the callback checks them)."""

DEFAULT_MAX_FAILURES: Final = 10
DEFAULT_LOCK_DURATION: Final = timedelta(minutes=30)
PCI_MAX_FAILURES: Final = 10
PCI_MIN_LOCK: Final = timedelta(minutes=30)

COMMON_PASSWORDS: Final = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "123456123456",
        "111111111111",
        "000000000000",
        "123123123123",
        "098765432109",
        "password1234",
        "password12345",
        "password123!",
        "password@123",
        "passwordpassword",
        "password1password1",
        "p@ssw0rd1234",
        "p@ssword1234",
        "qwertyuiop12",
        "qwerty123456",
        "qwertyqwerty",
        "qwertyuiopasdf",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "zaq12wsxcde3",
        "asdfghjkl123",
        "iloveyou1234",
        "abcdefghijkl",
        "abcd1234abcd",
        "abc123abc123",
        "aaaaaaaaaaaa",
        "letmein12345",
        "welcome12345",
        "welcome@1234",
        "changeme1234",
        "administrator",
        "admin1234567",
        "adminadmin123",
        "monkey123456",
        "football1234",
        "baseball1234",
        "sunshine1234",
        "princess1234",
        "superman1234",
        "trustno1trustno1",
        "correcthorsebatterystaple",
        "strongroom123",
        "strongroom1234",
        "strongroom2025",
    }
)
"""Casefolded. Short common passwords are not listed: the length rule refuses them already."""


def normalize_password(password: str) -> str:
    """The form that is checked, hashed and verified: Unicode NFKC."""
    return unicodedata.normalize("NFKC", password)


def _has_forbidden_characters(password: str) -> bool:
    return any(unicodedata.category(c) in {"Cc", "Cs"} for c in password)


def check_password_policy(
    password: str,
    *,
    username: str,
    previous_hashes_match: Callable[[str], bool],
) -> None:
    """Raise ``InvalidInputError`` if ``password`` may not be set for ``username``.

    ``previous_hashes_match(normalized)`` returns whether the candidate verifies against any of
    the user's last ``HISTORY_DEPTH`` password hashes; it is called last, because it is slow.
    """
    if not isinstance(password, str):
        raise InvalidInputError("the password must be text")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInputError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters")
    if _has_forbidden_characters(password):
        raise InvalidInputError("the password must not contain control characters")
    normalized = normalize_password(password)
    if len(normalized) < MIN_PASSWORD_LENGTH:
        raise InvalidInputError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(normalized) > MAX_PASSWORD_LENGTH:
        raise InvalidInputError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters")
    folded = normalized.casefold()
    if folded == normalize_password(username).casefold():
        raise InvalidInputError("the password must not be the same as the username")
    if folded in COMMON_PASSWORDS:
        raise InvalidInputError(
            "this password is one of the most commonly used passwords",
            hint="choose a longer passphrase of unrelated words",
        )
    if previous_hashes_match(normalized):
        raise InvalidInputError(
            f"the password must differ from your last {HISTORY_DEPTH} passwords"
        )


@dataclass(frozen=True)
class LockoutState:
    """Consecutive failures since the last success, and the end of the current lock if any."""

    failures: int = 0
    locked_until: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.failures, int) or self.failures < 0:
            raise InvalidInputError("failures must be a non-negative integer")
        if self.locked_until is not None and self.locked_until.utcoffset() is None:
            raise InvalidInputError("locked_until must be timezone-aware")


def _check_now(now: datetime) -> None:
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise InvalidInputError("now must be a timezone-aware datetime")


@dataclass(frozen=True)
class LockoutPolicy:
    """``max_failures`` consecutive failures lock an account for ``lock_duration``.

    Only stricter settings than PCI DSS's (at most 10 attempts, at least 30 minutes) are
    accepted, so a configuration cannot silently weaken the control.
    """

    max_failures: int = DEFAULT_MAX_FAILURES
    lock_duration: timedelta = DEFAULT_LOCK_DURATION

    def __post_init__(self) -> None:
        if not isinstance(self.max_failures, int) or not 1 <= self.max_failures <= PCI_MAX_FAILURES:
            raise ConfigurationError("max_failures must be between 1 and 10")
        if not isinstance(self.lock_duration, timedelta) or self.lock_duration < PCI_MIN_LOCK:
            raise ConfigurationError("lock_duration must be at least 30 minutes")

    def is_locked(self, state: LockoutState, now: datetime) -> bool:
        """Whether ``state`` is locked at ``now`` (the lock ends exactly at ``locked_until``)."""
        _check_now(now)
        return state.locked_until is not None and now < state.locked_until

    def check_not_locked(self, state: LockoutState, now: datetime) -> None:
        """Raise the opaque ``AuthenticationError`` while locked: checked before the password,
        so a locked account answers exactly like a wrong password and costs no hashing."""
        if self.is_locked(state, now):
            raise AuthenticationError

    def register_failure(self, state: LockoutState, now: datetime) -> LockoutState:
        """The state after a failed attempt at ``now``."""
        if self.is_locked(state, now):
            return state  # attempts during a lock neither count nor extend it
        failures = 1 if state.locked_until is not None else state.failures + 1
        if failures >= self.max_failures:
            return LockoutState(failures=failures, locked_until=now + self.lock_duration)
        return LockoutState(failures=failures)

    def register_success(self, state: LockoutState) -> LockoutState:
        """The state after a successful login: counting starts again from zero.

        Call it only after ``check_not_locked`` passed: a correct password during a lock is
        still refused and must not unlock the account.
        """
        if not isinstance(state, LockoutState):
            raise InvalidInputError("state must be a LockoutState")
        return LockoutState()
