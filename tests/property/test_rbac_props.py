"""authorize() against an oracle written from docs/access-control.md alone.

The oracle below does not import the role table, the step-up set, fnmatch or ipaddress
membership from the code under test: it restates the documented table and decision procedure
and works on plain strings and integers. For thousands of random principals, actions, resources
and contexts, the two must agree on the outcome (allow, MFA step-up, deny) and on the logged
reason; the test also checks that every outcome and every reason occurred, so it can fail.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
)
from strongroom.core.policy.rbac import Action, Decision, Resource, ResourceKind, authorize
from strongroom.errors import ForbiddenError, MfaRequiredError

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

# --- the oracle: a direct reading of docs/access-control.md ---------------------------------

DOC_TABLE = {
    "admin": {
        "model.read",
        "principal.read",
        "principal.manage",
        "credential.manage",
        "key.read",
        "key.rotate",
        "server.read",
    },
    "model-owner": {"model.read", "model.push", "model.verify", "server.read"},
    "deployer": {
        "model.read",
        "model.verify",
        "model.promote",
        "model.rollback",
        "model.limit",
        "server.read",
    },
    "predictor": {"model.read", "model.predict", "server.read"},
    "auditor": {
        "audit.read",
        "audit.verify",
        "model.read",
        "model.verify",
        "principal.read",
        "key.read",
        "server.read",
    },
}
DOC_KIND = {
    "model": "model",
    "audit": "audit",
    "principal": "principal",
    "credential": "principal",
    "key": "key",
    "server": "server",
}
DOC_STEP_UP = {
    "model.promote": "stage_change",
    "model.rollback": "stage_change",
    "model.limit": "stage_change",
    "key.rotate": "administration",
    "credential.manage": "administration",
    "principal.manage": "administration",
}


def glob(pattern: str, name: str) -> bool:
    """``*`` any run, ``?`` one character, everything else literal and case-sensitive."""
    if not pattern:
        return not name
    if pattern[0] == "*":
        return glob(pattern[1:], name) or (bool(name) and glob(pattern, name[1:]))
    if not name:
        return False
    return pattern[0] in {"?", name[0]} and glob(pattern[1:], name[1:])


def address_value(text: str) -> tuple[int, int]:
    """(IP version, integer) of a client address (without a zone id): IPv4-mapped read as IPv4."""
    parsed = ipaddress.ip_address(text)
    value = int(parsed)
    if parsed.version == 6 and value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return parsed.version, value


def in_network(network: str, client: str) -> bool:
    base, _, length = network.partition("/")
    net = ipaddress.ip_address(base)
    version, value = address_value(client)
    shift = (32 if net.version == 4 else 128) - int(length)
    return net.version == version and value >> shift == int(net) >> shift


@dataclass(frozen=True)
class Case:
    service: bool
    roles: frozenset[str]
    grants: tuple[tuple[str, str], ...]
    networks: tuple[str, ...]
    client: str | None
    mfa_offset: int | None  # mfa_at = NOW - offset seconds
    expiry_offset: int | None  # expires_at = NOW + offset seconds
    disabled: bool
    action: str
    kind: str
    name: str
    stage_change_max: int
    administration_max: int


def oracle_conditions(case: Case) -> str | None:
    """Steps 1-4 of the decision procedure: the reason to deny, or None to go on."""
    if case.disabled:
        return "principal_disabled"
    if case.expiry_offset is not None and case.expiry_offset <= 0:
        return "credential_expired"
    network = oracle_network(case)
    if network is not None:
        return network
    if DOC_KIND[case.action.split(".")[0]] != case.kind:
        return "resource_mismatch"
    return None


def oracle_network(case: Case) -> str | None:
    """Step 3: a network-bound principal needs a client address inside one of its networks."""
    if not case.networks:
        return None
    if case.client is None:
        return "no_client_address"
    if "%" in case.client:  # a zone id: an address no network can hold, refused
        return "bad_client_address"
    if not any(in_network(n, case.client) for n in case.networks):
        return "network_not_allowed"
    return None


def oracle(case: Case) -> tuple[str, str | None]:
    """("allow", None), ("mfa", "mfa_required") or ("deny", reason), as the doc describes."""
    reason = oracle_conditions(case)
    if reason is not None:
        return "deny", reason
    by_role = any(case.action in DOC_TABLE[r] for r in case.roles)
    by_grant = (
        case.kind == "model"
        and case.name != "*"
        and any(case.action in DOC_TABLE[r] and glob(p, case.name) for r, p in case.grants)
    )
    if not by_role and not by_grant:
        return "deny", "no_matching_role"
    step_up = DOC_STEP_UP.get(case.action)
    if step_up is None:
        return "allow", None
    if case.service:
        return "deny", "mfa_unavailable"
    limit = case.stage_change_max if step_up == "stage_change" else case.administration_max
    fresh = case.mfa_offset is not None and 0 <= case.mfa_offset <= limit
    return ("allow", None) if fresh else ("mfa", "mfa_required")


# --- generating cases (small fixed pools, weighted towards active principals) -----------------

ROLE_NAMES = ["admin", "model-owner", "deployer", "predictor", "auditor"]
PATTERNS = [
    "*",
    "a*",
    "*",
    "a*",
    "b*",
    "a?",
    "a-*",
    "*b",
    "a",
    "ab",
    "?",
    "a*b",
    "a.b",
    "*-*",
    "a**",
    "b?a",
]
MODEL_NAMES = ["*", "a", "b", "ab", "ba", "a-b", "a.b", "aab", "a-b-a", "bb"]
OTHER_NAMES = {"principal": ["*", "user:bob", "svc:x"], "key": ["*", "kek"]}
NETWORK_SETS: list[tuple[str, ...]] = [
    *[()] * 8,
    ("10.0.0.0/8",),
    ("10.1.0.0/16", "2001:db8::/32"),
    ("192.168.1.0/24",),
    ("fe80::/64",),
    ("::/0",),
    ("0.0.0.0/0", "::/0"),
]
CLIENTS = [
    None,
    "10.1.2.3",
    "10.2.0.1",
    "192.168.1.7",
    "192.168.2.7",
    "::ffff:10.1.2.3",
    "::ffff:192.168.1.7",
    "::ffff:8.8.8.8",
    "2001:db8::5",
    "2001:db9::5",
    "fe80::1%eth0",
    "fe80::2",
    "8.8.8.8",
]
MFA_OFFSETS = [None, -1, 0, 30, 59, 60, 61, 200, 299, 300, 301, 599, 600, 601, 3600]
EXPIRY_OFFSETS = [None] * 12 + [-1, 0, 1, 3600]
ACTIONS = [a.value for a in Action]
KINDS = sorted(set(DOC_KIND.values()))


# Strategies are built once: building them inside the composite dominated the run time.
S_ACTION = st.sampled_from(ACTIONS + sorted(DOC_STEP_UP))  # step-up actions twice as often
S_KIND = st.sampled_from(KINDS)
S_RIGHT_KIND = st.sampled_from([True] * 8 + [False])
S_NAMES = {
    k: st.sampled_from(MODEL_NAMES if k == "model" else OTHER_NAMES.get(k, ["*"])) for k in KINDS
}
S_ROLES = st.lists(st.sampled_from(ROLE_NAMES), max_size=3)
S_GRANTS = st.lists(st.tuples(st.sampled_from(ROLE_NAMES), st.sampled_from(PATTERNS)), max_size=3)
S_NETWORKS = st.sampled_from(NETWORK_SETS)
S_CLIENT = st.sampled_from(CLIENTS)
S_MFA = st.sampled_from(MFA_OFFSETS)
S_EXPIRY = st.sampled_from(EXPIRY_OFFSETS)
S_DISABLED = st.sampled_from([False] * 15 + [True])
S_MAX_AGE = st.sampled_from([60, 300, 600])


@st.composite
def cases(draw: st.DrawFn) -> Case:
    action = draw(S_ACTION)
    right_kind = DOC_KIND[action.split(".")[0]]
    kind = right_kind if draw(S_RIGHT_KIND) else draw(S_KIND)
    return Case(
        service=draw(st.booleans()),
        roles=frozenset(draw(S_ROLES)),
        grants=tuple(draw(S_GRANTS)),
        networks=draw(S_NETWORKS),
        client=draw(S_CLIENT),
        mfa_offset=draw(S_MFA),
        expiry_offset=draw(S_EXPIRY),
        disabled=draw(S_DISABLED),
        action=action,
        kind=kind,
        name=draw(S_NAMES[kind]),
        stage_change_max=draw(S_MAX_AGE),
        administration_max=draw(S_MAX_AGE),
    )


def build(case: Case) -> tuple[Principal, Action, Resource, RequestContext]:
    principal = Principal(
        id="svc:p" if case.service else "user:p",
        kind=PrincipalKind.SERVICE if case.service else PrincipalKind.USER,
        credential=CredentialInfo(
            kind=CredentialKind.JWT,
            id="t",
            expires_at=None
            if case.expiry_offset is None
            else NOW + timedelta(seconds=case.expiry_offset),
        ),
        roles=frozenset(Role(r) for r in case.roles),
        grants=tuple(Grant(Role(r), p) for r, p in case.grants),
        networks=tuple(ipaddress.ip_network(n) for n in case.networks),
        mfa_at=None if case.mfa_offset is None else NOW - timedelta(seconds=case.mfa_offset),
        disabled=case.disabled,
    )
    context = RequestContext(
        now=NOW,
        client_ip=None if case.client is None else ipaddress.ip_address(case.client),
        step_up=StepUpSettings(
            stage_change=timedelta(seconds=case.stage_change_max),
            administration=timedelta(seconds=case.administration_max),
        ),
    )
    return principal, Action(case.action), Resource(ResourceKind(case.kind), case.name), context


def run(case: Case) -> tuple[str, str | None, Decision | None]:
    principal, action, resource, context = build(case)
    try:
        decision = authorize(principal, action, resource, context)
    except MfaRequiredError as exc:
        reason = denial_reason(exc)
        return "mfa", None if reason is None else reason.value, None
    except ForbiddenError as exc:
        reason = denial_reason(exc)
        return "deny", None if reason is None else reason.value, None
    return "allow", None, decision


def check_decision(case: Case, decision: Decision) -> None:
    """An allowed decision names a role (or grant) that really allows the action."""
    assert decision.action.value == case.action
    assert decision.principal_id == ("svc:p" if case.service else "user:p")
    assert case.action in DOC_TABLE[decision.role.value]
    if decision.grant is None:
        assert decision.role.value in case.roles
    else:
        assert not any(case.action in DOC_TABLE[r] for r in case.roles)
        assert decision.grant.role is decision.role
        assert glob(decision.grant.pattern, case.name)


PROPS = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow  # about 5 s: 3,000 cases
def test_authorize_agrees_with_the_documented_oracle() -> None:
    outcomes: Counter[str] = Counter()
    reasons: Counter[str | None] = Counter()

    @PROPS
    @given(cases())
    def agree(case: Case) -> None:
        expected = oracle(case)
        outcome, reason, decision = run(case)
        assert (outcome, reason) == expected, case
        if decision is not None:
            check_decision(case, decision)
            outcomes["grant" if decision.grant is not None else "role"] += 1
        outcomes[outcome] += 1
        reasons[reason] += 1

    agree()
    assert outcomes["allow"] >= 200, outcomes
    assert outcomes["deny"] >= 200, outcomes
    assert outcomes["mfa"] >= 10, outcomes
    assert outcomes["grant"] >= 10, outcomes
    assert outcomes["role"] >= 100, outcomes
    only_network_rules = {Reason.NETWORK_DENIED.value}  # deny lists are not authorize's
    assert set(reasons) == {None} | {r.value for r in Reason} - only_network_rules, reasons


def test_glob_oracle_is_itself_sound() -> None:
    """The oracle's matcher, on fixed examples, so a broken oracle cannot agree vacuously."""
    assert glob("fraud-*", "fraud-x")
    assert not glob("fraud-*", "fraud")
    assert glob("a?b", "axb")
    assert not glob("a?b", "ab")
    assert glob("*", "")
    assert not glob("A", "a")
    assert in_network("10.0.0.0/8", "::ffff:10.1.2.3")
    assert not in_network("::/0", "::ffff:10.1.2.3")
    assert in_network("fe80::/64", "fe80::1")


@settings(max_examples=300, deadline=None)
@given(cases(), st.lists(st.sampled_from(ROLE_NAMES), min_size=1, max_size=2))
def test_more_roles_never_take_access_away(case: Case, extra: list[str]) -> None:
    before, _, _ = run(case)
    richer = replace(case, roles=case.roles | set(extra))
    after, _, _ = run(richer)
    if before == "allow":
        assert after == "allow"
    if before == "mfa":
        assert after == "mfa"
