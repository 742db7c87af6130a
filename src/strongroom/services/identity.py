"""``IdentityService``: principals, their credentials, and turning a credential into a Principal.

The HTTP app and the CLI call this service; it talks to an ``IdentityStore`` and the adapters of
``core.identity.ports`` only. Human logins (passwords, TOTP, sessions) are implemented in
``identity_logins``, the digest check shared by API keys and sessions in ``identity_tokens``, and
the epoch-invalidated cache in ``identity_cache``; this class is what callers use.

Hot path (every inference request): ``authenticate_api_key`` parses the key, looks its record and
principal up in an ``EpochCache`` and always recomputes the HMAC digest and checks revocation and
expiry against the clock (``core.identity.api_keys.verify_api_key``). An unknown key id computes
a digest too and fails the same way. ``authenticate_certificate`` and ``complete_token_principal``
(for verified JWTs) use the same kind of cache.

Invariants:

* Every method that changes a principal or a credential bumps the ``CredentialEpoch`` after the
  store committed; caches in every process sharing the epoch are dropped on their next lookup,
  so revocation, disabling and role changes take effect on the very next request. (A login
  changes neither: it only adds a session and updates the lockout, which no cache holds.)
* Every authentication refusal is the opaque ``AuthenticationError``; the reason is on
  ``__cause__`` (``refusal_reason``) for the server log and the audit record.
* Secrets are never kept: API keys and sessions as keyed digests, passwords as Argon2id
  hashes, TOTP secrets sealed; nothing secret appears in a repr.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from ipaddress import ip_network
from typing import Final

from strongroom.core.crypto.derive import ServerKeys
from strongroom.core.identity import api_keys
from strongroom.core.identity.api_keys import (
    ApiKeyRotation,
    IssuedApiKey,
    StoredApiKey,
)
from strongroom.core.identity.passwords import LockoutPolicy
from strongroom.core.identity.ports import (
    CertificateBinding,
    CredentialEpoch,
    IdentityStore,
    PasswordHasher,
    PrincipalRecord,
    SessionRecord,
    TotpChecker,
    check_fingerprint,
    kind_of,
)
from strongroom.core.identity.principal import (
    CredentialInfo,
    CredentialKind,
    Grant,
    Network,
    Principal,
    Role,
)
from strongroom.core.types import Clock, RandomBytes
from strongroom.errors import AuthenticationError, ConflictError, InvalidInputError, NotFoundError
from strongroom.services.identity_cache import EpochCache
from strongroom.services.identity_logins import (
    SESSION_PREFIX,
    LoginRefusal,
    Logins,
    Refusal,
    TotpEnrolment,
    refuse,
)
from strongroom.services.identity_tokens import (
    DigestTokens,
    session_as_key,
    session_credential,
)

__all__ = [
    "IdentityService",
    "LoginRefusal",
    "Refusal",
    "TotpEnrolment",
    "normalize_fingerprint",
    "refusal_reason",
]

_ATTEMPTS: Final = 3


def refusal_reason(error: AuthenticationError) -> str | None:
    """The logged reason of an authentication refusal of this service (or of the API-key rules)."""
    cause = error.__cause__
    if isinstance(cause, LoginRefusal):
        return cause.reason.value
    reason = api_keys.refusal_reason(error)
    return None if reason is None else reason.value


def _roles(values: Iterable[Role | str]) -> frozenset[Role]:
    try:
        return frozenset(Role(v) for v in values)
    except ValueError as exc:
        raise InvalidInputError(str(exc), hint=f"roles: {', '.join(Role)}") from None


def _networks(values: Iterable[Network | str]) -> tuple[Network, ...]:
    try:
        return tuple(ip_network(v) for v in values)
    except ValueError as exc:
        raise InvalidInputError(str(exc), hint="give CIDRs such as 10.0.0.0/8") from None


def normalize_fingerprint(value: str) -> str:
    """Accept ``AB:CD:...`` (as openssl prints it) or hex; return 64 lower-case hex digits."""
    if not isinstance(value, str):
        raise InvalidInputError("a certificate fingerprint is text")
    return check_fingerprint(value.replace(":", "").strip().lower())


class IdentityService:
    """Principals, credentials and authentication (see the module docstring)."""

    def __init__(
        self,
        store: IdentityStore,
        hasher: PasswordHasher,
        totp: TotpChecker,
        keys: ServerKeys,
        epoch: CredentialEpoch,
        clock: Clock,
        random_bytes: RandomBytes,
        lockout: LockoutPolicy | None = None,
        session_ttl: timedelta = timedelta(hours=8),
        *,
        totp_issuer: str = "Strongroom",
    ) -> None:
        self._store = store
        self._keys = keys
        self._epoch = epoch
        self._clock = clock
        self._random_bytes = random_bytes
        self._logins = Logins(
            store=store,
            hasher=hasher,
            totp=totp,
            keys=keys,
            clock=clock,
            random_bytes=random_bytes,
            lockout=LockoutPolicy() if lockout is None else lockout,
            session_ttl=session_ttl,
            changed=epoch.bump,
            totp_issuer=totp_issuer,
        )
        self._api_key_tokens = DigestTokens(
            prefix=api_keys.DEFAULT_PREFIX,
            pepper=keys.api_key_pepper,
            epoch=epoch,
            clock=clock,
            load=self._load_api_key,
        )
        self._session_tokens = DigestTokens(
            prefix=SESSION_PREFIX,
            pepper=keys.session_pepper,
            epoch=epoch,
            clock=clock,
            load=self._load_session,
        )
        self._certificates: EpochCache[str, Principal] = EpochCache(epoch)
        self._principals: EpochCache[str, PrincipalRecord] = EpochCache(epoch, cache_misses=True)
        self._completed: EpochCache[tuple[Principal, bool], Principal] = EpochCache(epoch)

    def __repr__(self) -> str:
        return "IdentityService(<store>)"

    # --- principals -------------------------------------------------------------------------

    def create_principal(
        self,
        principal_id: str,
        *,
        roles: Iterable[Role | str] = (),
        grants: Iterable[Grant] = (),
        networks: Iterable[Network | str] = (),
        description: str = "",
    ) -> PrincipalRecord:
        record = PrincipalRecord(
            id=principal_id,
            kind=kind_of(principal_id),
            roles=_roles(roles),
            grants=tuple(grants),
            networks=_networks(networks),
            created_at=self._clock(),
            description=description,
        )
        self._store.create_principal(record)
        self._epoch.bump()
        return record

    def update_principal(
        self,
        principal_id: str,
        *,
        roles: Iterable[Role | str] | None = None,
        grants: Iterable[Grant] | None = None,
        networks: Iterable[Network | str] | None = None,
        disabled: bool | None = None,
        description: str | None = None,
    ) -> PrincipalRecord:
        """Change what is given, keep the rest; retried on a concurrent change of the record."""
        changes: dict[str, object] = {}
        if roles is not None:
            changes["roles"] = _roles(roles)
        if grants is not None:
            changes["grants"] = tuple(grants)
        if networks is not None:
            changes["networks"] = _networks(networks)
        if disabled is not None:
            changes["disabled"] = disabled
        if description is not None:
            changes["description"] = description
        for _ in range(_ATTEMPTS):
            current = self._store.get_principal(principal_id)
            updated = replace(current, **changes)  # type: ignore[arg-type]
            try:
                self._store.update_principal(updated, expected=current)
            except ConflictError:
                continue
            self._epoch.bump()
            return updated
        raise ConflictError(f"principal {principal_id!r} keeps changing; try again")

    def get_principal(self, principal_id: str) -> PrincipalRecord:
        return self._store.get_principal(principal_id)

    def list_principals(self) -> list[PrincipalRecord]:
        return self._store.list_principals()

    # --- API keys ---------------------------------------------------------------------------

    def issue_api_key(
        self, principal_id: str, *, expires_at: datetime | None = None
    ) -> tuple[IssuedApiKey, StoredApiKey]:
        """A new key for the principal: the token (show it once) and what was stored."""
        for _ in range(_ATTEMPTS):
            issued = api_keys.new_api_key(self._random_bytes)
            record = api_keys.api_key_record(
                issued,
                pepper=self._keys.api_key_pepper,
                principal_id=principal_id,
                created_at=self._clock(),
                expires_at=expires_at,
            )
            self._store.get_principal(principal_id)  # NotFoundError before a key id is tried
            try:
                self._store.put_api_keys([record])
            except ConflictError:
                continue
            self._epoch.bump()
            return issued, record
        raise ConflictError("could not allocate an API key id")

    def rotate_api_key(
        self, key_id: str, *, grace: timedelta = timedelta(0), expires_at: datetime | None = None
    ) -> ApiKeyRotation:
        """A successor for a live key; the old one ends ``grace`` from now (0: at once)."""
        old = self._store.get_api_key(key_id)
        if old.revoked_at is not None:
            raise InvalidInputError("a revoked key cannot be rotated; issue a new one")
        rotation = api_keys.rotate_api_key(
            old,
            random_bytes=self._random_bytes,
            pepper=self._keys.api_key_pepper,
            now=self._clock(),
            grace=grace,
            expires_at=expires_at,
        )
        self._store.put_api_keys([rotation.new_record, rotation.old_record])
        self._epoch.bump()
        return rotation

    def revoke_api_key(self, key_id: str) -> StoredApiKey:
        record = self._store.get_api_key(key_id)
        self._store.put_api_keys([api_keys.revoke_api_key(record, self._clock())])
        self._epoch.bump()
        return self._store.get_api_key(key_id)

    def list_api_keys(self, principal_id: str) -> list[StoredApiKey]:
        return self._store.list_api_keys(principal_id)

    def authenticate_api_key(self, token: str) -> Principal:
        """The principal ``token`` authenticates, or the opaque ``AuthenticationError``."""
        return self._api_key_tokens.authenticate(token)[1]

    def _load_api_key(self, key_id: str) -> tuple[StoredApiKey, Principal] | None:
        try:
            stored = self._store.get_api_key(key_id)
            record = self._store.get_principal(stored.principal_id)
        except NotFoundError:
            return None
        credential = CredentialInfo(
            kind=CredentialKind.API_KEY, id=key_id, expires_at=stored.expires_at
        )
        return stored, record.to_principal(credential)

    # --- client certificates ----------------------------------------------------------------

    def bind_certificate(self, principal_id: str, fingerprint: str) -> CertificateBinding:
        binding = CertificateBinding(
            fingerprint=normalize_fingerprint(fingerprint),
            principal_id=principal_id,
            created_at=self._clock(),
        )
        self._store.bind_certificate(binding)
        self._epoch.bump()
        return binding

    def unbind_certificate(self, fingerprint: str) -> None:
        self._store.unbind_certificate(normalize_fingerprint(fingerprint))
        self._epoch.bump()

    def list_certificates(self, principal_id: str) -> list[CertificateBinding]:
        return self._store.list_certificates(principal_id)

    def authenticate_certificate(self, fingerprint: str) -> Principal:
        """The principal a client certificate the TLS layer verified is bound to, by the SHA-256
        of its DER encoding in lower-case hex; unbound or malformed: ``AuthenticationError``."""
        if not isinstance(fingerprint, str) or len(fingerprint) != 64:  # noqa: PLR2004
            refuse(Refusal.UNKNOWN_CREDENTIAL)
        principal = self._certificates.get(fingerprint, lambda: self._load_binding(fingerprint))
        if principal is None:
            refuse(Refusal.UNKNOWN_CREDENTIAL)
        return principal

    def _load_binding(self, fingerprint: str) -> Principal | None:
        try:
            binding = self._store.get_certificate(check_fingerprint(fingerprint))
            record = self._store.get_principal(binding.principal_id)
        except (NotFoundError, InvalidInputError):
            return None
        return record.to_principal(CredentialInfo(kind=CredentialKind.MTLS, id=fingerprint))

    # --- bearer tokens ----------------------------------------------------------------------

    def complete_token_principal(
        self, principal: Principal, *, roles_from_token: bool
    ) -> Principal:
        """Complete a verified JWT's principal from the store: ``disabled``, ``networks`` and
        ``grants`` always; roles from the token if ``roles_from_token`` else from the store. A
        principal unknown to the store keeps only the token's roles (when they count).

        The result is cached per (token principal, ``roles_from_token``) until the epoch moves:
        a verifier that caches tokens hands the same principal for every request of a token.
        """
        key = (principal, roles_from_token)
        completed = self._completed.get(key, lambda: self._complete(principal, roles_from_token))
        if completed is None:  # never: _complete always returns a principal
            raise AuthenticationError
        return completed

    def _complete(self, principal: Principal, roles_from_token: bool) -> Principal:
        record = self._principals.get(principal.id, lambda: self._load_principal(principal.id))
        roles = principal.roles if roles_from_token else frozenset[Role]()
        if record is None:
            return replace(principal, roles=roles, grants=(), networks=(), disabled=False)
        return replace(
            principal,
            roles=roles if roles_from_token else record.roles,
            grants=record.grants,
            networks=record.networks,
            disabled=record.disabled,
        )

    def _load_principal(self, principal_id: str) -> PrincipalRecord | None:
        try:
            return self._store.get_principal(principal_id)
        except NotFoundError:
            return None

    # --- passwords, TOTP and sessions -------------------------------------------------------

    def set_password(self, user_id: str, password: str) -> None:
        """Set a user's password (policy, history of 4); ends its sessions, resets its lockout."""
        self._logins.set_password(user_id, password)

    def enroll_totp(self, user_id: str) -> TotpEnrolment:
        """``(secret, provisioning_uri)``: a new, unconfirmed TOTP secret (shown once)."""
        return self._logins.enroll_totp(user_id)

    def confirm_totp(self, user_id: str, code: str) -> None:
        self._logins.confirm_totp(user_id, code)

    def login(
        self, user_id: str, password: str, totp_code: str | None = None
    ) -> tuple[str, SessionRecord, Principal]:
        """``(session token shown once, its record, the principal)`` or ``AuthenticationError``."""
        token, session, record = self._logins.login(user_id, password, totp_code)
        return (
            token,
            session,
            record.to_principal(session_credential(session), mfa_at=session.mfa_at),
        )

    def authenticate_session(self, token: str) -> Principal:
        """The principal of a live session token, with the session's ``mfa_at``. A disabled
        user's principal says so (``authorize`` then denies everything), like an API key's."""
        return self._session_tokens.authenticate(token)[1]

    def _load_session(self, session_id: str) -> tuple[StoredApiKey, Principal] | None:
        try:
            session = self._store.get_session(session_id)
            record = self._store.get_principal(session.principal_id)
        except NotFoundError:
            return None
        principal = record.to_principal(session_credential(session), mfa_at=session.mfa_at)
        return session_as_key(session), principal

    def step_up(self, session_token: str, totp_code: str) -> SessionRecord:
        """Check a TOTP code in a live session and set its ``mfa_at`` to now."""
        principal = self.authenticate_session(session_token)
        if principal.disabled:
            refuse(Refusal.DISABLED)
        session = self._store.get_session(principal.credential.id)
        return self._logins.step_up(session, totp_code)

    def logout(self, session_token: str) -> SessionRecord:
        """End a session (the token must be valid: a stranger cannot end someone's session)."""
        principal = self.authenticate_session(session_token)
        return self._logins.logout(self._store.get_session(principal.credential.id))

    def purge_expired_sessions(self, *, older_than: timedelta = timedelta(days=1)) -> int:
        """Delete sessions that expired more than ``older_than`` ago (housekeeping)."""
        return self._store.purge_sessions(self._clock() - older_than)
