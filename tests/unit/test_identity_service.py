"""IdentityService on the in-memory fakes: API keys and their cache, revocation and the epoch,
logins with lockout and TOTP, sessions and step-up, certificates, token completion, secrecy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

import pyotp
import pytest

from strongroom.adapters.identity.totp import TotpVerifier
from strongroom.core.crypto.derive import derive_server_keys
from strongroom.core.crypto.fields import FieldSealer
from strongroom.core.identity import api_keys as api_keys_module
from strongroom.core.identity.principal import (
    CredentialInfo,
    CredentialKind,
    Grant,
    Principal,
    PrincipalKind,
    Role,
)
from strongroom.core.policy.conditions import Reason, RequestContext, denial_reason
from strongroom.core.policy.rbac import Action, Resource, ResourceKind, authorize
from strongroom.errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
)
from strongroom.services.identity import IdentityService, refusal_reason
from strongroom.services.identity_cache import EpochCache
from strongroom.testing.fake_identity import (
    FakePasswordHasher,
    InMemoryCredentialEpoch,
    InMemoryIdentityStore,
)

START = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)  # on a 30 s TOTP step boundary
SECRET = b"identity-service-test-server-secret!"
PASSWORD = "a long passphrase for alice"


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class CountingRandom:
    """Deterministic bytes: SHAKE-256 of a call counter."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return hashlib.shake_256(self.calls.to_bytes(8, "big")).digest(n)


@dataclass
class World:
    """One store and one epoch shared by the ``workers`` (services as in worker processes)."""

    clock: FakeClock = field(default_factory=FakeClock)
    store: InMemoryIdentityStore = field(default_factory=InMemoryIdentityStore)
    epoch: InMemoryCredentialEpoch = field(default_factory=InMemoryCredentialEpoch)
    hasher: FakePasswordHasher = field(default_factory=FakePasswordHasher)
    random: CountingRandom = field(default_factory=CountingRandom)

    def worker(self) -> IdentityService:
        return IdentityService(
            self.store,
            self.hasher,
            TotpVerifier(self.clock),
            derive_server_keys(SECRET),
            self.epoch,
            self.clock,
            self.random,
        )

    def code(self, secret: str, *, at: datetime | None = None) -> str:
        return str(pyotp.TOTP(secret).at(at or self.clock.now))


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def service(world: World) -> IdentityService:
    return world.worker()


@pytest.fixture
def alice(service: IdentityService) -> str:
    service.create_principal("user:alice", roles=["deployer"])
    service.set_password("user:alice", PASSWORD)
    return "user:alice"


def reason_of(caught: pytest.ExceptionInfo[AuthenticationError]) -> str | None:
    return refusal_reason(caught.value)


def refused(call: object, *args: object) -> str | None:
    with pytest.raises(AuthenticationError) as caught:
        call(*args)  # type: ignore[operator]
    assert str(caught.value) == "authentication failed"
    return reason_of(caught)


# --- principals ---------------------------------------------------------------------------------


def test_principals_are_created_listed_and_updated(service: IdentityService) -> None:
    created = service.create_principal(
        "svc:scoring",
        roles=["predictor"],
        grants=[Grant(Role.MODEL_OWNER, "fraud-*")],
        networks=["10.0.0.0/8"],
        description="scoring service",
    )
    assert created.kind is PrincipalKind.SERVICE
    assert created.created_at == START
    assert service.get_principal("svc:scoring") == created
    updated = service.update_principal("svc:scoring", disabled=True, networks=[])
    assert updated.disabled is True
    assert updated.networks == ()
    assert updated.roles == frozenset({Role.PREDICTOR})
    assert [p.id for p in service.list_principals()] == ["svc:scoring"]
    with pytest.raises(ConflictError):
        service.create_principal("svc:scoring")
    with pytest.raises(InvalidInputError):
        service.create_principal("svc:other", roles=["root"])
    with pytest.raises(InvalidInputError):
        service.create_principal("svc:other", networks=["10.0.0.1/8"])
    with pytest.raises(NotFoundError):
        service.update_principal("svc:ghost", disabled=True)


# --- API keys -----------------------------------------------------------------------------------


def test_an_issued_key_authenticates_its_principal(service: IdentityService) -> None:
    service.create_principal("svc:scoring", roles=["predictor"], networks=["10.0.0.0/8"])
    expiry = START + timedelta(days=30)
    issued, stored = service.issue_api_key("svc:scoring", expires_at=expiry)
    assert issued.token.startswith(f"sr_{issued.key_id}_")
    assert stored.principal_id == "svc:scoring"
    principal = service.authenticate_api_key(issued.token)
    assert principal.id == "svc:scoring"
    assert principal.roles == frozenset({Role.PREDICTOR})
    assert principal.credential == CredentialInfo(
        kind=CredentialKind.API_KEY, id=issued.key_id, expires_at=expiry
    )
    assert [str(n) for n in principal.networks] == ["10.0.0.0/8"]
    assert service.list_api_keys("svc:scoring") == [stored]
    with pytest.raises(NotFoundError):
        service.issue_api_key("svc:ghost")


def test_revocation_is_effective_on_the_next_request_with_a_warm_cache(world: World) -> None:
    admin, worker = world.worker(), world.worker()
    admin.create_principal("svc:scoring", roles=["predictor"])
    issued, _ = admin.issue_api_key("svc:scoring")
    for _ in range(3):  # warm the other worker's cache
        worker.authenticate_api_key(issued.token)
    revoked = admin.revoke_api_key(issued.key_id)
    assert revoked.revoked_at == START
    assert refused(worker.authenticate_api_key, issued.token) == "revoked"


def test_the_cache_is_used_until_the_epoch_moves(world: World) -> None:
    service = world.worker()
    service.create_principal("svc:scoring")
    issued, stored = service.issue_api_key("svc:scoring")
    service.authenticate_api_key(issued.token)
    # A change that bypasses the service (no bump): the warm cache still serves the old record.
    world.store.put_api_keys([stored.__class__(**{**stored.__dict__, "revoked_at": START})])
    service.authenticate_api_key(issued.token)
    world.epoch.bump()
    assert refused(service.authenticate_api_key, issued.token) == "revoked"


def test_role_changes_and_disabling_apply_to_the_next_request(world: World) -> None:
    admin, worker = world.worker(), world.worker()
    admin.create_principal("svc:scoring", roles=["predictor"])
    issued, _ = admin.issue_api_key("svc:scoring")
    assert worker.authenticate_api_key(issued.token).roles == {Role.PREDICTOR}
    admin.update_principal("svc:scoring", roles=["auditor"])
    assert worker.authenticate_api_key(issued.token).roles == {Role.AUDITOR}
    admin.update_principal("svc:scoring", disabled=True)
    principal = worker.authenticate_api_key(issued.token)
    assert principal.disabled is True
    context = RequestContext(now=START, client_ip=IPv4Address("10.0.0.1"))
    with pytest.raises(ForbiddenError) as caught:
        authorize(principal, Action.AUDIT_READ, Resource(ResourceKind.AUDIT), context)
    assert denial_reason(caught.value) is Reason.PRINCIPAL_DISABLED


def test_expiry_is_checked_against_the_clock_even_when_cached(world: World) -> None:
    service = world.worker()
    service.create_principal("svc:scoring")
    issued, _ = service.issue_api_key("svc:scoring", expires_at=START + timedelta(hours=1))
    service.authenticate_api_key(issued.token)
    world.clock.advance(minutes=59, seconds=59)
    service.authenticate_api_key(issued.token)
    world.clock.advance(seconds=1)
    assert refused(service.authenticate_api_key, issued.token) == "expired"


def test_wrong_malformed_and_unknown_keys_fail_alike(
    service: IdentityService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.create_principal("svc:scoring")
    issued, _ = service.issue_api_key("svc:scoring")
    wrong_secret = issued.token[:-2] + ("AA" if not issued.token.endswith("AA") else "BA")
    unknown_id = f"sr_{'a' * 12}_{issued.secret}"
    digests: list[str] = []
    real_digest = api_keys_module.Pepper.digest

    def counting_digest(self: api_keys_module.Pepper, key_id: str, secret: str) -> bytes:
        digests.append(key_id)
        return real_digest(self, key_id, secret)

    monkeypatch.setattr(api_keys_module.Pepper, "digest", counting_digest)
    assert refused(service.authenticate_api_key, unknown_id) == "unknown_credential"
    assert digests == ["a" * 12]  # a digest is computed for an unknown id too
    assert refused(service.authenticate_api_key, wrong_secret) == "digest_mismatch"
    assert refused(service.authenticate_api_key, "sr_not-a-key") == "malformed"
    assert refused(service.authenticate_api_key, issued.token + "x") == "malformed"


def test_rotation_with_and_without_grace(world: World) -> None:
    service = world.worker()
    service.create_principal("svc:scoring")
    first, _ = service.issue_api_key("svc:scoring")
    service.authenticate_api_key(first.token)
    world.clock.advance(minutes=1)
    rotation = service.rotate_api_key(first.key_id, grace=timedelta(minutes=10))
    assert service.authenticate_api_key(rotation.issued.token).id == "svc:scoring"
    service.authenticate_api_key(first.token)  # within the grace period
    world.clock.advance(minutes=10)
    assert refused(service.authenticate_api_key, first.token) == "expired"
    immediate = service.rotate_api_key(rotation.issued.key_id)
    assert refused(service.authenticate_api_key, rotation.issued.token) == "expired"
    service.authenticate_api_key(immediate.issued.token)
    keys = service.list_api_keys("svc:scoring")
    assert [k.key_id for k in keys] == [
        first.key_id,
        rotation.issued.key_id,
        immediate.issued.key_id,
    ]
    service.revoke_api_key(immediate.issued.key_id)
    with pytest.raises(InvalidInputError):
        service.rotate_api_key(immediate.issued.key_id)


# --- logins and lockout ---------------------------------------------------------------------------


def test_login_opens_a_session(world: World, service: IdentityService, alice: str) -> None:
    token, session, principal = service.login(alice, PASSWORD)
    assert token.startswith(f"srs_{session.id}_")
    assert session.expires_at == START + timedelta(hours=8)
    assert session.mfa_at is None  # no TOTP enrolled: no MFA
    assert principal.credential.kind is CredentialKind.PASSWORD
    again = world.worker().authenticate_session(token)
    assert again == principal
    assert again.roles == {Role.DEPLOYER}
    world.clock.advance(hours=8)
    assert refused(service.authenticate_session, token) == "expired"


def test_ten_failures_lock_the_account_for_thirty_minutes(
    world: World, service: IdentityService, alice: str
) -> None:
    for _ in range(9):
        assert refused(service.login, alice, "wrong password!!") == "wrong_password"
    service.login(alice, PASSWORD)  # nine failures do not lock, and a success resets the count
    other = world.worker()  # failures in several workers all count
    for attempt in range(10):
        worker = service if attempt % 2 else other
        assert refused(worker.login, alice, "wrong password!!") == "wrong_password"
    before = world.hasher.verifications
    assert refused(service.login, alice, PASSWORD) == "locked"
    assert world.hasher.verifications == before + 1  # a lock costs a (dummy) verification too
    world.clock.advance(minutes=29, seconds=59)
    assert refused(service.login, alice, PASSWORD) == "locked"
    world.clock.advance(seconds=1)
    service.login(alice, PASSWORD)


def test_unknown_users_cost_one_verification_and_fail_alike(
    world: World, service: IdentityService, alice: str
) -> None:
    service.create_principal("svc:scoring")
    service.create_principal("user:nopassword")
    for user in ("user:ghost", "svc:scoring", "user:nopassword", "not an id"):
        before = world.hasher.verifications
        assert refused(service.login, user, PASSWORD) == "unknown_user"
        assert world.hasher.verifications == before + 1
    before = world.hasher.verifications
    assert refused(service.login, alice, "wrong password!!") == "wrong_password"
    assert world.hasher.verifications == before + 1


def test_disabled_users_cannot_log_in(service: IdentityService, alice: str) -> None:
    token, _, _ = service.login(alice, PASSWORD)
    service.update_principal(alice, disabled=True)
    assert refused(service.login, alice, PASSWORD) == "disabled"
    assert service.authenticate_session(token).disabled is True
    assert refused(service.step_up, token, "000000") == "disabled"


def test_password_policy_and_history_of_four(service: IdentityService, alice: str) -> None:
    passwords = [f"passphrase number {n} here" for n in range(2, 5)]
    for password in passwords:
        service.set_password(alice, password)
    with pytest.raises(InvalidInputError, match="last 4"):
        service.set_password(alice, PASSWORD)  # the 4th last: still refused
    service.set_password(alice, "passphrase number 5 here")
    service.set_password(alice, PASSWORD)  # now the 5th last: allowed again
    with pytest.raises(InvalidInputError, match="at least 12"):
        service.set_password(alice, "short")
    service.create_principal("user:alice.liddell")
    with pytest.raises(InvalidInputError, match="username"):
        service.set_password("user:alice.liddell", "ALICE.LIDDELL")
    service.create_principal("svc:scoring")
    with pytest.raises(InvalidInputError):
        service.set_password("svc:scoring", PASSWORD)


def test_a_new_password_ends_sessions_and_rehashes_old_hashes(
    world: World, service: IdentityService, alice: str
) -> None:
    token, _, _ = service.login(alice, PASSWORD)
    service.set_password(alice, "an entirely new passphrase")
    assert refused(service.authenticate_session, token) == "revoked"
    world.hasher.version = 2
    service.login(alice, "an entirely new passphrase")
    stored = world.store.get_password(alice)
    assert stored is not None and stored.hash.startswith("fake$2$")


# --- TOTP and step-up ---------------------------------------------------------------------------


def test_totp_enrolment_confirmation_and_replay(
    world: World, service: IdentityService, alice: str
) -> None:
    secret, uri = service.enroll_totp(alice)
    assert uri.startswith("otpauth://totp/Strongroom:alice?")
    assert f"secret={secret}" in uri
    stored = world.store.get_totp(alice)
    assert stored is not None and secret.encode() not in stored.sealed and not stored.confirmed
    _, unconfirmed, _ = service.login(alice, PASSWORD)  # unconfirmed: no TOTP needed, no MFA
    assert unconfirmed.mfa_at is None
    service.confirm_totp(alice, world.code(secret))
    assert refused(service.login, alice, PASSWORD) == "totp_required"
    world.clock.advance(seconds=30)
    code = world.code(secret)
    _, session, principal = service.login(alice, PASSWORD, code)
    assert session.mfa_at == world.clock.now == principal.mfa_at
    assert refused(service.login, alice, PASSWORD, code) == "wrong_totp"  # the same step again
    assert refused(service.login, alice, PASSWORD, "12345x") == "wrong_totp"


def test_the_sealed_secret_is_bound_to_its_user(world: World, service: IdentityService) -> None:
    service.create_principal("user:bob")
    service.enroll_totp("user:bob")
    stored = world.store.get_totp("user:bob")
    assert stored is not None
    sealer = FieldSealer(derive_server_keys(SECRET).totp_sealing)
    assert len(sealer.open(stored.sealed, purpose="totp", owner="user:bob")) == 32
    with pytest.raises(IntegrityError):
        sealer.open(stored.sealed, purpose="totp", owner="user:alice")


def test_step_up_refreshes_mfa_and_logout_ends_the_session(
    world: World, service: IdentityService, alice: str
) -> None:
    secret, _ = service.enroll_totp(alice)
    token, _, _ = service.login(alice, PASSWORD, world.code(secret))
    worker = world.worker()
    assert worker.authenticate_session(token).mfa_at == START
    world.clock.advance(minutes=20)
    assert refused(service.step_up, token, "000000") == "wrong_totp"
    updated = service.step_up(token, world.code(secret))
    assert updated.mfa_at == world.clock.now
    assert worker.authenticate_session(token).mfa_at == world.clock.now
    assert refused(service.logout, token[:-4] + "AAAA") == "digest_mismatch"
    service.logout(token)
    assert refused(worker.authenticate_session, token) == "revoked"


def test_wrong_totp_codes_count_towards_the_lockout(
    world: World, service: IdentityService, alice: str
) -> None:
    secret, _ = service.enroll_totp(alice)
    service.confirm_totp(alice, world.code(secret))
    for _ in range(10):
        world.clock.advance(seconds=30)
        assert refused(service.login, alice, PASSWORD, "000000") == "wrong_totp"
    world.clock.advance(seconds=30)
    assert refused(service.login, alice, PASSWORD, world.code(secret)) == "locked"


# --- certificates and tokens --------------------------------------------------------------------


def test_certificates_map_to_principals_until_unbound(world: World) -> None:
    admin, worker = world.worker(), world.worker()
    admin.create_principal("svc:batch", roles=["predictor"])
    digest = hashlib.sha256(b"client certificate DER").hexdigest()
    admin.bind_certificate(
        "svc:batch", ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()
    )
    principal = worker.authenticate_certificate(digest)
    assert principal.credential == CredentialInfo(kind=CredentialKind.MTLS, id=digest)
    assert principal.roles == {Role.PREDICTOR}
    admin.unbind_certificate(digest)
    assert refused(worker.authenticate_certificate, digest) == "unknown_credential"
    assert refused(worker.authenticate_certificate, "00" * 31) == "unknown_credential"


def token_principal(principal_id: str, roles: frozenset[Role] = frozenset()) -> Principal:
    kind = PrincipalKind.USER if principal_id.startswith("user:") else PrincipalKind.SERVICE
    credential = CredentialInfo(
        kind=CredentialKind.JWT, id="jti-1", expires_at=START + timedelta(minutes=5)
    )
    return Principal(id=principal_id, kind=kind, credential=credential, roles=roles)


def test_token_principals_are_completed_from_the_store(world: World) -> None:
    admin, worker = world.worker(), world.worker()
    claimed = token_principal("svc:etl", frozenset({Role.AUDITOR}))
    unknown_store_roles = worker.complete_token_principal(claimed, roles_from_token=False)
    assert unknown_store_roles.roles == frozenset()
    assert unknown_store_roles.disabled is False
    unknown_token_roles = worker.complete_token_principal(claimed, roles_from_token=True)
    assert unknown_token_roles.roles == {Role.AUDITOR}
    admin.create_principal(
        "svc:etl",
        roles=["predictor"],
        grants=[Grant(Role.PREDICTOR, "aml-*")],
        networks=["10.0.0.0/8"],
    )
    completed = worker.complete_token_principal(claimed, roles_from_token=False)
    assert completed.roles == {Role.PREDICTOR}
    assert completed.grants == (Grant(Role.PREDICTOR, "aml-*"),)
    assert [str(n) for n in completed.networks] == ["10.0.0.0/8"]
    assert completed.credential == claimed.credential
    from_token = worker.complete_token_principal(claimed, roles_from_token=True)
    assert from_token.roles == {Role.AUDITOR}
    assert from_token.grants == completed.grants
    admin.update_principal("svc:etl", disabled=True)
    assert worker.complete_token_principal(claimed, roles_from_token=True).disabled is True


# --- the cache and secrecy ----------------------------------------------------------------------


def test_a_load_racing_a_change_is_not_served_afterwards() -> None:
    epoch = InMemoryCredentialEpoch()
    cache: EpochCache[str, str] = EpochCache(epoch)

    def stale_load() -> str:
        epoch.bump()  # a change commits and bumps while this (old) read is in flight
        return "stale"

    assert cache.get("k", stale_load) == "stale"
    assert cache.get("k", lambda: "fresh") == "fresh"
    assert cache.get("k", lambda: "unused") == "fresh"
    assert cache.get("missing", lambda: None) is None
    assert len(cache) == 1  # misses are not cached unless asked for


def test_no_secret_appears_in_a_repr(world: World, service: IdentityService, alice: str) -> None:
    issued, stored = service.issue_api_key(alice)
    secret, uri = enrolment = service.enroll_totp(alice)
    token, session, principal = service.login(alice, PASSWORD)
    password = world.store.get_password(alice)
    totp = world.store.get_totp(alice)
    texts = " ".join(
        repr(x) for x in (issued, stored, enrolment, session, principal, password, totp, service)
    )
    for needle in (issued.secret, secret, token.split("_", 2)[2], PASSWORD, stored.digest.hex()):
        assert needle not in texts
    assert password is not None and password.hash not in texts
    assert uri not in texts


def test_create_admin_gives_a_password_and_a_totp_enrolment(world: World) -> None:
    from strongroom.bootstrap import create_admin

    service = world.worker()
    secret, uri = create_admin(service, "root", PASSWORD)
    assert uri.startswith("otpauth://totp/Strongroom:root?")
    admin = service.get_principal("user:root")
    assert admin.roles == {Role.ADMIN}
    _, session, principal = service.login("user:root", PASSWORD, world.code(secret))
    assert principal.mfa_at == session.mfa_at == START
    stored = world.store.get_totp("user:root")
    assert stored is not None
    assert stored.confirmed  # the first login with a code confirmed the enrolment
    with pytest.raises(ConflictError):
        create_admin(service, "user:root", PASSWORD)


def test_epoch_cache_entries_expire_even_if_a_bump_was_lost() -> None:
    from strongroom.testing.fake_identity import InMemoryCredentialEpoch

    now = [0.0]
    cache: EpochCache[str, str] = EpochCache(
        InMemoryCredentialEpoch(), max_age_s=60.0, monotonic=lambda: now[0]
    )
    loads: list[str] = []

    def load() -> str:
        loads.append("x")
        return f"v{len(loads)}"

    assert cache.get("k", load) == "v1"
    now[0] = 59.0
    assert cache.get("k", load) == "v1"
    now[0] = 61.0  # no bump happened, yet the entry is too old to trust
    assert cache.get("k", load) == "v2"
