"""Password policy (length after NFKC, username, deny list, history) and the lockout state
machine (10 failures lock for 30 minutes, success resets)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.identity.passwords import (
    COMMON_PASSWORDS,
    LockoutPolicy,
    LockoutState,
    check_password_policy,
    normalize_password,
)
from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GOOD = "tangerine orbit canal"


def never(_: str) -> bool:
    return False


def check(password: str, username: str = "alice", history: set[str] | None = None) -> None:
    seen = history or set()
    check_password_policy(password, username=username, previous_hashes_match=seen.__contains__)


# --- policy ----------------------------------------------------------------------------------


def test_good_password_passes() -> None:
    check(GOOD)


@pytest.mark.parametrize(("length", "ok"), [(11, False), (12, True), (1024, True), (1025, False)])
def test_length_bounds(length: int, ok: bool) -> None:
    password = ("abcdefghij" * 103)[:length]
    if ok:
        check(password)
    else:
        with pytest.raises(InvalidInputError, match=r"at (least 12|most 1024) characters"):
            check(password)


def test_length_is_counted_after_nfkc() -> None:
    combining = "e\u0301" * 6  # 12 code points, NFKC composes them into 6
    assert len(normalize_password(combining)) == 6
    with pytest.raises(InvalidInputError, match="at least 12"):
        check(combining)
    ligatures = "\ufb03" * 4  # 4 code points, NFKC expands each to "ffi"
    assert len(normalize_password(ligatures)) == 12
    check(ligatures)


def test_nfkc_expansion_past_the_maximum_is_refused() -> None:
    expanding = "\ufb03" * 342  # 342 code points, 1026 after NFKC
    with pytest.raises(InvalidInputError, match="at most 1024"):
        check(expanding)


@pytest.mark.parametrize("bad", ["\x00", "\n", "\t", "\x7f", "\ud800"])
def test_control_characters_and_lone_surrogates_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="control characters"):
        check(GOOD + bad)


def test_unicode_and_spaces_are_allowed() -> None:
    check("mot de passe très long ☃")
    check("пароль-из-слов")


@pytest.mark.parametrize(
    "password", ["Alice.Smith.2025", "ALICE.SMITH.2025", "\uff21lice.Smith.2025"]
)
def test_password_equal_to_username_is_refused(password: str) -> None:
    with pytest.raises(InvalidInputError, match="same as the username"):
        check(password, username="alice.smith.2025")


def test_password_containing_username_is_allowed() -> None:
    check("alice.smith.2025 rides a bike", username="alice.smith.2025")


@pytest.mark.parametrize(
    "password", ["password1234", "Password1234", "PASSWORD1234", "Qwerty123456"]
)
def test_common_passwords_are_refused(password: str) -> None:
    with pytest.raises(InvalidInputError, match="most commonly used"):
        check(password)


def test_deny_list_is_normalised_and_long_enough_to_matter() -> None:
    assert len(COMMON_PASSWORDS) >= 24
    for word in COMMON_PASSWORDS:
        assert word == normalize_password(word).casefold()
        assert len(word) >= 12
        with pytest.raises(InvalidInputError, match="most commonly used"):
            check(word.upper())


def test_history_callback_gets_the_normalised_password_and_refuses_a_match() -> None:
    seen: list[str] = []

    def matches(candidate: str) -> bool:
        seen.append(candidate)
        return candidate == "ffi plus extra words"

    with pytest.raises(InvalidInputError, match="last 4 passwords"):
        check_password_policy(
            "\ufb03 plus extra words", username="alice", previous_hashes_match=matches
        )
    assert seen == ["ffi plus extra words"]


def test_history_callback_is_not_called_when_another_rule_fails() -> None:
    calls: list[str] = []

    def matches(candidate: str) -> bool:
        calls.append(candidate)
        return False

    for bad in ("short", "password1234", "alice" * 3):
        with pytest.raises(InvalidInputError):
            check_password_policy(bad, username="alice" * 3, previous_hashes_match=matches)
    assert calls == []


def test_not_text_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        check_password_policy(b"bytes password", username="a", previous_hashes_match=never)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.text(max_size=40), st.text(max_size=12))
def test_policy_only_raises_invalid_input(password: str, username: str) -> None:
    try:
        check_password_policy(password, username=username, previous_hashes_match=never)
    except InvalidInputError:
        return
    normalized = unicodedata.normalize("NFKC", password)
    assert 12 <= len(normalized) <= 1024
    assert normalized.casefold() != unicodedata.normalize("NFKC", username).casefold()
    assert normalized.casefold() not in COMMON_PASSWORDS


# --- lockout ---------------------------------------------------------------------------------

POLICY = LockoutPolicy()
FRESH = LockoutState()


def fail(times: int, state: LockoutState = FRESH, at: datetime = NOW) -> LockoutState:
    for i in range(times):
        state = POLICY.register_failure(state, at + timedelta(seconds=i))
    return state


def test_nine_failures_do_not_lock_the_tenth_does() -> None:
    nine = fail(9)
    assert nine.failures == 9
    assert not POLICY.is_locked(nine, NOW + timedelta(seconds=9))
    ten = POLICY.register_failure(nine, NOW + timedelta(seconds=9))
    assert ten.locked_until == NOW + timedelta(seconds=9, minutes=30)
    assert POLICY.is_locked(ten, NOW + timedelta(seconds=9))


def test_lock_lasts_exactly_thirty_minutes() -> None:
    locked = fail(10, at=NOW - timedelta(seconds=9))
    assert locked.locked_until == NOW + timedelta(minutes=30)
    assert POLICY.is_locked(locked, NOW + timedelta(minutes=30) - timedelta(microseconds=1))
    assert not POLICY.is_locked(locked, NOW + timedelta(minutes=30))


def test_check_not_locked_raises_opaque_authentication_error() -> None:
    locked = fail(10)
    with pytest.raises(AuthenticationError) as excinfo:
        POLICY.check_not_locked(locked, NOW + timedelta(minutes=1))
    assert str(excinfo.value) == "authentication failed"
    POLICY.check_not_locked(fail(9), NOW + timedelta(minutes=1))


def test_failures_during_a_lock_do_not_extend_it() -> None:
    locked = fail(10)
    again = fail(50, locked, at=NOW + timedelta(minutes=10))
    assert again == locked


def test_after_the_lock_counting_starts_afresh() -> None:
    locked = fail(10)
    after = POLICY.register_failure(locked, locked.locked_until or NOW)
    assert after == LockoutState(failures=1)
    assert not POLICY.is_locked(after, locked.locked_until or NOW)
    relocked = fail(9, after, at=NOW + timedelta(hours=1))
    assert relocked.locked_until == NOW + timedelta(hours=1, seconds=8, minutes=30)


def test_success_resets() -> None:
    state = POLICY.register_success(fail(9))
    assert state == LockoutState()
    assert fail(9, state).locked_until is None


def test_stricter_policy_is_configurable() -> None:
    policy = LockoutPolicy(max_failures=3, lock_duration=timedelta(hours=2))
    state = LockoutState()
    for i in range(3):
        state = policy.register_failure(state, NOW + timedelta(seconds=i))
    assert state.locked_until == NOW + timedelta(hours=2, seconds=2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 11},
        {"max_failures": 0},
        {"lock_duration": timedelta(minutes=29)},
        {"lock_duration": timedelta(minutes=-30)},
    ],
)
def test_weaker_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        LockoutPolicy(**kwargs)  # type: ignore[arg-type]


def test_lockout_inputs_are_validated() -> None:
    with pytest.raises(InvalidInputError):
        POLICY.is_locked(LockoutState(), datetime(2025, 1, 1))  # noqa: DTZ001 - naive on purpose
    with pytest.raises(InvalidInputError):
        LockoutState(failures=-1)
    with pytest.raises(InvalidInputError):
        LockoutState(locked_until=datetime(2025, 1, 1))  # noqa: DTZ001 - naive on purpose


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20 * 60)), max_size=60))
def test_lockout_matches_a_simple_model(events: list[tuple[bool, int]]) -> None:
    """Random successes/failures at increasing times against a plain re-statement of the rule.

    As the server does, an attempt while locked is refused before the password is checked, so
    it registers nothing (neither failure nor success).
    """
    state, now = LockoutState(), NOW
    failures, locked_until = 0, None
    for success, gap in events:
        now += timedelta(seconds=gap)
        locked = locked_until is not None and now < locked_until
        assert POLICY.is_locked(state, now) == locked
        if locked:
            continue
        if success:
            state, failures, locked_until = POLICY.register_success(state), 0, None
            continue
        failures = 1 if locked_until is not None else failures + 1
        locked_until = now + timedelta(minutes=30) if failures >= 10 else None
        state = POLICY.register_failure(state, now)
        assert state == LockoutState(failures, locked_until)
