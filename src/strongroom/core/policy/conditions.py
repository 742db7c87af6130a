"""Conditions every authorization decision checks besides roles: the request context.

A ``RequestContext`` carries what the server knows about the request that is not the principal:
the time, the client address and the MFA freshness settings. The checks here raise the opaque
``ForbiddenError`` (or ``MfaRequiredError``) with a ``Denial`` as ``__cause__`` whose ``reason``
is a stable short string for the server log only; clients never see it.

Invariants:

* A disabled principal, and a credential with ``expires_at <= now``, are denied everything.
* If the principal is bound to networks, the client address must be inside one of them; no
  address means deny. An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is compared as the IPv4
  address ``a.b.c.d``. An address that names no single host a network can hold is refused, not
  normalised: one with an IPv6 zone id (``fe80::1%eth0``: networks cannot name zones, and
  dropping the zone would equate hosts on different links), an IPv4-compatible
  (``::a.b.c.d``, deprecated) or IPv4-translated (``::ffff:0:a.b.c.d``) one, and the
  unspecified ``0.0.0.0`` / ``::``. For a network-bound principal such an address is denied
  (``bad_client_address``). ``strongroom.core.policy.network`` parses text by the same rules.
* MFA is fresh when ``now - max_age <= mfa_at <= now`` (a time in the future proves nothing).
  Services can never be fresh: they cannot do MFA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Final, NoReturn

from strongroom.core.identity.principal import Principal, PrincipalKind
from strongroom.errors import ForbiddenError, InvalidInputError, MfaRequiredError

DEFAULT_MFA_MAX_AGE: Final = timedelta(minutes=5)
MAX_MFA_MAX_AGE: Final = timedelta(hours=12)

ClientAddress = IPv4Address | IPv6Address
_IPV4_TRANSLATED_HIGH: Final = 0xFFFF0000  # ::ffff:0:0:0/96 (RFC 2765), above the low 32 bits


class Reason(StrEnum):
    """Why a request was denied. For the server log and the audit record, never the client."""

    PRINCIPAL_DISABLED = "principal_disabled"
    CREDENTIAL_EXPIRED = "credential_expired"
    NO_CLIENT_ADDRESS = "no_client_address"
    NETWORK_NOT_ALLOWED = "network_not_allowed"
    BAD_CLIENT_ADDRESS = "bad_client_address"  # a zone id, IPv4-compatible, unspecified, ...
    NETWORK_DENIED = "network_denied"  # in a deny list (``network.NetworkRules``)
    RESOURCE_MISMATCH = "resource_mismatch"
    NO_MATCHING_ROLE = "no_matching_role"
    MFA_UNAVAILABLE = "mfa_unavailable"  # a service asked for a step-up action
    MFA_REQUIRED = "mfa_required"


class Denial(Exception):  # noqa: N818 - a reason carried on __cause__, not an error of its own
    """The reason behind a ``ForbiddenError``; read it with ``denial_reason``."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def deny(reason: Reason) -> NoReturn:
    """Raise the opaque error for ``reason``: ``MfaRequiredError`` for MFA, else forbidden."""
    if reason is Reason.MFA_REQUIRED:
        raise MfaRequiredError from Denial(reason)
    raise ForbiddenError from Denial(reason)


def denial_reason(error: ForbiddenError) -> Reason | None:
    """The logged reason of a denial raised by this package, or None for any other error."""
    cause = error.__cause__
    return cause.reason if isinstance(cause, Denial) else None


class StepUpClass(StrEnum):
    """Action classes that need a fresh MFA step-up, each with its own maximum age."""

    STAGE_CHANGE = "stage_change"  # promote, rollback
    ADMINISTRATION = "administration"  # principals, credentials, keys


def _check_max_age(name: str, value: timedelta) -> None:
    if not isinstance(value, timedelta) or not timedelta(0) < value <= MAX_MFA_MAX_AGE:
        raise InvalidInputError(f"{name} must be more than 0 and at most {MAX_MFA_MAX_AGE}")


@dataclass(frozen=True)
class StepUpSettings:
    """How recent MFA must be for each step-up class (default 5 minutes each)."""

    stage_change: timedelta = DEFAULT_MFA_MAX_AGE
    administration: timedelta = DEFAULT_MFA_MAX_AGE

    def __post_init__(self) -> None:
        _check_max_age("stage_change", self.stage_change)
        _check_max_age("administration", self.administration)

    def max_age(self, step_up: StepUpClass) -> timedelta:
        if step_up is StepUpClass.STAGE_CHANGE:
            return self.stage_change
        return self.administration


@dataclass(frozen=True)
class RequestContext:
    """What a decision needs to know about the request: time, client address, MFA settings.

    ``now`` comes from the injected clock; ``client_ip`` is the transport peer (or the address a
    trusted proxy reported: deciding which is the server's job), None when unknown.
    """

    now: datetime
    client_ip: ClientAddress | None = None
    step_up: StepUpSettings = field(default_factory=StepUpSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.now, datetime) or self.now.utcoffset() is None:
            raise InvalidInputError("now must be a timezone-aware datetime")
        if self.client_ip is not None and not isinstance(self.client_ip, IPv4Address | IPv6Address):
            raise InvalidInputError("client_ip must be an ipaddress address or None")
        if not isinstance(self.step_up, StepUpSettings):
            raise InvalidInputError("step_up must be StepUpSettings")


def normalize_client_ip(address: ClientAddress) -> ClientAddress:
    """The one address rules compare: an IPv4-mapped IPv6 address becomes its IPv4 address.

    Raises ``InvalidInputError`` for an address no network rule can judge safely (see the
    module invariants) instead of guessing which host it means.
    """
    if isinstance(address, IPv4Address):
        if address.is_unspecified:
            raise InvalidInputError("the unspecified address is no client")
        return address
    if not isinstance(address, IPv6Address):
        raise InvalidInputError("a client address must be an ipaddress address")
    if address.scope_id is not None:
        raise InvalidInputError("a client address with a zone id matches no network")
    mapped = address.ipv4_mapped
    if mapped is not None:
        return normalize_client_ip(mapped)
    high = int(address) >> 32
    if (high == 0 and int(address) != 1) or high == _IPV4_TRANSLATED_HIGH:
        raise InvalidInputError("IPv4-compatible, IPv4-translated and unspecified IPv6 refused")
    return address


def check_active(principal: Principal, now: datetime) -> None:
    """Deny a disabled principal or an expired credential (``expires_at <= now``)."""
    if principal.disabled:
        deny(Reason.PRINCIPAL_DISABLED)
    expires_at = principal.credential.expires_at
    if expires_at is not None and expires_at <= now:
        deny(Reason.CREDENTIAL_EXPIRED)


def check_network(principal: Principal, client_ip: ClientAddress | None) -> None:
    """Deny a network-bound principal calling from outside its networks, from nowhere, or from
    an address ``normalize_client_ip`` refuses (fail closed)."""
    if not principal.networks:
        return
    if client_ip is None:
        deny(Reason.NO_CLIENT_ADDRESS)
    address = _normalized_or_none(client_ip)
    if address is None:
        deny(Reason.BAD_CLIENT_ADDRESS)
    if not any(address in network for network in principal.networks):
        deny(Reason.NETWORK_NOT_ALLOWED)


def _normalized_or_none(address: ClientAddress) -> ClientAddress | None:
    try:
        return normalize_client_ip(address)
    except InvalidInputError:
        return None


def check_mfa_fresh(principal: Principal, now: datetime, max_age: timedelta) -> None:
    """Deny unless the principal is a user who completed MFA within ``max_age`` before ``now``.

    A service gets a plain ``ForbiddenError`` (no step-up can help it); a user with stale, absent
    or future-dated MFA gets ``MfaRequiredError``, which the server turns into a step-up challenge.
    """
    if principal.kind is not PrincipalKind.USER:
        deny(Reason.MFA_UNAVAILABLE)
    mfa_at = principal.mfa_at
    if mfa_at is None or mfa_at > now or now - mfa_at > max_age:
        deny(Reason.MFA_REQUIRED)
