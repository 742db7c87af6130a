"""Ports of identity: the principal and credential store, and the adapters logins need.

Adapters: ``adapters.storage.identity_sql.SqlIdentityStore`` (SQLite, PostgreSQL),
``adapters.storage.epoch_file.FileCredentialEpoch`` and ``epoch_sql.SqlCredentialEpoch``,
``adapters.identity.passwords.Argon2PasswordHasher`` and ``adapters.identity.totp.TotpVerifier``;
fakes in ``strongroom.testing.fake_identity``; one contract suite per port in
``strongroom.testing.contracts.identity``.

Invariants every ``IdentityStore`` keeps (the service's security rests on them):

* Records are validated on construction (``InvalidInputError``), so a store never hands out a
  malformed one; times come back as aware UTC datetimes.
* ``create_principal`` of an existing id is a ``ConflictError`` and ``update_principal`` is a
  compare-and-set on the whole record; every read or update of an
  unknown principal, key, session or binding is a ``NotFoundError``, and so is attaching a
  credential to an unknown principal.
* Credential state only moves towards "less valid": ``put_api_keys`` never clears a
  ``revoked_at`` nor extends an ``expires_at`` (the store keeps the earliest of old and new), so a
  revocation racing a rotation can never be undone by it; the digest, principal and creation
  time of a key never change (a different one for a stored key id is a ``ConflictError``).
  Sessions likewise: ``revoke_session`` keeps the earliest revocation, ``set_session_mfa`` only
  moves ``mfa_at`` forward and never on a revoked session.
* Read-modify-write operations are atomic across processes: ``update_lockout`` (every failed
  login of every worker counts), ``record_totp_step`` (a TOTP step is used at most once, even by
  two workers checking the same code at the same moment), ``put_password`` (compare-and-set on
  the current hash: a rehash after login cannot overwrite a password changed meanwhile), and
  ``put_api_keys`` (a rotation saves the new key and the shortened old one in one transaction).
* Secrets are never stored: API keys and sessions keep a keyed digest, passwords an Argon2id
  hash, TOTP secrets are sealed (``core.crypto.fields``) before they reach the store.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, NoReturn, Protocol

from strongroom.core.identity.api_keys import DIGEST_LENGTH, KEY_ID_RE, StoredApiKey
from strongroom.core.identity.passwords import HISTORY_DEPTH, LockoutState
from strongroom.core.identity.principal import (
    CredentialInfo,
    CredentialKind,
    Grant,
    Network,
    Principal,
    PrincipalKind,
    Role,
    check_principal_id,
)
from strongroom.errors import InvalidInputError

__all__ = [
    "CertificateBinding",
    "CredentialEpoch",
    "IdentityStore",
    "LockoutState",
    "PasswordHasher",
    "PasswordRecord",
    "PrincipalRecord",
    "SessionRecord",
    "TotpChecker",
    "TotpRecord",
]

MAX_DESCRIPTION_LENGTH: Final = 256
MAX_HASH_LENGTH: Final = 512
MAX_SEALED_BYTES: Final = 256
FINGERPRINT_RE: Final = re.compile(r"[0-9a-f]{64}")
"""SHA-256 of a client certificate's DER encoding, lower-case hex."""
_PROBE: Final = CredentialInfo(kind=CredentialKind.API_KEY, id="record-check")


def _invalid(message: str) -> NoReturn:
    raise InvalidInputError(message)


def _check_aware(name: str, value: datetime | None, *, required: bool = False) -> None:
    if value is None:
        if required:
            _invalid(f"{name} is required")
        return
    if not isinstance(value, datetime) or value.utcoffset() is None:
        _invalid(f"{name} must be a timezone-aware datetime")


def check_description(text: str) -> str:
    """Short free text for operators: at most 256 characters, no control characters."""
    if not isinstance(text, str) or len(text) > MAX_DESCRIPTION_LENGTH:
        _invalid(f"a description is text of at most {MAX_DESCRIPTION_LENGTH} characters")
    if any(unicodedata.category(c) in {"Cc", "Cs"} for c in text):
        _invalid("a description must not contain control characters")
    return text


def check_fingerprint(value: str) -> str:
    """A certificate fingerprint: 64 lower-case hex characters (SHA-256 of the DER)."""
    if not isinstance(value, str) or not FINGERPRINT_RE.fullmatch(value):
        raise InvalidInputError(
            "invalid certificate fingerprint",
            hint="give the SHA-256 of the certificate's DER encoding as 64 lower-case hex digits",
        )
    return value


def kind_of(principal_id: str) -> PrincipalKind:
    """The kind a principal id names by its prefix (``user:`` or ``svc:``)."""
    check_principal_id(principal_id)
    return PrincipalKind.USER if principal_id.startswith("user:") else PrincipalKind.SERVICE


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PrincipalRecord:
    """What the store keeps about a principal: who it is and what it may do, not how it logs in.

    Validated like a ``Principal`` (id matching kind, roles, grants, networks) on construction.
    """

    id: str
    kind: PrincipalKind
    roles: frozenset[Role] = frozenset()
    grants: tuple[Grant, ...] = ()
    networks: tuple[Network, ...] = ()
    disabled: bool = False
    created_at: datetime
    description: str = ""

    def __post_init__(self) -> None:
        self.to_principal(_PROBE)  # the same checks as every Principal built from this record
        _check_aware("created_at", self.created_at, required=True)
        check_description(self.description)

    def to_principal(
        self, credential: CredentialInfo, *, mfa_at: datetime | None = None
    ) -> Principal:
        """The ``Principal`` a request authenticated by ``credential`` acts as."""
        return Principal(
            id=self.id,
            kind=self.kind,
            credential=credential,
            roles=self.roles,
            grants=self.grants,
            networks=self.networks,
            mfa_at=mfa_at,
            disabled=self.disabled,
        )


@dataclass(frozen=True, kw_only=True)
class PasswordRecord:
    """A user's Argon2id hash, and the hashes of up to ``HISTORY_DEPTH - 1`` earlier passwords
    (newest first): together the last ``HISTORY_DEPTH`` passwords a new one must differ from."""

    principal_id: str
    hash: str = field(repr=False)
    history: tuple[str, ...] = field(default=(), repr=False)
    changed_at: datetime

    def __post_init__(self) -> None:
        if kind_of(self.principal_id) is not PrincipalKind.USER:
            _invalid("only users have passwords")
        hashes = (self.hash, *self.history)
        if not isinstance(self.history, tuple) or len(self.history) > HISTORY_DEPTH - 1:
            _invalid(f"a password history holds at most {HISTORY_DEPTH - 1} earlier hashes")
        if not all(isinstance(h, str) and 0 < len(h) <= MAX_HASH_LENGTH for h in hashes):
            _invalid("password hashes are non-empty text")
        _check_aware("changed_at", self.changed_at, required=True)

    @property
    def recent_hashes(self) -> tuple[str, ...]:
        """The current hash and the earlier ones: what the history rule checks against."""
        return (self.hash, *self.history)


@dataclass(frozen=True, kw_only=True)
class TotpRecord:
    """A user's TOTP secret, sealed (``core.crypto.fields``), and the last time step used.

    ``confirmed`` is False from enrolment until the user proved they hold the secret with one
    valid code; an unconfirmed secret does not protect logins.
    """

    principal_id: str
    sealed: bytes = field(repr=False)
    last_step: int | None = None
    confirmed: bool = False

    def __post_init__(self) -> None:
        if kind_of(self.principal_id) is not PrincipalKind.USER:
            _invalid("only users have TOTP secrets")
        if not isinstance(self.sealed, bytes) or not 0 < len(self.sealed) <= MAX_SEALED_BYTES:
            _invalid("a sealed TOTP secret is 1 to 256 bytes")
        if self.last_step is not None and (
            not isinstance(self.last_step, int) or isinstance(self.last_step, bool)
        ):
            _invalid("last_step must be an integer or None")
        if self.last_step is not None and self.last_step < 0:
            _invalid("last_step cannot be negative")
        if not isinstance(self.confirmed, bool):
            _invalid("confirmed must be a bool")


@dataclass(frozen=True, kw_only=True)
class SessionRecord:
    """A login session: its token is shown once, only its keyed digest is kept (like API keys).

    ``mfa_at`` is when TOTP was last checked in this session (login or step-up), None if never.
    """

    id: str
    principal_id: str
    digest: bytes = field(repr=False)
    created_at: datetime
    expires_at: datetime
    mfa_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not KEY_ID_RE.fullmatch(self.id):
            _invalid("invalid session id")
        if kind_of(self.principal_id) is not PrincipalKind.USER:
            _invalid("only users have sessions")
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_LENGTH:
            _invalid(f"a session digest is {DIGEST_LENGTH} bytes")
        for name in ("created_at", "expires_at"):
            _check_aware(name, getattr(self, name), required=True)
        for name in ("mfa_at", "revoked_at"):
            _check_aware(name, getattr(self, name))
        if self.expires_at <= self.created_at:
            _invalid("a session must expire after it is created")


@dataclass(frozen=True, kw_only=True)
class CertificateBinding:
    """A client certificate (by the SHA-256 of its DER encoding) that authenticates a principal."""

    fingerprint: str
    principal_id: str
    created_at: datetime

    def __post_init__(self) -> None:
        check_fingerprint(self.fingerprint)
        check_principal_id(self.principal_id)
        _check_aware("created_at", self.created_at, required=True)


# --- the store ----------------------------------------------------------------------------------


class IdentityStore(Protocol):
    """Principals and their credentials (see the module docstring for the invariants)."""

    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent)."""
        ...

    # principals
    def create_principal(self, record: PrincipalRecord) -> None:
        """``ConflictError`` if the id exists."""
        ...

    def get_principal(self, principal_id: str) -> PrincipalRecord:
        """``NotFoundError`` if absent."""
        ...

    def list_principals(self) -> list[PrincipalRecord]:
        """Every principal, sorted by id."""
        ...

    def update_principal(self, record: PrincipalRecord, *, expected: PrincipalRecord) -> None:
        """Replace roles, grants, networks, disabled and description if the stored record is
        still ``expected`` (else ``ConflictError``: re-read and retry, so that of two concurrent
        changes neither silently undoes the other, e.g. re-enables a principal just disabled).
        ``NotFoundError`` if absent. The kind and creation time of a principal never change."""
        ...

    # API keys
    def put_api_keys(self, records: Sequence[StoredApiKey]) -> None:
        """Insert new keys and update known ones, all in one transaction (see module doc)."""
        ...

    def get_api_key(self, key_id: str) -> StoredApiKey:
        """``NotFoundError`` if absent."""
        ...

    def list_api_keys(self, principal_id: str) -> list[StoredApiKey]:
        """The principal's keys, oldest first (then by key id); ``NotFoundError`` if unknown."""
        ...

    # passwords
    def get_password(self, principal_id: str) -> PasswordRecord | None: ...

    def put_password(self, record: PasswordRecord, *, expected_hash: str | None) -> None:
        """Store ``record`` if the current hash is ``expected_hash`` (None: no password yet),
        else ``ConflictError``; ``NotFoundError`` for an unknown principal."""
        ...

    # TOTP
    def get_totp(self, principal_id: str) -> TotpRecord | None: ...

    def put_totp(self, record: TotpRecord) -> None:
        """Store (or replace) a user's TOTP record; ``NotFoundError`` for an unknown principal."""
        ...

    def record_totp_step(
        self, principal_id: str, step: int, *, sealed: bytes, confirm: bool = False
    ) -> bool:
        """Atomically set ``last_step = step`` (and ``confirmed`` if ``confirm``) when the stored
        secret is ``sealed`` and ``last_step`` is None or below ``step``; whether it did."""
        ...

    # lockout
    def get_lockout(self, principal_id: str) -> LockoutState:
        """The state; ``LockoutState()`` when none is stored."""
        ...

    def update_lockout(
        self, principal_id: str, change: Callable[[LockoutState], LockoutState]
    ) -> LockoutState:
        """Atomically replace the state by ``change(state)`` and return it. ``change`` must be
        pure and quick (it may run while a row lock is held). ``NotFoundError`` if unknown."""
        ...

    # sessions
    def add_session(self, record: SessionRecord) -> None:
        """``ConflictError`` for a known id, ``NotFoundError`` for an unknown principal."""
        ...

    def get_session(self, session_id: str) -> SessionRecord:
        """``NotFoundError`` if absent."""
        ...

    def set_session_mfa(self, session_id: str, mfa_at: datetime) -> SessionRecord:
        """Move ``mfa_at`` forward (never back, never on a revoked session); the record after.
        ``NotFoundError`` if absent."""
        ...

    def revoke_session(self, session_id: str, at: datetime) -> SessionRecord:
        """Revoke (an earlier revocation is kept); the record after. ``NotFoundError`` if absent."""
        ...

    def revoke_sessions(self, principal_id: str, at: datetime) -> int:
        """Revoke every live session of a principal; how many were revoked."""
        ...

    def purge_sessions(self, expired_before: datetime) -> int:
        """Delete sessions that expired before ``expired_before``; how many."""
        ...

    # client certificates
    def bind_certificate(self, binding: CertificateBinding) -> None:
        """``ConflictError`` if the fingerprint is bound, ``NotFoundError`` for an unknown
        principal."""
        ...

    def unbind_certificate(self, fingerprint: str) -> None:
        """``NotFoundError`` if not bound."""
        ...

    def get_certificate(self, fingerprint: str) -> CertificateBinding:
        """``NotFoundError`` if not bound."""
        ...

    def list_certificates(self, principal_id: str) -> list[CertificateBinding]:
        """The principal's bindings by fingerprint; ``NotFoundError`` for an unknown principal."""
        ...


# --- what logins and caches need from other adapters ------------------------------------------


class PasswordHasher(Protocol):
    """Argon2id hashing (``adapters.identity.passwords.Argon2PasswordHasher``)."""

    def hash(self, password: str) -> str: ...

    def verify(self, stored_hash: str, password: str) -> None:
        """Return on a match, raise ``AuthenticationError`` otherwise."""
        ...

    def dummy_verify(self) -> NoReturn:
        """Cost one verification and raise ``AuthenticationError`` (unknown users)."""
        ...

    def needs_rehash(self, stored_hash: str) -> bool: ...

    def matches_any(self, previous_hashes: Iterable[str], password: str) -> bool: ...


class TotpChecker(Protocol):
    """RFC 6238 verification (``adapters.identity.totp.TotpVerifier``) with its settings, which
    the provisioning URI must repeat."""

    digits: int
    period: int

    def verify(self, secret: str, code: str, *, last_used_step: int | None) -> int:
        """The accepted time step, later than ``last_used_step``; ``AuthenticationError`` else."""
        ...


class CredentialEpoch(Protocol):
    """A counter shared by every worker process, bumped after every credential change.

    Caches of credentials are dropped whenever ``current()`` differs from the value they were
    filled under, so a change is seen by the very next request in every process. ``current`` is
    called on every request and must be cheap.
    """

    def current(self) -> int: ...

    def bump(self) -> None: ...
