"""In-memory fakes of the identity ports, for service tests.

``InMemoryIdentityStore`` keeps the semantics of ``SqlIdentityStore`` (checked by the same
contract suite, ``strongroom.testing.contracts.identity``): ``ConflictError`` on duplicates,
``NotFoundError`` for unknown principals and credentials, credential state that only moves
towards "less valid", atomic read-modify-write, aware UTC times out. One lock guards every
method, so it is safe to share between threads.

``InMemoryCredentialEpoch`` counts bumps. ``FakePasswordHasher`` is a fast, deterministic
stand-in for Argon2id (salted SHA-256, never for production) that counts its verifications,
so tests can check that an unknown user costs one (dummy) verification like a known one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

from strongroom.core.identity.api_keys import StoredApiKey
from strongroom.core.identity.passwords import LockoutState, normalize_password
from strongroom.core.identity.ports import (
    CertificateBinding,
    PasswordRecord,
    PrincipalRecord,
    SessionRecord,
    TotpRecord,
    check_fingerprint,
)
from strongroom.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)

_R = TypeVar("_R")


def _utc(value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInputError("times must be timezone-aware")
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    if first is None or second is None:
        return first if second is None else second
    return min(first, second)


def _check_type(value: object, kind: type[_R]) -> _R:
    if not isinstance(value, kind):
        raise InvalidInputError(f"expected a {kind.__name__}")
    return value


class InMemoryIdentityStore:
    """``IdentityStore`` in dictionaries (see module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._principals: dict[str, PrincipalRecord] = {}
        self._keys: dict[str, StoredApiKey] = {}
        self._passwords: dict[str, PasswordRecord] = {}
        self._totp: dict[str, TotpRecord] = {}
        self._lockouts: dict[str, LockoutState] = {}
        self._sessions: dict[str, SessionRecord] = {}
        self._certificates: dict[str, CertificateBinding] = {}

    def migrate(self) -> None:
        """Nothing to create; idempotent like the real thing."""

    def _require(self, principal_id: str) -> None:
        if principal_id not in self._principals:
            raise NotFoundError(f"no principal {principal_id!r}")

    # --- principals -----------------------------------------------------------------------

    def create_principal(self, record: PrincipalRecord) -> None:
        _check_type(record, PrincipalRecord)
        stored = dataclasses.replace(record, created_at=_utc(record.created_at))
        with self._lock:
            if record.id in self._principals:
                raise ConflictError(f"principal {record.id!r} already exists")
            self._principals[record.id] = stored

    def get_principal(self, principal_id: str) -> PrincipalRecord:
        with self._lock:
            self._require(principal_id)
            return self._principals[principal_id]

    def list_principals(self) -> list[PrincipalRecord]:
        with self._lock:
            return sorted(self._principals.values(), key=lambda r: r.id)

    def update_principal(self, record: PrincipalRecord, *, expected: PrincipalRecord) -> None:
        _check_type(record, PrincipalRecord)
        with self._lock:
            old = self._principals.get(record.id)
            if old is None or old.kind is not record.kind:
                raise NotFoundError(f"no {record.kind} principal {record.id!r}")
            if old != expected:
                raise ConflictError(f"principal {record.id!r} changed concurrently")
            self._principals[record.id] = dataclasses.replace(record, created_at=old.created_at)

    # --- API keys -------------------------------------------------------------------------

    def put_api_keys(self, records: Sequence[StoredApiKey]) -> None:
        for record in records:
            _check_type(record, StoredApiKey)
        if len({r.key_id for r in records}) != len(records):
            raise InvalidInputError("the same API key id twice in one change")
        with self._lock:
            staged = dict(self._keys)
            for record in records:
                staged[record.key_id] = self._merged(staged.get(record.key_id), record)
            self._keys = staged

    def _merged(self, old: StoredApiKey | None, new: StoredApiKey) -> StoredApiKey:
        normalised = dataclasses.replace(
            new,
            created_at=_utc(new.created_at),
            expires_at=_utc_or_none(new.expires_at),
            revoked_at=_utc_or_none(new.revoked_at),
        )
        if old is None:
            self._require(new.principal_id)
            return normalised
        if (old.digest, old.principal_id, old.created_at) != (
            new.digest,
            new.principal_id,
            new.created_at,
        ):
            raise ConflictError(f"API key id {new.key_id} is taken by another key")
        return dataclasses.replace(
            old,
            expires_at=_earliest(old.expires_at, normalised.expires_at),
            revoked_at=_earliest(old.revoked_at, normalised.revoked_at),
        )

    def get_api_key(self, key_id: str) -> StoredApiKey:
        with self._lock:
            try:
                return self._keys[key_id]
            except KeyError:
                raise NotFoundError("no such API key") from None

    def list_api_keys(self, principal_id: str) -> list[StoredApiKey]:
        with self._lock:
            self._require(principal_id)
            found = [k for k in self._keys.values() if k.principal_id == principal_id]
        return sorted(found, key=lambda r: (r.created_at, r.key_id))

    # --- passwords and TOTP ---------------------------------------------------------------

    def get_password(self, principal_id: str) -> PasswordRecord | None:
        with self._lock:
            return self._passwords.get(principal_id)

    def put_password(self, record: PasswordRecord, *, expected_hash: str | None) -> None:
        _check_type(record, PasswordRecord)
        stored = dataclasses.replace(record, changed_at=_utc(record.changed_at))
        with self._lock:
            self._require(record.principal_id)
            current = self._passwords.get(record.principal_id)
            if (None if current is None else current.hash) != expected_hash:
                raise ConflictError("the password changed concurrently")
            self._passwords[record.principal_id] = stored

    def get_totp(self, principal_id: str) -> TotpRecord | None:
        with self._lock:
            return self._totp.get(principal_id)

    def put_totp(self, record: TotpRecord) -> None:
        _check_type(record, TotpRecord)
        with self._lock:
            self._require(record.principal_id)
            self._totp[record.principal_id] = record

    def record_totp_step(
        self, principal_id: str, step: int, *, sealed: bytes, confirm: bool = False
    ) -> bool:
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InvalidInputError("a TOTP step is a non-negative integer")
        with self._lock:
            record = self._totp.get(principal_id)
            if record is None or record.sealed != sealed:
                return False
            if record.last_step is not None and record.last_step >= step:
                return False
            confirmed = record.confirmed or confirm
            self._totp[principal_id] = dataclasses.replace(
                record, last_step=step, confirmed=confirmed
            )
            return True

    # --- lockout --------------------------------------------------------------------------

    def get_lockout(self, principal_id: str) -> LockoutState:
        with self._lock:
            return self._lockouts.get(principal_id, LockoutState())

    def update_lockout(
        self, principal_id: str, change: Callable[[LockoutState], LockoutState]
    ) -> LockoutState:
        with self._lock:
            self._require(principal_id)
            after = _check_type(
                change(self._lockouts.get(principal_id, LockoutState())), LockoutState
            )
            self._lockouts[principal_id] = dataclasses.replace(
                after, locked_until=_utc_or_none(after.locked_until)
            )
            return self._lockouts[principal_id]

    # --- sessions -------------------------------------------------------------------------

    def add_session(self, record: SessionRecord) -> None:
        _check_type(record, SessionRecord)
        stored = dataclasses.replace(
            record,
            created_at=_utc(record.created_at),
            expires_at=_utc(record.expires_at),
            mfa_at=_utc_or_none(record.mfa_at),
            revoked_at=_utc_or_none(record.revoked_at),
        )
        with self._lock:
            if record.id in self._sessions:
                raise ConflictError(f"session {record.id} already exists")
            self._require(record.principal_id)
            self._sessions[record.id] = stored

    def _session(self, session_id: str) -> SessionRecord:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise NotFoundError("no such session") from None

    def get_session(self, session_id: str) -> SessionRecord:
        with self._lock:
            return self._session(session_id)

    def set_session_mfa(self, session_id: str, mfa_at: datetime) -> SessionRecord:
        at = _utc(mfa_at)
        with self._lock:
            record = self._session(session_id)
            if record.revoked_at is None and (record.mfa_at is None or record.mfa_at < mfa_at):
                record = self._sessions[session_id] = dataclasses.replace(record, mfa_at=at)
            return record

    def revoke_session(self, session_id: str, at: datetime) -> SessionRecord:
        when = _utc(at)
        with self._lock:
            record = self._session(session_id)
            if record.revoked_at is None:
                record = self._sessions[session_id] = dataclasses.replace(record, revoked_at=when)
            return record

    def revoke_sessions(self, principal_id: str, at: datetime) -> int:
        when = _utc(at)
        with self._lock:
            live = [
                s
                for s in self._sessions.values()
                if s.principal_id == principal_id and s.revoked_at is None and s.expires_at > when
            ]
            for session in live:
                self._sessions[session.id] = dataclasses.replace(session, revoked_at=when)
            return len(live)

    def purge_sessions(self, expired_before: datetime) -> int:
        before = _utc(expired_before)
        with self._lock:
            old = [s.id for s in self._sessions.values() if s.expires_at < before]
            for session_id in old:
                del self._sessions[session_id]
            return len(old)

    # --- client certificates --------------------------------------------------------------

    def bind_certificate(self, binding: CertificateBinding) -> None:
        _check_type(binding, CertificateBinding)
        stored = dataclasses.replace(binding, created_at=_utc(binding.created_at))
        with self._lock:
            if binding.fingerprint in self._certificates:
                raise ConflictError("this certificate is already bound to a principal")
            self._require(binding.principal_id)
            self._certificates[binding.fingerprint] = stored

    def unbind_certificate(self, fingerprint: str) -> None:
        check_fingerprint(fingerprint)
        with self._lock:
            if self._certificates.pop(fingerprint, None) is None:
                raise NotFoundError("this certificate is not bound")

    def get_certificate(self, fingerprint: str) -> CertificateBinding:
        with self._lock:
            try:
                return self._certificates[fingerprint]
            except KeyError:
                raise NotFoundError("this certificate is not bound") from None

    def list_certificates(self, principal_id: str) -> list[CertificateBinding]:
        with self._lock:
            self._require(principal_id)
            found = [c for c in self._certificates.values() if c.principal_id == principal_id]
        return sorted(found, key=lambda c: c.fingerprint)


class InMemoryCredentialEpoch:
    """``CredentialEpoch`` as a counter in memory (one process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def current(self) -> int:
        return self._value

    def bump(self) -> None:
        with self._lock:
            self._value += 1


class FakePasswordHasher:
    """Salted SHA-256 in Argon2's role, for tests only; counts ``verifications``.

    ``verify`` and ``dummy_verify`` both count one verification, like the real hasher's cost.
    ``rehash_below`` makes ``needs_rehash`` true for hashes of an older "version" than it.
    """

    def __init__(self, *, version: int = 1) -> None:
        self.version = version
        self.verifications = 0
        self._counter = 0
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        if not isinstance(password, str) or not password:
            raise InvalidInputError("the password must be non-empty text")
        with self._lock:
            self._counter += 1
            salt = f"{self._counter:08x}"
        return f"fake${self.version}${salt}${self._digest(salt, password)}"

    @staticmethod
    def _digest(salt: str, password: str) -> str:
        data = (salt + "\x00" + normalize_password(password)).encode("utf-8", "surrogatepass")
        return hashlib.sha256(data).hexdigest()

    def verify(self, stored_hash: str, password: str) -> None:
        with self._lock:
            self.verifications += 1
        parts = stored_hash.split("$") if isinstance(stored_hash, str) else []
        if len(parts) != 4 or parts[0] != "fake" or not isinstance(password, str):  # noqa: PLR2004
            raise AuthenticationError
        if not hmac.compare_digest(parts[3], self._digest(parts[2], password)):
            raise AuthenticationError

    def dummy_verify(self) -> NoReturn:
        try:
            self.verify("fake$0$dummy$" + "0" * 64, "strongroom/dummy-verify")
        except AuthenticationError:
            raise AuthenticationError from None
        raise AuthenticationError

    def needs_rehash(self, stored_hash: str) -> bool:
        parts = stored_hash.split("$")
        if len(parts) != 4 or parts[0] != "fake":  # noqa: PLR2004
            raise AuthenticationError
        return parts[1] != str(self.version)

    def matches_any(self, previous_hashes: Iterable[str], password: str) -> bool:
        matched = False
        for stored in previous_hashes:
            try:
                self.verify(stored, password)
            except AuthenticationError:
                continue
            matched = True
        return matched
