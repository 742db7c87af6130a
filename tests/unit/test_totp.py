"""TOTP: RFC 6238 Appendix B vectors through TotpVerifier, window edges, replay, malformed input."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.adapters.identity.totp import (
    SECRET_BYTES,
    TotpVerifier,
    new_totp_secret,
    provisioning_uri,
)
from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

# RFC 6238 Appendix B: the SHA-1 seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]
T0 = 1_750_000_020  # a multiple of 30 (and of 60): a step boundary


class Clock:
    def __init__(self, unix: float) -> None:
        self.now = datetime.fromtimestamp(unix, UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def secret() -> str:
    return new_totp_secret(os.urandom)


def code_at(secret: str, unix: int, digits: int = 6) -> str:
    """Reference code from pyotp's own at(), independent of TotpVerifier's step arithmetic."""
    return pyotp.TOTP(secret, digits=digits).at(unix)


@pytest.mark.parametrize(("unix", "expected"), RFC_VECTORS)
def test_rfc6238_appendix_b_sha1(unix: int, expected: str) -> None:
    verifier = TotpVerifier(Clock(unix), digits=8, valid_window=0)
    assert verifier.verify(RFC_SECRET, expected, last_used_step=None) == unix // 30
    wrong = f"{(int(expected) + 1) % 10**8:08d}"
    with pytest.raises(AuthenticationError):
        verifier.verify(RFC_SECRET, wrong, last_used_step=None)


def test_rfc6238_vectors_are_refused_at_other_times() -> None:
    for unix, expected in RFC_VECTORS:
        verifier = TotpVerifier(Clock(unix + 90), digits=8, valid_window=1)
        with pytest.raises(AuthenticationError):
            verifier.verify(RFC_SECRET, expected, last_used_step=None)


def test_new_secret_is_160_bit_base32() -> None:
    seen: list[int] = []

    def fixed(n: int) -> bytes:
        seen.append(n)
        return bytes(range(n))

    secret = new_totp_secret(fixed)
    assert seen == [SECRET_BYTES] and SECRET_BYTES * 8 == 160
    assert len(secret) == 32 and secret == secret.upper() and "=" not in secret
    assert base64.b32decode(secret) == bytes(range(20))
    assert new_totp_secret(os.urandom) != new_totp_secret(os.urandom)
    with pytest.raises(ConfigurationError):
        new_totp_secret(lambda n: b"\0" * (n - 1))


@pytest.mark.parametrize("offset", [-30, 0, 29, 30])
def test_window_accepts_previous_current_and_next_step(secret: str, offset: int) -> None:
    clock = Clock(T0)
    code_time = T0 + offset
    step = TotpVerifier(clock).verify(secret, code_at(secret, code_time), last_used_step=None)
    assert step == code_time // 30


@pytest.mark.parametrize("offset", [-31, -60, 60, 90])
def test_window_refuses_codes_two_steps_away(secret: str, offset: int) -> None:
    with pytest.raises(AuthenticationError):
        TotpVerifier(Clock(T0)).verify(secret, code_at(secret, T0 + offset), last_used_step=None)


def test_window_zero_accepts_only_the_current_step(secret: str) -> None:
    verifier = TotpVerifier(Clock(T0 + 29.9), valid_window=0)
    assert verifier.verify(secret, code_at(secret, T0), last_used_step=None) == T0 // 30
    for other in (T0 - 1, T0 + 30):
        with pytest.raises(AuthenticationError):
            verifier.verify(secret, code_at(secret, other), last_used_step=None)


def test_replay_of_same_or_earlier_step_is_refused(secret: str) -> None:
    clock = Clock(T0)
    verifier = TotpVerifier(clock)
    code = code_at(secret, T0)
    used = verifier.verify(secret, code, last_used_step=None)
    with pytest.raises(AuthenticationError):
        verifier.verify(secret, code, last_used_step=used)
    with pytest.raises(AuthenticationError):  # the previous step's code, still in the window
        verifier.verify(secret, code_at(secret, T0 - 30), last_used_step=used)
    clock.advance(30)  # the same code is still inside the window, but already used
    with pytest.raises(AuthenticationError):
        verifier.verify(secret, code, last_used_step=used)
    assert verifier.verify(secret, code_at(secret, T0 + 30), last_used_step=used) == used + 1


def test_code_of_next_step_then_current_is_refused(secret: str) -> None:
    verifier = TotpVerifier(Clock(T0))
    used = verifier.verify(secret, code_at(secret, T0 + 30), last_used_step=None)
    with pytest.raises(AuthenticationError):
        verifier.verify(secret, code_at(secret, T0), last_used_step=used)


@pytest.mark.parametrize(
    "transform",
    [
        lambda c: c[:-1],
        lambda c: c + "0",
        lambda c: " " + c,
        lambda c: c + "\n",
        lambda c: c[:3] + " " + c[3:],
        lambda c: "".join(chr(ord(d) - ord("0") + 0xFF10) for d in c),  # full-width digits
        lambda c: "".join(chr(ord(d) - ord("0") + 0x0660) for d in c),  # Arabic-Indic digits
        lambda c: "+" + c[1:],
        lambda c: c.encode(),
        int,
        lambda _: None,
    ],
)
def test_malformed_codes_are_refused(secret: str, transform: object) -> None:
    verifier = TotpVerifier(Clock(T0))
    good = code_at(secret, T0)
    with pytest.raises(AuthenticationError):
        verifier.verify(secret, transform(good), last_used_step=None)  # type: ignore[operator]
    assert verifier.verify(secret, good, last_used_step=None) == T0 // 30


@pytest.mark.parametrize(
    "bad_secret",
    [
        "",
        "not base32!",
        base64.b32encode(b"short secret").decode().rstrip("="),  # 96 bits
        base64.b32encode(bytes(20)).decode().lower(),
        base64.b32encode(bytes(21)).decode(),  # padded
        None,
    ],
)
def test_malformed_secret_is_authentication_error(bad_secret: object) -> None:
    with pytest.raises(AuthenticationError):
        TotpVerifier(Clock(T0)).verify(bad_secret, "123456", last_used_step=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("last", [-1, True, "5", 1.5])
def test_malformed_last_used_step_is_refused(secret: str, last: object) -> None:
    with pytest.raises(AuthenticationError):
        TotpVerifier(Clock(T0)).verify(secret, code_at(secret, T0), last_used_step=last)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(code=st.text(max_size=12))
def test_arbitrary_text_codes_only_raise_authentication_error(code: str) -> None:
    secret = base64.b32encode(bytes(range(20))).decode()
    verifier = TotpVerifier(Clock(T0))
    valid = {code_at(secret, T0 + d) for d in (-30, 0, 30)}
    if code in valid:
        assert verifier.verify(secret, code, last_used_step=None) in {
            T0 // 30 + d for d in (-1, 0, 1)
        }
    else:
        with pytest.raises(AuthenticationError):
            verifier.verify(secret, code, last_used_step=None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"digits": 5},
        {"digits": 9},
        {"period": 10},
        {"period": 121},
        {"valid_window": 2},
        {"valid_window": -1},
        {"digits": True},
    ],
)
def test_unsafe_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        TotpVerifier(Clock(T0), **kwargs)  # type: ignore[arg-type]


def test_naive_clock_is_a_configuration_error(secret: str) -> None:
    verifier = TotpVerifier(lambda: datetime(2025, 6, 1, 12, 0))  # noqa: DTZ001 - the point
    with pytest.raises(ConfigurationError):
        verifier.verify(secret, "123456", last_used_step=None)


def test_period_60_uses_60_second_steps(secret: str) -> None:
    verifier = TotpVerifier(Clock(T0 + 59), period=60, valid_window=0)
    code = pyotp.TOTP(secret, interval=60).at(T0 + 59)
    assert verifier.verify(secret, code, last_used_step=None) == (T0 + 59) // 60


def test_provisioning_uri(secret: str) -> None:
    uri = provisioning_uri(secret, "alice@example.com", "Strongroom Bank")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parts.path == "/Strongroom%20Bank:alice%40example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret] and query["issuer"] == ["Strongroom Bank"]
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.at(T0) == code_at(secret, T0)
    eight = pyotp.parse_uri(provisioning_uri(secret, "a", "b", digits=8, period=60))
    assert (eight.digits, eight.interval) == (8, 60)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("account", "issuer"), [("a:b", "Strongroom"), ("alice", "Evil:Corp"), ("", "x"), ("a", "")]
)
def test_provisioning_uri_refuses_ambiguous_labels(secret: str, account: str, issuer: str) -> None:
    with pytest.raises(InvalidInputError):
        provisioning_uri(secret, account, issuer)


def test_provisioning_uri_refuses_bad_secret() -> None:
    with pytest.raises(InvalidInputError):
        provisioning_uri("abc", "alice", "Strongroom")
