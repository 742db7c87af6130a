"""TOTP second factor (RFC 6238, HMAC-SHA-1 as authenticator apps implement it), using pyotp.

``new_totp_secret`` makes a 160-bit secret (RFC 4226 section 4 recommends 160 bits) as
unpadded upper-case base32; ``provisioning_uri`` turns it into the ``otpauth://`` URI an
authenticator app scans. ``TotpVerifier.verify`` checks a code at the injected clock's time.

Invariants of ``verify`` (all failures raise the opaque ``AuthenticationError``):

* The code must be exactly ``digits`` ASCII digits: anything else is refused before any HMAC
  (pyotp's own comparison NFKC-normalises, which would accept full-width digits).
* Time step ``T = floor(unix_time / period)`` (RFC 6238 section 4.2, T0 = 0). Steps
  ``T - valid_window .. T + valid_window`` are accepted (RFC 6238 section 5.2 recommends at most
  one step of tolerance; more is refused).
* Replay protection (RFC 6238 section 5.2): ``verify`` returns the accepted step; the caller
  stores it and passes it back as ``last_used_step``; a code for that step or an earlier one is
  refused, so an observed code cannot be used twice.
* Every step in the window is computed and compared with ``hmac.compare_digest``, without
  stopping at a match, so the time taken does not depend on which step (if any) matched.
* Stored secrets must be canonical base32 of at least 160 bits; anything else is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from datetime import datetime
from typing import Final

import pyotp

from strongroom.core.types import Clock, RandomBytes
from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

SECRET_BYTES: Final = 20
"""160 bits: new secrets have exactly this many, stored ones at least this many."""
MAX_SECRET_BYTES: Final = 64
DEFAULT_DIGITS: Final = 6
DEFAULT_PERIOD: Final = 30
MIN_DIGITS: Final = 6
MAX_DIGITS: Final = 8
MIN_PERIOD: Final = 15
MAX_PERIOD: Final = 120
MAX_VALID_WINDOW: Final = 1
_BASE32_RE: Final = re.compile(r"[A-Z2-7]+")
_LABEL_RE: Final = re.compile(r"[^:\x00-\x1f\x7f]{1,128}")


def new_totp_secret(random_bytes: RandomBytes) -> str:
    """A fresh 160-bit secret as unpadded upper-case base32 (32 characters)."""
    raw = random_bytes(SECRET_BYTES)
    if not isinstance(raw, bytes) or len(raw) != SECRET_BYTES:
        raise ConfigurationError(f"random_bytes must return {SECRET_BYTES} bytes")
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _decode_secret(secret: object) -> bytes:
    """The key bytes of a canonical secret; ``ValueError`` for anything else."""
    if not isinstance(secret, str) or not _BASE32_RE.fullmatch(secret):
        raise ValueError("the TOTP secret must be upper-case base32 without padding")
    raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    if not SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise ValueError("the TOTP secret must be 160 to 512 bits")
    if base64.b32encode(raw).decode("ascii").rstrip("=") != secret:
        raise ValueError("the TOTP secret is not canonical base32")
    return raw


def _check_setting(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigurationError(f"TOTP {name} must be an integer from {low} to {high}")
    return value


def provisioning_uri(
    secret: str,
    account: str,
    issuer: str,
    *,
    digits: int = DEFAULT_DIGITS,
    period: int = DEFAULT_PERIOD,
) -> str:
    """The ``otpauth://totp/...`` URI (Key URI Format) for enrolling ``secret`` in an app.

    ``digits`` and ``period`` must be those of the ``TotpVerifier`` that will check the codes.
    ``account`` and ``issuer`` may not contain ``:`` (it separates them in the label).
    """
    try:
        _decode_secret(secret)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    for name, value in (("account", account), ("issuer", issuer)):
        if not isinstance(value, str) or not _LABEL_RE.fullmatch(value):
            raise InvalidInputError(f"the TOTP {name} must be 1-128 characters without ':'")
    totp = pyotp.TOTP(
        secret,
        digits=_check_setting("digits", digits, MIN_DIGITS, MAX_DIGITS),
        interval=_check_setting("period", period, MIN_PERIOD, MAX_PERIOD),
    )
    return totp.provisioning_uri(name=account, issuer_name=issuer)


class TotpVerifier:
    """Verifies RFC 6238 codes at ``clock()`` with replay protection (see module doc)."""

    def __init__(
        self,
        clock: Clock,
        *,
        digits: int = DEFAULT_DIGITS,
        period: int = DEFAULT_PERIOD,
        valid_window: int = 1,
    ) -> None:
        if not callable(clock):
            raise ConfigurationError("clock must be callable")
        self._clock = clock
        self.digits = _check_setting("digits", digits, MIN_DIGITS, MAX_DIGITS)
        self.period = _check_setting("period", period, MIN_PERIOD, MAX_PERIOD)
        self.valid_window = _check_setting("valid_window", valid_window, 0, MAX_VALID_WINDOW)
        self._code_re = re.compile(f"[0-9]{{{self.digits}}}")

    def current_step(self) -> int:
        """The RFC 6238 time step ``T`` at ``clock()``."""
        now = self._clock()
        if not isinstance(now, datetime) or now.utcoffset() is None:
            raise ConfigurationError("the clock must return a timezone-aware datetime")
        step = int(now.timestamp()) // self.period
        if step < 0:
            raise ConfigurationError("the clock is before the Unix epoch")
        return step

    def verify(self, secret: str, code: str, *, last_used_step: int | None) -> int:
        """The time step ``code`` is valid for, later than ``last_used_step``; else raise.

        Store the returned step with the user and pass it back next time (``None`` for a user
        who never used a code). Raises ``AuthenticationError`` for a wrong, malformed, expired
        or replayed code and for a malformed secret or ``last_used_step``.
        """
        if last_used_step is not None and (
            not isinstance(last_used_step, int)
            or isinstance(last_used_step, bool)
            or last_used_step < 0
        ):
            raise AuthenticationError
        if not isinstance(code, str) or not self._code_re.fullmatch(code):
            raise AuthenticationError
        try:
            _decode_secret(secret)
            totp = pyotp.TOTP(secret, digits=self.digits, interval=self.period)
        except (ValueError, binascii.Error) as exc:
            raise AuthenticationError from exc
        current = self.current_step()
        offered = code.encode("ascii")
        accepted: int | None = None
        for step in range(current - self.valid_window, current + self.valid_window + 1):
            if step < 0:
                continue
            expected = totp.generate_otp(step).encode("ascii")
            fresh = last_used_step is None or step > last_used_step
            if hmac.compare_digest(expected, offered) and fresh and accepted is None:
                accepted = step
        if accepted is None:
            raise AuthenticationError
        return accepted
