"""Contract suites of the identity ports (``core.identity.ports``).

Every ``IdentityStore`` (SQLite, PostgreSQL, the in-memory fake), every ``CredentialEpoch``
(a file, the database, the fake) and every ``PasswordHasher`` (Argon2id, the fake) must pass the
same tests. An adapter's test module subclasses a suite and provides the port as a fixture:

    class TestSqliteIdentityStore(IdentityStoreContract):
        @pytest.fixture
        def identity_store(self, tmp_path): ...  # a migrated, empty store; close it afterwards

    class TestFileEpoch(CredentialEpochContract):
        @pytest.fixture
        def epochs(self, tmp_path): ...  # two handles on one shared epoch (two "processes")

    class TestArgon2(PasswordHasherContract):
        @pytest.fixture
        def password_hasher(self): ...

Beyond the port docstrings, the suites pin: lists sorted (principals by id, keys by creation
then id, bindings by fingerprint); times back as aware UTC; credential state that only moves
towards "less valid"; and atomic read-modify-write under concurrent threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from ipaddress import ip_network

import pytest

from strongroom.core.identity.api_keys import StoredApiKey
from strongroom.core.identity.passwords import LockoutState
from strongroom.core.identity.ports import (
    CertificateBinding,
    CredentialEpoch,
    IdentityStore,
    PasswordHasher,
    PasswordRecord,
    PrincipalRecord,
    SessionRecord,
    TotpRecord,
)
from strongroom.core.identity.principal import Grant, PrincipalKind, Role
from strongroom.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)

BASE_TIME = datetime(2026, 4, 5, 6, 7, 8, 123456, tzinfo=UTC)
CET = timezone(timedelta(hours=1))
THREADS = 8


def principal(
    principal_id: str = "user:alice", *, created_at: datetime = BASE_TIME, **fields: object
) -> PrincipalRecord:
    kind = PrincipalKind.USER if principal_id.startswith("user:") else PrincipalKind.SERVICE
    return PrincipalRecord(id=principal_id, kind=kind, created_at=created_at, **fields)  # type: ignore[arg-type]


def key_id_for(n: int) -> str:
    return "".join("abcdefghijklmnopqrstuvwxyz234567"[(n >> (5 * i)) & 31] for i in range(12))


def api_key(n: int, principal_id: str = "svc:scoring", **fields: object) -> StoredApiKey:
    values: dict[str, object] = {
        "key_id": key_id_for(n),
        "digest": hashlib.sha256(f"key{n}".encode()).digest(),
        "principal_id": principal_id,
        "created_at": BASE_TIME + timedelta(seconds=n),
    }
    values.update(fields)
    return StoredApiKey(**values)  # type: ignore[arg-type]


def session(n: int, principal_id: str = "user:alice", **fields: object) -> SessionRecord:
    values: dict[str, object] = {
        "id": key_id_for(1000 + n),
        "principal_id": principal_id,
        "digest": hashlib.sha256(f"session{n}".encode()).digest(),
        "created_at": BASE_TIME,
        "expires_at": BASE_TIME + timedelta(hours=8),
    }
    values.update(fields)
    return SessionRecord(**values)  # type: ignore[arg-type]


def fingerprint(n: int) -> str:
    return hashlib.sha256(f"cert{n}".encode()).hexdigest()


def run_concurrently(count: int, work: Callable[[int], object]) -> list[object]:
    barrier = threading.Barrier(count, timeout=30)

    def start(index: int) -> object:
        barrier.wait()
        return work(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


class IdentityStoreContract:
    """Behaviour of every ``IdentityStore``; the fixture gives a migrated, empty store."""

    @pytest.fixture
    def store(self, identity_store: IdentityStore) -> IdentityStore:
        identity_store.create_principal(principal("user:alice"))
        identity_store.create_principal(principal("svc:scoring"))
        return identity_store

    # --- principals ------------------------------------------------------------------------

    def test_empty_store(self, identity_store: IdentityStore) -> None:
        assert identity_store.list_principals() == []
        assert identity_store.get_password("user:alice") is None
        assert identity_store.get_totp("user:alice") is None
        assert identity_store.get_lockout("user:alice") == LockoutState()
        for lookup in (
            lambda: identity_store.get_principal("user:alice"),
            lambda: identity_store.get_api_key(key_id_for(1)),
            lambda: identity_store.get_session(key_id_for(1)),
            lambda: identity_store.get_certificate(fingerprint(1)),
        ):
            with pytest.raises(NotFoundError):
                lookup()

    def test_principal_round_trip_in_utc(self, identity_store: IdentityStore) -> None:
        record = principal(
            "user:zoe+risk@example.com",
            created_at=BASE_TIME.astimezone(CET),
            roles=frozenset({Role.DEPLOYER, Role.AUDITOR}),
            grants=(Grant(Role.PREDICTOR, "fraud-*"), Grant(Role.MODEL_OWNER, "aml?")),
            networks=(ip_network("10.0.0.0/8"), ip_network("2001:db8::/32")),
            disabled=True,
            description="Grüße ✓ from the risk team",
        )
        identity_store.create_principal(record)
        stored = identity_store.get_principal(record.id)
        assert stored == record
        assert stored.created_at.utcoffset() == timedelta(0)
        identity_store.migrate()
        assert identity_store.list_principals() == [record]

    def test_duplicate_principal_is_a_conflict(self, store: IdentityStore) -> None:
        with pytest.raises(ConflictError):
            store.create_principal(principal("user:alice", description="another"))
        assert store.get_principal("user:alice").description == ""

    def test_principals_are_listed_by_id(self, identity_store: IdentityStore) -> None:
        for principal_id in ("user:b", "svc:z", "user:B", "user:a"):
            identity_store.create_principal(principal(principal_id))
        listed = [r.id for r in identity_store.list_principals()]
        assert listed == ["svc:z", "user:B", "user:a", "user:b"]

    def test_update_is_compare_and_set(self, store: IdentityStore) -> None:
        current = store.get_principal("user:alice")
        disabled = dataclasses.replace(current, disabled=True, roles=frozenset({Role.ADMIN}))
        store.update_principal(disabled, expected=current)
        assert store.get_principal("user:alice") == disabled
        stale = dataclasses.replace(current, description="stale writer")
        with pytest.raises(ConflictError):
            store.update_principal(stale, expected=current)
        assert store.get_principal("user:alice").disabled is True

    def test_update_keeps_creation_time_and_needs_a_known_principal(
        self, store: IdentityStore
    ) -> None:
        current = store.get_principal("svc:scoring")
        moved = dataclasses.replace(current, created_at=BASE_TIME + timedelta(days=1))
        store.update_principal(moved, expected=current)
        assert store.get_principal("svc:scoring").created_at == BASE_TIME
        ghost = principal("svc:ghost")
        with pytest.raises(NotFoundError):
            store.update_principal(ghost, expected=ghost)

    # --- API keys --------------------------------------------------------------------------

    def test_api_keys_round_trip_and_list_in_order(self, store: IdentityStore) -> None:
        later, earlier = api_key(2), api_key(1, expires_at=BASE_TIME + timedelta(days=9))
        store.put_api_keys([later])
        store.put_api_keys([earlier])
        assert store.get_api_key(earlier.key_id) == earlier
        assert store.list_api_keys("svc:scoring") == [earlier, later]
        assert store.list_api_keys("user:alice") == []
        with pytest.raises(NotFoundError):
            store.list_api_keys("svc:ghost")

    def test_a_key_needs_a_known_principal(self, store: IdentityStore) -> None:
        with pytest.raises(NotFoundError):
            store.put_api_keys([api_key(1, principal_id="svc:ghost")])
        with pytest.raises(NotFoundError):
            store.get_api_key(key_id_for(1))

    def test_a_taken_key_id_is_a_conflict_and_nothing_is_written(
        self, store: IdentityStore
    ) -> None:
        store.put_api_keys([api_key(1)])
        impostor = dataclasses.replace(api_key(1), digest=bytes(32))
        with pytest.raises(ConflictError):
            store.put_api_keys([api_key(2), impostor])
        assert store.get_api_key(key_id_for(1)) == api_key(1)
        with pytest.raises(NotFoundError):
            store.get_api_key(key_id_for(2))

    def test_rotation_saves_both_keys(self, store: IdentityStore) -> None:
        old = api_key(1)
        store.put_api_keys([old])
        shortened = dataclasses.replace(old, expires_at=BASE_TIME + timedelta(hours=1))
        store.put_api_keys([api_key(2), shortened])
        assert store.list_api_keys("svc:scoring") == [shortened, api_key(2)]

    def test_key_state_only_becomes_less_valid(self, store: IdentityStore) -> None:
        stale = api_key(1, expires_at=BASE_TIME + timedelta(days=30))
        store.put_api_keys([stale])
        revoked = dataclasses.replace(stale, revoked_at=BASE_TIME + timedelta(hours=2))
        store.put_api_keys([revoked])
        store.put_api_keys([stale])  # a racing writer that read the key before the revocation
        extended = dataclasses.replace(stale, expires_at=BASE_TIME + timedelta(days=90))
        store.put_api_keys([extended])
        earlier_revocation = dataclasses.replace(stale, revoked_at=BASE_TIME + timedelta(hours=1))
        store.put_api_keys([earlier_revocation])
        assert store.get_api_key(stale.key_id) == dataclasses.replace(
            stale, revoked_at=BASE_TIME + timedelta(hours=1)
        )

    def test_a_key_without_expiry_can_be_given_one(self, store: IdentityStore) -> None:
        store.put_api_keys([api_key(1)])
        store.put_api_keys([api_key(1, expires_at=BASE_TIME + timedelta(minutes=5))])
        assert store.get_api_key(key_id_for(1)).expires_at == BASE_TIME + timedelta(minutes=5)

    # --- passwords and TOTP ----------------------------------------------------------------

    def test_password_compare_and_set(self, store: IdentityStore) -> None:
        first = PasswordRecord(principal_id="user:alice", hash="h1", changed_at=BASE_TIME)
        store.put_password(first, expected_hash=None)
        assert store.get_password("user:alice") == first
        second = PasswordRecord(
            principal_id="user:alice",
            hash="h2",
            history=("h1",),
            changed_at=BASE_TIME.astimezone(CET) + timedelta(days=1),
        )
        with pytest.raises(ConflictError):
            store.put_password(second, expected_hash=None)
        with pytest.raises(ConflictError):
            store.put_password(second, expected_hash="not-h1")
        assert store.get_password("user:alice") == first
        store.put_password(second, expected_hash="h1")
        assert store.get_password("user:alice") == second
        ghost = PasswordRecord(principal_id="user:ghost", hash="h", changed_at=BASE_TIME)
        with pytest.raises(NotFoundError):
            store.put_password(ghost, expected_hash=None)

    def test_totp_steps_only_move_forward(self, store: IdentityStore) -> None:
        sealed = b"\x01sealed-secret"
        store.put_totp(TotpRecord(principal_id="user:alice", sealed=sealed))
        assert store.record_totp_step("user:alice", 100, sealed=b"other") is False
        assert store.record_totp_step("user:alice", 100, sealed=sealed) is True
        assert store.record_totp_step("user:alice", 100, sealed=sealed) is False
        assert store.record_totp_step("user:alice", 99, sealed=sealed) is False
        assert store.get_totp("user:alice") == TotpRecord(
            principal_id="user:alice", sealed=sealed, last_step=100, confirmed=False
        )
        assert store.record_totp_step("user:alice", 2**40, sealed=sealed, confirm=True) is True
        stored = store.get_totp("user:alice")
        assert stored is not None
        assert stored.confirmed
        assert stored.last_step == 2**40
        assert store.record_totp_step("user:bob", 1, sealed=sealed) is False

    def test_enrolling_again_replaces_the_secret(self, store: IdentityStore) -> None:
        store.put_totp(TotpRecord(principal_id="user:alice", sealed=b"a", last_step=5))
        store.record_totp_step("user:alice", 6, sealed=b"a", confirm=True)
        fresh = TotpRecord(principal_id="user:alice", sealed=b"b")
        store.put_totp(fresh)
        assert store.get_totp("user:alice") == fresh
        with pytest.raises(NotFoundError):
            store.put_totp(TotpRecord(principal_id="user:ghost", sealed=b"a"))

    def test_one_totp_step_is_used_once_under_concurrency(self, store: IdentityStore) -> None:
        store.put_totp(TotpRecord(principal_id="user:alice", sealed=b"s"))
        results = run_concurrently(
            THREADS, lambda _i: store.record_totp_step("user:alice", 7, sealed=b"s")
        )
        assert results.count(True) == 1

    # --- lockout ---------------------------------------------------------------------------

    def test_lockout_round_trip(self, store: IdentityStore) -> None:
        locked = LockoutState(failures=10, locked_until=BASE_TIME.astimezone(CET))
        assert store.update_lockout("user:alice", lambda _s: locked) == locked
        assert store.get_lockout("user:alice") == locked
        assert store.get_lockout("user:alice").locked_until == BASE_TIME
        assert store.update_lockout("user:alice", lambda _s: LockoutState()) == LockoutState()
        assert store.get_lockout("user:alice") == LockoutState()
        with pytest.raises(NotFoundError):
            store.update_lockout("user:ghost", lambda s: s)

    def test_concurrent_failures_all_count(self, store: IdentityStore) -> None:
        def fail(_index: int) -> LockoutState:
            return store.update_lockout(
                "user:alice", lambda s: LockoutState(failures=s.failures + 1)
            )

        results = run_concurrently(THREADS, fail)
        assert store.get_lockout("user:alice").failures == THREADS
        assert sorted(r.failures for r in results if isinstance(r, LockoutState)) == list(
            range(1, THREADS + 1)
        )

    # --- sessions --------------------------------------------------------------------------

    def test_sessions_round_trip(self, store: IdentityStore) -> None:
        record = session(1, mfa_at=BASE_TIME.astimezone(CET))
        store.add_session(record)
        assert store.get_session(record.id) == record
        with pytest.raises(ConflictError):
            store.add_session(record)
        with pytest.raises(NotFoundError):
            store.add_session(session(2, principal_id="user:ghost"))

    def test_session_mfa_moves_forward_only_and_not_after_revocation(
        self, store: IdentityStore
    ) -> None:
        store.add_session(session(1))
        later = BASE_TIME + timedelta(minutes=10)
        assert store.set_session_mfa(key_id_for(1001), later).mfa_at == later
        assert store.set_session_mfa(key_id_for(1001), BASE_TIME).mfa_at == later
        revoked = store.revoke_session(key_id_for(1001), BASE_TIME + timedelta(minutes=20))
        assert revoked.revoked_at == BASE_TIME + timedelta(minutes=20)
        assert store.revoke_session(key_id_for(1001), BASE_TIME + timedelta(hours=1)) == revoked
        after = store.set_session_mfa(key_id_for(1001), BASE_TIME + timedelta(minutes=30))
        assert after.mfa_at == later
        with pytest.raises(NotFoundError):
            store.revoke_session(key_id_for(9), BASE_TIME)

    def test_revoke_and_purge_sessions(self, store: IdentityStore) -> None:
        store.create_principal(principal("user:bob"))
        store.add_session(session(1))
        store.add_session(session(2, expires_at=BASE_TIME + timedelta(minutes=1)))
        store.add_session(session(3, revoked_at=BASE_TIME))
        store.add_session(session(4, principal_id="user:bob"))
        now = BASE_TIME + timedelta(minutes=5)
        assert store.revoke_sessions("user:alice", now) == 1
        assert store.get_session(key_id_for(1001)).revoked_at == now
        assert store.get_session(key_id_for(1003)).revoked_at == BASE_TIME
        assert store.get_session(key_id_for(1004)).revoked_at is None
        assert store.purge_sessions(BASE_TIME + timedelta(hours=1)) == 1
        with pytest.raises(NotFoundError):
            store.get_session(key_id_for(1002))

    # --- client certificates ---------------------------------------------------------------

    def test_certificate_bindings(self, store: IdentityStore) -> None:
        bindings = [
            CertificateBinding(
                fingerprint=fingerprint(n), principal_id="svc:scoring", created_at=BASE_TIME
            )
            for n in range(3)
        ]
        for binding in bindings:
            store.bind_certificate(binding)
        assert store.get_certificate(fingerprint(1)) == bindings[1]
        by_fingerprint = sorted(bindings, key=lambda b: b.fingerprint)
        assert store.list_certificates("svc:scoring") == by_fingerprint
        with pytest.raises(ConflictError):
            store.bind_certificate(dataclasses.replace(bindings[0], principal_id="user:alice"))
        store.unbind_certificate(fingerprint(1))
        with pytest.raises(NotFoundError):
            store.unbind_certificate(fingerprint(1))
        with pytest.raises(NotFoundError):
            store.get_certificate(fingerprint(1))
        with pytest.raises(NotFoundError):
            store.bind_certificate(dataclasses.replace(bindings[1], principal_id="svc:ghost"))
        with pytest.raises(InvalidInputError):
            store.unbind_certificate("AB:CD")


class CredentialEpochContract:
    """Behaviour of every ``CredentialEpoch``; ``epochs`` gives two handles on one epoch."""

    def test_a_bump_is_seen_by_every_handle(
        self, epochs: tuple[CredentialEpoch, CredentialEpoch]
    ) -> None:
        first, second = epochs
        before = first.current()
        assert isinstance(before, int)
        assert second.current() == before
        first.bump()
        after_first = first.current()
        assert after_first != before
        assert second.current() == after_first
        second.bump()
        assert first.current() == second.current() != after_first

    def test_concurrent_bumps_all_count(
        self, epochs: tuple[CredentialEpoch, CredentialEpoch]
    ) -> None:
        first, second = epochs
        before = first.current()
        run_concurrently(THREADS, lambda i: (first if i % 2 else second).bump())
        assert second.current() == before + THREADS


class PasswordHasherContract:
    """Behaviour of every ``PasswordHasher``."""

    def test_hash_and_verify(self, password_hasher: PasswordHasher) -> None:
        stored = password_hasher.hash("correct horse battery")
        assert "correct horse" not in stored
        password_hasher.verify(stored, "correct horse battery")
        assert password_hasher.needs_rehash(stored) is False
        with pytest.raises(AuthenticationError):
            password_hasher.verify(stored, "correct horse batterY")
        assert password_hasher.hash("correct horse battery") != stored  # salted

    def test_the_normalised_form_is_what_counts(self, password_hasher: PasswordHasher) -> None:
        stored = password_hasher.hash("\ufb01ve fine fish!")  # the "fi" ligature
        password_hasher.verify(stored, "five fine fish!")

    def test_dummy_verify_always_refuses(self, password_hasher: PasswordHasher) -> None:
        with pytest.raises(AuthenticationError):
            password_hasher.dummy_verify()

    def test_matches_any(self, password_hasher: PasswordHasher) -> None:
        old = [password_hasher.hash(p) for p in ("first password", "second password")]
        assert password_hasher.matches_any(old, "second password") is True
        assert password_hasher.matches_any(old, "third password") is False
        assert password_hasher.matches_any([*old, "not a hash"], "first password") is True
