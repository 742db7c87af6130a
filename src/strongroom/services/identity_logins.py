"""Human logins: passwords, TOTP enrolment, login with lockout, sessions and MFA step-up.

Used through ``IdentityService`` (``services/identity.py``), which owns the store and epoch.

Login (``login``), in this order, every refusal the same opaque ``AuthenticationError`` whose
``__cause__`` is a ``LoginRefusal`` naming the reason for the server log:

1. An unknown, malformed or non-user id, or a user without a password, costs one dummy Argon2
   verification (``PasswordHasher.dummy_verify``) and is refused: the answer and its timing are
   those of a wrong password, so logins do not reveal which accounts exist.
2. A locked account (``LockoutPolicy``: 10 consecutive failures lock it for 30 minutes) is
   refused after a dummy verification too, so a lock is not visible by timing either.
3. A wrong password, a missing or wrong TOTP code (when a confirmed TOTP secret exists) and a
   replayed TOTP step count as failures. Failures are recorded with the store's atomic
   ``update_lockout``, so concurrent attempts in several worker processes all count.
4. On success the lockout is reset in the same atomic step that checks it again, so a correct
   guess that lands after a parallel burst has locked the account is still refused.
5. A session is created: its token (``srs_<id>_<secret>``, the API-key format with the session
   pepper) is returned once; only its keyed digest is stored. ``mfa_at`` is the login time when
   a TOTP code was checked, else None (step-up actions then need ``step_up``).

TOTP secrets are sealed with ``ServerKeys.totp_sealing`` bound to the user id
(``core.crypto.fields``). ``enroll_totp`` replaces any earlier secret with an unconfirmed one
(an unconfirmed secret does not protect logins); ``confirm_totp``, or the first login or step-up
with a valid code, confirms it. A TOTP time step is used at most once (``record_totp_step``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Final, NamedTuple, NoReturn
from urllib.parse import quote, urlencode

from strongroom.core.crypto.derive import ServerKeys
from strongroom.core.crypto.fields import FieldSealer
from strongroom.core.identity.api_keys import api_key_digest, new_api_key
from strongroom.core.identity.passwords import HISTORY_DEPTH, LockoutPolicy, check_password_policy
from strongroom.core.identity.ports import (
    IdentityStore,
    PasswordHasher,
    PasswordRecord,
    PrincipalRecord,
    SessionRecord,
    TotpChecker,
    TotpRecord,
)
from strongroom.core.identity.principal import PrincipalKind, check_principal_id
from strongroom.core.types import Clock, RandomBytes
from strongroom.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
)

SESSION_PREFIX: Final = "srs"
TOTP_PURPOSE: Final = "totp"
TOTP_SECRET_BYTES: Final = 20
_ATTEMPTS: Final = 3


class Refusal(StrEnum):
    """Why a login, step-up or session was refused: for the server log only."""

    UNKNOWN_USER = "unknown_user"
    LOCKED = "locked"
    WRONG_PASSWORD = "wrong_password"  # noqa: S105 - a reason label  # nosec B105
    DISABLED = "disabled"
    TOTP_REQUIRED = "totp_required"
    WRONG_TOTP = "wrong_totp"
    TOTP_REPLAYED = "totp_replayed"
    TOTP_UNREADABLE = "totp_unreadable"
    NOT_ENROLLED = "totp_not_enrolled"
    UNKNOWN_CREDENTIAL = "unknown_credential"


class LoginRefusal(Exception):  # noqa: N818 - a reason carried on __cause__, not an error
    """The reason behind an ``AuthenticationError`` raised by the identity service."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


def refuse(reason: Refusal, cause: BaseException | None = None) -> NoReturn:
    refusal = LoginRefusal(reason)
    refusal.__cause__ = cause
    raise AuthenticationError from refusal


class TotpEnrolment(NamedTuple):
    """A new TOTP secret (base32) and its ``otpauth://`` URI, shown once to the user."""

    secret: str
    uri: str

    def __repr__(self) -> str:
        return "TotpEnrolment(<secret>)"


def totp_uri(secret: str, account: str, issuer: str, *, digits: int, period: int) -> str:
    """The Key URI Format ``otpauth://totp/<issuer>:<account>?...`` authenticator apps scan."""
    if ":" in issuer or ":" in account:
        raise InvalidInputError("a TOTP issuer and account may not contain ':'")
    label = quote(f"{issuer}:{account}", safe=":@")
    query = urlencode(
        {"secret": secret, "issuer": issuer, "digits": digits, "period": period}, quote_via=quote
    )
    return f"otpauth://totp/{label}?{query}"


class Logins:
    """Passwords, TOTP, login and sessions over an ``IdentityStore`` (see module docstring)."""

    def __init__(
        self,
        *,
        store: IdentityStore,
        hasher: PasswordHasher,
        totp: TotpChecker,
        keys: ServerKeys,
        clock: Clock,
        random_bytes: RandomBytes,
        lockout: LockoutPolicy,
        session_ttl: timedelta,
        changed: Callable[[], None],
        totp_issuer: str,
    ) -> None:
        if not timedelta(minutes=1) <= session_ttl <= timedelta(days=1):
            raise ConfigurationError("the session lifetime must be 1 minute to 1 day")
        self._store = store
        self._hasher = hasher
        self._totp = totp
        self._session_pepper = keys.session_pepper
        self._sealer = FieldSealer(keys.totp_sealing)
        self._clock = clock
        self._random_bytes = random_bytes
        self._lockout = lockout
        self._session_ttl = session_ttl
        self._changed = changed
        self._issuer = totp_issuer

    # --- passwords and TOTP (administration) ------------------------------------------------

    def _user(self, user_id: str) -> PrincipalRecord:
        record = self._store.get_principal(user_id)
        if record.kind is not PrincipalKind.USER:
            raise InvalidInputError("only users have passwords, TOTP and sessions")
        return record

    def set_password(self, user_id: str, password: str) -> None:
        """Check the policy (length, deny list, not the name, not one of the last 4), store the
        Argon2id hash, end the user's sessions and reset its lockout."""
        self._user(user_id)
        name = user_id.partition(":")[2]
        for _ in range(_ATTEMPTS):
            current = self._store.get_password(user_id)
            previous = () if current is None else current.recent_hashes
            check_password_policy(
                password,
                username=name,
                previous_hashes_match=partial(self._hasher.matches_any, previous),
            )
            record = PasswordRecord(
                principal_id=user_id,
                hash=self._hasher.hash(password),
                history=previous[: HISTORY_DEPTH - 1],
                changed_at=self._clock(),
            )
            try:
                self._store.put_password(
                    record, expected_hash=None if current is None else current.hash
                )
                break
            except ConflictError:
                continue
        else:
            raise ConflictError("the password changed concurrently; try again")
        now = self._clock()
        self._store.revoke_sessions(user_id, now)
        self._store.update_lockout(user_id, self._lockout.register_success)
        self._changed()

    def enroll_totp(self, user_id: str) -> TotpEnrolment:
        """A fresh 160-bit secret, stored sealed and unconfirmed (it replaces any earlier one)."""
        self._user(user_id)
        raw = self._random_bytes(TOTP_SECRET_BYTES)
        if not isinstance(raw, bytes) or len(raw) != TOTP_SECRET_BYTES:
            raise InvalidInputError("the random source returned the wrong number of bytes")
        secret = base64.b32encode(raw).decode("ascii").rstrip("=")
        sealed = self._sealer.seal(
            secret.encode("ascii"),
            purpose=TOTP_PURPOSE,
            owner=user_id,
            random_bytes=self._random_bytes,
        )
        self._store.put_totp(TotpRecord(principal_id=user_id, sealed=sealed))
        self._changed()
        uri = totp_uri(
            secret,
            user_id.partition(":")[2],
            self._issuer,
            digits=self._totp.digits,
            period=self._totp.period,
        )
        return TotpEnrolment(secret=secret, uri=uri)

    def confirm_totp(self, user_id: str, code: str) -> None:
        """Confirm an enrolment with one valid code; a wrong code counts as a login failure."""
        self._user(user_id)
        now = self._clock()
        if self._lockout.is_locked(self._store.get_lockout(user_id), now):
            refuse(Refusal.LOCKED)
        record = self._store.get_totp(user_id)
        if record is None:
            refuse(Refusal.NOT_ENROLLED)
        self._check_code(user_id, record, code, now)
        self._changed()

    # --- login ------------------------------------------------------------------------------

    def _known_user(self, user_id: str) -> tuple[PrincipalRecord, PasswordRecord] | None:
        try:
            check_principal_id(user_id)
            principal = self._store.get_principal(user_id)
        except (InvalidInputError, NotFoundError):
            return None
        if principal.kind is not PrincipalKind.USER:
            return None
        password = self._store.get_password(user_id)
        return None if password is None else (principal, password)

    def _dummy(self, reason: Refusal) -> NoReturn:
        try:
            self._hasher.dummy_verify()
        except AuthenticationError as exc:
            refuse(reason, exc)
        refuse(reason)

    def _fail(self, user_id: str, now: datetime) -> None:
        self._store.update_lockout(user_id, lambda s: self._lockout.register_failure(s, now))

    def login(
        self, user_id: str, password: str, totp_code: str | None
    ) -> tuple[str, SessionRecord, PrincipalRecord]:
        """Check the password (and TOTP), open a session: ``(token shown once, record, user)``."""
        now = self._clock()
        known = self._known_user(user_id)
        if known is None:
            self._dummy(Refusal.UNKNOWN_USER)
        principal, password_record = known
        if self._lockout.is_locked(self._store.get_lockout(user_id), now):
            self._dummy(Refusal.LOCKED)
        try:
            self._hasher.verify(password_record.hash, password)
        except AuthenticationError as exc:
            self._fail(user_id, now)
            refuse(Refusal.WRONG_PASSWORD, exc)
        if principal.disabled:
            refuse(Refusal.DISABLED)
        mfa_at = self._login_totp(user_id, totp_code, now)
        state = self._store.update_lockout(
            user_id,
            lambda s: s if self._lockout.is_locked(s, now) else self._lockout.register_success(s),
        )
        if self._lockout.is_locked(state, now):
            refuse(Refusal.LOCKED)
        self._rehash(password_record, password)
        token, session = self._open_session(user_id, now, mfa_at)
        return token, session, principal

    def _login_totp(self, user_id: str, code: str | None, now: datetime) -> datetime | None:
        record = self._store.get_totp(user_id)
        if record is None:
            return None
        if code is None:
            if record.confirmed:
                self._fail(user_id, now)
                refuse(Refusal.TOTP_REQUIRED)
            return None
        self._check_code(user_id, record, code, now)
        return now

    def _check_code(self, user_id: str, record: TotpRecord, code: str, now: datetime) -> None:
        """Verify ``code`` and use its step once (confirming the secret); failures count."""
        try:
            secret = self._sealer.open(record.sealed, purpose=TOTP_PURPOSE, owner=user_id)
        except IntegrityError as exc:
            self._fail(user_id, now)
            refuse(Refusal.TOTP_UNREADABLE, exc)
        try:
            step = self._totp.verify(secret.decode("ascii"), code, last_used_step=record.last_step)
        except AuthenticationError as exc:
            self._fail(user_id, now)
            refuse(Refusal.WRONG_TOTP, exc)
        if not self._store.record_totp_step(user_id, step, sealed=record.sealed, confirm=True):
            self._fail(user_id, now)
            refuse(Refusal.TOTP_REPLAYED)

    def _rehash(self, record: PasswordRecord, password: str) -> None:
        """Upgrade a hash made with older parameters; lose a race with a password change."""
        if not self._hasher.needs_rehash(record.hash):
            return
        upgraded = replace(record, hash=self._hasher.hash(password))
        try:
            self._store.put_password(upgraded, expected_hash=record.hash)
        except ConflictError:
            return

    def _open_session(
        self, user_id: str, now: datetime, mfa_at: datetime | None
    ) -> tuple[str, SessionRecord]:
        for _ in range(_ATTEMPTS):
            issued = new_api_key(self._random_bytes, SESSION_PREFIX)
            record = SessionRecord(
                id=issued.key_id,
                principal_id=user_id,
                digest=api_key_digest(self._session_pepper, issued.key_id, issued.secret),
                created_at=now,
                expires_at=now + self._session_ttl,
                mfa_at=mfa_at,
            )
            try:
                self._store.add_session(record)
            except ConflictError:
                continue
            return issued.token, record
        raise ConflictError("could not allocate a session id")

    # --- sessions ---------------------------------------------------------------------------

    def step_up(self, session: SessionRecord, totp_code: str) -> SessionRecord:
        """Check a TOTP code for a live session's user and record ``mfa_at = now``."""
        now = self._clock()
        user_id = session.principal_id
        if self._lockout.is_locked(self._store.get_lockout(user_id), now):
            refuse(Refusal.LOCKED)
        record = self._store.get_totp(user_id)
        if record is None:
            refuse(Refusal.NOT_ENROLLED)
        self._check_code(user_id, record, totp_code, now)
        updated = self._store.set_session_mfa(session.id, now)
        self._changed()
        return updated

    def logout(self, session: SessionRecord) -> SessionRecord:
        revoked = self._store.revoke_session(session.id, self._clock())
        self._changed()
        return revoked
