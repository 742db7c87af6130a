"""What admin routes check about the caller beyond one ``authorize()`` call.

Most routes call ``Access.require`` and nothing here. These helpers serve the few that decide
on something other than a role: list views (which filter items with ``permitted`` but must still
refuse a disabled principal or one outside its networks), the token endpoint, and self-service
(a user changing its own password, ending or stepping up its own session).

Every refusal is the same opaque ``ForbiddenError``/``MfaRequiredError`` that ``authorize``
raises, with the reason in the request's audit record only.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request

from strongroom.core.identity.principal import CredentialKind, Principal
from strongroom.core.policy.conditions import (
    StepUpClass,
    check_active,
    check_mfa_fresh,
    check_network,
    denial_reason,
)
from strongroom.entrypoints.http.access import Access
from strongroom.entrypoints.http.guard import request_log
from strongroom.errors import AuthenticationError, ForbiddenError

_NOT_A_SESSION: Final = "not_a_session"


def require_standing(
    access: Access,
    request: Request,
    principal: Principal,
    *,
    fresh_mfa: StepUpClass | None = None,
) -> None:
    """Refuse a disabled principal, an expired credential or a caller outside its networks;
    with ``fresh_mfa``, also a caller without MFA that fresh (the rules of ``authorize``)."""
    context = access.context(request)
    try:
        check_active(principal, context.now)
        check_network(principal, context.client_ip)
        access.check_denied_networks(request, principal)
        if fresh_mfa is not None:
            check_mfa_fresh(principal, context.now, context.step_up.max_age(fresh_mfa))
    except ForbiddenError as exc:
        reason = denial_reason(exc)
        request_log(request.scope).details["denial"] = reason.value if reason else "forbidden"
        raise


def require_session(request: Request, principal: Principal) -> str:
    """The session token of a request authenticated by a password session; 403 for any other
    credential (an API key or token cannot step up or log out)."""
    if principal.credential.kind is not CredentialKind.PASSWORD:
        request_log(request.scope).details["denial"] = _NOT_A_SESSION
        raise ForbiddenError
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError  # cannot happen after a session authenticated
    return token.strip()
