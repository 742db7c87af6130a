"""authorize(): the role table, grants, each condition, and the tricky inputs of
docs/access-control.md, one rule per test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest

from strongroom.core.identity.principal import (
    CredentialInfo,
    CredentialKind,
    Grant,
    Principal,
    PrincipalKind,
    Role,
)
from strongroom.core.policy.conditions import (
    Reason,
    RequestContext,
    StepUpSettings,
    denial_reason,
    normalize_client_ip,
)
from strongroom.core.policy.rbac import (
    Action,
    Decision,
    Resource,
    ResourceKind,
    authorize,
    permitted,
)
from strongroom.errors import ForbiddenError, InvalidInputError, MfaRequiredError

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CTX = RequestContext(now=NOW, client_ip=IPv4Address("10.1.2.3"))

# The table of docs/access-control.md, written out again here (not imported) on purpose.
TABLE = {
    "admin": "model.read principal.read principal.manage credential.manage key.read key.rotate "
    "server.read",
    "model-owner": "model.read model.push model.verify server.read",
    "deployer": "model.read model.verify model.promote model.rollback model.limit server.read",
    "predictor": "model.read model.predict server.read",
    "auditor": "audit.read audit.verify model.read model.verify principal.read key.read "
    "server.read",
}
KIND_OF = {
    "model": ResourceKind.MODEL,
    "audit": ResourceKind.AUDIT,
    "principal": ResourceKind.PRINCIPAL,
    "credential": ResourceKind.PRINCIPAL,
    "key": ResourceKind.KEY,
    "server": ResourceKind.SERVER,
}
STEP_UP = {
    "model.promote",
    "model.rollback",
    "model.limit",
    "key.rotate",
    "credential.manage",
    "principal.manage",
}


def make(
    *,
    pid: str = "user:alice",
    roles: tuple[Role, ...] = (),
    grants: tuple[Grant, ...] = (),
    networks: tuple[str, ...] = (),
    mfa_at: datetime | None = NOW - timedelta(minutes=1),
    expires_at: datetime | None = None,
    disabled: bool = False,
) -> Principal:
    kind = PrincipalKind.USER if pid.startswith("user:") else PrincipalKind.SERVICE
    return Principal(
        id=pid,
        kind=kind,
        credential=CredentialInfo(kind=CredentialKind.API_KEY, id="abc", expires_at=expires_at),
        roles=frozenset(roles),
        grants=grants,
        networks=tuple(ip_network(n) for n in networks),
        mfa_at=mfa_at,
        disabled=disabled,
    )


def resource_for(action: Action, name: str = "fraud") -> Resource:
    kind = KIND_OF[action.value.partition(".")[0]]
    return Resource(kind, name if kind is ResourceKind.MODEL else "*")


def reason_of(excinfo: pytest.ExceptionInfo[ForbiddenError]) -> Reason | None:
    return denial_reason(excinfo.value)


# --- the role table -------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_global_role_table(role: Role, action: Action) -> None:
    principal = make(roles=(role,))
    if action.value in TABLE[role.value].split():
        decision = authorize(principal, action, resource_for(action), CTX)
        assert decision == Decision("user:alice", action, resource_for(action), role, None)
    else:
        with pytest.raises(ForbiddenError) as excinfo:
            authorize(principal, action, resource_for(action), CTX)
        assert type(excinfo.value) is ForbiddenError
        assert reason_of(excinfo) is Reason.NO_MATCHING_ROLE


def test_every_action_is_in_the_documented_table_and_kinds() -> None:
    documented = {a for actions in TABLE.values() for a in actions.split()}
    assert {a.value for a in Action} == documented
    assert {a.value for a in Action if a.step_up is not None} == STEP_UP
    for action in Action:
        assert action.resource_kind is KIND_OF[action.value.partition(".")[0]]


def test_no_roles_no_grants_is_denied_everything() -> None:
    for action in Action:
        with pytest.raises(ForbiddenError):
            authorize(make(), action, resource_for(action), CTX)


def test_global_role_covers_the_all_models_resource() -> None:
    decision = authorize(make(roles=(Role.PREDICTOR,)), Action.MODEL_READ, Resource.model(), CTX)
    assert decision.role is Role.PREDICTOR


def test_decision_names_first_role_in_documented_order() -> None:
    principal = make(roles=(Role.AUDITOR, Role.PREDICTOR, Role.ADMIN))
    assert authorize(principal, Action.MODEL_READ, Resource.model("m"), CTX).role is Role.ADMIN
    principal = make(roles=(Role.AUDITOR, Role.PREDICTOR))
    assert authorize(principal, Action.MODEL_READ, Resource.model("m"), CTX).role is Role.PREDICTOR


# --- grants ---------------------------------------------------------------------------------

FRAUD = Grant(Role.PREDICTOR, "fraud-*")


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("fraud-x", True),
        ("fraud-1", True),
        ("fraudx", False),
        ("fraud", False),
        ("fraud-a.b_c", True),
        ("xfraud-a", False),
    ],
)
def test_grant_pattern_matching(model: str, allowed: bool) -> None:
    principal = make(pid="svc:scoring", grants=(FRAUD,))
    if allowed:
        decision = authorize(principal, Action.MODEL_PREDICT, Resource.model(model), CTX)
        assert decision.grant == FRAUD
        assert decision.role is Role.PREDICTOR
    else:
        with pytest.raises(ForbiddenError) as excinfo:
            authorize(principal, Action.MODEL_PREDICT, Resource.model(model), CTX)
        assert reason_of(excinfo) is Reason.NO_MATCHING_ROLE


@pytest.mark.parametrize(
    "name", ["FRAUD-x", "fraud-x/../y", "fraud-x ", "", "fraud-x\x00", "../fraud-x", "ﬀraud-x"]
)
def test_malformed_model_names_never_reach_a_decision(name: str) -> None:
    with pytest.raises(InvalidInputError):
        Resource.model(name)


def test_fraud_dash_one_char_is_matched_only_by_exact_name_rules() -> None:
    principal = make(grants=(Grant(Role.PREDICTOR, "fraud-?"),))
    assert authorize(principal, Action.MODEL_PREDICT, Resource.model("fraud-1"), CTX).grant
    with pytest.raises(ForbiddenError):
        authorize(principal, Action.MODEL_PREDICT, Resource.model("fraud-12"), CTX)


def test_grant_gives_only_its_roles_actions() -> None:
    principal = make(grants=(FRAUD,))
    with pytest.raises(ForbiddenError):
        authorize(principal, Action.MODEL_PUSH, Resource.model("fraud-x"), CTX)
    assert authorize(principal, Action.MODEL_READ, Resource.model("fraud-x"), CTX).grant == FRAUD


def test_grant_never_covers_all_models_even_with_star_pattern() -> None:
    principal = make(grants=(Grant(Role.PREDICTOR, "*"),))
    assert authorize(principal, Action.MODEL_PREDICT, Resource.model("a"), CTX).grant
    with pytest.raises(ForbiddenError):
        authorize(principal, Action.MODEL_PREDICT, Resource.model(), CTX)


def test_grant_never_applies_to_non_model_resources() -> None:
    principal = make(grants=(Grant(Role.AUDITOR, "*"), Grant(Role.ADMIN, "*")))
    for action in (Action.AUDIT_READ, Action.PRINCIPAL_READ, Action.KEY_READ, Action.SERVER_READ):
        with pytest.raises(ForbiddenError):
            authorize(principal, action, resource_for(action), CTX)


def test_later_grant_matches_when_earlier_does_not() -> None:
    second = Grant(Role.PREDICTOR, "credit-*")
    principal = make(grants=(FRAUD, second))
    assert (
        authorize(principal, Action.MODEL_PREDICT, Resource.model("credit-1"), CTX).grant == second
    )


@pytest.mark.parametrize("pattern", ["", "FRAUD-*", "fraud/*", "[ab]*", "a" * 65, "fraud *", "*\n"])
def test_invalid_grant_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidInputError):
        Grant(Role.PREDICTOR, pattern)


# --- conditions: active ---------------------------------------------------------------------


def test_disabled_principal_is_denied_even_as_admin() -> None:
    with pytest.raises(ForbiddenError) as excinfo:
        authorize(
            make(roles=tuple(Role), disabled=True), Action.SERVER_READ, Resource.server(), CTX
        )
    assert reason_of(excinfo) is Reason.PRINCIPAL_DISABLED


def test_credential_expiring_exactly_now_is_expired() -> None:
    with pytest.raises(ForbiddenError) as excinfo:
        authorize(
            make(roles=(Role.PREDICTOR,), expires_at=NOW),
            Action.SERVER_READ,
            Resource.server(),
            CTX,
        )
    assert reason_of(excinfo) is Reason.CREDENTIAL_EXPIRED
    later = make(roles=(Role.PREDICTOR,), expires_at=NOW + timedelta(microseconds=1))
    assert authorize(later, Action.SERVER_READ, Resource.server(), CTX).role is Role.PREDICTOR


def test_expiry_in_another_time_zone_compares_as_an_instant() -> None:
    plus2 = timezone(timedelta(hours=2))
    expired = make(roles=(Role.PREDICTOR,), expires_at=datetime(2025, 6, 1, 14, 0, tzinfo=plus2))
    with pytest.raises(ForbiddenError):
        authorize(expired, Action.SERVER_READ, Resource.server(), CTX)


# --- conditions: networks -------------------------------------------------------------------


def _read_from(networks: tuple[str, ...], client: str | None) -> Decision:
    principal = make(roles=(Role.AUDITOR,), networks=networks)
    ip = None if client is None else ip_address(client)
    return authorize(principal, Action.AUDIT_READ, Resource.audit(), RequestContext(NOW, ip))


@pytest.mark.parametrize(
    ("networks", "client"),
    [
        (("10.0.0.0/8",), "10.255.0.1"),
        (("192.168.0.0/16", "10.0.0.0/8"), "10.0.0.1"),
        (("10.0.0.0/8",), "::ffff:10.9.9.9"),
        (("10.0.0.0/8",), "::ffff:a09:909"),
        (("2001:db8::/32",), "2001:db8::1"),
        (("fe80::/64",), "fe80::1"),
        ((), None),
        ((), "203.0.113.9"),
        ((), "fe80::1%eth0"),  # no networks: the address is not looked at
    ],
)
def test_network_allows(networks: tuple[str, ...], client: str | None) -> None:
    assert _read_from(networks, client).role is Role.AUDITOR


@pytest.mark.parametrize(
    ("networks", "client", "reason"),
    [
        (("10.0.0.0/8",), "11.0.0.1", Reason.NETWORK_NOT_ALLOWED),
        (("10.0.0.0/8",), None, Reason.NO_CLIENT_ADDRESS),
        (("::/0",), "::ffff:10.9.9.9", Reason.NETWORK_NOT_ALLOWED),
        (("::/0",), "10.9.9.9", Reason.NETWORK_NOT_ALLOWED),
        (("0.0.0.0/0",), "2001:db8::1", Reason.NETWORK_NOT_ALLOWED),
        (("10.0.0.0/8",), "::a09:909", Reason.BAD_CLIENT_ADDRESS),  # IPv4-compatible: refused
        (("::/0",), "::a09:909", Reason.BAD_CLIENT_ADDRESS),
        (("::/0",), "::ffff:0:a09:909", Reason.BAD_CLIENT_ADDRESS),  # IPv4-translated
        (("::/0",), "::", Reason.BAD_CLIENT_ADDRESS),
        (("0.0.0.0/0",), "0.0.0.0", Reason.BAD_CLIENT_ADDRESS),  # noqa: S104 - unspecified
        (("0.0.0.0/0",), "::ffff:0.0.0.0", Reason.BAD_CLIENT_ADDRESS),
        (("10.0.0.0/8",), "64:ff9b::a09:909", Reason.NETWORK_NOT_ALLOWED),  # NAT64 is not mapped
        # A zone id is no longer ignored: it is an unknown address, and fails closed.
        (("fe80::/64",), "fe80::1%eth0", Reason.BAD_CLIENT_ADDRESS),
        (("fe80::/64",), "fe80::1%3", Reason.BAD_CLIENT_ADDRESS),
        (("10.0.0.0/8",), "::ffff:10.9.9.9%eth0", Reason.BAD_CLIENT_ADDRESS),
        (("fe80::/64",), "fe80:0:0:1::1%eth0", Reason.BAD_CLIENT_ADDRESS),
    ],
)
def test_network_denies(networks: tuple[str, ...], client: str | None, reason: Reason) -> None:
    with pytest.raises(ForbiddenError) as excinfo:
        _read_from(networks, client)
    assert reason_of(excinfo) is reason


def test_normalize_client_ip() -> None:
    assert normalize_client_ip(IPv6Address("::ffff:1.2.3.4")) == IPv4Address("1.2.3.4")
    assert normalize_client_ip(IPv4Address("1.2.3.4")) == IPv4Address("1.2.3.4")
    assert normalize_client_ip(IPv6Address("::1")) == IPv6Address("::1")
    assert normalize_client_ip(IPv6Address("2001:db8::1")) == IPv6Address("2001:db8::1")
    for refused in ("fe80::1%eth0", "::ffff:1.2.3.4%eth0", "::a00:1", "::ffff:0:a00:1", "::"):
        with pytest.raises(InvalidInputError):
            normalize_client_ip(IPv6Address(refused))
    with pytest.raises(InvalidInputError):
        normalize_client_ip(IPv4Address("0.0.0.0"))  # noqa: S104 - the unspecified address


def test_ipv4_mapped_networks_are_refused_when_building_a_principal() -> None:
    with pytest.raises(InvalidInputError, match="IPv4-mapped"):
        make(networks=("::ffff:10.0.0.0/104",))


def test_networks_are_checked_before_roles() -> None:
    with pytest.raises(ForbiddenError) as excinfo:
        _read_from(("10.0.0.0/8",), "11.0.0.1")
    assert reason_of(excinfo) is Reason.NETWORK_NOT_ALLOWED


# --- conditions: MFA step-up ----------------------------------------------------------------


def _promote(principal: Principal, ctx: RequestContext = CTX) -> Decision:
    return authorize(principal, Action.MODEL_PROMOTE, Resource.model("fraud"), ctx)


def test_step_up_boundaries() -> None:
    assert _promote(make(roles=(Role.DEPLOYER,), mfa_at=NOW - timedelta(minutes=5))).role
    assert _promote(make(roles=(Role.DEPLOYER,), mfa_at=NOW)).role
    for mfa_at in (
        NOW - timedelta(minutes=5, microseconds=1),
        None,
        NOW + timedelta(microseconds=1),
    ):
        with pytest.raises(MfaRequiredError) as excinfo:
            _promote(make(roles=(Role.DEPLOYER,), mfa_at=mfa_at))
        assert excinfo.value.code == "auth.mfa_required"
        assert reason_of(excinfo) is Reason.MFA_REQUIRED


@pytest.mark.parametrize("action", [a for a in Action if a.value in STEP_UP])
def test_every_step_up_action_needs_fresh_mfa(action: Action) -> None:
    stale = make(roles=tuple(Role), mfa_at=NOW - timedelta(hours=1))
    with pytest.raises(MfaRequiredError):
        authorize(stale, action, resource_for(action), CTX)
    fresh = make(roles=tuple(Role))
    assert authorize(fresh, action, resource_for(action), CTX).action is action


@pytest.mark.parametrize("action", [a for a in Action if a.value not in STEP_UP])
def test_other_actions_need_no_mfa(action: Action) -> None:
    principal = make(roles=tuple(Role), mfa_at=None)
    assert authorize(principal, action, resource_for(action), CTX).action is action


@pytest.mark.parametrize("action", [a for a in Action if a.value in STEP_UP])
def test_services_never_do_step_up_actions(action: Action) -> None:
    service = make(pid="svc:ci", roles=tuple(Role), mfa_at=NOW)
    with pytest.raises(ForbiddenError) as excinfo:
        authorize(service, action, resource_for(action), CTX)
    assert not isinstance(excinfo.value, MfaRequiredError)
    assert reason_of(excinfo) is Reason.MFA_UNAVAILABLE


def test_mfa_required_only_when_the_role_would_allow() -> None:
    with pytest.raises(ForbiddenError) as excinfo:
        _promote(make(roles=(Role.PREDICTOR,), mfa_at=None))
    assert not isinstance(excinfo.value, MfaRequiredError)
    assert reason_of(excinfo) is Reason.NO_MATCHING_ROLE


def test_step_up_settings_per_action_class() -> None:
    settings = StepUpSettings(stage_change=timedelta(minutes=1), administration=timedelta(hours=1))
    ctx = RequestContext(NOW, None, settings)
    user = make(roles=(Role.DEPLOYER, Role.ADMIN), mfa_at=NOW - timedelta(minutes=30))
    with pytest.raises(MfaRequiredError):
        _promote(user, ctx)
    assert authorize(user, Action.KEY_ROTATE, Resource.key("kek"), ctx).role is Role.ADMIN


@pytest.mark.parametrize("age", [timedelta(0), timedelta(seconds=-1), timedelta(hours=13)])
def test_step_up_settings_are_validated(age: timedelta) -> None:
    with pytest.raises(InvalidInputError):
        StepUpSettings(stage_change=age)
    with pytest.raises(InvalidInputError):
        StepUpSettings(administration=age)


def test_grant_allows_promotion_with_mfa() -> None:
    user = make(grants=(Grant(Role.DEPLOYER, "fraud*"),))
    assert _promote(user).grant == Grant(Role.DEPLOYER, "fraud*")


# --- resources, opacity, inputs --------------------------------------------------------------


def test_resource_kind_must_match_action() -> None:
    admin = make(roles=tuple(Role))
    with pytest.raises(ForbiddenError) as excinfo:
        authorize(admin, Action.AUDIT_READ, Resource.model("fraud"), CTX)
    assert reason_of(excinfo) is Reason.RESOURCE_MISMATCH
    assert authorize(admin, Action.CREDENTIAL_MANAGE, Resource.principal("svc:x"), CTX).role


def test_denials_are_opaque() -> None:
    errors = []
    for principal in (make(disabled=True), make(), make(networks=("10.0.0.0/8",))):
        with pytest.raises(ForbiddenError) as excinfo:
            authorize(principal, Action.SERVER_READ, Resource.server(), RequestContext(NOW))
        errors.append(excinfo.value)
    assert {str(e) for e in errors} == {"forbidden"}
    assert {e.code for e in errors} == {"auth.forbidden"}
    assert len({denial_reason(e) for e in errors}) == 3


def test_denial_reason_of_a_foreign_error_is_none() -> None:
    assert denial_reason(ForbiddenError()) is None


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        (ResourceKind.AUDIT, "log"),
        (ResourceKind.SERVER, "x"),
        (ResourceKind.PRINCIPAL, "alice"),
        (ResourceKind.KEY, "KEK"),
        (ResourceKind.MODEL, "a" * 65),
    ],
)
def test_invalid_resource_names(kind: ResourceKind, name: str) -> None:
    with pytest.raises(InvalidInputError):
        Resource(kind, name)


def test_authorize_refuses_wrong_argument_types() -> None:
    with pytest.raises(InvalidInputError):
        authorize(make(), "model.read", Resource.model(), CTX)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        authorize(make(), Action.MODEL_READ, Resource.model(), NOW)  # type: ignore[arg-type]


def test_request_context_validation() -> None:
    with pytest.raises(InvalidInputError):
        RequestContext(now=datetime(2025, 1, 1))  # noqa: DTZ001 - naive on purpose
    with pytest.raises(InvalidInputError):
        RequestContext(now=NOW, client_ip="10.0.0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "alice"},
        {"id": "svc:alice"},
        {"id": "user:"},
        {"id": "user:al ice"},
        {"roles": {Role.ADMIN}},
        {"roles": frozenset({"admin"})},
        {"grants": [FRAUD]},
        {"networks": ("10.0.0.0/8",)},
        {"mfa_at": datetime(2025, 1, 1)},  # noqa: DTZ001 - naive on purpose
        {"disabled": 0},
    ],
)
def test_principal_validation(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "id": "user:alice",
        "kind": PrincipalKind.USER,
        "credential": CredentialInfo(kind=CredentialKind.JWT, id="jti-1"),
    }
    fields.update(changes)
    with pytest.raises(InvalidInputError):
        Principal(**fields)  # type: ignore[arg-type]


def test_credential_validation() -> None:
    with pytest.raises(InvalidInputError):
        CredentialInfo(kind=CredentialKind.JWT, id="has space")
    with pytest.raises(InvalidInputError):
        CredentialInfo(kind=CredentialKind.JWT, id="x", expires_at=datetime(2025, 1, 1))  # noqa: DTZ001


def test_permitted_filters_with_the_same_rules() -> None:
    principal = make(pid="svc:scoring", grants=(FRAUD,))
    names = ["fraud", "fraud-a", "credit", "fraud-b"]
    allowed = permitted(principal, Action.MODEL_READ, [Resource.model(n) for n in names], CTX)
    assert [r.name for r in allowed] == ["fraud-a", "fraud-b"]


# --- the examples of docs/access-control.md -------------------------------------------------


def test_documented_examples() -> None:
    scoring = make(pid="svc:scoring", grants=(FRAUD,), mfa_at=None)
    assert authorize(scoring, Action.MODEL_PREDICT, Resource.model("fraud-v2"), CTX).grant == FRAUD
    for action, res in [
        (Action.MODEL_PREDICT, Resource.model("fraud")),
        (Action.MODEL_READ, Resource.model()),
        (Action.MODEL_PUSH, Resource.model("fraud-v2")),
    ]:
        with pytest.raises(ForbiddenError):
            authorize(scoring, action, res, CTX)
    ops = make(pid="user:ops", roles=(Role.DEPLOYER,), mfa_at=NOW + timedelta(minutes=2))
    assert _promote(ops, RequestContext(NOW + timedelta(minutes=6))).role is Role.DEPLOYER
    with pytest.raises(MfaRequiredError):
        _promote(ops, RequestContext(NOW + timedelta(minutes=8)))
    with pytest.raises(ForbiddenError) as excinfo:
        _promote(make(pid="svc:ci", roles=(Role.DEPLOYER, Role.MODEL_OWNER)))
    assert reason_of(excinfo) is Reason.MFA_UNAVAILABLE
    with pytest.raises(ForbiddenError):
        authorize(make(roles=(Role.ADMIN,)), Action.MODEL_PREDICT, Resource.model("fraud"), CTX)
    assert _read_from(("10.0.0.0/8",), "::ffff:10.9.9.9").role is Role.AUDITOR
