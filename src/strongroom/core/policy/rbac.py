"""Role-based access control: the one decision ``authorize(principal, action, resource, context)``.

Deny by default. ``authorize`` returns a ``Decision`` (the role and grant that allowed the action,
for the audit record) or raises the opaque ``ForbiddenError``, or ``MfaRequiredError`` when the
only thing missing is a fresh MFA step-up. The reason of a denial is on ``__cause__`` (read it
with ``conditions.denial_reason``) for the server log only.

The decision procedure, in order (``docs/access-control.md`` is the normative description):

1. a disabled principal or an expired credential is denied;
2. a principal bound to networks must call from inside one of them;
3. the resource must be of the kind the action acts on (``Action.resource_kind``);
4. a global role whose actions include the action allows it on any resource of that kind; else a
   grant whose role includes the action allows it on a *model* whose name matches the grant's
   pattern (never on ``*``, never on a non-model resource); else deny;
5. a step-up action (promote, rollback, key rotation, credential or principal management) also
   needs a user whose MFA is fresh; services never are. This is checked last, so that a step-up
   challenge is only offered when completing it would actually allow the action.

The role table is static on purpose: it is reviewed like code, and an operator changes who may
do what by assigning roles and grants, which is itself an audited, step-up action.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from strongroom.core.identity.principal import PRINCIPAL_ID_RE, Grant, Principal, Role
from strongroom.core.policy.conditions import (
    Reason,
    RequestContext,
    StepUpClass,
    check_active,
    check_mfa_fresh,
    check_network,
    deny,
)
from strongroom.core.registry.model import MODEL_NAME_RE
from strongroom.errors import ForbiddenError, InvalidInputError

KEY_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._:-]{0,127}")
ALL: Final = "*"


class ResourceKind(StrEnum):
    MODEL = "model"
    AUDIT = "audit"
    PRINCIPAL = "principal"
    KEY = "key"
    SERVER = "server"


class Action(StrEnum):
    MODEL_READ = "model.read"
    MODEL_PUSH = "model.push"
    MODEL_PROMOTE = "model.promote"
    MODEL_ROLLBACK = "model.rollback"
    MODEL_PREDICT = "model.predict"
    MODEL_VERIFY = "model.verify"
    MODEL_LIMIT = "model.limit"  # rate limits, quotas and queue bound of a model
    AUDIT_READ = "audit.read"
    AUDIT_VERIFY = "audit.verify"
    PRINCIPAL_READ = "principal.read"
    PRINCIPAL_MANAGE = "principal.manage"
    CREDENTIAL_MANAGE = "credential.manage"  # the credentials *of* a principal
    KEY_ROTATE = "key.rotate"
    KEY_READ = "key.read"
    SERVER_READ = "server.read"

    @property
    def resource_kind(self) -> ResourceKind:
        """The one kind of resource this action acts on."""
        if self is Action.CREDENTIAL_MANAGE:
            return ResourceKind.PRINCIPAL
        return ResourceKind(self.value.partition(".")[0])

    @property
    def step_up(self) -> StepUpClass | None:
        """The MFA step-up class this action needs, or None if it needs none."""
        return STEP_UP.get(self)


STEP_UP: Final[Mapping[Action, StepUpClass]] = MappingProxyType(
    {
        Action.MODEL_PROMOTE: StepUpClass.STAGE_CHANGE,
        Action.MODEL_ROLLBACK: StepUpClass.STAGE_CHANGE,
        Action.MODEL_LIMIT: StepUpClass.STAGE_CHANGE,
        Action.KEY_ROTATE: StepUpClass.ADMINISTRATION,
        Action.CREDENTIAL_MANAGE: StepUpClass.ADMINISTRATION,
        Action.PRINCIPAL_MANAGE: StepUpClass.ADMINISTRATION,
    }
)

_A = Action
ROLE_ACTIONS: Final[Mapping[Role, frozenset[Action]]] = MappingProxyType(
    {
        # Identity and key custodian. No model lifecycle, no predictions and no audit reading:
        # whoever decides who may do what is not also the one reading the record that watches
        # them. An admin can grant itself another role, but that is a step-up, audited act.
        Role.ADMIN: frozenset(
            {
                _A.MODEL_READ,
                _A.PRINCIPAL_READ,
                _A.PRINCIPAL_MANAGE,
                _A.CREDENTIAL_MANAGE,
                _A.KEY_READ,
                _A.KEY_ROTATE,
                _A.SERVER_READ,
            }
        ),
        # Publishes versions (signed, verified) but cannot put them in production alone.
        Role.MODEL_OWNER: frozenset(
            {_A.MODEL_READ, _A.MODEL_PUSH, _A.MODEL_VERIFY, _A.SERVER_READ}
        ),
        # Changes stages and how a model is served (limits), with MFA; may verify what it is
        # about to promote; cannot push.
        Role.DEPLOYER: frozenset(
            {
                _A.MODEL_READ,
                _A.MODEL_VERIFY,
                _A.MODEL_PROMOTE,
                _A.MODEL_ROLLBACK,
                _A.MODEL_LIMIT,
                _A.SERVER_READ,
            }
        ),
        # Calls models and reads their metadata (the OIP needs it to build requests).
        Role.PREDICTOR: frozenset({_A.MODEL_READ, _A.MODEL_PREDICT, _A.SERVER_READ}),
        # Read-only over everything an auditor must evidence; never secrets, never predictions.
        Role.AUDITOR: frozenset(
            {
                _A.AUDIT_READ,
                _A.AUDIT_VERIFY,
                _A.MODEL_READ,
                _A.MODEL_VERIFY,
                _A.PRINCIPAL_READ,
                _A.KEY_READ,
                _A.SERVER_READ,
            }
        ),
    }
)


def _check_resource_name(kind: ResourceKind, name: str) -> None:
    if name == ALL:
        return
    pattern = {
        ResourceKind.MODEL: MODEL_NAME_RE,
        ResourceKind.PRINCIPAL: PRINCIPAL_ID_RE,
        ResourceKind.KEY: KEY_NAME_RE,
    }.get(kind)
    if pattern is None or not pattern.fullmatch(name):
        raise InvalidInputError(f"invalid {kind} name {name!r}")


@dataclass(frozen=True)
class Resource:
    """What an action acts on: ``kind`` and a name (a model name, principal id, key name, or
    ``*`` for all of that kind). Audit and server resources are always ``*``.

    Names are exact and validated here (``InvalidInputError``): nothing is normalised, so the
    name authorized is the name the server then uses (``FRAUD-x`` or ``a/../b`` never get here).
    """

    kind: ResourceKind
    name: str = ALL

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ResourceKind):
            raise InvalidInputError(f"invalid resource kind {self.kind!r}")
        if not isinstance(self.name, str):
            raise InvalidInputError("resource name must be a string")
        _check_resource_name(self.kind, self.name)

    @classmethod
    def model(cls, name: str = ALL) -> Resource:
        return cls(ResourceKind.MODEL, name)

    @classmethod
    def principal(cls, principal_id: str = ALL) -> Resource:
        return cls(ResourceKind.PRINCIPAL, principal_id)

    @classmethod
    def key(cls, name: str = ALL) -> Resource:
        return cls(ResourceKind.KEY, name)

    @classmethod
    def audit(cls) -> Resource:
        return cls(ResourceKind.AUDIT)

    @classmethod
    def server(cls) -> Resource:
        return cls(ResourceKind.SERVER)


@dataclass(frozen=True)
class Decision:
    """An allowed action and why: the global ``role``, or the ``grant`` (whose role it is)."""

    principal_id: str
    action: Action
    resource: Resource
    role: Role
    grant: Grant | None = None


def authorize(
    principal: Principal, action: Action, resource: Resource, context: RequestContext
) -> Decision:
    """Allow ``action`` on ``resource`` for ``principal`` now, or raise ``ForbiddenError``.

    Raises ``MfaRequiredError`` (a ``ForbiddenError``) only when every other rule allows the
    action and a user's MFA is missing or stale.
    """
    if not isinstance(principal, Principal) or not isinstance(context, RequestContext):
        raise InvalidInputError("authorize needs a Principal and a RequestContext")
    if not isinstance(action, Action) or not isinstance(resource, Resource):
        raise InvalidInputError("authorize needs an Action and a Resource")
    check_active(principal, context.now)
    check_network(principal, context.client_ip)
    if resource.kind is not action.resource_kind:
        deny(Reason.RESOURCE_MISMATCH)
    decision = _match(principal, action, resource)
    if decision is None:
        deny(Reason.NO_MATCHING_ROLE)
    step_up = action.step_up
    if step_up is not None:
        check_mfa_fresh(principal, context.now, context.step_up.max_age(step_up))
    return decision


def _match(principal: Principal, action: Action, resource: Resource) -> Decision | None:
    """The first global role (in ``Role`` order), then the first grant, that allows ``action``."""
    for role in Role:
        if role in principal.roles and action in ROLE_ACTIONS[role]:
            return Decision(principal.id, action, resource, role)
    if resource.kind is ResourceKind.MODEL and resource.name != ALL:
        for grant in principal.grants:
            if action in ROLE_ACTIONS[grant.role] and grant.covers(resource.name):
                return Decision(principal.id, action, resource, grant.role, grant)
    return None


def permitted(
    principal: Principal,
    action: Action,
    resources: Iterable[Resource],
    context: RequestContext,
) -> tuple[Resource, ...]:
    """The ``resources`` on which ``authorize`` allows ``action``, in order (for list views).

    A list endpoint authorizes each item with the same rules instead of asking for ``*``, so a
    predictor granted ``fraud-*`` sees exactly the fraud models.
    """
    allowed: list[Resource] = []
    for resource in resources:
        try:
            authorize(principal, action, resource, context)
        except ForbiddenError:
            continue
        allowed.append(resource)
    return tuple(allowed)
